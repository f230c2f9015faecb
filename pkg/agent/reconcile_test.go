package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/internal/syncbuf"
	"github.com/iotfabric/iotfabric/pkg/overlay"
)

// countingSource signals a change when told to; its state never matters.
type countingSource struct {
	ch  chan struct{}
	gen atomic.Uint64
}

func (s *countingSource) Changed() <-chan struct{} { return s.ch }
func (s *countingSource) Desired(context.Context) (overlay.State, uint64, error) {
	return overlay.State{}, s.gen.Add(1), nil
}

// failingApplier fails each Set with as many errors as fails holds.
type failingApplier struct{ fails atomic.Int64 }

func (a *failingApplier) Set(context.Context, overlay.State) error {
	var errs []error
	for i := range a.fails.Load() {
		errs = append(errs, fmt.Errorf("route 10.%d.0.0/24: no encapsulation both ends support", i))
	}
	return errors.Join(errs...)
}

// TestRetryLogOncePerRun: a run of failed applies is one warning (and
// another when its failures more than double), its retries are debug lines,
// and its end is one info line with the attempts it took.
func TestRetryLogOncePerRun(t *testing.T) {
	var logs syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	src := &countingSource{ch: make(chan struct{}, 1)}
	app := &failingApplier{}
	var attempts, failed atomic.Int64
	l := NewReconciler(src, app, log, 0, func(_ overlay.State, err error) {
		attempts.Add(1)
		if err != nil {
			failed.Add(1)
		}
	})
	l.remind = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitAttempts := func(n int64) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); attempts.Load() < n; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d attempts, waited for %d:\n%s", attempts.Load(), n, logs.String())
			}
		}
	}
	change := func() {
		select {
		case src.ch <- struct{}{}:
		default:
		}
	}

	app.fails.Store(2)
	change()
	waitAttempts(3) // the first, and two retries
	change()        // a change while failing: applied at once, fails too
	waitAttempts(4)
	app.fails.Store(5) // more than twice the failures of the last warning
	change()
	waitAttempts(5)
	app.fails.Store(0)
	change()
	waitLog := func(what string, ok func(string) bool) string {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if out := logs.String(); ok(out) {
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s in:\n%s", what, logs.String())
			}
		}
	}
	waitLog("end of the run", func(s string) bool { return strings.Contains(s, "fully programmed again") })
	nFailed := failed.Load()

	out := logs.String()
	var warns, debugs, agains []string
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.Contains(line, "level=WARN") && strings.Contains(line, "not fully programmed"):
			warns = append(warns, line)
		case strings.Contains(line, "level=DEBUG") && strings.Contains(line, "not fully programmed"):
			debugs = append(debugs, line)
		case strings.Contains(line, "level=INFO") && strings.Contains(line, "fully programmed again"):
			agains = append(agains, line)
		}
	}
	if len(warns) != 2 || !strings.Contains(warns[0], "failures=2 attempts=1 ") || !strings.Contains(warns[1], "failures=5 ") {
		t.Errorf("warnings: want the first failure and the one with 5 failures, got %d:\n%s", len(warns), strings.Join(warns, "\n"))
	}
	if int64(len(warns)+len(debugs)) != nFailed {
		t.Errorf("%d warnings and %d debug lines for %d failed attempts", len(warns), len(debugs), nFailed)
	}
	if len(agains) != 1 || !strings.Contains(agains[0], fmt.Sprintf("attempts=%d ", nFailed)) {
		t.Errorf("end of the run: want one line with attempts=%d, got:\n%s", nFailed, strings.Join(agains, "\n"))
	}

	// A new run is warned about again.
	app.fails.Store(1)
	change()
	waitLog("warning of a second run", func(s string) bool { return strings.Count(s, "level=WARN") == 3 })
}

// TestRetryLogReminder: while a run lasts with no more failures, a warning
// is written again once every reminder.
func TestRetryLogReminder(t *testing.T) {
	t0 := time.Now()
	var f failing
	for _, c := range []struct {
		at   time.Duration
		n    int
		want slog.Level
	}{
		{0, 3, slog.LevelWarn},
		{time.Second, 3, slog.LevelDebug},
		{time.Minute, 6, slog.LevelDebug}, // doubled, not more
		{2 * time.Minute, 7, slog.LevelWarn},
		{3 * time.Minute, 1, slog.LevelDebug},
		{7 * time.Minute, 7, slog.LevelWarn}, // FailureReminder since the last warning
		{8 * time.Minute, 7, slog.LevelDebug},
	} {
		if got := f.level(t0.Add(c.at), c.n, FailureReminder); got != c.want {
			t.Errorf("after %v, %d failures: %v, want %v", c.at, c.n, got, c.want)
		}
	}
	if f.attempts != 7 || !f.since.Equal(t0) {
		t.Errorf("attempts %d since %v, want 7 since %v", f.attempts, f.since, t0)
	}
}
