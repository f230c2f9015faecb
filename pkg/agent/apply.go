package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

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

// applyLoop applies the core's desired state whenever it changes, retries
// failures with backoff, and lets callers wait until a generation was applied.
type applyLoop struct {
	core    *Core
	applier Applier
	log     *slog.Logger
	resync  time.Duration
	onApply func(overlay.State, error)

	// mu guards the fields below.
	mu      sync.Mutex
	applied uint64        // generation of the last apply attempt
	lastErr error         // its result
	changed chan struct{} // closed and replaced after every attempt
}

func newApplyLoop(c *Core, a Applier, log *slog.Logger, resync time.Duration) *applyLoop {
	return &applyLoop{core: c, applier: a, log: log, resync: resync, changed: make(chan struct{})}
}

func (l *applyLoop) run(ctx context.Context) {
	const retryMin, retryMax = 200 * time.Millisecond, 10 * time.Second
	backoff := retryMin
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
			return
		case <-l.core.DesiredChanged():
			why = "changed"
		case <-retryC:
			why = "retry"
		case <-resyncC:
			why = "resync"
			if r, ok := l.applier.(Resyncer); ok {
				if err := r.Resync(ctx); err != nil {
					l.log.Warn("agent: re-read the kernel", "err", err)
				}
			}
		}
		st, gen, err := l.core.Desired(ctx)
		if err != nil {
			return
		}
		start := time.Now()
		err = l.applier.Set(ctx, st)
		// A netlink dump interrupted by a concurrent change (pods' veths
		// come and go all the time) is worth retrying at once.
		for i := 0; i < 5 && errors.Is(err, netlink.ErrDumpInterrupted) && ctx.Err() == nil; i++ {
			err = l.applier.Set(ctx, st)
		}
		if ctx.Err() != nil {
			return
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
			l.log.Warn("agent: data plane not fully programmed; retrying", "reason", why, "retry_in", backoff, "err", err)
			retryC = time.After(backoff)
			backoff = min(2*backoff, retryMax)
		} else {
			backoff = retryMin
			l.log.Debug("agent: data plane programmed", "reason", why, "generation", gen, "took", time.Since(start))
		}
	}
}

// wait returns once a generation >= gen was applied (with that attempt's
// error), or ctx's error.
func (l *applyLoop) wait(ctx context.Context, gen uint64) error {
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
