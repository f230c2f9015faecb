package agent

import (
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"

	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// TestRouteKeyIsEncodingStart: a held route's key (the start of its
// encoding) is the key made from a received route's fields, empty ones
// included; a usable route gives back its prefix, IPv6 ones too; the route
// decodes back to the message it was made from.
func TestRouteKeyIsEncodingStart(t *testing.T) {
	for _, r := range []*v1.Route{
		heapRoute(7, 1002),
		{Network: "red", Prefix: "10.1.0.5/32", RouteDistinguisher: "192.0.2.9:1"},
		{Prefix: "10.1.0.5/32", RouteDistinguisher: "192.0.2.9:1", Label: 77, NextHop: "192.0.2.9"},
		{Network: "red", RouteDistinguisher: "192.0.2.9:1", Endpoint: "ep"},
		{Network: "red", Prefix: "fd00::5/128"},
		{Network: "red", Prefix: "fd00::/64", RouteDistinguisher: "192.0.2.9:1", NextHop: "192.0.2.9", Label: 100},
		{Network: "red", Prefix: "::ffff:10.1.0.5/128", RouteDistinguisher: "192.0.2.9:1", NextHop: "192.0.2.9", Label: 100},
		{Network: string(make([]byte, 300)), Prefix: "10.1.0.5/32", RouteDistinguisher: "rd", Peer: "p"},
		{},
	} {
		k, nr, err := newRoute(r)
		if err != nil {
			t.Fatal(err)
		}
		if k != keyOf(r) || nr.key() != k {
			t.Errorf("%v: key %q, keyOf %q", r, k, keyOf(r))
		}
		if n, p, rd := k.parts(); n != r.GetNetwork() || p != r.GetPrefix() || rd != r.GetRouteDistinguisher() {
			t.Errorf("%v: key parts %q %q %q", r, n, p, rd)
		}
		if p, err := netip.ParsePrefix(r.GetPrefix()); nr.ok && (err != nil || nr.prefix() != p || nr.pfx() != pfxOf(p) || nr.pfx().prefix() != p) {
			t.Errorf("%v: prefix %v (%v), pfx %v", r, nr.prefix(), err, nr.pfx())
		}
		if m, err := nr.msg(); err != nil || !proto.Equal(m, r) {
			t.Errorf("%v: decodes to %v (%v)", r, m, err)
		}
	}
}
