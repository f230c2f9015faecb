package vpn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	storekeys "github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/logkey"
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

// Runner keeps a speaker's announcements equal to the store's endpoints,
// collects the routes peers send, and serves each network's routes to route
// watchers and gateway streams. It is driven by the store's watch, never by
// polling.
//
// One goroutine, Run, owns the route table and every watcher; the exported
// methods send it work and wait for the answer (they wait for Run to start
// when called before it, and answer as for an empty table, or with a closed
// channel, once it has returned). Calls to the speaker are made by a second
// goroutine (speaker.go), so no speaker call holds the table.
type Runner struct {
	st  store.Store
	sp  bgp.Speaker
	asn uint32
	log *slog.Logger
	id  string

	limits Limits

	ops   chan func(*state) // work for the owner goroutine
	ready chan struct{}     // closed once the speaker runs with the full initial state
	done  chan struct{}     // closed when Run returns

	streamsEnded atomic.Bool // EndGatewayStreams was called
}

// state is what the owner goroutine (Run) holds; no other goroutine touches it.
type state struct {
	r        *Runner
	tbl      *Table
	nets     map[string]*netWatch  // route watchers, by network
	gws      map[string]*gwSession // gateway route streams, by gateway
	gnets    map[string]*netState  // the routes of the networks gateways follow
	gwDirty  map[string]bool       // gateways whose endpoints changed since the last publication
	gwEnded  bool                  // EndGatewayStreams: no gateway stream is attached any more
	rev      int64                 // revision of gateway route updates (nextRev)
	storeRev int64                 // the store revision the table is at
	speaker  *speakerQueue         // work for the speaker goroutine; nil without BGP
	filter   []bgp.RouteTarget     // the import filter last queued for the speaker
	frozen   map[string]*frozenNet // networks over Limits.MaxNetworkRoutes
	capLog   map[string]time.Time  // when each network's cap was last logged
	thawed   map[string]bool       // networks back within the limit since the last publication
}

// errStopped is returned to callers once Run has returned.
var errStopped = errors.New("vpn: the route runner stopped")

// NewRunner returns a runner over st; sp may be nil (no BGP: the runner then
// only serves routes to the API and the agents).
func NewRunner(st store.Store, sp bgp.Speaker, asn uint32, log *slog.Logger) *Runner {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{st: st, sp: sp, asn: asn, log: log, id: newID(),
		ops: make(chan func(*state)), ready: make(chan struct{}), done: make(chan struct{})}
}

// Limits bound what the runner hands on.
type Limits struct {
	// MaxNetworkRoutes is the most routes a network may have (its
	// endpoints' and the ones it imports) for its gateways to follow it;
	// beyond it the network's gateways keep the last set they were sent
	// (frozen) until it is back within the limit. 0: no limit.
	MaxNetworkRoutes int
}

// DefaultMaxNetworkRoutes is the controller's default Limits.MaxNetworkRoutes.
const DefaultMaxNetworkRoutes = 50000

// SetLimits sets the limits; call it before Run.
func (r *Runner) SetLimits(l Limits) { r.limits = l }

// Ready is closed once the speaker runs with the full initial state.
func (r *Runner) Ready() <-chan struct{} { return r.ready }

// do runs f on the owner goroutine and waits for it.
func (r *Runner) do(ctx context.Context, f func(*state)) error {
	ran := make(chan struct{})
	select {
	case r.ops <- func(s *state) { f(s); close(ran) }:
	case <-ctx.Done():
		return ctx.Err()
	case <-r.done:
		return errStopped
	}
	<-ran // the owner runs f as soon as it takes it
	return nil
}

// Run starts the speaker with every current route, then follows the store
// until ctx ends; it stops the speaker before returning. Run is the owner of
// the route table: it must be called once.
func (r *Runner) Run(ctx context.Context) error {
	defer close(r.done)
	kvs, rev, err := r.st.List(ctx, "")
	if err != nil {
		return fmt.Errorf("load state: %w", err)
	}
	s := &state{r: r, tbl: NewTable(r.asn, r.log), nets: map[string]*netWatch{}, gws: map[string]*gwSession{},
		gnets: map[string]*netState{}, gwDirty: map[string]bool{}, storeRev: rev,
		frozen: map[string]*frozenNet{}, capLog: map[string]time.Time{}, thawed: map[string]bool{}}
	s.rev = s.storeRev << 16
	peers := s.load(kvs)
	s.tbl.Flush()
	s.checkCaps(s.tbl.Deltas())
	defer s.closeWatchers()

	// The speaker goroutine's channels stay nil without BGP.
	var (
		jobs    chan<- speakerJob
		started <-chan (<-chan []bgp.RouteEvent)
		spErr   <-chan error
		recv    <-chan []bgp.RouteEvent
		refused <-chan []RefusedRoute
	)
	if r.sp != nil {
		sctx, cancel := context.WithCancel(ctx)
		s.filter = s.tbl.ImportFilter()
		l := r.startSpeaker(sctx, s.tbl.Announced(), s.filter, peers)
		defer func() { cancel(); <-l.done }()
		s.speaker = &speakerQueue{}
		jobs, started, spErr, refused = l.jobs, l.started, l.errc, l.refused
	} else {
		close(r.ready)
	}

	watch := r.st.Watch(ctx, "", rev)
	for {
		var out chan<- speakerJob
		var next speakerJob
		if s.speaker != nil && len(s.speaker.jobs) > 0 {
			out, next = jobs, s.speaker.jobs[0]
		}
		select {
		case <-ctx.Done():
			return nil
		case op := <-r.ops:
			op(s)
		case out <- next:
			s.speaker.pop()
		case recv = <-started:
			started = nil
			close(r.ready)
		case err := <-spErr:
			return err
		case rs := <-refused:
			s.tbl.Refused(rs)
		case evs, ok := <-recv:
			if !ok {
				if ctx.Err() != nil {
					recv = nil
					continue
				}
				return errors.New("the BGP speaker stopped")
			}
			since := time.Now()
			s.tbl.Received(evs)
			s.tbl.Flush()
			s.publish(false, since)
		case b, ok := <-watch:
			if !ok {
				if ctx.Err() != nil {
					watch = nil
					continue
				}
				return errors.New("the store's change stream ended")
			}
			if b.Err != nil {
				// Fell behind the store's memory: start over from a fresh listing.
				r.log.Warn("store watch failed; reloading the whole state", logkey.Err, b.Err)
				kvs, rev, err = r.st.List(ctx, "")
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return fmt.Errorf("reload state: %w", err)
				}
				s.storeRev = rev
				s.reload(kvs)
				watch = r.st.Watch(ctx, "", rev)
				continue
			}
			s.applyBatch(b.Events)
		}
	}
}

// load feeds a listing to the table and returns the stored peers.
func (s *state) load(kvs []store.KV) (peers []store.KV) {
	for _, kv := range kvs {
		if strings.HasPrefix(kv.Key, PeerPrefix) {
			peers = append(peers, kv)
			continue
		}
		s.apply(store.Event{Type: store.EventPut, Key: kv.Key, Value: kv.Value, Rev: kv.ModRev})
	}
	return peers
}

// applyBatch applies one batch of store changes: to the table, then the
// differences to the speaker queue and the watchers.
func (s *state) applyBatch(evs []store.Event) {
	since := time.Now()
	nets := false
	for _, ev := range evs {
		s.storeRev = max(s.storeRev, ev.Rev)
		if strings.HasPrefix(ev.Key, PeerPrefix) {
			s.speaker.peer(ev)
			continue
		}
		nets = nets || strings.HasPrefix(ev.Key, pfxNetwork)
		s.apply(ev)
	}
	ann, wd, _ := s.tbl.Flush()
	s.speaker.routes(ann, wd)
	if nets {
		s.syncFilter()
	}
	s.publish(false, since)
}

// syncFilter queues the import filter for the speaker if the networks'
// import route targets changed.
func (s *state) syncFilter() {
	f := s.tbl.ImportFilter()
	if !slices.Equal(f, s.filter) {
		s.filter = f
		s.speaker.filter(f)
	}
}

// reload rebuilds the table from a fresh listing (keeping the received
// routes) and queues the difference for the speaker.
func (s *state) reload(kvs []store.KV) {
	before := map[bgp.RouteKey]bool{}
	for _, rt := range s.tbl.Announced() {
		before[rt.Key()] = true
	}
	fresh := NewTable(s.tbl.asn, s.r.log)
	fresh.recv = s.tbl.recv
	s.tbl = fresh
	peers := s.load(kvs)
	s.tbl.Flush()
	ann := s.tbl.Announced()
	var wd []bgp.RouteKey
	for _, rt := range ann {
		delete(before, rt.Key())
	}
	for k := range before {
		wd = append(wd, k)
	}
	s.speaker.routes(ann, wd)
	s.speaker.syncPeers(peers)
	s.syncFilter()
	s.publish(true, time.Time{})
}

// apply feeds one store change to the table.
func (s *state) apply(ev store.Event) {
	del := ev.Type == store.EventDelete
	log := s.r.log
	switch {
	case strings.HasPrefix(ev.Key, pfxNetwork):
		name := strings.TrimPrefix(ev.Key, pfxNetwork)
		if del {
			s.tbl.DeleteNetwork(name)
			return
		}
		n := &v1.VirtualNetwork{}
		if err := proto.Unmarshal(ev.Value, n); err != nil {
			log.Error("corrupt network record", logkey.Key, ev.Key, logkey.Err, err)
			return
		}
		s.tbl.PutNetwork(n)
	case strings.HasPrefix(ev.Key, pfxGateway):
		name := strings.TrimPrefix(ev.Key, pfxGateway)
		if del {
			s.tbl.DeleteGateway(name)
			return
		}
		g := &v1.Gateway{}
		if err := proto.Unmarshal(ev.Value, g); err != nil {
			log.Error("corrupt gateway record", logkey.Key, ev.Key, logkey.Err, err)
			return
		}
		s.tbl.PutGateway(g)
	case strings.HasPrefix(ev.Key, pfxEndpoint):
		id := strings.TrimPrefix(ev.Key, pfxEndpoint)
		if old := s.tbl.eps[id]; old != nil {
			s.gwDirty[old.Gateway] = true
		}
		if del {
			s.tbl.DeleteEndpoint(id)
			return
		}
		e := &v1.Endpoint{}
		if err := proto.Unmarshal(ev.Value, e); err != nil {
			log.Error("corrupt endpoint record", logkey.Key, ev.Key, logkey.Err, err)
			return
		}
		s.gwDirty[e.Gateway] = true
		s.tbl.PutEndpoint(e)
	}
}

// publish sends what the last Flush changed to the route watchers and the
// gateway streams; full recomputes every network they follow. since is when
// the table took in the changes (zero with full).
func (s *state) publish(full bool, since time.Time) {
	s.checkCaps(s.tbl.Deltas())
	s.publishGateways(full, since)
	s.publishRoutes(full)
	clear(s.thawed)
}

// closeWatchers ends every watcher's channel (Run is returning).
func (s *state) closeWatchers() {
	for gw, g := range s.gws {
		if g.ch != nil {
			s.detachGateway(gw, g.ch)
		}
	}
	for n, nw := range s.nets {
		for w := range nw.subs {
			w.endWalk()
			close(w.ch)
		}
		delete(s.nets, n)
	}
}

// ---- queries ----

// Routes returns a network's routes; ok is false for an unknown network.
func (r *Runner) Routes(network string) (routes []NetRoute, ok bool) {
	r.do(context.Background(), func(s *state) {
		routes, ok = s.tbl.Routes(network), s.tbl.HasNetwork(network)
	})
	return routes, ok
}

// Peers returns the speaker's peers.
func (r *Runner) Peers(ctx context.Context) ([]bgp.PeerStatus, error) { return r.sp.ListPeers(ctx) }

// HasSpeaker reports whether BGP runs.
func (r *Runner) HasSpeaker() bool { return r.sp != nil }

// Stats are the runner's gauges and the speaker's counters.
type Stats struct {
	Announced      int // local routes (sent to the speaker when BGP runs)
	Received       int // routes received from peers
	GatewayStreams int // gateways with a route stream attached
	NotAdvertised  int // endpoints whose routes are not advertised
	NetworksFrozen int // networks over the route limit (their gateways frozen)
	// Speaker are the speaker's counters (zero without BGP).
	Speaker bgp.Counters
}

// Stats returns the current gauges (zero once Run has returned).
func (r *Runner) Stats() Stats {
	var st Stats
	r.do(context.Background(), func(s *state) {
		st.Received = len(s.tbl.recv)
		for _, rs := range s.tbl.local {
			st.Announced += len(rs)
		}
		for _, g := range s.gws {
			if g.ch != nil {
				st.GatewayStreams++
			}
		}
		st.NotAdvertised = len(s.tbl.notAdv)
		st.NetworksFrozen = len(s.frozen)
	})
	if r.sp != nil {
		st.Speaker = r.sp.Counters()
	}
	return st
}

// EndpointStatus returns, for each of ids that has one, why its routes are
// not advertised ("not advertised: ...").
func (r *Runner) EndpointStatus(ids []string) map[string]string {
	out := map[string]string{}
	r.do(context.Background(), func(s *state) {
		for _, id := range ids {
			if why := s.tbl.NotAdvertised(id); why != "" {
				out[id] = why
			}
		}
	})
	return out
}

// NetworkStatus returns the conditions of a network the route table knows
// of (none when all is well).
func (r *Runner) NetworkStatus(network string) []Condition {
	var out []Condition
	r.do(context.Background(), func(s *state) {
		if f := s.frozen[network]; f != nil {
			out = append(out, Condition{Type: ConditionRouteLimit, Message: f.message(s.tbl.RouteCount(network), s.r.limits.MaxNetworkRoutes)})
		}
	})
	return out
}
