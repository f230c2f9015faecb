package vpn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	storekeys "github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/store"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Store keys read by the runner (written by pkg/controller) and the peers it
// keeps (written by the PeerService).
const (
	pfxNetwork  = storekeys.Networks
	pfxGateway  = storekeys.Gateways
	pfxEndpoint = storekeys.Endpoints
	// PeerPrefix holds peers added through the API: bgp/peers/<address> -> JSON.
	PeerPrefix = storekeys.Peers
)

// RouteChange is a change of one route of a network, for RouteService watches.
type RouteChange struct {
	Delete bool
	Route  NetRoute
}

// Runner keeps a speaker's announcements equal to the store's endpoints and
// collects the routes peers send. It is driven by the store's watch, never by
// polling.
type Runner struct {
	st  store.Store
	sp  bgp.Speaker
	log *slog.Logger

	mu         sync.Mutex // guards the fields below
	tbl        *Table
	published  map[string]map[bgp.RouteKey]NetRoute // network -> last published routes
	subs       map[*subscriber]struct{}
	ready      chan struct{} // closed once the first full state is announced
	peersAPI   map[netip.Addr]bool
	gwSessions map[string]*gwSession
	seq        int64 // revision of gateway route updates
	id         string
}

type subscriber struct {
	network string
	ch      chan []RouteChange
	lost    bool // set when the subscriber fell behind; it is then closed
}

// NewRunner returns a runner over st; sp may be nil (no BGP: the runner then
// only serves routes to the API and the agents).
func NewRunner(st store.Store, sp bgp.Speaker, asn uint32, log *slog.Logger) *Runner {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{st: st, sp: sp, log: log, tbl: NewTable(asn, log), published: map[string]map[bgp.RouteKey]NetRoute{},
		subs: map[*subscriber]struct{}{}, ready: make(chan struct{}), peersAPI: map[netip.Addr]bool{},
		gwSessions: map[string]*gwSession{}, id: newID()}
}

// Ready is closed once the speaker runs with the full initial state.
func (r *Runner) Ready() <-chan struct{} { return r.ready }

// Run starts the speaker with every current route, then follows the store
// until ctx ends; it stops the speaker before returning.
func (r *Runner) Run(ctx context.Context) error {
	kvs, rev, err := r.st.List(ctx, "")
	if err != nil {
		return fmt.Errorf("load state: %w", err)
	}
	r.mu.Lock()
	var peers []store.KV
	for _, kv := range kvs {
		if strings.HasPrefix(kv.Key, PeerPrefix) {
			peers = append(peers, kv)
			continue
		}
		r.applyLocked(store.Event{Type: store.EventPut, Key: kv.Key, Value: kv.Value, Rev: kv.ModRev})
	}
	r.tbl.Flush()
	initial := r.tbl.Announced()
	r.mu.Unlock()

	var recv <-chan []bgp.RouteEvent
	if r.sp != nil {
		t0 := time.Now()
		if err := r.sp.Start(ctx, initial); err != nil {
			return fmt.Errorf("start BGP speaker: %w", err)
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			r.sp.Stop(sctx)
		}()
		r.log.Info("BGP speaker started", "routes", len(initial), "took", time.Since(t0).Round(time.Millisecond))
		for _, kv := range peers {
			r.peerEvent(ctx, store.Event{Type: store.EventPut, Key: kv.Key, Value: kv.Value})
		}
		var err error
		if recv, err = r.sp.Subscribe(ctx); err != nil {
			return fmt.Errorf("subscribe to received routes: %w", err)
		}
	}
	r.publish(nil)
	close(r.ready)

	watch := r.st.Watch(ctx, "", rev)
	for {
		select {
		case <-ctx.Done():
			r.closeSubs()
			return nil
		case evs, ok := <-recv:
			if !ok {
				if ctx.Err() != nil {
					continue
				}
				return errors.New("the BGP speaker stopped")
			}
			r.mu.Lock()
			r.tbl.Received(evs)
			_, _, nets := r.tbl.Flush()
			r.mu.Unlock()
			r.publish(nets)
		case b, ok := <-watch:
			if !ok {
				if ctx.Err() != nil {
					continue
				}
				return errors.New("the store's change stream ended")
			}
			if b.Err != nil {
				// Fell behind the store's memory: start over from a fresh listing.
				r.log.Warn("store watch failed; reloading the whole state", "err", b.Err)
				if rev, err = r.reload(ctx); err != nil {
					return err
				}
				r.publish(nil)
				watch = r.st.Watch(ctx, "", rev)
				continue
			}
			if err := r.applyBatch(ctx, b.Events); err != nil {
				return err
			}
		}
	}
}

func (r *Runner) applyBatch(ctx context.Context, evs []store.Event) error {
	r.mu.Lock()
	for _, ev := range evs {
		if strings.HasPrefix(ev.Key, PeerPrefix) {
			if r.sp != nil {
				r.mu.Unlock()
				r.peerEvent(ctx, ev)
				r.mu.Lock()
			}
			continue
		}
		r.applyLocked(ev)
	}
	ann, wd, nets := r.tbl.Flush()
	r.mu.Unlock()
	if err := r.send(ctx, ann, wd); err != nil {
		return err
	}
	r.publish(nets)
	return nil
}

func (r *Runner) send(ctx context.Context, ann []bgp.Route, wd []bgp.RouteKey) error {
	if r.sp == nil {
		return nil
	}
	if len(wd) > 0 {
		if err := r.sp.Withdraw(ctx, wd); err != nil && ctx.Err() == nil {
			return fmt.Errorf("withdraw %d routes: %w", len(wd), err)
		}
	}
	if len(ann) > 0 {
		if err := r.sp.Announce(ctx, ann); err != nil && ctx.Err() == nil {
			return fmt.Errorf("announce %d routes: %w", len(ann), err)
		}
	}
	if len(ann)+len(wd) > 0 {
		r.log.Debug("routes updated", "announced", len(ann), "withdrawn", len(wd))
	}
	return nil
}

// reload rebuilds the table from a fresh listing and sends the difference.
func (r *Runner) reload(ctx context.Context) (int64, error) {
	kvs, rev, err := r.st.List(ctx, "")
	if err != nil {
		return 0, err
	}
	r.mu.Lock()
	before := map[bgp.RouteKey]bool{}
	for _, rt := range r.tbl.Announced() {
		before[rt.Key()] = true
	}
	fresh := NewTable(r.tbl.asn, r.log)
	fresh.recv = r.tbl.recv
	r.tbl = fresh
	for _, kv := range kvs {
		if !strings.HasPrefix(kv.Key, PeerPrefix) {
			r.applyLocked(store.Event{Type: store.EventPut, Key: kv.Key, Value: kv.Value, Rev: kv.ModRev})
		}
	}
	r.tbl.Flush()
	ann := r.tbl.Announced()
	var wd []bgp.RouteKey
	now := map[bgp.RouteKey]bool{}
	for _, rt := range ann {
		now[rt.Key()] = true
	}
	for k := range before {
		if !now[k] {
			wd = append(wd, k)
		}
	}
	r.mu.Unlock()
	return rev, r.send(ctx, ann, wd)
}

// applyLocked feeds one store change to the table.
func (r *Runner) applyLocked(ev store.Event) {
	del := ev.Type == store.EventDelete
	switch {
	case strings.HasPrefix(ev.Key, pfxNetwork):
		name := strings.TrimPrefix(ev.Key, pfxNetwork)
		if del {
			r.tbl.DeleteNetwork(name)
			return
		}
		n := &v1.VirtualNetwork{}
		if err := proto.Unmarshal(ev.Value, n); err != nil {
			r.log.Error("corrupt network record", "key", ev.Key, "err", err)
			return
		}
		r.tbl.PutNetwork(n)
	case strings.HasPrefix(ev.Key, pfxGateway):
		name := strings.TrimPrefix(ev.Key, pfxGateway)
		if del {
			r.tbl.DeleteGateway(name)
			return
		}
		g := &v1.Gateway{}
		if err := proto.Unmarshal(ev.Value, g); err != nil {
			r.log.Error("corrupt gateway record", "key", ev.Key, "err", err)
			return
		}
		r.tbl.PutGateway(g)
	case strings.HasPrefix(ev.Key, pfxEndpoint):
		id := strings.TrimPrefix(ev.Key, pfxEndpoint)
		if del {
			r.tbl.DeleteEndpoint(id)
			return
		}
		e := &v1.Endpoint{}
		if err := proto.Unmarshal(ev.Value, e); err != nil {
			r.log.Error("corrupt endpoint record", "key", ev.Key, "err", err)
			return
		}
		r.tbl.PutEndpoint(e)
	}
}

// ---- route subscribers ----

// Routes returns a network's routes; ok is false for an unknown network.
func (r *Runner) Routes(network string) (routes []NetRoute, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tbl.Routes(network), r.tbl.HasNetwork(network)
}

// WatchRoutes returns the network's current routes and a channel of later
// changes. The channel is closed when ctx ends, when the runner stops, or when
// the reader falls too far behind (then it should list again).
func (r *Runner) WatchRoutes(ctx context.Context, network string) ([]NetRoute, <-chan []RouteChange) {
	s := &subscriber{network: network, ch: make(chan []RouteChange, 256)}
	r.mu.Lock()
	// The listing is what was last published for the network, so the next
	// publication's changes apply to exactly it.
	pub, ok := r.published[network]
	if !ok {
		pub = map[bgp.RouteKey]NetRoute{}
		for _, rt := range r.tbl.Routes(network) {
			pub[rt.Key()] = rt
		}
		r.published[network] = pub
	}
	cur := make([]NetRoute, 0, len(pub))
	for _, rt := range pub {
		cur = append(cur, rt)
	}
	sortRoutes(cur)
	r.subs[s] = struct{}{}
	r.mu.Unlock()
	go func() {
		<-ctx.Done()
		r.mu.Lock()
		defer r.mu.Unlock()
		if _, ok := r.subs[s]; ok {
			delete(r.subs, s)
			close(s.ch)
		}
	}()
	return cur, s.ch
}

func (r *Runner) closeSubs() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, gs := range r.gwSessions {
		if gs.ch != nil {
			close(gs.ch)
			gs.ch = nil
		}
	}
	for s := range r.subs {
		delete(r.subs, s)
		close(s.ch)
	}
}

// publish sends the route changes of the networks in nets (nil: all) to the
// route watchers and gateway streams that follow them.
func (r *Runner) publish(nets []string) {
	var dirty map[string]bool // nil: every network
	if nets != nil {
		dirty = make(map[string]bool, len(nets))
		for _, n := range nets {
			dirty[n] = true
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.publishGatewaysLocked(dirty)
	want := map[string]bool{}
	for s := range r.subs {
		want[s.network] = true
	}
	for n := range r.published {
		if !want[n] {
			delete(r.published, n)
		}
	}
	for n := range want {
		if dirty != nil && !dirty[n] {
			continue
		}
		cur := map[bgp.RouteKey]NetRoute{}
		for _, rt := range r.tbl.routes(n) {
			cur[rt.Key()] = rt
		}
		old := r.published[n]
		r.published[n] = cur
		var ch []RouteChange
		for k, rt := range cur {
			if o, ok := old[k]; !ok || !o.Equal(rt.Route) || o.Origin != rt.Origin {
				ch = append(ch, RouteChange{Route: rt})
			}
		}
		for k, rt := range old {
			if _, ok := cur[k]; !ok {
				ch = append(ch, RouteChange{Delete: true, Route: rt})
			}
		}
		if len(ch) == 0 {
			continue
		}
		for s := range r.subs {
			if s.network != n {
				continue
			}
			select {
			case s.ch <- ch:
			default:
				r.log.Warn("route watcher fell behind; closing its stream", "network", n)
				delete(r.subs, s)
				close(s.ch)
			}
		}
	}
}

// ---- peers ----

// peerEvent applies a peer added or removed through the API (stored so that
// every controller sharing the store peers with it, and a restart keeps it).
func (r *Runner) peerEvent(ctx context.Context, ev store.Event) {
	addr, err := netip.ParseAddr(strings.TrimPrefix(ev.Key, PeerPrefix))
	if err != nil {
		r.log.Error("corrupt peer key", "key", ev.Key)
		return
	}
	if ev.Type == store.EventDelete {
		if err := r.sp.DeletePeer(ctx, addr); err != nil {
			r.log.Warn("delete peer", "peer", addr, "err", err)
		}
		r.mu.Lock()
		delete(r.peersAPI, addr)
		r.mu.Unlock()
		return
	}
	p, err := DecodePeer(ev.Value)
	if err != nil {
		r.log.Error("corrupt peer record", "key", ev.Key, "err", err)
		return
	}
	r.mu.Lock()
	exists := r.peersAPI[addr]
	r.peersAPI[addr] = true
	r.mu.Unlock()
	if exists {
		r.sp.DeletePeer(ctx, addr)
	}
	if err := r.sp.AddPeer(ctx, p); err != nil {
		r.log.Warn("add peer", "peer", addr, "err", err)
		return
	}
	r.log.Info("peer configured", "peer", addr, "asn", p.ASN)
}

// Peers returns the speaker's peers.
func (r *Runner) Peers(ctx context.Context) ([]bgp.PeerStatus, error) { return r.sp.ListPeers(ctx) }

// HasSpeaker reports whether BGP runs.
func (r *Runner) HasSpeaker() bool { return r.sp != nil }

// Stats are the runner's gauges.
type Stats struct {
	Announced      int // local routes (sent to the speaker when BGP runs)
	Received       int // routes received from peers
	GatewayStreams int // gateways with a route stream attached
}

// Stats returns the current gauges.
func (r *Runner) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := Stats{Received: len(r.tbl.recv)}
	for _, rs := range r.tbl.local {
		st.Announced += len(rs)
	}
	for _, s := range r.gwSessions {
		if s.ch != nil {
			st.GatewayStreams++
		}
	}
	return st
}
