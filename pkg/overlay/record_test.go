package overlay

import (
	"net/netip"
	"testing"

	"github.com/iotfabric/iotfabric/pkg/overlay/internal/rtnl"
)

// TestRouteRecordRoundTrip: every kind of route the manager records (inet
// routes through a gateway, an interface or a nexthop object, MPLS label
// routes, IPv4 and IPv6, an IPv4-mapped address, a prefix not masked) comes
// back from the record exactly as it went in, under its own key only.
func TestRouteRecordRoundTrip(t *testing.T) {
	routes := []rtnl.Route{
		{Family: rtnl.AFInet, Table: 7001, Dst: netip.MustParsePrefix("10.1.0.5/32"), Gw: netip.MustParseAddr("192.0.2.2"), Protocol: RouteProtocol, Type: rtnl.TypeUnicast},
		{Family: rtnl.AFInet, Table: 7001, Dst: netip.MustParsePrefix("10.1.0.0/24"), Oif: 7, Encap: 1002, Protocol: RouteProtocol, Scope: rtnl.ScopeLink, Type: rtnl.TypeUnicast},
		{Family: rtnl.AFInet, Table: 7002, Dst: netip.MustParsePrefix("10.1.0.5/32"), NhID: 1000042, Oif: 9, Encap: 77, EncapMore: true, Protocol: RouteProtocol, Type: rtnl.TypeUnicast},
		{Family: rtnl.AFInet6, Table: 7001, Dst: netip.MustParsePrefix("fd00::5/128"), Oif: 3, Encap: 99, Protocol: RouteProtocol, Type: rtnl.TypeUnicast},
		{Family: rtnl.AFInet6, Table: 7001, Dst: netip.MustParsePrefix("::ffff:10.1.0.5/128"), Gw: netip.MustParseAddr("::ffff:192.0.2.2"), Protocol: RouteProtocol},
		{Family: rtnl.AFInet, Table: 7001, Dst: netip.PrefixFrom(netip.MustParseAddr("10.1.0.7"), 24), Gw: netip.MustParseAddr("fe80::1"), Via: netip.MustParseAddr("192.0.2.9")},
		{Family: rtnl.AFMPLS, Label: 1002, Via: netip.MustParseAddr("10.1.0.5"), Oif: 4, Protocol: RouteProtocol, Type: rtnl.TypeUnicast},
		{Family: rtnl.AFMPLS, Label: 1003, Via: netip.MustParseAddr("fd00::5"), Oif: 4, Encap: 16},
		{Family: rtnl.AFInet, Table: 7001, Dst: netip.MustParsePrefix("0.0.0.0/0"), Oif: 2},
		{Family: rtnl.AFInet, Table: 7003, Dst: netip.MustParsePrefix("10.1.0.5/32"), Gw: netip.MustParseAddr("fe80::1"), Oif: 2},
		{Family: rtnl.AFInet, Table: 7003, Dst: netip.MustParsePrefix("10.1.0.6/32"), Via: netip.MustParseAddr("192.0.2.7"), Oif: 2},
	}
	rec := newRouteRecord()
	for _, r := range routes {
		rec.put(r)
	}
	if rec.len() != len(routes) {
		t.Fatalf("%d routes recorded, want %d", rec.len(), len(routes))
	}
	for _, r := range routes {
		if got, ok := rec.get(r.Key()); !ok || got != r {
			t.Errorf("recorded %v, got back %v (%v)", r, got, ok)
		}
	}
	n := 0
	for k, r := range rec.all() {
		if k != r.Key() {
			t.Errorf("route %v under key %v", r, k)
		}
		n++
	}
	if n != len(routes) {
		t.Errorf("all yields %d routes, want %d", n, len(routes))
	}
	if _, ok := rec.get(rtnl.RouteKey{Family: rtnl.AFInet, Table: 7001, Dst: netip.MustParsePrefix("10.1.0.5/31")}); ok {
		t.Error("a route found under another prefix length")
	}
	rec.del(routes[0].Key())
	if _, ok := rec.get(routes[0].Key()); ok || rec.len() != len(routes)-1 {
		t.Error("a deleted route is still recorded")
	}
}

// BenchmarkStateDigest: the Set shortcut's hash of a state of 100,000 routes.
func BenchmarkStateDigest(b *testing.B) {
	s := State{Underlay: netip.MustParseAddr("192.0.2.1"), Networks: []Network{{Name: "bench", Table: 7001}}}
	for i := range 100_000 {
		a := netip.AddrFrom4([4]byte{10, byte(100 + i>>16), byte(i >> 8), byte(i)})
		s.Networks[0].Routes = append(s.Networks[0].Routes, RemoteRoute{Prefix: netip.PrefixFrom(a, 32), Label: uint32(16 + i),
			RemoteUnderlay: netip.MustParseAddr("192.0.2.2"), Encaps: DefaultEncapPriority})
	}
	for b.Loop() {
		stateDigest(&s)
	}
}
