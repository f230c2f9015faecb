package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/iotfabric/iotfabric/internal/logbound"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/overlay"
)

// Applier makes the kernel match a desired state; *overlay.Manager is one.
type Applier interface {
	Set(ctx context.Context, s overlay.State) error
}

// Resyncer is an Applier that can re-read the kernel (repairing drift on the
// next Set); *overlay.Manager is one.
type Resyncer interface {
	Resync(ctx context.Context) error
}

// ChangeSource is a Source that can also tell what changed since its last
// Desired when only routes did (the Core).
type ChangeSource interface {
	DesiredChanges(ctx context.Context, whole bool) (RouteChanges, error)
}

// RouteUpdater is an Applier that can apply route changes on top of the
// state it last applied, returning overlay.ErrNeedSet when it needs the
// whole state; *overlay.Manager is one.
type RouteUpdater interface {
	UpdateRoutes(ctx context.Context, changes []overlay.RouteChange) error
}

// Source is where the reconcile loop takes the desired state from: the Core
// (the controllers' routes and the CNI plugin's pods, vrouter-agent --gateway)
// or a state file (FileSource, vrouter-agent --state).
type Source interface {
	// Changed is signalled whenever Desired may return a new state.
	Changed() <-chan struct{}
	// Desired returns the desired state and its generation, which grows with
	// every change.
	Desired(ctx context.Context) (overlay.State, uint64, error)
}

// The reconcile loop's backoff: a failed apply is retried after RetryMin,
// doubling up to RetryMax while it keeps failing; a success resets it. A
// change of the desired state is applied at once whatever the backoff.
const (
	RetryMin = 200 * time.Millisecond
	RetryMax = 10 * time.Second
)

// Reconciler is the vrouter agent's one reconcile loop: it applies the
// source's desired state whenever it changes, retries failures with backoff
// (RetryMin..RetryMax), re-reads the kernel and re-applies every resync
// interval, and lets callers wait until a generation was applied. A run of
// failed attempts is logged as a warning when it starts (and again when its
// failures more than double, and every FailureReminder), its other retries
// at debug level, and its end at info level ("data plane fully programmed
// again", with how many attempts failed and for how long).
type Reconciler struct {
	src     Source
	applier Applier
	log     *slog.Logger
	resync  time.Duration
	remind  time.Duration // FailureReminder
	onApply func(overlay.State, error)

	// mu guards the fields below.
	mu      sync.Mutex
	applied uint64        // generation of the last apply attempt
	lastErr error         // its result
	changed chan struct{} // closed and replaced after every attempt
}

// retryErrors is how many of the failures of an attempt its retry line shows.
const retryErrors = 3

// FailureReminder is how often the retry line is written as a warning while
// the data plane stays not fully programmed with no more failures than
// when it was last written; the retries in between are logged at debug
// level.
const FailureReminder = 5 * time.Minute

// failing is a run of failed attempts, for the retry line's level: a
// warning when the run starts, when the failures more than doubled since
// the last warning, and every reminder while it lasts; debug otherwise. A
// data plane that cannot be programmed (a kernel without the modules its
// routes need) retries on every change of the desired state, and each of
// those lines, hundreds of bytes, said the same thing.
type failing struct {
	attempts int       // failed attempts in a row
	since    time.Time // start of the first
	warned   time.Time // when the last warning was written
	failures int       // how many failures it counted
}

// level counts an attempt started at at that failed n times and returns
// its line's level.
func (f *failing) level(at time.Time, n int, remind time.Duration) slog.Level {
	f.attempts++
	if f.attempts == 1 {
		f.since = at
	}
	if f.attempts > 1 && n <= 2*f.failures && at.Sub(f.warned) < remind {
		return slog.LevelDebug
	}
	f.warned, f.failures = at, n
	return slog.LevelWarn
}

// NewReconciler returns a loop that applies src's states through a. resync
// is the period of the kernel re-read (0: never); onApply, if set, is called
// after every attempt with the state and its result.
func NewReconciler(src Source, a Applier, log *slog.Logger, resync time.Duration, onApply func(overlay.State, error)) *Reconciler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reconciler{src: src, applier: a, log: log.With(logkey.Component, logkey.ComponentReconcile), resync: resync,
		remind: FailureReminder, onApply: onApply, changed: make(chan struct{})}
}

// Run loops until ctx ends (it then returns nil) or the source fails. The
// first apply happens when the source first signals a change.
func (l *Reconciler) Run(ctx context.Context) error {
	backoff := RetryMin
	var fail failing
	var retryC <-chan time.Time
	var resyncC <-chan time.Time
	if l.resync > 0 {
		t := time.NewTicker(l.resync)
		defer t.Stop()
		resyncC = t.C
	}
	for {
		why := ""
		select {
		case <-ctx.Done():
			return nil
		case <-l.src.Changed():
			why = "changed"
		case <-retryC:
			why = "retry"
		case <-resyncC:
			why = "resync"
			if r, ok := l.applier.(Resyncer); ok {
				if err := r.Resync(ctx); err != nil {
					l.log.Warn("re-read the kernel", logkey.Err, err)
				}
			}
		}
		if why == "changed" && retryC == nil {
			// The last attempt succeeded: route changes alone go route by
			// route when source and applier can.
			done, err := l.applyChanges(ctx)
			if err != nil || ctx.Err() != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			if done {
				continue
			}
		}
		st, gen, err := l.src.Desired(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		start := time.Now()
		err = l.applier.Set(ctx, st)
		if ctx.Err() != nil {
			return nil
		}
		l.mu.Lock()
		l.applied, l.lastErr = gen, err
		close(l.changed)
		l.changed = make(chan struct{})
		l.mu.Unlock()
		if l.onApply != nil {
			l.onApply(st, err)
		}
		retryC = nil
		if err != nil {
			// One line however much failed: how many, and the first few.
			n, first := logbound.Errors(err, retryErrors)
			l.log.Log(ctx, fail.level(start, n, l.remind), "data plane not fully programmed; retrying", logkey.Reason, why, logkey.RetryIn, backoff,
				logkey.Failures, n, logkey.Attempts, fail.attempts, logkey.Err, first)
			retryC = time.After(backoff)
			backoff = min(2*backoff, RetryMax)
			continue
		}
		backoff = RetryMin
		if fail.attempts > 0 {
			l.log.Info("data plane fully programmed again", logkey.Attempts, fail.attempts, logkey.Took, time.Since(fail.since).Round(time.Millisecond))
			fail = failing{}
		}
		l.log.Info("state applied", logkey.Reason, why, logkey.Generation, gen, logkey.Networks, len(st.Networks), logkey.Took, time.Since(start))
	}
}

// applyChanges applies the source's route changes through the applier when
// both can and only routes changed; done tells whether it did (without
// error). Otherwise the caller applies the whole state. An error is the
// source's.
func (l *Reconciler) applyChanges(ctx context.Context) (done bool, err error) {
	cs, ok := l.src.(ChangeSource)
	ru, ok2 := l.applier.(RouteUpdater)
	if !ok || !ok2 {
		return false, nil
	}
	ch, err := cs.DesiredChanges(ctx, l.onApply != nil)
	if err != nil || !ch.OK {
		return false, err
	}
	start := time.Now()
	if err := ru.UpdateRoutes(ctx, ch.Changes); err != nil {
		if !errors.Is(err, overlay.ErrNeedSet) {
			n, first := logbound.Errors(err, retryErrors)
			l.log.Warn("route changes not programmed; applying the whole state", logkey.Failures, n, logkey.Err, first)
		}
		return false, nil
	}
	l.mu.Lock()
	l.applied, l.lastErr = ch.Gen, nil
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	if l.onApply != nil {
		l.onApply(ch.State, nil)
	}
	l.log.Debug("route changes applied", logkey.Generation, ch.Gen, logkey.Routes, len(ch.Changes), logkey.Took, time.Since(start))
	return true, nil
}

// Wait returns once a generation >= gen was applied (with that attempt's
// error), or ctx's error.
func (l *Reconciler) Wait(ctx context.Context, gen uint64) error {
	for {
		l.mu.Lock()
		applied, err, ch := l.applied, l.lastErr, l.changed
		l.mu.Unlock()
		if applied >= gen {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// coreSource is the Core as a Source.
type coreSource struct{ c *Core }

func (s coreSource) Changed() <-chan struct{} { return s.c.DesiredChanged() }

func (s coreSource) Desired(ctx context.Context) (overlay.State, uint64, error) {
	return s.c.Desired(ctx)
}

func (s coreSource) DesiredChanges(ctx context.Context, whole bool) (RouteChanges, error) {
	return s.c.DesiredChanges(ctx, whole)
}
