package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync/atomic"

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
// fsync, rename) from a copy of what the core holds: the writer keeps no
// routes of its own. A torn last line (a crash mid-append) is ignored when
// the log is read.

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
// (the route) or deleted (nil), and its resume point. In a whole flush it is
// all the session holds.
type routeDelta struct {
	controllerID string
	revision     int64
	routes       map[routeKey]*route
}

// routeFlush is what the core hands the route log's writer: the sessions'
// changes to append or, when whole, everything they hold, to rewrite the log
// with.
type routeFlush struct {
	whole    bool
	sessions map[string]*routeDelta
}

// routeLog is the writer's side: the file. It is used by one goroutine; the
// core reads lines to tell when the log wants compacting (it holds no copy of
// the routes: the core sends them whole then).
type routeLog struct {
	path  string
	f     *os.File
	lines atomic.Int64
	// flushes counts the flushes written (or failed).
	flushes atomic.Uint64
	// written counts the bytes written (appends and compactions).
	written int64
}

// compactDue tells whether the log, once pending more lines are appended,
// holds more than twice the lines the live routes need (and at least
// compactMin): then it is rewritten whole.
func compactDue(lines, pending, live int64) bool {
	return lines+pending > max(compactMin, 2*live)
}

// openRouteLog replays the route log under dir (or the routes.json of older
// versions) and returns the sessions it holds and the log, ready to append.
func openRouteLog(dir string) (map[string]*sessionRoutes, *routeLog, error) {
	l := &routeLog{path: filepath.Join(dir, routeLogFile)}
	sessions := map[string]*sessionRoutes{}
	data, err := os.ReadFile(l.path)
	switch {
	case err == nil:
		if err := replay(data, sessions); err != nil {
			return nil, nil, err
		}
	case errors.Is(err, os.ErrNotExist):
		// An older version's whole-file routes.
		if sessions, err = loadRoutes(dir); err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, err
	}
	if err := l.compact(wholeFlush(sessions)); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", routeLogFile, err)
	}
	_ = os.Remove(filepath.Join(dir, routesFile))
	return sessions, l, nil
}

// wholeFlush is everything the sessions hold (their maps copied: the core
// goes on changing them).
func wholeFlush(sessions map[string]*sessionRoutes) routeFlush {
	out := routeFlush{whole: true, sessions: make(map[string]*routeDelta, len(sessions))}
	for addr, sr := range sessions {
		out.sessions[addr] = &routeDelta{controllerID: sr.controllerID, revision: sr.revision, routes: maps.Clone(sr.routes)}
	}
	return out
}

func replay(data []byte, sessions map[string]*sessionRoutes) error {
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
			k, nr, err := newRoute(r)
			if err != nil {
				return fmt.Errorf("%s: %w", routeLogFile, err)
			}
			sr.routes[k] = nr
		case rec.Del != nil:
			delete(sr.routes, makeKey(rec.Del.Network, rec.Del.Prefix, rec.Del.RD))
		default:
			sr.controllerID, sr.revision = rec.ID, rec.Rev
		}
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
			network, prefix, rd := k.parts()
			rec.Del = &routeKeyJSON{network, prefix, rd}
		} else {
			m, err := r.msg()
			if err != nil {
				return nil, 0, err
			}
			b, err := protojson.Marshal(m)
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

// write appends a flush's changes and syncs, or rewrites the log with a
// whole one.
func (l *routeLog) write(fl routeFlush) error {
	if fl.whole {
		return l.compact(fl)
	}
	var buf []byte
	lines := 0
	for addr, d := range fl.sessions {
		var n int
		var err error
		if buf, n, err = appendRecords(buf, addr, d); err != nil {
			return err
		}
		lines += n
	}
	if _, err := l.f.Write(buf); err != nil {
		return err
	}
	l.lines.Add(int64(lines))
	l.written += int64(len(buf))
	return l.f.Sync()
}

// compact rewrites the log with what the sessions of a whole flush hold, and
// reopens it for appends.
func (l *routeLog) compact(fl routeFlush) error {
	var buf []byte
	lines := 0
	for addr, h := range fl.sessions {
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
	l.f = f
	l.lines.Store(int64(lines))
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
