package vpn

import (
	"github.com/iotfabric/iotfabric/pkg/bgp"
)

// Equal reports whether two routes of a network say the same thing: the
// same BGP route (bgp.Route.Equal: prefix, RD, label, next hop, and route
// targets and encapsulations as sets), the same origin, and the same
// endpoint or peer behind it. It is the one comparison every route diff of
// this package uses (speaker updates, route watches, gateway streams).
func (r NetRoute) Equal(o NetRoute) bool {
	return r.Origin == o.Origin && r.Endpoint == o.Endpoint && r.Peer == o.Peer && r.Route.Equal(o.Route)
}

// routeSet is a set of routes keyed by RD and prefix.
type routeSet interface {
	get(k bgp.RouteKey) (NetRoute, bool)
	each(f func(NetRoute))
}

// routeMap is a routeSet for a whole network.
type routeMap map[bgp.RouteKey]NetRoute

func (m routeMap) get(k bgp.RouteKey) (NetRoute, bool) { rt, ok := m[k]; return rt, ok }

func (m routeMap) each(f func(NetRoute)) {
	for _, rt := range m {
		f(rt)
	}
}

// endpointRoutes is the routeSet of one endpoint (one route per address, so
// a linear search is cheapest).
type endpointRoutes struct {
	id string
	rs []bgp.Route
}

func (e endpointRoutes) get(k bgp.RouteKey) (NetRoute, bool) {
	for _, r := range e.rs {
		if r.Key() == k {
			return NetRoute{Route: r, Origin: Local, Endpoint: e.id}, true
		}
	}
	return NetRoute{}, false
}

func (e endpointRoutes) each(f func(NetRoute)) {
	for _, r := range e.rs {
		f(NetRoute{Route: r, Origin: Local, Endpoint: e.id})
	}
}

// diff returns what turns old into cur: put holds the routes of cur that old
// lacks or holds differently (NetRoute.Equal), del the routes of old whose
// key cur lacks.
func diff[S routeSet](old, cur S) (put, del []NetRoute) {
	cur.each(func(rt NetRoute) {
		if o, ok := old.get(rt.Key()); !ok || !o.Equal(rt) {
			put = append(put, rt)
		}
	})
	old.each(func(rt NetRoute) {
		if _, ok := cur.get(rt.Key()); !ok {
			del = append(del, rt)
		}
	})
	return put, del
}

// follow brings sent (what a watcher of network n was sent) up to date with
// the table and returns the changes to send. A network's delta from the last
// Flush is applied when there is one and it is not Full; the network is
// recomputed and diffed when full is set, the delta says so, or sent is nil
// (the watcher just joined the network).
func (t *Table) follow(n string, sent routeMap, full bool) (put, del []NetRoute, next routeMap) {
	d, changed := t.deltas[n]
	if sent != nil && !full && !changed {
		return nil, nil, sent
	}
	if sent == nil || full || d.Full {
		cur := t.routeMap(n)
		if sent == nil {
			sent = routeMap{}
		}
		put, del = diff(sent, cur)
		return put, del, cur
	}
	// Only the keys the delta names can have changed: diff them alone.
	old, now := routeMap{}, routeMap{}
	for _, rt := range d.Put {
		k := rt.Key()
		now[k] = rt
		if o, ok := sent[k]; ok {
			old[k] = o
		}
	}
	for _, rt := range d.Del {
		k := rt.Key()
		if _, ok := now[k]; ok {
			continue // another route has the key now
		}
		if o, ok := sent[k]; ok && o.Origin == rt.Origin {
			old[k] = o
		}
	}
	put, del = diff(old, now)
	for _, rt := range put {
		sent[rt.Key()] = rt
	}
	for _, rt := range del {
		delete(sent, rt.Key())
	}
	return put, del, sent
}

// routeMap returns the routes of network n by key.
func (t *Table) routeMap(n string) routeMap {
	rs := t.routes(n)
	out := make(routeMap, len(rs))
	for _, rt := range rs {
		out[rt.Key()] = rt
	}
	return out
}
