package vpn

import (
	"fmt"
	"maps"
	"time"

	"github.com/iotfabric/iotfabric/pkg/logkey"
)

// The per-network route limit (Limits.MaxNetworkRoutes). A network whose
// route count (its endpoints' routes and the received routes it imports)
// passes the limit is frozen for its gateways: they keep exactly the set
// they were last sent — a consistent table, never one half programmed —
// and get no change of that network until it is back within the limit;
// then they get the difference to the whole current set at once. A gateway
// that joins a frozen network gets the frozen set (lastSent). Route watches
// (RouteService) and the BGP speaker are not limited: the operator sees
// every route. The network's status carries a RouteLimit condition, a
// gauge counts frozen networks, and an error is logged when a network
// freezes (at most once a minute per network while it stays over).

// Condition is a problem the route table reports on a network.
type Condition struct {
	Type    string
	Message string
}

// ConditionRouteLimit: the network has more routes than its gateways may
// follow; they are frozen.
const ConditionRouteLimit = "RouteLimitExceeded"

// capLogInterval is the least time between two log lines about one
// network's limit.
const capLogInterval = time.Minute

// frozenNet is a network over the limit: the set its gateways keep.
type frozenNet struct {
	routes     routeMap
	since      time.Time
	suppressed int // log lines not written since the last one
}

func (f *frozenNet) message(count, limit int) string {
	return fmt.Sprintf("the network has %d routes, more than the limit of %d its gateways may follow; they keep the %d routes they had when it passed the limit (since %s) until it is back within the limit",
		count, limit, len(f.routes), f.since.UTC().Format(time.RFC3339))
}

// checkCaps freezes the networks that passed the limit with the last Flush
// (deltas names the networks it touched) and thaws those back within it.
func (s *state) checkCaps(deltas map[string]NetDelta) {
	limit := s.r.limits.MaxNetworkRoutes
	for n, f := range s.frozen {
		if limit == 0 || !s.tbl.HasNetwork(n) || s.tbl.RouteCount(n) <= limit {
			delete(s.frozen, n)
			s.thawed[n] = true
			s.r.log.Info("network back within the route limit; its gateways follow it again", logkey.Network, n,
				logkey.Routes, s.tbl.RouteCount(n), logkey.Limit, limit, logkey.Took, time.Since(f.since).Round(time.Second))
		}
	}
	if limit == 0 {
		return
	}
	for n, d := range deltas {
		count := s.tbl.RouteCount(n)
		f := s.frozen[n]
		if count <= limit || !s.tbl.HasNetwork(n) {
			continue
		}
		if f == nil {
			f = &frozenNet{routes: s.lastSent(n, d), since: time.Now()}
			s.frozen[n] = f
			delete(s.thawed, n)
		}
		if last, ok := s.capLog[n]; ok && time.Since(last) < capLogInterval {
			f.suppressed++
			continue
		}
		s.capLog[n] = time.Now()
		s.r.log.Error("network over the route limit: its gateways keep the routes they had and get no changes of it",
			logkey.Network, n, logkey.Routes, count, logkey.Limit, limit, logkey.Suppressed, f.suppressed)
		f.suppressed = 0
	}
}

// lastSent is the network's routes before the Flush that passed the limit:
// what an attached gateway was last sent, else a route watch (all of them
// follow the same deltas), else the table now with the Flush's delta
// undone; empty when the delta cannot be undone (the network itself
// changed) or there was no earlier state (over the limit at start).
func (s *state) lastSent(n string, d NetDelta) routeMap {
	if ns := s.gnets[n]; ns != nil && len(ns.followers) > 0 {
		return maps.Clone(ns.routes)
	}
	if nw := s.nets[n]; nw != nil {
		return maps.Clone(nw.sent)
	}
	if d.Full {
		return routeMap{}
	}
	prev := s.tbl.routeMap(n)
	for _, rt := range d.Put {
		delete(prev, rt.Key())
	}
	for _, rt := range d.Del {
		prev[rt.Key()] = rt
	}
	for _, rt := range d.Was {
		prev[rt.Key()] = rt
	}
	return prev
}

// gatewayFollow is Table.follow for a gateway, under the limit: a frozen
// network yields its frozen set once (to a gateway that just joined it) and
// nothing after; a network just thawed is recomputed.
func (s *state) gatewayFollow(n string, sent routeMap, full bool) (put, del []NetRoute, next routeMap) {
	if f := s.frozen[n]; f != nil {
		if sent != nil {
			return nil, nil, sent
		}
		put, del = diff(routeMap{}, f.routes)
		return put, del, maps.Clone(f.routes)
	}
	return s.tbl.follow(n, sent, full || s.thawed[n])
}

// gatewayRoutes is Table.routeMap for a gateway: a frozen network's set.
func (s *state) gatewayRoutes(n string) routeMap {
	if f := s.frozen[n]; f != nil {
		return maps.Clone(f.routes)
	}
	return s.tbl.routeMap(n)
}
