package agent

import (
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/overlay"
)

// effectiveRoutes is the route set in force: the union of the controllers
// whose stream is live, or, while none is, the set last in force (nothing is
// flushed while the gateway is headless).
func effectiveRoutes(s *coreState) map[routeKey]*route {
	var lives []*sessionRoutes
	for _, addr := range slices.Sorted(maps.Keys(s.sessions)) {
		if sr := s.sessions[addr]; sr.live {
			lives = append(lives, sr)
		}
	}
	if len(lives) == 1 {
		// Shared: a session changes its map only while it is live, and then
		// the frozen set is not in use.
		s.frozen = lives[0].routes
		return s.frozen
	}
	live := false
	out := map[routeKey]*route{}
	for _, sr := range lives {
		live = true
		for k, r := range sr.routes {
			if _, ok := out[k]; !ok {
				out[k] = r
			}
		}
	}
	if !live {
		return s.frozen
	}
	s.frozen = out
	return out
}

// liveSessions returns the live sessions in the order effectiveRoutes
// takes them (by controller address).
func liveSessions(s *coreState) []*sessionRoutes {
	var lives []*sessionRoutes
	for _, addr := range slices.Sorted(maps.Keys(s.sessions)) {
		if sr := s.sessions[addr]; sr.live {
			lives = append(lives, sr)
		}
	}
	return lives
}

// inForce is the route effectiveRoutes puts under k: the first live
// session's that holds it.
func inForce(lives []*sessionRoutes, k routeKey) *route {
	for _, sr := range lives {
		if r, ok := sr.routes[k]; ok {
			return r
		}
	}
	return nil
}

// buildDesired is the whole desired data-plane state of the gateway: a table
// per network with local endpoints or remote routes, the attached endpoints
// (host-side veth, address, label), and the routes other gateways and edge
// routers advertise (own routes skipped). It is a pure function of its input.
func buildDesired(underlay netip.Addr, encaps []encap.Encap, tables map[string]uint32, eps map[string]*Endpoint, routes map[routeKey]*route) overlay.State {
	st := overlay.State{Underlay: underlay, EncapPriority: slices.Clone(encaps)}
	nets := map[string]*overlay.Network{}
	local := map[string]map[netip.Prefix]bool{}
	netOf := func(name string) *overlay.Network {
		if n, ok := nets[name]; ok {
			return n
		}
		t, ok := tables[name]
		if !ok {
			return nil
		}
		n := &overlay.Network{Name: name, Table: t}
		nets[name] = n
		return n
	}
	for _, id := range slices.Sorted(maps.Keys(eps)) {
		e := eps[id]
		if !e.Attached || len(e.Addresses) == 0 {
			continue
		}
		n := netOf(e.Network)
		if n == nil {
			continue
		}
		if local[e.Network] == nil {
			local[e.Network] = map[netip.Prefix]bool{}
		}
		for _, a := range e.Addresses {
			local[e.Network][netip.PrefixFrom(a, a.BitLen())] = true
		}
		// The data plane takes one address per endpoint interface: the IPv4
		// one when there is one.
		addr := e.Addresses[0]
		for _, a := range e.Addresses {
			if a.Is4() {
				addr = a
				break
			}
		}
		n.Endpoints = append(n.Endpoints, overlay.Endpoint{Interface: e.HostIf, Address: addr, Label: e.Label})
	}
	type cand struct {
		rd string
		r  overlay.RemoteRoute
	}
	chosen := map[string]map[netip.Prefix]cand{}
	for k, r := range routes {
		if !r.ok {
			continue
		}
		network, _, rd := k.parts()
		if r.nextHop() == underlay || local[network][r.prefix()] {
			continue // unusable, or own routes
		}
		if chosen[network] == nil {
			chosen[network] = map[netip.Prefix]cand{}
		}
		// One route per prefix: the lowest route distinguisher wins, so
		// every gateway picks the same one.
		if cur, ok := chosen[network][r.prefix()]; ok && strings.Compare(cur.rd, rd) <= 0 {
			continue
		}
		chosen[network][r.prefix()] = cand{rd: rd, r: r.remote()}
	}
	for network, byPfx := range chosen {
		n := netOf(network)
		if n == nil {
			continue
		}
		for _, p := range slices.SortedFunc(maps.Keys(byPfx), comparePrefix) {
			r := byPfx[p].r
			r.Encaps = slices.Clone(r.Encaps)
			n.Routes = append(n.Routes, r)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(nets)) {
		st.Networks = append(st.Networks, *nets[name])
	}
	return st
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
