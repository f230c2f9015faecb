package console

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// watchKinds are the REST watches /ui/api/watch carries, by its query key.
var watchKinds = []string{"gateways", "networks", "endpoints"}

// writeTimeout bounds each write to the browser.
const writeTimeout = 30 * time.Second

// maxPending bounds the events a watch holds for a slow browser; past it the
// watch ends and the page lists again.
const maxPending = 4096

// SetAPI gives the console the REST API's handler: /ui/api/watch serves its
// watches through it, as the caller's own requests.
func (h *Handler) SetAPI(api http.Handler) { h.api.Store(&api) }

// watch serves several REST watches as one stream of server-sent events
// (a browser opens at most six connections to a server over HTTP/1.1; one
// per page leaves room for many pages). Query: gateways=, networks=,
// endpoints= (the revision to start after; 0: a snapshot first) and
// routes=NETWORK. Each event is named after its watch ("event: gateways")
// with the REST event's JSON as data; when one watch ends the stream ends
// with "event: fail" ({"stream","code","codeName","message"}).
func (h *Handler) watch(w http.ResponseWriter, r *http.Request) {
	api := h.api.Load()
	if api == nil {
		writeError(w, status.Error(codes.Unavailable, "the REST API is not serving yet"))
		return
	}
	q := r.URL.Query()
	type sub struct{ kind, path string }
	var subs []sub
	for _, k := range watchKinds {
		if !q.Has(k) {
			continue
		}
		rev, err := strconv.ParseInt(q.Get(k), 10, 64)
		if err != nil || rev < 0 {
			writeError(w, status.Errorf(codes.InvalidArgument, "%s=%q: want a revision (0: from a snapshot)", k, q.Get(k)))
			return
		}
		p := "/v1/" + k + ":watch"
		if rev > 0 {
			p += "?from_revision=" + strconv.FormatInt(rev, 10)
		}
		subs = append(subs, sub{k, p})
	}
	if n := q.Get("routes"); n != "" {
		subs = append(subs, sub{"routes", "/v1/routes:watch?network=" + url.QueryEscape(n)})
	}
	if len(subs) == 0 {
		writeError(w, status.Error(codes.InvalidArgument, "no watch asked for: give gateways=, networks=, endpoints= or routes="))
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	out := make(chan []byte, maxPending)
	var wg sync.WaitGroup
	for _, s := range subs {
		u, err := url.Parse(s.path)
		if err != nil {
			writeError(w, status.Error(codes.Internal, err.Error()))
			return
		}
		r2 := r.Clone(ctx)
		r2.URL, r2.RequestURI = u, u.RequestURI()
		r2.Header.Del("Last-Event-ID")
		sw := &splitter{kind: s.kind, ctx: ctx, out: out, cancel: cancel, header: http.Header{}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			(*api).ServeHTTP(sw, r2)
			sw.end()
		}()
	}
	defer wg.Wait()
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	write := func(b []byte) bool {
		// Each write has its own deadline (the REST handler set one for the whole request).
		rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write([]byte(": open\n\n")) {
		return
	}
	for {
		select {
		case <-ctx.Done():
			// What the watches said last (their end) still goes out.
			for {
				select {
				case b := <-out:
					if !write(b) {
						return
					}
				default:
					return
				}
			}
		case b := <-out:
			if !write(b) {
				return
			}
		}
	}
}

// splitter is the ResponseWriter of one REST watch: it renames its events
// after the watch and passes them on.
type splitter struct {
	kind   string
	ctx    context.Context
	out    chan<- []byte
	cancel context.CancelFunc
	header http.Header
	code   int
	buf    []byte // an event not yet complete, or an error body
}

func (s *splitter) Header() http.Header { return s.header }

func (s *splitter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
}

// Flush is a no-op: every complete event is passed on at once.
func (s *splitter) Flush() {}

func (s *splitter) Write(p []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	if s.code != http.StatusOK {
		if len(s.buf) < 4096 {
			s.buf = append(s.buf, p[:min(len(p), 4096-len(s.buf))]...)
		}
		return len(p), nil
	}
	s.buf = append(s.buf, p...)
	for {
		i := bytes.Index(s.buf, []byte("\n\n"))
		if i < 0 {
			return len(p), nil
		}
		block := s.buf[:i]
		s.buf = s.buf[i+2:]
		if err := s.event(block); err != nil {
			return 0, err
		}
	}
}

// event passes on one event block of the REST watch.
func (s *splitter) event(block []byte) error {
	name := s.kind
	var data []byte
	for _, line := range bytes.Split(block, []byte("\n")) {
		switch {
		case bytes.HasPrefix(line, []byte("event: ")):
			if string(line[7:]) == "error" {
				name = "fail"
			}
		case bytes.HasPrefix(line, []byte("data: ")):
			data = line[6:]
		}
	}
	if data == nil {
		if s.kind != "gateways" && s.kind != "routes" {
			return nil // a comment: the heartbeat, passed on from one watch
		}
		data, name = nil, ""
	}
	if name == "fail" {
		data = failData(s.kind, data)
	}
	msg := []byte(": heartbeat\n\n")
	if name != "" {
		msg = make([]byte, 0, len(name)+len(data)+16)
		msg = append(append(append(append(append(msg, "event: "...), name...), "\ndata: "...), data...), "\n\n"...)
	}
	select {
	case s.out <- msg:
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	default:
		s.cancel() // the browser is too slow: it lists again
		return context.Canceled
	}
}

// end reports a watch that ended: refused (its error body), or closed.
func (s *splitter) end() {
	defer s.cancel()
	if s.ctx.Err() != nil {
		return
	}
	body := []byte(`{"code":14,"codeName":"UNAVAILABLE","message":"watch ended"}`)
	if s.code != http.StatusOK && len(s.buf) > 0 {
		body = s.buf
	}
	msg := append(append([]byte("event: fail\ndata: "), failData(s.kind, body)...), "\n\n"...)
	select {
	case s.out <- msg:
	default:
	}
}

// failData adds the watch's name to a REST error body.
func failData(kind string, body []byte) []byte {
	m := map[string]any{}
	if json.Unmarshal(body, &m) != nil {
		m = map[string]any{"message": string(body)}
	}
	m["stream"] = kind
	b, _ := json.Marshal(m)
	return b
}
