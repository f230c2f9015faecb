// Package agent is the vrouter agent's reconcile loop: it takes desired states
// from a StateSource (a file today; the controller's stream and the CNI server
// later) and applies the latest one through an Applier (overlay.Manager),
// retrying failures with backoff and resyncing with the kernel periodically.
package agent

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/iotfabric/iotfabric/pkg/overlay"
)

// StateSource delivers desired states. Run sends each new state on out (a
// later state replaces an earlier one) until ctx ends or the source fails.
type StateSource interface {
	Run(ctx context.Context, out chan<- overlay.State) error
}

// Applier makes the kernel match a desired state; *overlay.Manager is one.
type Applier interface {
	Set(ctx context.Context, s overlay.State) error
	Resync(ctx context.Context) error
}

// Agent applies the states of a source.
type Agent struct {
	Applier Applier
	Source  StateSource
	Log     *slog.Logger
	// ResyncInterval re-reads the kernel and re-applies the last state this
	// often, repairing changes made behind the agent's back (0: never).
	ResyncInterval time.Duration
	// RetryMin and RetryMax bound the backoff after a failed apply
	// (defaults 500ms and 30s).
	RetryMin, RetryMax time.Duration
	// Applied, if set, is called after every apply with its result.
	Applied func(overlay.State, error)
}

// Run loops until ctx ends (then it returns nil) or the source fails.
func (a *Agent) Run(ctx context.Context) error {
	log := a.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	retryMin, retryMax := a.RetryMin, a.RetryMax
	if retryMin <= 0 {
		retryMin = 500 * time.Millisecond
	}
	if retryMax < retryMin {
		retryMax = max(30*time.Second, retryMin)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	states := make(chan overlay.State)
	srcErr := make(chan error, 1)
	go func() { srcErr <- a.Source.Run(ctx, states) }()

	var (
		last     overlay.State
		have     bool
		pending  bool
		backoff  = retryMin
		retry    *time.Timer
		retryC   <-chan time.Time
		resyncC  <-chan time.Time
		resyncTk *time.Ticker
	)
	if a.ResyncInterval > 0 {
		resyncTk = time.NewTicker(a.ResyncInterval)
		defer resyncTk.Stop()
		resyncC = resyncTk.C
	}
	stopRetry := func() {
		if retry != nil {
			retry.Stop()
			retry, retryC = nil, nil
		}
	}
	defer stopRetry()
	apply := func(why string) {
		start := time.Now()
		err := a.Applier.Set(ctx, last)
		if a.Applied != nil {
			a.Applied(last, err)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Error("vrouter: apply failed; retrying", "reason", why, "retry_in", backoff, "error", err)
			stopRetry()
			retry = time.NewTimer(backoff)
			retryC = retry.C
			backoff = min(backoff*2, retryMax)
			pending = true
			return
		}
		log.Info("vrouter: state applied", "reason", why, "networks", len(last.Networks), "took", time.Since(start))
		stopRetry()
		backoff, pending = retryMin, false
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-srcErr:
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				err = errors.New("state source ended")
			}
			return err
		case s := <-states:
			last, have = s, true
			backoff = retryMin
			apply("new state")
		case <-retryC:
			retry, retryC = nil, nil
			if have && pending {
				apply("retry")
			}
		case <-resyncC:
			if !have {
				continue
			}
			if err := a.Applier.Resync(ctx); err != nil {
				log.Warn("vrouter: resync with the kernel", "error", err)
			}
			apply("periodic resync")
		}
	}
}
