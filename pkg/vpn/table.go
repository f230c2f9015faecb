package vpn

import (
	"log/slog"
	"net/netip"
	"slices"
	"sort"

	"github.com/iotfabric/iotfabric/internal/mapshrink"
	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/model"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Origin tells where a route of a network comes from.
type Origin uint8

const (
	Local    Origin = iota + 1 // one of the network's endpoints
	Imported                   // received from a BGP peer
)

// NetRoute is a route of a network.
type NetRoute struct {
	bgp.Route
	Origin   Origin
	Endpoint string     // for Local routes
	Peer     netip.Addr // for Imported routes
}

type network struct {
	name    string
	id      uint32
	export  []bgp.RouteTarget // automatic first, then the user's
	imports []bgp.RouteTarget // automatic first, then the user's
	encaps  []bgp.Encap
}

type gateway struct {
	underlay netip.Addr
	encaps   []bgp.Encap
}

// received is a route received from a peer, without its key (the map's):
// what a received route costs the table per route matters at 100,000s.
// The route targets and encapsulations are the speaker's slices, shared.
type received struct {
	nextHop netip.Addr
	peer    netip.Addr
	rts     []bgp.RouteTarget
	encaps  []bgp.Encap
	label   uint32
}

func newReceived(ev bgp.RouteEvent) received {
	r := ev.Route
	return received{nextHop: r.NextHop, peer: ev.Peer, rts: r.RouteTargets, encaps: r.Encaps, label: r.Label}
}

// route rebuilds the route of key k.
func (rv received) route(k bgp.RouteKey) bgp.Route {
	return bgp.Route{Prefix: k.Prefix, RD: k.RD, Label: rv.label, NextHop: rv.nextHop, RouteTargets: rv.rts, Encaps: rv.encaps}
}

// imported reports whether a network importing rts imports it.
func (rv received) imported(rts []bgp.RouteTarget) bool {
	for _, t := range rv.rts {
		if slices.Contains(rts, t) {
			return true
		}
	}
	return false
}

// Table is the route state. It is not safe for concurrent use.
type Table struct {
	asn     uint32
	log     *slog.Logger
	nets    map[string]*network
	gws     map[string]*gateway
	eps     map[string]*v1.Endpoint
	byNet   map[string]map[string]bool // network -> endpoint ids
	byGw    map[string]map[string]bool // gateway -> endpoint ids
	local   map[string][]bgp.Route     // endpoint id -> its routes as announced
	recv    map[bgp.RouteKey]received
	dirty   map[string]bool            // endpoints whose routes must be recomputed
	touched map[string]bool            // networks whose route set may have changed
	recvOld map[bgp.RouteKey]*received // received routes changed since the last Flush: their state then (nil: none)
	epNet   map[string]string          // endpoint id -> the network of its routes in local
	full    map[string]bool            // networks whose every route may have changed
	deltas  map[string]NetDelta        // per network, what the last Flush changed
	nLocal  map[string]int             // per network, its endpoints' routes
	nImport map[string]int             // per network, the received routes it imports
	// notAdv says, per endpoint, why its routes are not advertised (no
	// route could be made, or the speaker refused them).
	notAdv map[string]string
	pages  *routePages // a paged listing's sorted routes (page.go); dropped by Flush
	// recvPeak is the most entries recv held since it was last built: a Go
	// map keeps the room of its peak after deletes, so a flood of received
	// routes, once withdrawn, would keep megabytes; flushReceived builds
	// recv again when it falls under a quarter of that (mapshrink.Shrink).
	recvPeak int
}

// NetDelta is what a Flush changed in a network's routes: its endpoints'
// routes, and the received routes it imports. With Full set, anything in the
// network may have changed (its route targets, the network itself):
// recompute it.
type NetDelta struct {
	Full bool
	Put  []NetRoute
	Del  []NetRoute // only the key and Origin are meaningful
	// Was holds the earlier versions of the routes Put replaced: with Put
	// and Del, what the network held before the Flush.
	Was []NetRoute
}

// NewTable returns an empty table; asn forms the automatic route targets.
func NewTable(asn uint32, log *slog.Logger) *Table {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Table{asn: asn, log: log, nets: map[string]*network{}, gws: map[string]*gateway{}, eps: map[string]*v1.Endpoint{},
		byNet: map[string]map[string]bool{}, byGw: map[string]map[string]bool{}, local: map[string][]bgp.Route{},
		recv: map[bgp.RouteKey]received{}, recvOld: map[bgp.RouteKey]*received{}, dirty: map[string]bool{}, touched: map[string]bool{},
		epNet: map[string]string{}, full: map[string]bool{}, nLocal: map[string]int{}, nImport: map[string]int{}, notAdv: map[string]string{}}
}

func encapsOf(es []v1.Encapsulation) []bgp.Encap {
	var out []bgp.Encap
	for _, e := range es {
		if x := encap.FromAPI(e); x != encap.Unknown {
			out = append(out, x)
		}
	}
	return out
}

func (t *Table) rts(auto bgp.RouteTarget, user []string) []bgp.RouteTarget {
	out := []bgp.RouteTarget{auto}
	for _, s := range user {
		rt, err := model.ParseRouteTarget(s)
		if err != nil {
			t.log.Warn("ignoring a stored route target", logkey.RouteTarget, s, logkey.Err, err)
			continue
		}
		if !slices.Contains(out, rt) {
			out = append(out, rt)
		}
	}
	return out
}

func (t *Table) markNet(name string) {
	t.touched[name] = true
	t.full[name] = true
	for id := range t.byNet[name] {
		t.dirty[id] = true
	}
}

// PutNetwork records a created or changed network.
func (t *Table) PutNetwork(n *v1.VirtualNetwork) {
	auto := model.AutoRouteTarget(t.asn, n.Id)
	t.nets[n.Name] = &network{name: n.Name, id: n.Id, export: t.rts(auto, n.ExportRouteTargets), imports: t.rts(auto, n.ImportRouteTargets), encaps: encapsOf(n.Encapsulations)}
	t.markNet(n.Name)
}

// DeleteNetwork forgets a network.
func (t *Table) DeleteNetwork(name string) {
	t.markNet(name)
	delete(t.nets, name)
}

// PutGateway records a created or changed gateway.
func (t *Table) PutGateway(g *v1.Gateway) {
	a, _ := netip.ParseAddr(g.UnderlayAddress)
	t.gws[g.Name] = &gateway{underlay: a, encaps: encapsOf(g.Encapsulations)}
	for id := range t.byGw[g.Name] {
		t.dirty[id] = true
	}
}

// DeleteGateway forgets a gateway.
func (t *Table) DeleteGateway(name string) {
	delete(t.gws, name)
	for id := range t.byGw[name] {
		t.dirty[id] = true
	}
}

func addIdx(m map[string]map[string]bool, k, id string) {
	if m[k] == nil {
		m[k] = map[string]bool{}
	}
	m[k][id] = true
}

func delIdx(m map[string]map[string]bool, k, id string) {
	delete(m[k], id)
	if len(m[k]) == 0 {
		delete(m, k)
	}
}

// PutEndpoint records a created or changed endpoint.
func (t *Table) PutEndpoint(e *v1.Endpoint) {
	if old, ok := t.eps[e.Id]; ok {
		delIdx(t.byNet, old.Network, e.Id)
		delIdx(t.byGw, old.Gateway, e.Id)
		t.touched[old.Network] = true
	}
	t.eps[e.Id] = e
	addIdx(t.byNet, e.Network, e.Id)
	addIdx(t.byGw, e.Gateway, e.Id)
	t.dirty[e.Id] = true
	t.touched[e.Network] = true
}

// DeleteEndpoint forgets an endpoint.
func (t *Table) DeleteEndpoint(id string) {
	if old, ok := t.eps[id]; ok {
		delIdx(t.byNet, old.Network, id)
		delIdx(t.byGw, old.Gateway, id)
		t.touched[old.Network] = true
	}
	delete(t.eps, id)
	t.dirty[id] = true
}

// routesOf computes an endpoint's routes from the current state.
// A route that cannot be made is recorded in notAdv (and logged unless
// prev, the reason known before, says the same).
func (t *Table) routesOf(e *v1.Endpoint, prev string) []bgp.Route {
	n, g := t.nets[e.Network], t.gws[e.Gateway]
	if n == nil || g == nil || e.Label == 0 {
		return nil
	}
	var addrs []netip.Addr
	for _, s := range e.Addresses {
		if a, err := netip.ParseAddr(s); err == nil {
			addrs = append(addrs, a)
		}
	}
	rs, err := bgp.EndpointRoutes(bgp.Endpoint{Addresses: addrs, Underlay: g.underlay, NetworkID: uint16(n.id),
		ExportRTs: n.export, Label: e.Label, NetworkEncaps: n.encaps, GatewayEncaps: g.encaps})
	if err != nil {
		why := "not advertised: " + err.Error()
		if prev != why {
			t.log.Warn("endpoint not advertised", logkey.Endpoint, e.Id, logkey.Network, e.Network, logkey.Gateway, e.Gateway, logkey.Err, err)
		}
		t.notAdv[e.Id] = why
		return nil
	}
	return rs
}

// Flush recomputes the routes of every endpoint changed since the last Flush
// and returns what to announce and withdraw, and the networks whose route set
// may have changed.
func (t *Table) Flush() (announce []bgp.Route, withdraw []bgp.RouteKey, nets []string) {
	t.pages = nil
	deltas := map[string]NetDelta{}
	for id := range t.dirty {
		// The old routes are of the network they were computed for, the
		// new ones of the endpoint's network now (the two differ when the
		// endpoint moved, or was deleted and made again in another).
		oldNet, newNet := t.epNet[id], ""
		old := t.local[id]
		var cur []bgp.Route
		prevReason, hadReason := t.notAdv[id]
		delete(t.notAdv, id)
		if e, ok := t.eps[id]; ok {
			cur, newNet = t.routesOf(e, prevReason), e.Network
		}
		put, del := diff(endpointRoutes{id, old}, endpointRoutes{id, cur})
		for _, rt := range put {
			announce = append(announce, rt.Route)
		}
		for _, rt := range del {
			withdraw = append(withdraw, rt.Key())
		}
		if len(del) > 0 && oldNet != "" {
			d := deltas[oldNet]
			d.Del = append(d.Del, del...)
			deltas[oldNet] = d
			t.touched[oldNet] = true // e.g. its gateway changed
		}
		if len(put) > 0 && newNet != "" {
			d := deltas[newNet]
			d.Put = append(d.Put, put...)
			if newNet == oldNet {
				for _, rt := range put {
					if o, ok := (endpointRoutes{id, old}).get(rt.Key()); ok {
						d.Was = append(d.Was, o)
					}
				}
			}
			deltas[newNet] = d
			t.touched[newNet] = true
		}
		if oldNet != "" {
			t.nLocal[oldNet] -= len(old)
		}
		if len(cur) > 0 {
			t.nLocal[newNet] += len(cur)
		}
		if _, now := t.notAdv[id]; !now && hadReason && len(cur) > 0 && len(put)+len(del) == 0 {
			t.notAdv[id] = prevReason // the same routes the speaker refused
		}
		if len(cur) == 0 {
			delete(t.local, id)
			delete(t.epNet, id)
		} else {
			t.local[id] = cur
			t.epNet[id] = newNet
		}
	}
	clear(t.dirty)
	t.flushReceived(deltas)
	for n := range t.touched {
		nets = append(nets, n)
	}
	for n := range t.full {
		deltas[n] = NetDelta{Full: true}
		t.countImported(n)
	}
	sort.Strings(nets)
	clear(t.touched)
	clear(t.full)
	t.deltas = deltas
	return announce, withdraw, nets
}

// Deltas returns what the last Flush changed, per network.
func (t *Table) Deltas() map[string]NetDelta { return t.deltas }

// Announced returns every local route.
func (t *Table) Announced() []bgp.Route {
	var out []bgp.Route
	for _, rs := range t.local {
		out = append(out, rs...)
	}
	return out
}

// Received applies routes received from peers.
func (t *Table) Received(evs []bgp.RouteEvent) {
	for _, ev := range evs {
		k := ev.Route.Key()
		if _, seen := t.recvOld[k]; !seen {
			var was *received
			if rv, ok := t.recv[k]; ok {
				was = &rv
			}
			t.recvOld[k] = was
		}
		if ev.Withdraw {
			delete(t.recv, k)
		} else {
			t.recv[k] = newReceived(ev)
		}
	}
	t.recvPeak = max(t.recvPeak, len(t.recv))
}

// flushReceived adds to deltas, for every network, the received routes it
// imports that changed since the last Flush: put when it imports the route
// now, deleted when it imported it then and no longer does.
func (t *Table) flushReceived(deltas map[string]NetDelta) {
	if len(t.recvOld) == 0 {
		return
	}
	for name, n := range t.nets {
		d, changed := deltas[name], false
		for k, was := range t.recvOld {
			cur, ok := t.recv[k]
			wasIn := was != nil && was.imported(n.imports)
			if ok && cur.imported(n.imports) {
				d.Put = append(d.Put, NetRoute{Route: cur.route(k), Origin: Imported, Peer: cur.peer})
				changed = true
				if !wasIn {
					t.nImport[name]++
				} else {
					d.Was = append(d.Was, NetRoute{Route: was.route(k), Origin: Imported, Peer: was.peer})
				}
			} else if wasIn {
				d.Del = append(d.Del, NetRoute{Route: was.route(k), Origin: Imported, Peer: was.peer})
				changed = true
				t.nImport[name]--
			}
		}
		if changed {
			deltas[name] = d
			t.touched[name] = true
		}
	}
	if len(t.recvOld) >= mapshrink.Floor {
		// a flood's changes: let the room go with them
		t.recvOld = map[bgp.RouteKey]*received{}
	} else {
		clear(t.recvOld)
	}
	t.recv, t.recvPeak = mapshrink.Shrink(t.recv, t.recvPeak)
}

// countImported counts again the received routes network n imports (its
// import route targets changed, or it was made or deleted).
func (t *Table) countImported(n string) {
	nw := t.nets[n]
	if nw == nil {
		delete(t.nImport, n)
		delete(t.nLocal, n)
		return
	}
	c := 0
	for _, rv := range t.recv {
		if rv.imported(nw.imports) {
			c++
		}
	}
	t.nImport[n] = c
}

// RouteCount returns the number of routes of a network (its endpoints'
// and the received routes it imports).
func (t *Table) RouteCount(n string) int { return t.nLocal[n] + t.nImport[n] }

// ImportFilter returns every route target some network imports, sorted:
// what the speaker keeps of the routes peers send.
func (t *Table) ImportFilter() []bgp.RouteTarget {
	seen := map[bgp.RouteTarget]bool{}
	var out []bgp.RouteTarget
	for _, n := range t.nets {
		for _, rt := range n.imports {
			if !seen[rt] {
				seen[rt] = true
				out = append(out, rt)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ASN != out[j].ASN {
			return out[i].ASN < out[j].ASN
		}
		return out[i].Value < out[j].Value
	})
	return out
}

// Refused records routes the speaker refused: the endpoint whose current
// route it is gets the reason (a refusal of an older version is ignored).
func (t *Table) Refused(rs []RefusedRoute) {
	byKey := make(map[bgp.RouteKey]RefusedRoute, len(rs))
	for _, r := range rs {
		byKey[r.Route.Key()] = r
	}
	for id, routes := range t.local {
		for _, rt := range routes {
			if r, ok := byKey[rt.Key()]; ok && r.Route.Equal(rt) {
				t.notAdv[id] = r.Reason
				break
			}
		}
	}
}

// RefusedRoute is a route the speaker refused, and why.
type RefusedRoute struct {
	Route  bgp.Route
	Reason string
}

// NotAdvertised returns why an endpoint's routes are not advertised ("" if
// nothing is known against them).
func (t *Table) NotAdvertised(id string) string { return t.notAdv[id] }

// Routes returns the routes of a network: its endpoints' routes and the
// received routes it imports, sorted by prefix then RD.
func (t *Table) Routes(network string) []NetRoute {
	out := t.routes(network)
	sortRoutes(out)
	return out
}

// routes is Routes unsorted.
func (t *Table) routes(network string) []NetRoute {
	n := t.nets[network]
	if n == nil {
		return nil
	}
	var out []NetRoute
	for id := range t.byNet[network] {
		for _, r := range t.local[id] {
			out = append(out, NetRoute{Route: r, Origin: Local, Endpoint: id})
		}
	}
	for k, rv := range t.recv {
		if rv.imported(n.imports) {
			out = append(out, NetRoute{Route: rv.route(k), Origin: Imported, Peer: rv.peer})
		}
	}
	return out
}

func sortRoutes(rs []NetRoute) {
	sort.Slice(rs, func(i, j int) bool {
		a, b := rs[i].Prefix, rs[j].Prefix
		if a.Addr() != b.Addr() {
			return a.Addr().Less(b.Addr())
		}
		if a.Bits() != b.Bits() {
			return a.Bits() < b.Bits()
		}
		return rs[i].RD.String() < rs[j].RD.String()
	})
}

// HasNetwork reports whether the network is known.
func (t *Table) HasNetwork(name string) bool { return t.nets[name] != nil }
