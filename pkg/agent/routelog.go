package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/iotfabric/iotfabric/internal/atomicfile"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// The routes received from the controllers are kept in routeLogFile, an
// append-only log of JSON lines: each flush appends what changed (a
// session's controller id and revision, routes put, route keys deleted) and
// syncs the file, so one route change costs about a route's bytes on flash,
// not the table's. When the log holds more than twice the lines the routes
// need (and at least compactMin), it is rewritten whole (temporary file,
// fsync, rename). A torn last line (a crash mid-append) is ignored when the
// log is read.

const (
	routeLogFile = "routes.log"
	compactMin   = 4096
)

// routeRecord is one line of the route log.
type routeRecord struct {
	Controller string          `json:"c"`
	ID         string          `json:"id,omitempty"`  // with Rev: the session's resume point
	Rev        int64           `json:"rev,omitempty"` //
	Put        json.RawMessage `json:"put,omitempty"` // a v1.Route (protojson)
	Del        *routeKeyJSON   `json:"del,omitempty"`
}

type routeKeyJSON struct {
	Network string `json:"n"`
	Prefix  string `json:"p"`
	RD      string `json:"rd"`
}

// routeDelta is what changed in one session since the last flush: routes put
// (the route) or deleted (nil), and its resume point.
type routeDelta struct {
	controllerID string
	revision     int64
	routes       map[routeKey]*route
}

// routeLog is the writer's side: the file, and a mirror of what it holds
// (for compaction). It is used by one goroutine.
type routeLog struct {
	path  string
	f     *os.File
	lines int
	held  map[string]*routeDelta // what the file holds, per controller
	// written counts the bytes written (appends and compactions).
	written int64
}

// openRouteLog replays the route log under dir (or the routes.json of older
// versions) and returns the sessions it holds and the log, ready to append.
func openRouteLog(dir string) (map[string]*sessionRoutes, *routeLog, error) {
	l := &routeLog{path: filepath.Join(dir, routeLogFile), held: map[string]*routeDelta{}}
	sessions := map[string]*sessionRoutes{}
	data, err := os.ReadFile(l.path)
	switch {
	case err == nil:
		if err := l.replay(data, sessions); err != nil {
			return nil, nil, err
		}
	case errors.Is(err, os.ErrNotExist):
		// An older version's whole-file routes.
		old, err := loadRoutes(dir)
		if err != nil {
			return nil, nil, err
		}
		sessions = old
		for addr, sr := range old {
			l.held[addr] = &routeDelta{controllerID: sr.controllerID, revision: sr.revision, routes: clone(sr.routes)}
		}
	default:
		return nil, nil, err
	}
	if err := l.compact(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", routeLogFile, err)
	}
	_ = os.Remove(filepath.Join(dir, routesFile))
	return sessions, l, nil
}

func clone(m map[routeKey]*route) map[routeKey]*route {
	out := make(map[routeKey]*route, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (l *routeLog) replay(data []byte, sessions map[string]*sessionRoutes) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var rec routeRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			break // a torn last line
		}
		sr := sessions[rec.Controller]
		if sr == nil {
			sr = &sessionRoutes{routes: map[routeKey]*route{}}
			sessions[rec.Controller] = sr
		}
		switch {
		case rec.Put != nil:
			r := &v1.Route{}
			if err := protojson.Unmarshal(rec.Put, r); err != nil {
				return fmt.Errorf("%s: %w", routeLogFile, err)
			}
			sr.routes[keyOf(r)] = newRoute(r)
		case rec.Del != nil:
			delete(sr.routes, routeKey{rec.Del.Network, rec.Del.Prefix, rec.Del.RD})
		default:
			sr.controllerID, sr.revision = rec.ID, rec.Rev
		}
	}
	for addr, sr := range sessions {
		l.held[addr] = &routeDelta{controllerID: sr.controllerID, revision: sr.revision, routes: clone(sr.routes)}
	}
	return nil
}

func appendRecords(buf []byte, addr string, d *routeDelta) ([]byte, int, error) {
	lines := 0
	add := func(rec routeRecord) error {
		b, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		buf = append(append(buf, b...), '\n')
		lines++
		return nil
	}
	for k, r := range d.routes {
		rec := routeRecord{Controller: addr}
		if r == nil {
			rec.Del = &routeKeyJSON{k.network, k.prefix, k.rd}
		} else {
			b, err := protojson.Marshal(r.raw)
			if err != nil {
				return nil, 0, err
			}
			rec.Put = b
		}
		if err := add(rec); err != nil {
			return nil, 0, err
		}
	}
	if err := add(routeRecord{Controller: addr, ID: d.controllerID, Rev: d.revision}); err != nil {
		return nil, 0, err
	}
	return buf, lines, nil
}

// append writes the deltas (per controller) and syncs, compacting when the
// log has grown past twice what it holds.
func (l *routeLog) append(deltas map[string]*routeDelta) error {
	var buf []byte
	for addr, d := range deltas {
		var n int
		var err error
		if buf, n, err = appendRecords(buf, addr, d); err != nil {
			return err
		}
		l.lines += n
		h := l.held[addr]
		if h == nil {
			h = &routeDelta{routes: map[routeKey]*route{}}
			l.held[addr] = h
		}
		h.controllerID, h.revision = d.controllerID, d.revision
		for k, r := range d.routes {
			if r == nil {
				delete(h.routes, k)
			} else {
				h.routes[k] = r
			}
		}
	}
	live := 0
	for _, h := range l.held {
		live += len(h.routes) + 1
	}
	if l.lines > max(compactMin, 2*live) {
		return l.compact()
	}
	if _, err := l.f.Write(buf); err != nil {
		return err
	}
	l.written += int64(len(buf))
	return l.f.Sync()
}

// compact rewrites the log with what it holds, and reopens it for appends.
func (l *routeLog) compact() error {
	var buf []byte
	lines := 0
	for addr, h := range l.held {
		var n int
		var err error
		if buf, n, err = appendRecords(buf, addr, h); err != nil {
			return err
		}
		lines += n
	}
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	if err := atomicfile.Write(l.path, buf, 0o600); err != nil {
		return err
	}
	l.written += int64(len(buf))
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	l.f, l.lines = f, lines
	return nil
}

func (l *routeLog) close() error {
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
