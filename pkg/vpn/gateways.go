package vpn

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sort"
	"time"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/routedigest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Gateway route streams.
//
// The routes of each network that some gateway follows are held once
// (netState): the routes as the API sends them, their hashes and digests, and
// a change log of the route keys changed at each revision. A gateway session
// holds only the networks it follows and the revision from which it has
// followed each, so a controller's memory is the routes once plus a few
// hundred bytes per gateway. A reconnecting agent resumes from its last
// revision when this runner issued it and the logs reach back to it; when not
// (a restart, another controller), it sends the digests of what it holds and
// gets only the buckets that differ.

// GatewayUpdate is one update of a gateway's route stream. The routes are
// shared between streams and must not be changed. Streams carry pointers:
// a stream's buffer is then gatewayStreamBuffer words, not updates, which
// is most of an idle gateway's share of the route state.
type GatewayUpdate struct {
	// Snapshot: the update replaces what the agent holds, except the routes
	// in Keep (then Delete is applied to them, then Put).
	Snapshot bool
	Revision int64
	Keep     []Scope
	Put      []*v1.Route
	Delete   []*v1.Route // network, prefix and route distinguisher set
	// Since is when the route table took in the change that made this
	// update (a store change, routes from a BGP peer); zero for a snapshot
	// or a resume, and for a gateway joining or leaving networks.
	Since time.Time
}

// Scope is the routes of a network, or those of some of its buckets
// (pkg/routedigest) when BucketCount is set.
type Scope struct {
	Network     string
	BucketCount int
	Buckets     []int
}

// gatewayStreamBuffer is how many updates a gateway stream may have unread
// before it is closed.
const gatewayStreamBuffer = 64

// minLog is how many changes a network's log keeps at least (it keeps at
// least as many as the network has routes, so a resume is never dearer than
// a snapshot).
const minLog = 4096

// gwSession is a gateway's stream state; it outlives the stream so that a
// reconnecting agent gets only what changed.
type gwSession struct {
	gateway string
	nets    map[string]int64 // followed network -> revision it is followed since
	ch      chan *GatewayUpdate
	ctx     context.Context
}

// gwEntry is a route as sent to the gateways.
type gwEntry struct {
	r    *v1.Route
	hash uint64
}

type logEntry struct {
	rev int64
	key bgp.RouteKey
}

// netState is one network's routes as the gateway streams see them.
type netState struct {
	name      string
	routes    routeMap // what the streams were sent (Table.follow's "sent")
	sent      map[bgp.RouteKey]gwEntry
	log       []logEntry // oldest first
	logFrom   int64      // every change after this revision is in log
	digests   map[int]*routedigest.Digest
	followers map[*gwSession]struct{} // attached sessions
}

// ID identifies this runner instance: gateway route revisions are only
// resumed from exactly by the instance that issued them.
func (r *Runner) ID() string { return r.id }

func newID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// gatewayNets returns the networks with an endpoint on gw.
func (s *state) gatewayNets(gw string) map[string]bool {
	nets := map[string]bool{}
	for id := range s.tbl.byGw[gw] {
		if e := s.tbl.eps[id]; e != nil {
			nets[e.Network] = true
		}
	}
	return nets
}

// nextRev returns a new revision: the store's revision the table is at,
// shifted, or the last one plus one (changes of received routes), so
// revisions only grow, across restarts too.
func (s *state) nextRev() int64 {
	s.rev = max(s.storeRev<<16, s.rev+1)
	return s.rev
}

// netState returns the state of network n, made from the table if needed.
func (s *state) netState(n string) *netState {
	ns := s.gnets[n]
	if ns != nil {
		return ns
	}
	ns = &netState{name: n, routes: s.gatewayRoutes(n), sent: map[bgp.RouteKey]gwEntry{}, logFrom: s.rev,
		digests: map[int]*routedigest.Digest{}, followers: map[*gwSession]struct{}{}}
	for k, rt := range ns.routes {
		a := APIRoute(n, rt)
		ns.sent[k] = gwEntry{r: a, hash: routedigest.Hash(a)}
	}
	s.gnets[n] = ns
	return ns
}

func deleteOf(network string, k bgp.RouteKey) *v1.Route {
	return &v1.Route{Network: network, Prefix: k.Prefix.String(), RouteDistinguisher: k.RD.String()}
}

// change records the routes put and deleted at rev and returns them as sent.
func (ns *netState) change(put, del []NetRoute, rev int64) (aput, adel []*v1.Route) {
	for _, rt := range del {
		k := rt.Key()
		if old, ok := ns.sent[k]; ok {
			ns.digestAdd(k, old.hash, -1)
			delete(ns.sent, k)
		}
		adel = append(adel, deleteOf(ns.name, k))
		ns.log = append(ns.log, logEntry{rev, k})
	}
	for _, rt := range put {
		k := rt.Key()
		if old, ok := ns.sent[k]; ok {
			ns.digestAdd(k, old.hash, -1)
		}
		a := APIRoute(ns.name, rt)
		e := gwEntry{r: a, hash: routedigest.Hash(a)}
		ns.sent[k] = e
		ns.digestAdd(k, e.hash, 1)
		aput = append(aput, a)
		ns.log = append(ns.log, logEntry{rev, k})
	}
	if limit := max(minLog, 2*len(ns.sent)); len(ns.log) > limit {
		drop := len(ns.log) - limit/2
		ns.logFrom = ns.log[drop-1].rev
		for drop < len(ns.log) && ns.log[drop].rev == ns.logFrom {
			drop++ // keep whole revisions
		}
		ns.log = append([]logEntry(nil), ns.log[drop:]...)
	}
	return aput, adel
}

func (ns *netState) digestAdd(k bgp.RouteKey, hash uint64, sign int) {
	for _, d := range ns.digests {
		d.Add(k.Prefix.String(), k.RD.String(), hash, sign)
	}
}

// digest returns the network's digest with n buckets (kept up to date from
// then on).
func (ns *netState) digest(n int) *routedigest.Digest {
	if d := ns.digests[n]; d != nil {
		return d
	}
	d := routedigest.New(n)
	for k, e := range ns.sent {
		d.Add(k.Prefix.String(), k.RD.String(), e.hash, 1)
	}
	if len(ns.digests) >= 4 { // bucket counts in use: few; forget old ones
		clear(ns.digests)
	}
	ns.digests[n] = &d
	return &d
}

func (ns *netState) all() []*v1.Route {
	out := make([]*v1.Route, 0, len(ns.sent))
	for _, e := range ns.sent {
		out = append(out, e.r)
	}
	return out
}

// since returns the routes changed after rev (put: the route now, delete:
// gone now); ok is false when the log does not reach back to rev.
func (ns *netState) since(rev int64) (put, del []*v1.Route, ok bool) {
	if rev < ns.logFrom {
		return nil, nil, false
	}
	i := sort.Search(len(ns.log), func(i int) bool { return ns.log[i].rev > rev })
	seen := map[bgp.RouteKey]bool{}
	for _, le := range ns.log[i:] {
		if seen[le.key] {
			continue
		}
		seen[le.key] = true
		if e, ok := ns.sent[le.key]; ok {
			put = append(put, e.r)
		} else {
			del = append(del, deleteOf(ns.name, le.key))
		}
	}
	return put, del, true
}

// WatchGateway streams the routes of gw's networks: a first update, then
// changes. The first update is a snapshot, or only what changed since
// fromRev when this runner (runnerID) issued fromRev and its logs reach back
// to it, or, failing that, the buckets whose digests (what the agent holds)
// differ.
//
// The channel closes when ctx ends, when another stream for the same gateway
// replaces this one, when the runner stops, or when the reader falls behind:
// the runner never waits for a stream, and one with gatewayStreamBuffer
// updates unread is closed (the agent resumes from the last revision it
// received).
func (r *Runner) WatchGateway(ctx context.Context, gw string, from Resume) <-chan *GatewayUpdate {
	ch := make(chan *GatewayUpdate, gatewayStreamBuffer)
	err := r.do(ctx, func(s *state) { s.attachGateway(ctx, gw, from, ch) })
	if err != nil {
		close(ch)
		return ch
	}
	context.AfterFunc(ctx, func() {
		r.do(context.Background(), func(s *state) { s.detachGateway(gw, ch) })
	})
	return ch
}

// Resume is where a gateway's stream starts from.
type Resume struct {
	Revision int64             // the last revision the agent received (0: none)
	RunnerID string            // the runner that issued it
	Digests  []*v1.RouteDigest // what the agent holds, per network
	NoScopes bool              // the agent takes no Keep scopes: send a snapshot rather than a partial one
}

// EndGatewayStreams closes every gateway stream, and any opened after it,
// at once: a controller stopping ends its route streams rather than waiting
// for them (they never end on their own); the agents resume elsewhere or
// after the restart.
func (r *Runner) EndGatewayStreams(ctx context.Context) error {
	r.streamsEnded.Store(true)
	return r.do(ctx, func(s *state) {
		s.gwEnded = true
		for gw, g := range s.gws {
			if g.ch != nil {
				s.detachGateway(gw, g.ch)
			}
		}
	})
}

// GatewayStreamsEnded reports whether EndGatewayStreams was called.
func (r *Runner) GatewayStreamsEnded() bool { return r.streamsEnded.Load() }

// attachGateway makes ch gw's stream and sends it its first update.
func (s *state) attachGateway(ctx context.Context, gw string, from Resume, ch chan *GatewayUpdate) {
	if s.gwEnded {
		close(ch)
		return
	}
	g := s.gws[gw]
	if g == nil {
		g = &gwSession{gateway: gw, nets: map[string]int64{}}
		s.gws[gw] = g
	}
	if g.ch != nil {
		s.detachGateway(gw, g.ch) // a newer stream for the same gateway wins
	}
	first, nets, logged := s.firstUpdate(g, from, 0)
	rev := s.nextRev()
	first.Revision = rev
	for n := range g.nets {
		if !nets[n] {
			delete(g.nets, n)
		}
	}
	for n := range nets {
		if !logged[n] {
			g.nets[n] = rev
		}
		s.gnets[n].followers[g] = struct{}{}
	}
	g.ch, g.ctx = ch, ctx
	ch <- &first // the channel is new and has room
}

// firstUpdate returns the first update of a stream of g from the resume
// point, at revision rev, the networks it covers and those of them resumed
// from their logs. It changes no session.
func (s *state) firstUpdate(g *gwSession, from Resume, rev int64) (first GatewayUpdate, nets, logged map[string]bool) {
	fromRev, runnerID, digests := from.Revision, from.RunnerID, from.Digests
	held := map[string]*v1.RouteDigest{}
	for _, d := range digests {
		held[d.GetNetwork()] = d
	}
	same := runnerID == s.r.id && fromRev > 0 && fromRev <= s.rev
	first = GatewayUpdate{Snapshot: true, Revision: rev}
	nets = s.gatewayNets(g.gateway)
	logged = map[string]bool{} // resumed from the log: followed since before
	for n := range nets {
		ns := s.netState(n)
		if since, ok := g.nets[n]; same && ok && since <= fromRev {
			if put, del, ok := ns.since(fromRev); ok {
				first.Keep = append(first.Keep, Scope{Network: n})
				first.Put, first.Delete = append(first.Put, put...), append(first.Delete, del...)
				logged[n] = true
				continue
			}
		}
		if d := held[n]; d != nil && routedigest.Valid(len(d.GetBuckets())) {
			keep, put := ns.diffDigest(d)
			if keep.Network != "" {
				first.Keep = append(first.Keep, keep)
			}
			first.Put = append(first.Put, put...)
			continue
		}
		first.Put = append(first.Put, ns.all()...)
	}
	left := false
	for n := range g.nets {
		if !nets[n] {
			left = true
		}
	}
	switch {
	case !left && len(logged) == len(nets) && len(logged) > 0:
		// Every network resumed from its log: plain changes.
		first.Snapshot, first.Keep = false, nil
	case from.NoScopes && len(first.Keep) > 0:
		first.Keep, first.Put, first.Delete, logged = nil, nil, nil, nil
		for n := range nets {
			first.Put = append(first.Put, s.gnets[n].all()...)
		}
	}
	return first, nets, logged
}

// FirstUpdateSize returns how many routes (put and deleted) the first
// update of a stream of gw from the resume point would carry now: what the
// transport admits the stream on, before it attaches it (a refused stream
// then leaves the gateway's resume point as it was).
func (r *Runner) FirstUpdateSize(ctx context.Context, gw string, from Resume) (int, error) {
	var n int
	err := r.do(ctx, func(s *state) {
		g := s.gws[gw]
		if g == nil {
			g = &gwSession{gateway: gw, nets: map[string]int64{}}
		}
		first, _, _ := s.firstUpdate(g, from, s.rev)
		n = len(first.Put) + len(first.Delete)
	})
	return n, err
}

// diffDigest compares what the agent holds (d) with the network: keep is
// the scope whose routes match (empty Network: none), put the routes of the
// buckets that differ.
func (ns *netState) diffDigest(d *v1.RouteDigest) (keep Scope, put []*v1.Route) {
	n := len(d.GetBuckets())
	mine := ns.digest(n)
	if mine.Count == int(d.GetCount()) && equalBuckets(mine.Buckets, d.GetBuckets()) {
		return Scope{Network: ns.name}, nil
	}
	differ := map[int]bool{}
	keep = Scope{Network: ns.name, BucketCount: n}
	for i, b := range d.GetBuckets() {
		if mine.Buckets[i] == b {
			keep.Buckets = append(keep.Buckets, i)
		} else {
			differ[i] = true
		}
	}
	for k, e := range ns.sent {
		if differ[routedigest.Bucket(k.Prefix.String(), k.RD.String(), n)] {
			put = append(put, e.r)
		}
	}
	if len(keep.Buckets) == 0 {
		keep = Scope{}
	}
	return keep, put
}

func equalBuckets(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// detachGateway closes ch if it is still gw's stream. The session keeps the
// networks it follows and since when, for a resume.
func (s *state) detachGateway(gw string, ch chan *GatewayUpdate) {
	g := s.gws[gw]
	if g == nil || g.ch != ch {
		return
	}
	close(ch)
	g.ch, g.ctx = nil, nil
	for n := range g.nets {
		if ns := s.gnets[n]; ns != nil {
			delete(ns.followers, g)
		}
	}
}

// publishGateways records what changed in every followed network (from the
// table's deltas, or recomputed when full is set) at one new revision, and
// sends each attached gateway the changes of its networks and of its
// membership (networks joined get all their routes, networks left the
// deletion of theirs).
func (s *state) publishGateways(full bool, since time.Time) {
	var rev int64
	pending := map[*gwSession]*GatewayUpdate{}
	pend := func(g *gwSession) *GatewayUpdate {
		u := pending[g]
		if u == nil {
			u = &GatewayUpdate{}
			pending[g] = u
		}
		return u
	}
	for n, ns := range s.gnets {
		put, del, sent := s.gatewayFollow(n, ns.routes, full)
		ns.routes = sent
		if len(put)+len(del) == 0 {
			continue
		}
		if rev == 0 {
			rev = s.nextRev()
		}
		aput, adel := ns.change(put, del, rev)
		for g := range ns.followers {
			u := pend(g)
			u.Put, u.Delete = append(u.Put, aput...), append(u.Delete, adel...)
			u.Since = since
		}
	}
	if full {
		for gw := range s.gws {
			s.gwDirty[gw] = true
		}
	}
	for gw := range s.gwDirty {
		g := s.gws[gw]
		if g == nil || g.ch == nil {
			continue // an attachment computes its networks
		}
		nets := s.gatewayNets(gw)
		for n := range g.nets {
			if nets[n] {
				continue
			}
			// Left: drop its puts of n, delete what n has (deletes of this
			// revision are already there).
			ns := s.gnets[n]
			u := pend(g)
			u.Put = dropNetwork(u.Put, n)
			for k := range ns.sent {
				u.Delete = append(u.Delete, deleteOf(n, k))
			}
			delete(ns.followers, g)
			delete(g.nets, n)
		}
		for n := range nets {
			if _, ok := g.nets[n]; ok {
				continue
			}
			if rev == 0 {
				rev = s.nextRev()
			}
			ns := s.netState(n)
			u := pend(g)
			u.Put = append(u.Put, ns.all()...)
			u.Since = time.Time{} // a network's whole routes: not a change's delay
			ns.followers[g] = struct{}{}
			g.nets[n] = rev
		}
	}
	clear(s.gwDirty)
	for g, u := range pending {
		if len(u.Put)+len(u.Delete) == 0 {
			continue
		}
		if g.ctx.Err() != nil {
			// Ended, and its detachment is on its way: send it nothing.
			s.detachGateway(g.gateway, g.ch)
			continue
		}
		u.Revision = rev
		select {
		case g.ch <- u:
		default:
			s.r.log.Warn("gateway route stream fell behind; closing it (the agent resumes)", logkey.Gateway, g.gateway)
			s.detachGateway(g.gateway, g.ch)
		}
	}
}

func dropNetwork(rs []*v1.Route, n string) []*v1.Route {
	out := rs[:0]
	for _, r := range rs {
		if r.GetNetwork() != n {
			out = append(out, r)
		}
	}
	return out
}

// apiRoute converts a network route as the gateways get it.
func APIRoute(network string, r NetRoute) *v1.Route {
	out := &v1.Route{Network: network, Prefix: r.Prefix.String(), RouteDistinguisher: r.RD.String(), Label: r.Label,
		NextHop: r.NextHop.String(), Endpoint: r.Endpoint}
	for _, t := range r.RouteTargets {
		out.RouteTargets = append(out.RouteTargets, t.String())
	}
	for _, e := range r.Encaps {
		out.Encapsulations = append(out.Encapsulations, e.API())
	}
	switch r.Origin {
	case Local:
		out.Origin = v1.RouteOrigin_ROUTE_ORIGIN_LOCAL
	case Imported:
		out.Origin = v1.RouteOrigin_ROUTE_ORIGIN_IMPORTED
		out.Peer = r.Peer.String()
	}
	return out
}
