package bgptest

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/iotfabric/iotfabric/pkg/bgp"
)

// FakeSpeaker is an in-memory bgp.Speaker: it keeps what it is asked to
// announce, the peers it is given, and the received routes a test injects
// with Receive, so code that drives a speaker runs without root, daemons or
// sockets. It checks what the real speaker checks (states, route validity,
// duplicate and unknown peers). It is safe for concurrent use.
type FakeSpeaker struct {
	mu        sync.Mutex // guards the fields below
	running   bool
	stopped   bool
	started   []bgp.Route
	announced map[bgp.RouteKey]bgp.Route
	calls     int // Announce and Withdraw calls
	peers     map[netip.Addr]bgp.PeerConfig
	recv      map[recvKey]bgp.RouteEvent
	subs      map[*fakeSub]struct{}
	changed   chan struct{}              // closed and replaced on every change
	hold      chan struct{}              // non-nil: Announce and Withdraw wait for it to close
	filter    []bgp.RouteTarget          // nil: no import filter yet
	all       map[recvKey]bgp.RouteEvent // everything received, filtered or not (an Adj-RIB-In)
	maxRTs    int                        // RefuseOver
}

type recvKey struct {
	peer netip.Addr
	key  bgp.RouteKey
}

// fakeSub is one subscription: an unbounded queue drained by its own
// goroutine, so a slow reader never blocks the speaker.
type fakeSub struct {
	ch    chan []bgp.RouteEvent
	queue [][]bgp.RouteEvent
	wake  chan struct{}
	done  chan struct{}
}

var _ bgp.Speaker = (*FakeSpeaker)(nil)

// NewFakeSpeaker returns a speaker that is not started.
func NewFakeSpeaker() *FakeSpeaker {
	return &FakeSpeaker{announced: map[bgp.RouteKey]bgp.Route{}, peers: map[netip.Addr]bgp.PeerConfig{},
		recv: map[recvKey]bgp.RouteEvent{}, all: map[recvKey]bgp.RouteEvent{}, subs: map[*fakeSub]struct{}{}, changed: make(chan struct{})}
}

// changedLocked wakes the waiters of WaitFor.
func (f *FakeSpeaker) changedLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// Start implements bgp.Speaker.
func (f *FakeSpeaker) Start(ctx context.Context, initial []bgp.Route) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, r := range initial {
		if err := r.Validate(); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.running || f.stopped {
		return bgp.ErrAlreadyRunning
	}
	f.running = true
	f.started = slices.Clone(initial)
	for _, r := range initial {
		f.announced[r.Key()] = r
	}
	f.changedLocked()
	return nil
}

// Stop implements bgp.Speaker: it closes every subscription.
func (f *FakeSpeaker) Stop(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.running {
		return bgp.ErrNotRunning
	}
	f.running, f.stopped = false, true
	for s := range f.subs {
		delete(f.subs, s)
		close(s.done)
	}
	f.changedLocked()
	return nil
}

// AddPeer implements bgp.Speaker.
func (f *FakeSpeaker) AddPeer(_ context.Context, p bgp.PeerConfig) error {
	if err := p.Validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.running {
		return bgp.ErrNotRunning
	}
	if _, ok := f.peers[p.Address]; ok {
		return fmt.Errorf("%w: %s", bgp.ErrPeerExists, p.Address)
	}
	f.peers[p.Address] = p
	f.changedLocked()
	return nil
}

// DeletePeer implements bgp.Speaker: the peer's received routes are withdrawn.
func (f *FakeSpeaker) DeletePeer(_ context.Context, addr netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.running {
		return bgp.ErrNotRunning
	}
	if _, ok := f.peers[addr]; !ok {
		return fmt.Errorf("%w: %s", bgp.ErrPeerNotFound, addr)
	}
	delete(f.peers, addr)
	for k := range f.all {
		if k.peer == addr {
			delete(f.all, k)
		}
	}
	var wd []bgp.RouteEvent
	for k, ev := range f.recv {
		if k.peer == addr {
			delete(f.recv, k)
			wd = append(wd, bgp.RouteEvent{Peer: addr, Withdraw: true, Route: ev.Route})
		}
	}
	f.publishLocked(wd)
	f.changedLocked()
	return nil
}

// ListPeers implements bgp.Speaker: every peer is reported established.
func (f *FakeSpeaker) ListPeers(context.Context) ([]bgp.PeerStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.running {
		return nil, bgp.ErrNotRunning
	}
	var out []bgp.PeerStatus
	for _, p := range f.peers {
		n := 0
		for k := range f.recv {
			if k.peer == p.Address {
				n++
			}
		}
		out = append(out, bgp.PeerStatus{PeerConfig: p, State: bgp.PeerEstablished,
			PrefixesSent: uint64(len(f.announced)), PrefixesReceived: uint64(n)})
	}
	slices.SortFunc(out, func(a, b bgp.PeerStatus) int { return a.Address.Compare(b.Address) })
	return out, nil
}

// waitHold blocks while Hold is in force.
func (f *FakeSpeaker) waitHold(ctx context.Context) error {
	f.mu.Lock()
	h := f.hold
	f.mu.Unlock()
	if h == nil {
		return nil
	}
	select {
	case <-h:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Announce implements bgp.Speaker.
func (f *FakeSpeaker) Announce(ctx context.Context, routes []bgp.Route) error {
	for _, r := range routes {
		if err := r.Validate(); err != nil {
			return err
		}
	}
	if err := f.waitHold(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.running {
		return bgp.ErrNotRunning
	}
	var refused []bgp.RouteError
	for _, r := range routes {
		if f.maxRTs > 0 && len(r.RouteTargets) > f.maxRTs {
			// As the real speaker: refused, an earlier version withdrawn.
			refused = append(refused, bgp.RouteError{Key: r.Key(),
				Err: fmt.Errorf("%w: %d route targets (at most %d)", bgp.ErrRouteTooLarge, len(r.RouteTargets), f.maxRTs)})
			delete(f.announced, r.Key())
			continue
		}
		f.announced[r.Key()] = r
	}
	f.calls++
	f.changedLocked()
	if len(refused) > 0 {
		return &bgp.NotAdvertisedError{Routes: refused}
	}
	return nil
}

// RefuseOver makes Announce refuse, as too large for a BGP UPDATE, every
// route with more than n route targets (0: refuse none).
func (f *FakeSpeaker) RefuseOver(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.maxRTs = n
}

// Withdraw implements bgp.Speaker.
func (f *FakeSpeaker) Withdraw(ctx context.Context, keys []bgp.RouteKey) error {
	if err := f.waitHold(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.running {
		return bgp.ErrNotRunning
	}
	for _, k := range keys {
		delete(f.announced, k)
	}
	f.calls++
	f.changedLocked()
	return nil
}

// Subscribe implements bgp.Speaker: one batch with every received route
// held, then each batch given to Receive.
func (f *FakeSpeaker) Subscribe(ctx context.Context) (<-chan []bgp.RouteEvent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.running {
		return nil, bgp.ErrNotRunning
	}
	s := &fakeSub{ch: make(chan []bgp.RouteEvent), wake: make(chan struct{}, 1), done: make(chan struct{})}
	first := make([]bgp.RouteEvent, 0, len(f.recv))
	for _, ev := range f.recv {
		first = append(first, ev)
	}
	s.queue = append(s.queue, first)
	f.subs[s] = struct{}{}
	go f.deliver(ctx, s)
	return s.ch, nil
}

// deliver feeds one subscription from its queue until ctx ends or the
// speaker stops.
func (f *FakeSpeaker) deliver(ctx context.Context, s *fakeSub) {
	defer close(s.ch)
	defer func() {
		f.mu.Lock()
		delete(f.subs, s)
		f.mu.Unlock()
	}()
	for {
		f.mu.Lock()
		var next []bgp.RouteEvent
		have := len(s.queue) > 0
		if have {
			next, s.queue = s.queue[0], s.queue[1:]
		}
		f.mu.Unlock()
		if !have {
			select {
			case <-s.wake:
				continue
			case <-s.done:
				return
			case <-ctx.Done():
				return
			}
		}
		select {
		case s.ch <- next:
		case <-s.done:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (f *FakeSpeaker) publishLocked(evs []bgp.RouteEvent) {
	if len(evs) == 0 {
		return
	}
	for s := range f.subs {
		s.queue = append(s.queue, evs)
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// Receive makes the speaker receive routes (or withdrawals) as if peers had
// sent them; subscriptions get them as one batch. The peers need not be
// configured.
func (f *FakeSpeaker) Receive(evs ...bgp.RouteEvent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []bgp.RouteEvent
	for _, ev := range evs {
		k := recvKey{ev.Peer, ev.Route.Key()}
		if ev.Withdraw {
			delete(f.all, k)
		} else {
			f.all[k] = ev
		}
		_, held := f.recv[k]
		switch {
		case !ev.Withdraw && f.accept(ev.Route):
			f.recv[k] = ev
			out = append(out, ev)
		case held:
			delete(f.recv, k)
			out = append(out, bgp.RouteEvent{Peer: ev.Peer, Withdraw: true, Route: ev.Route})
		}
	}
	f.publishLocked(out)
	f.changedLocked()
}

func (f *FakeSpeaker) accept(r bgp.Route) bool {
	return f.filter == nil || r.HasAnyRouteTarget(f.filter)
}

// Hold makes Announce and Withdraw wait (for release, or their context)
// until the returned function is called: a stand-in for a slow speaker.
func (f *FakeSpeaker) Hold() (release func()) {
	h := make(chan struct{})
	f.mu.Lock()
	f.hold = h
	f.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			if f.hold == h {
				f.hold = nil
			}
			f.mu.Unlock()
			close(h)
		})
	}
}

// Started returns the routes Start was given.
func (f *FakeSpeaker) Started() []bgp.Route {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.started)
}

// Announced returns a copy of the routes announced now, by key.
func (f *FakeSpeaker) Announced() map[bgp.RouteKey]bgp.Route {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.announced)
}

// Calls returns how many Announce and Withdraw calls changed the table.
func (f *FakeSpeaker) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// Peers returns the configured peers, by address.
func (f *FakeSpeaker) Peers() map[netip.Addr]bgp.PeerConfig {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.peers)
}

// WaitFor waits until cond, called with the announced routes after every
// change (and once at once), returns true; it returns ctx's error if that
// does not happen before ctx ends.
func (f *FakeSpeaker) WaitFor(ctx context.Context, cond func(announced map[bgp.RouteKey]bgp.Route) bool) error {
	for {
		f.mu.Lock()
		ok, ch := cond(f.announced), f.changed
		f.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("bgptest: fake speaker: %w", ctx.Err())
		}
	}
}

// SetImportFilter implements bgp.Speaker: received routes (Receive) that
// carry none of rts are dropped from then on, held ones are withdrawn.
func (f *FakeSpeaker) SetImportFilter(_ context.Context, rts []bgp.RouteTarget) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.running {
		return bgp.ErrNotRunning
	}
	f.filter = slices.Clone(rts)
	if f.filter == nil {
		f.filter = []bgp.RouteTarget{}
	}
	var out []bgp.RouteEvent
	for k, ev := range f.all {
		_, held := f.recv[k]
		switch ok := f.accept(ev.Route); {
		case ok && !held:
			f.recv[k] = ev
			out = append(out, ev)
		case !ok && held:
			delete(f.recv, k)
			out = append(out, bgp.RouteEvent{Peer: k.peer, Withdraw: true, Route: ev.Route})
		}
	}
	f.publishLocked(out)
	f.changedLocked()
	return nil
}

// ImportFilter returns the last filter set (nil: none yet).
func (f *FakeSpeaker) ImportFilter() []bgp.RouteTarget {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.filter)
}

// Counters implements bgp.Speaker: every peer is established.
func (f *FakeSpeaker) Counters() bgp.Counters {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := bgp.Counters{Peers: map[netip.Addr]bgp.PeerState{}, PrefixLimitHits: map[netip.Addr]uint64{}}
	for a := range f.peers {
		c.Peers[a] = bgp.PeerEstablished
	}
	return c
}
