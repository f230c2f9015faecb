// Package logbound keeps logs bounded under floods and hostile input.
//
// Handler wraps a slog.Handler and does two things to every record:
//
//   - It cuts every attribute value (and the message) longer than
//     MaxValueLen, saying how long it was, so that a megabyte of bad input
//     never comes back whole in a log line.
//   - It limits repeated lines per source: records with the same level,
//     message, logger attributes (the component) and values of the KeyAttrs
//     (the source, e.g. the caller's identity) pass Burst times per Interval;
//     the rest are counted and, at the end of the interval, one summary line
//     with the same message says how many were left out (Suppressed) and
//     shows the first few of their Err or Reason values (Examples).
//
// Errors summarises an error made of many (errors.Join) for one log line:
// how many, and the first few, each cut short.
package logbound

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/iotfabric/iotfabric/pkg/logkey"
)

// Defaults of Options.
const (
	DefaultInterval    = 10 * time.Second
	DefaultBurst       = 10
	DefaultMaxValueLen = 1024
	DefaultExamples    = 3
	// MaxKeys bounds how many sources are tracked; beyond, new sources
	// share one limit.
	MaxKeys = 4096
)

// Options configure a Handler. Zero values take the defaults.
type Options struct {
	Interval    time.Duration
	Burst       int
	MaxValueLen int
	Examples    int
	// KeyAttrs are the attributes whose values tell sources apart (besides
	// level, message and the logger's own attributes).
	KeyAttrs []string
	// ExampleAttrs are the attributes whose values the summary shows
	// (default logkey.Err and logkey.Reason).
	ExampleAttrs []string
	// Never, if set, says which records are never left out (their values
	// are still cut): an audit log's successful calls, say.
	Never func(r slog.Record) bool
	// OnSuppress, if set, is called for every record left out (for a
	// metric), with the handler's lock held: it must not log.
	OnSuppress func(r slog.Record)
}

// Handler is a bounding slog.Handler; see the package comment.
type Handler struct {
	next   slog.Handler
	source string // the logger's attributes and groups, as text: part of every key
	st     *state
}

type state struct {
	o   Options
	now func() time.Time

	mu   sync.Mutex // guards keys
	keys map[string]*window
}

type window struct {
	start      time.Time
	passed     int
	suppressed int
	examples   []string
	level      slog.Level
	msg        string
	keyAttrs   []slog.Attr
	next       slog.Handler
	timer      *time.Timer
}

// NewHandler returns a Handler writing to next.
func NewHandler(next slog.Handler, o Options) *Handler {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Burst <= 0 {
		o.Burst = DefaultBurst
	}
	if o.MaxValueLen <= 0 {
		o.MaxValueLen = DefaultMaxValueLen
	}
	if o.Examples <= 0 {
		o.Examples = DefaultExamples
	}
	if o.ExampleAttrs == nil {
		o.ExampleAttrs = []string{logkey.Err, logkey.Reason}
	}
	return &Handler{next: next, st: &state{o: o, now: time.Now, keys: map[string]*window{}}}
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	cut := make([]slog.Attr, len(as))
	var b strings.Builder
	b.WriteString(h.source)
	for i, a := range as {
		cut[i] = h.st.bound(a)
		b.WriteString(cut[i].String())
		b.WriteByte(' ')
	}
	return &Handler{next: h.next.WithAttrs(cut), source: b.String(), st: h.st}
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), source: h.source + name + ".", st: h.st}
}

// Handle implements slog.Handler.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	o := &h.st.o
	out := slog.NewRecord(r.Time, r.Level, cut(r.Message, o.MaxValueLen), r.PC)
	var keyAttrs []slog.Attr
	var example string
	r.Attrs(func(a slog.Attr) bool {
		a = h.st.bound(a)
		out.AddAttrs(a)
		for _, k := range o.KeyAttrs {
			if a.Key == k {
				keyAttrs = append(keyAttrs, a)
			}
		}
		if example == "" {
			for _, k := range o.ExampleAttrs {
				if a.Key == k {
					example = a.Value.String()
				}
			}
		}
		return true
	})
	if (o.Never == nil || !o.Never(out)) && !h.st.admit(h, out, keyAttrs, example) {
		return nil
	}
	return h.next.Handle(ctx, out)
}

// admit counts r against its window and says whether it passes.
func (st *state) admit(h *Handler, r slog.Record, keyAttrs []slog.Attr, example string) bool {
	var b strings.Builder
	b.WriteString(h.source)
	b.WriteString(r.Level.String())
	b.WriteByte(0)
	b.WriteString(r.Message)
	for _, a := range keyAttrs {
		b.WriteByte(0)
		b.WriteString(a.String())
	}
	key := b.String()
	now := st.now()
	st.mu.Lock()
	defer st.mu.Unlock()
	w := st.keys[key]
	if w == nil {
		if len(st.keys) >= MaxKeys {
			st.sweepLocked(now)
		}
		if len(st.keys) >= MaxKeys {
			// Too many sources: the new ones share one window per message.
			key = h.source + r.Level.String() + "\x00" + r.Message + "\x00\x00overflow"
			keyAttrs = nil
			w = st.keys[key]
		}
	}
	if w == nil || now.Sub(w.start) >= st.o.Interval && w.suppressed == 0 {
		w = &window{start: now, level: r.Level, msg: r.Message, keyAttrs: keyAttrs, next: h.next}
		st.keys[key] = w
	}
	if w.passed < st.o.Burst {
		w.passed++
		return true
	}
	w.suppressed++
	if example != "" && len(w.examples) < st.o.Examples && !contains(w.examples, example) {
		w.examples = append(w.examples, example)
	}
	if st.o.OnSuppress != nil {
		st.o.OnSuppress(r)
	}
	if w.timer == nil {
		w.timer = time.AfterFunc(max(w.start.Add(st.o.Interval).Sub(now), 0), func() { st.flush(key, w) })
	}
	return false
}

// flush writes w's summary and starts a new window.
func (st *state) flush(key string, w *window) {
	st.mu.Lock()
	if st.keys[key] != w { // flushed already
		st.mu.Unlock()
		return
	}
	n, ex := w.suppressed, w.examples
	delete(st.keys, key)
	st.mu.Unlock()
	if n == 0 {
		return
	}
	r := slog.NewRecord(st.now(), w.level, w.msg, 0)
	r.AddAttrs(w.keyAttrs...)
	r.AddAttrs(slog.Int(logkey.Suppressed, n), slog.Duration(logkey.Interval, st.o.Interval))
	if len(ex) > 0 {
		r.AddAttrs(slog.Any(logkey.Examples, ex))
	}
	w.next.Handle(context.Background(), r)
}

// Flush writes the summaries of every window now (at shutdown).
func (h *Handler) Flush() {
	h.st.mu.Lock()
	ws := make(map[string]*window, len(h.st.keys))
	for k, w := range h.st.keys {
		if w.suppressed > 0 {
			ws[k] = w
			if w.timer != nil {
				w.timer.Stop()
			}
		}
	}
	h.st.mu.Unlock()
	for k, w := range ws {
		h.st.flush(k, w)
	}
}

// sweepLocked forgets windows that ended with nothing to report.
func (st *state) sweepLocked(now time.Time) {
	for k, w := range st.keys {
		if w.suppressed == 0 && now.Sub(w.start) >= st.o.Interval {
			delete(st.keys, k)
		}
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// bound cuts a's value (every string, error or other value whose text is
// longer than MaxValueLen), also inside groups.
func (st *state) bound(a slog.Attr) slog.Attr {
	a.Value = a.Value.Resolve()
	switch a.Value.Kind() {
	case slog.KindString:
		if s := a.Value.String(); len(s) > st.o.MaxValueLen {
			a.Value = slog.StringValue(cut(s, st.o.MaxValueLen))
		}
	case slog.KindAny:
		var s string
		switch v := a.Value.Any().(type) {
		case error:
			s = v.Error()
		case fmt.Stringer:
			s = v.String()
		case []string:
			if len(v) <= 16 && totalLen(v) <= st.o.MaxValueLen {
				return a
			}
			s = fmt.Sprint(v)
		default:
			return a
		}
		if len(s) > st.o.MaxValueLen {
			a.Value = slog.StringValue(cut(s, st.o.MaxValueLen))
		}
	case slog.KindGroup:
		as := a.Value.Group()
		out := make([]slog.Attr, len(as))
		for i, x := range as {
			out[i] = st.bound(x)
		}
		a.Value = slog.GroupValue(out...)
	}
	return a
}

func totalLen(xs []string) int {
	n := 0
	for _, x := range xs {
		n += len(x)
	}
	return n
}

// cut shortens s to at most n bytes (at a rune boundary), saying how long it was.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return fmt.Sprintf("%s...(%d bytes)", s[:i], len(s))
}

// MaxErrorLen is how much of each error Errors shows.
const MaxErrorLen = 200

// Errors flattens err (errors.Join trees) and returns how many errors it
// holds and a summary of the first few: "e1; e2; e3; and 4,997 more", each
// cut to MaxErrorLen bytes.
func Errors(err error, first int) (int, string) {
	var leaves []error
	n := 0
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				if x != nil {
					walk(x)
				}
			}
			return
		}
		n++
		if len(leaves) < first {
			leaves = append(leaves, e)
		}
	}
	if err == nil {
		return 0, ""
	}
	walk(err)
	parts := make([]string, 0, len(leaves)+1)
	for _, e := range leaves {
		parts = append(parts, cut(e.Error(), MaxErrorLen))
	}
	if n > len(leaves) {
		parts = append(parts, fmt.Sprintf("and %d more", n-len(leaves)))
	}
	return n, strings.Join(parts, "; ")
}
