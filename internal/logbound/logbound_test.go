package logbound

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/internal/syncbuf"
	"github.com/iotfabric/iotfabric/pkg/logkey"
)

func TestFloodIsSummarised(t *testing.T) {
	var buf syncbuf.Buffer
	suppressed := 0
	h := NewHandler(slog.NewTextHandler(&buf, nil), Options{Interval: 200 * time.Millisecond, Burst: 3,
		KeyAttrs: []string{logkey.Identity}, OnSuppress: func(slog.Record) { suppressed++ }})
	log := slog.New(h).With(logkey.Component, "audit")
	for i := 0; i < 1000; i++ {
		log.Warn("denied", logkey.Identity, "viewer:x", logkey.Reason, fmt.Sprint("reason ", i%5))
	}
	log.Warn("denied", logkey.Identity, "viewer:y", logkey.Reason, "other caller") // another source passes
	log.Info("call", logkey.Identity, "viewer:x")                                  // another message passes
	time.Sleep(400 * time.Millisecond)
	out := buf.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3+1+1+1 {
		t.Fatalf("%d lines, want 6 (3 passed, 2 other, 1 summary):\n%s", len(lines), out)
	}
	sum := lines[len(lines)-1]
	for _, want := range []string{"msg=denied", "identity=viewer:x", "suppressed=997", `examples="[reason 3 reason 4 reason 0]"`, "component=audit"} {
		if !strings.Contains(sum, want) {
			t.Errorf("summary %q lacks %q", sum, want)
		}
	}
	if suppressed != 997 {
		t.Errorf("OnSuppress called %d times, want 997", suppressed)
	}
	// A new interval passes again.
	log.Warn("denied", logkey.Identity, "viewer:x", logkey.Reason, "again")
	if !strings.Contains(buf.String(), "reason=again") {
		t.Error("the next interval's first line was left out")
	}
}

func TestLongValuesAreCut(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewHandler(slog.NewJSONHandler(&buf, nil), Options{MaxValueLen: 100}))
	huge := strings.Repeat("n", 100<<20)
	log.With(logkey.Network, huge).Error(huge, logkey.Err, errors.New(huge), logkey.Gateway, huge,
		slog.Group("g", slog.String(logkey.Value, huge)))
	if buf.Len() > 2000 {
		t.Fatalf("a line of %d bytes", buf.Len())
	}
	if !strings.Contains(buf.String(), fmt.Sprintf("...(%d bytes)", len(huge))) {
		t.Fatalf("no note of the length: %s", buf.String())
	}
}

func TestErrorsSummary(t *testing.T) {
	var errs []error
	for i := 0; i < 5000; i++ {
		errs = append(errs, fmt.Errorf("route 10.%d.0.0/16: %s", i, strings.Repeat("x", 1000)))
	}
	err := errors.Join(errors.New("tunnel gw2: refused"), errors.Join(errs...))
	n, s := Errors(err, 3)
	if n != 5001 {
		t.Fatalf("count %d", n)
	}
	if len(s) > 3*(MaxErrorLen+20)+40 || !strings.HasPrefix(s, "tunnel gw2: refused; route 10.0.0.0/16") || !strings.HasSuffix(s, "; and 4998 more") {
		t.Fatalf("summary of %d bytes: %.300s ... %s", len(s), s, s[len(s)-30:])
	}
	if n, s := Errors(errors.New("one"), 3); n != 1 || s != "one" {
		t.Fatalf("%d %q", n, s)
	}
	if n, _ := Errors(nil, 3); n != 0 {
		t.Fatal(n)
	}
	_ = context.Background()
}

func TestNeverLeavesOut(t *testing.T) {
	var buf syncbuf.Buffer
	h := NewHandler(slog.NewTextHandler(&buf, nil), Options{Burst: 1, Never: func(r slog.Record) bool { return r.Level == slog.LevelInfo }})
	log := slog.New(h)
	for i := 0; i < 50; i++ {
		log.Info("call", logkey.Code, "OK")
		log.Warn("denied")
	}
	h.Flush()
	out := buf.String()
	if n := strings.Count(out, "msg=call"); n != 50 {
		t.Errorf("%d of 50 exempt lines kept", n)
	}
	if n := strings.Count(out, "msg=denied"); n != 2 || !strings.Contains(out, "suppressed=49") {
		t.Errorf("limited lines: %d (want 1 and a summary)\n%s", n, out)
	}
}
