package gobgp_test

import (
	"net/netip"

	"github.com/iotfabric/iotfabric/pkg/bgp"
)

// generateRoutes makes n VPNv4 /32 routes of network 1 on gateway
// 192.0.2.10, labels from 16 upward, as the controller would for n endpoints.
func generateRoutes(n int) []bgp.Route {
	rts := []bgp.RouteTarget{bgp.AutoRouteTarget(asn, 1)}
	encaps := []bgp.Encap{bgp.EncapMPLSoUDP}
	rd := bgp.RD{Addr: netip.MustParseAddr("192.0.2.10"), Index: 1}
	out := make([]bgp.Route, n)
	for i := range n {
		a := netip.AddrFrom4([4]byte{10, byte(64 + i>>16), byte(i >> 8), byte(i)})
		out[i] = bgp.Route{
			Prefix: netip.PrefixFrom(a, 32), RD: rd, Label: bgp.MinLabel + uint32(i),
			NextHop: rd.Addr, RouteTargets: rts, Encaps: encaps,
		}
	}
	return out
}
