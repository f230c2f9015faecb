package gobgp

import (
	"net"
	"net/netip"
	"testing"

	gbgp "github.com/osrg/gobgp/v3/pkg/packet/bgp"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/validate"
)

// updateSize encodes the largest UPDATE an endpoint route with exportRTs user
// route targets can make (VPNv6 /128, 4-byte-ASN route targets, the automatic
// one, every encapsulation community, a global and link-local IPv6 next hop,
// and the attributes a route reflector adds) with GoBGP's encoder.
func rtBoundUpdateSize(t *testing.T, exportRTs int) (int, error) {
	t.Helper()
	r := bgp.Route{
		Prefix:  netip.MustParsePrefix("fd00:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"),
		RD:      bgp.RD{Addr: netip.MustParseAddr("192.0.2.1"), Index: 65535},
		Label:   bgp.MaxLabel,
		NextHop: netip.MustParseAddr("192.0.2.1"),
		Encaps:  []bgp.Encap{encap.MPLSoUDP, encap.MPLSoGRE, encap.VXLAN},
	}
	r.RouteTargets = append(r.RouteTargets, bgp.AutoRouteTarget(4200000000, 65535))
	for i := range exportRTs {
		r.RouteTargets = append(r.RouteTargets, bgp.RouteTarget{ASN: 4200000000, Value: uint32(i)})
	}
	nlri, err := nativeNLRI(r.Key(), r.Label)
	if err != nil {
		t.Fatal(err)
	}
	clusters := make([]string, 16)
	for i := range clusters {
		clusters[i] = netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}).String()
	}
	attrs := []gbgp.PathAttributeInterface{
		gbgp.NewPathAttributeOrigin(0),
		gbgp.NewPathAttributeAsPath([]gbgp.AsPathParamInterface{gbgp.NewAs4PathParam(gbgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{4200000000, 4200000001, 4200000002, 4200000003})}),
		gbgp.NewPathAttributeMultiExitDisc(1 << 31),
		gbgp.NewPathAttributeLocalPref(100),
		gbgp.NewPathAttributeOriginatorId("192.0.2.1"),
		gbgp.NewPathAttributeClusterList(clusters),
		gbgp.NewPathAttributeMpReachNLRI("2001:db8::1", []gbgp.AddrPrefixInterface{nlri}),
		gbgp.NewPathAttributeExtendedCommunities(extCommunities(r)),
	}
	mp := attrs[6].(*gbgp.PathAttributeMpReachNLRI)
	mp.LinkLocalNexthop = net.ParseIP("fe80::1")
	msg := gbgp.NewBGPUpdateMessage(nil, attrs, nil)
	b, err := msg.Serialize()
	return len(b), err
}

// TestMaxRouteFitsOneUpdate: with validate.MaxRouteTargets export route
// targets an endpoint's route still fits one 4096-byte BGP UPDATE, so that
// a route the API accepts can always be advertised.
func TestMaxRouteFitsOneUpdate(t *testing.T) {
	const maxUpdate = 4096
	n, err := rtBoundUpdateSize(t, validate.MaxRouteTargets)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("largest endpoint route with %d export route targets: %d bytes (limit %d)", validate.MaxRouteTargets, n, maxUpdate)
	if n > maxUpdate {
		t.Fatalf("%d bytes: validate.MaxRouteTargets is too high", n)
	}
	// The bound is real: twice as many do not fit.
	if n2, err := rtBoundUpdateSize(t, 2*validate.MaxRouteTargets); err == nil && n2 <= maxUpdate {
		t.Fatalf("%d route targets encode in %d bytes: the test does not measure what it should", 2*validate.MaxRouteTargets, n2)
	}
}
