package enroll

import (
	"context"
	"log/slog"
	"math/big"
	"sync"
	"time"

	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/store"
)

// Revocations is the set of revoked certificate serials, loaded from the
// store and kept current: by the Enroller's revocations on this controller
// (Add), and, when the store is shared (etcd), by a watch of keys.Revoked,
// so that every controller sharing the store refuses the same
// certificates. A controller alone on its bbolt file does not watch: every
// revocation is its own, and a watcher of a bbolt store re-reads the change
// log at every commit. Run owns the store reads; Revoked, Watch and Add are
// safe for concurrent use.
type Revocations struct {
	st     store.Store
	log    *slog.Logger
	follow bool
	ready  chan struct{}

	mu      sync.RWMutex
	serials map[string]struct{}
	waiters map[string]map[*waiter]struct{} // serial -> streams to end when it is revoked
}

type waiter struct{ ch chan struct{} }

// NewRevocations returns the set over st; it is empty until Run has listed
// the store (Ready). With follow, Run watches the store for revocations made
// by other controllers.
func NewRevocations(st store.Store, follow bool, log *slog.Logger) *Revocations {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Revocations{st: st, log: log, follow: follow, ready: make(chan struct{}),
		serials: map[string]struct{}{}, waiters: map[string]map[*waiter]struct{}{}}
}

// Ready is closed once the set holds what the store held at Run's start.
func (r *Revocations) Ready() <-chan struct{} { return r.ready }

// Revoked reports whether the certificate serial is revoked.
func (r *Revocations) Revoked(serial *big.Int) bool {
	s := Serial(serial)
	r.mu.RLock()
	_, ok := r.serials[s]
	r.mu.RUnlock()
	return ok
}

// Watch returns a channel closed when serial is revoked (at once if it is),
// and a function to call when no longer interested.
func (r *Revocations) Watch(serial *big.Int) (<-chan struct{}, func()) {
	s := Serial(serial)
	w := &waiter{ch: make(chan struct{})}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.serials[s]; ok {
		close(w.ch)
		return w.ch, func() {}
	}
	ws := r.waiters[s]
	if ws == nil {
		ws = map[*waiter]struct{}{}
		r.waiters[s] = ws
	}
	ws[w] = struct{}{}
	return w.ch, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if ws := r.waiters[s]; ws != nil {
			delete(ws, w)
			if len(ws) == 0 {
				delete(r.waiters, s)
			}
		}
	}
}

// Add adds revoked serials (hex) at once, for the revocations this
// controller commits.
func (r *Revocations) Add(serials ...string) {
	for _, s := range serials {
		r.add(s)
	}
}

// Run lists the store and, with follow, follows it until ctx ends, listing
// again after a compaction or a broken watch.
func (r *Revocations) Run(ctx context.Context) {
	first := true
	for ctx.Err() == nil {
		kvs, rev, err := r.st.List(ctx, keys.Revoked)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("list revoked certificates", logkey.Err, err)
				sleep(ctx, time.Second)
			}
			continue
		}
		set := make(map[string]struct{}, len(kvs))
		for _, kv := range kvs {
			set[keys.RevokedSerial(kv.Key)] = struct{}{}
		}
		r.replace(set)
		if first {
			close(r.ready)
			first = false
		}
		if !r.follow {
			return
		}
		for b := range r.st.Watch(ctx, keys.Revoked, rev) {
			if b.Err != nil {
				if ctx.Err() == nil {
					r.log.Warn("watch revoked certificates; listing again", logkey.Err, b.Err)
				}
				break
			}
			for _, ev := range b.Events {
				if ev.Type == store.EventPut {
					r.add(keys.RevokedSerial(ev.Key))
				} else {
					r.remove(keys.RevokedSerial(ev.Key))
				}
			}
		}
		sleep(ctx, 100*time.Millisecond)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// replace sets the set to what the store holds (and what was added
// meanwhile: a serial is never unrevoked by a stale listing).
func (r *Revocations) replace(set map[string]struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for s := range r.serials {
		set[s] = struct{}{}
	}
	r.serials = set
	for s := range set {
		r.wakeLocked(s)
	}
}

func (r *Revocations) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.serials[s] = struct{}{}
	r.wakeLocked(s)
}

func (r *Revocations) remove(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.serials, s)
}

// wakeLocked ends the waits on s.
func (r *Revocations) wakeLocked(s string) {
	for w := range r.waiters[s] {
		close(w.ch)
	}
	delete(r.waiters, s)
}
