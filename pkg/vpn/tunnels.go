package vpn

import (
	"context"
	"net/netip"
	"slices"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/encap"
)

// Tunnel is what a gateway needs toward one remote next hop of the routes
// it receives: the overlay tunnel its agent builds (one per remote gateway
// or edge router, pkg/overlay).
type Tunnel struct {
	Remote netip.Addr
	// RemoteGateway is the gateway whose endpoints the routes are ("" for
	// imported routes).
	RemoteGateway string
	// Peer is the BGP peer the imported routes came from (invalid for the
	// endpoints' routes).
	Peer netip.Addr
	// Encap is the first of the gateway's encapsulations that the routes
	// offer (encap.Unknown: none in common); Offered is every one they offer.
	Encap   bgp.Encap
	Offered []bgp.Encap
	// Routes through the tunnel, the distinct labels they carry, and their
	// networks (sorted).
	Routes, Labels int
	Networks       []string
}

// GatewayTunnels returns the tunnels of gateway gw, by remote address: the
// routes of the networks it has endpoints in, as its route stream sends them
// (a network over the route limit: its frozen set), without its own (next
// hop its underlay address), grouped by next hop. ok is false when the
// table does not know the gateway.
func (r *Runner) GatewayTunnels(ctx context.Context, gw string) (tunnels []Tunnel, ok bool, err error) {
	err = r.do(ctx, func(s *state) {
		g := s.tbl.gws[gw]
		if ok = g != nil; !ok {
			return
		}
		tunnels = s.gatewayTunnels(gw, g)
	})
	return tunnels, ok, err
}

func (s *state) gatewayTunnels(gw string, g *gateway) []Tunnel {
	type acc struct {
		t      Tunnel
		labels map[uint32]bool
		nets   map[string]bool
	}
	by := map[netip.Addr]*acc{}
	for n := range s.gatewayNets(gw) {
		routes := s.gatewayRoutes
		if ns := s.gnets[n]; ns != nil { // followed: what the streams were sent
			routes = func(string) routeMap { return ns.routes }
		}
		for _, rt := range routes(n) {
			if !rt.NextHop.IsValid() || rt.NextHop == g.underlay {
				continue
			}
			a := by[rt.NextHop]
			if a == nil {
				a = &acc{t: Tunnel{Remote: rt.NextHop}, labels: map[uint32]bool{}, nets: map[string]bool{}}
				by[rt.NextHop] = a
			}
			a.t.Routes++
			a.labels[rt.Label] = true
			a.nets[n] = true
			switch rt.Origin {
			case Local:
				if e := s.tbl.eps[rt.Endpoint]; e != nil && a.t.RemoteGateway == "" {
					a.t.RemoteGateway = e.Gateway
				}
			case Imported:
				if !a.t.Peer.IsValid() {
					a.t.Peer = rt.Peer
				}
			}
			for _, e := range rt.Encaps {
				if !slices.Contains(a.t.Offered, e) {
					a.t.Offered = append(a.t.Offered, e)
				}
			}
		}
	}
	out := make([]Tunnel, 0, len(by))
	for _, a := range by {
		t := a.t
		t.Labels = len(a.labels)
		for n := range a.nets {
			t.Networks = append(t.Networks, n)
		}
		slices.Sort(t.Networks)
		slices.Sort(t.Offered)
		t.Encap = encap.Unknown
		for _, e := range g.encaps {
			if slices.Contains(t.Offered, e) {
				t.Encap = e
				break
			}
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b Tunnel) int { return a.Remote.Compare(b.Remote) })
	return out
}
