package gobgp

import (
	"net/netip"
	"testing"

	api "github.com/osrg/gobgp/v3/api"

	"github.com/iotfabric/iotfabric/pkg/bgp"
)

func sampleRoutes() []bgp.Route {
	u := netip.MustParseAddr("192.0.2.10")
	return []bgp.Route{
		{Prefix: netip.MustParsePrefix("10.1.0.5/32"), RD: bgp.RD{Addr: u, Index: 1}, Label: 1001, NextHop: u,
			RouteTargets: []bgp.RouteTarget{{ASN: 64512, Value: 8000001}}, Encaps: []bgp.Encap{bgp.EncapMPLSoUDP}},
		{Prefix: netip.MustParsePrefix("fd00:1::5/128"), RD: bgp.RD{Addr: u, Index: 65535}, Label: bgp.MaxLabel, NextHop: u,
			RouteTargets: []bgp.RouteTarget{{ASN: 4200000000, Value: 7}, {ASN: 1, Value: 2}},
			Encaps:       []bgp.Encap{bgp.EncapMPLSoUDP, bgp.EncapMPLSoGRE, bgp.EncapVXLAN}},
		{Prefix: netip.MustParsePrefix("10.2.0.0/16"), RD: bgp.RD{Addr: u, Index: 0}, Label: 16, NextHop: u},
		{Prefix: netip.MustParsePrefix("fd00:2::/64"), RD: bgp.RD{Addr: u, Index: 3}, Label: 17, NextHop: netip.MustParseAddr("fd00::10")},
	}
}

// TestWireRoundTrip: a route encoded for GoBGP decodes to the same route.
func TestWireRoundTrip(t *testing.T) {
	c := attrCache{}
	for _, r := range sampleRoutes() {
		p, err := c.apiPath(r)
		if err != nil {
			t.Fatalf("%v: %v", r, err)
		}
		got, err := routeFromAPI(p)
		if err != nil {
			t.Fatalf("%v: decode: %v", r, err)
		}
		if !got.Equal(r) {
			t.Errorf("round trip: %v -> %v", r, got)
		}
		w, err := apiWithdrawal(r.Key())
		if err != nil || !w.IsWithdraw {
			t.Fatalf("withdrawal of %s: %v", r.Key(), err)
		}
	}
	if _, err := c.apiPath(bgp.Route{}); err == nil {
		t.Error("empty route encoded")
	}
}

// TestMPLSoGREReceivedAs11: tunnel type 11 decodes as MPLSoGRE; 2 is what we send.
func TestMPLSoGREReceivedAs11(t *testing.T) {
	r := sampleRoutes()[0]
	r.Encaps = []bgp.Encap{bgp.EncapMPLSoGRE}
	p, err := attrCache{}.apiPath(r)
	if err != nil {
		t.Fatal(err)
	}
	ec := p.PattrsBinary[len(p.PattrsBinary)-1]
	// Last 8 bytes: the encapsulation community 03 0c 00 00 00 00 00 <type>.
	enc := ec[len(ec)-8:]
	if enc[0] != 0x03 || enc[1] != 0x0c || enc[7] != 2 {
		t.Fatalf("MPLSoGRE community % x, want 03 0c .. 02", enc)
	}
	enc[7] = 11
	got, err := routeFromAPI(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Encaps) != 1 || got.Encaps[0] != bgp.EncapMPLSoGRE {
		t.Errorf("type 11 decoded as %v", got.Encaps)
	}
}

func FuzzRouteFromWire(f *testing.F) {
	c := attrCache{}
	for _, r := range sampleRoutes() {
		p, err := c.apiPath(r)
		if err != nil {
			f.Fatal(err)
		}
		var attrs []byte
		for _, a := range p.PattrsBinary {
			attrs = append(attrs, a...)
		}
		f.Add(r.IsIPv6(), p.NlriBinary, attrs)
	}
	f.Fuzz(func(t *testing.T, v6 bool, nlri, attrs []byte) {
		fam := familyVPNv4
		if v6 {
			fam = familyVPNv6
		}
		p := &api.Path{Family: fam, NlriBinary: nlri}
		if len(attrs) > 0 {
			p.PattrsBinary = [][]byte{attrs}
		}
		r, err := decodePath(p)
		if err != nil {
			return
		}
		// What decodes and validates must survive a round trip.
		if r.Validate() != nil {
			return
		}
		q, err := attrCache{}.apiPath(r)
		if err != nil {
			t.Fatalf("re-encode %v: %v", r, err)
		}
		again, err := decodePath(q)
		if err != nil || !again.Equal(r) {
			t.Fatalf("%v -> %v, %v", r, again, err)
		}
	})
}

// TestApplyReceived: the received-route table turns Adj-RIB-In changes into
// events: a new route, an unchanged one (stale marking, refresh) gives
// nothing, a changed one an update, a withdrawal removes it once, and paths
// without a peer are ignored.
func TestApplyReceived(t *testing.T) {
	s, err := New(bgp.Config{ASN: 64512, RouterID: netip.MustParseAddr("10.0.0.1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := sampleRoutes()[0]
	path := func(r bgp.Route, peer string, withdraw bool) *api.Path {
		p, err := attrCache{}.apiPath(r)
		if err != nil {
			t.Fatal(err)
		}
		p.NeighborIp, p.IsWithdraw = peer, withdraw
		return p
	}
	changed := r
	changed.Label = 2000
	steps := []struct {
		p    *api.Path
		want string // "" none, "add", "del"
	}{
		{path(r, "10.0.0.2", false), "add"},
		{path(r, "10.0.0.2", false), ""},
		{path(changed, "10.0.0.2", false), "add"},
		{path(r, "10.0.0.3", false), "add"}, // same RD:prefix from another peer
		{path(r, "10.0.0.2", true), "del"},
		{path(r, "10.0.0.2", true), ""},
		{path(r, "<nil>", false), ""},
		{path(r, "", false), ""},
		{&api.Path{Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, NeighborIp: "10.0.0.2"}, ""},
		{&api.Path{Family: familyVPNv4, NeighborIp: "10.0.0.2", NlriBinary: []byte{1, 2, 3}}, ""},
	}
	for i, st := range steps {
		evs := s.applyLocked(st.p, nil, map[netip.Addr]uint32{})
		got := ""
		if len(evs) == 1 {
			got = "add"
			if evs[0].Withdraw {
				got = "del"
			}
		} else if len(evs) > 1 {
			got = "many"
		}
		if got != st.want {
			t.Errorf("step %d: events %v, want %q", i, evs, st.want)
		}
	}
	if len(s.received) != 1 || len(s.attrs) != 1 {
		t.Errorf("table holds %d routes and %d attribute sets, want 1 and 1 (peer 10.0.0.3's)", len(s.received), len(s.attrs))
	}
	for k, got := range s.received {
		if s.peerList[k.peer] != netip.MustParseAddr("10.0.0.3") || !got.route(k.routeKey()).Equal(r) {
			t.Errorf("table holds %v from %s", got, s.peerList[k.peer])
		}
	}
}

func TestReceivedKeyRoundTrip(t *testing.T) {
	s, err := New(bgp.Config{ASN: 64512, RouterID: netip.MustParseAddr("10.0.0.1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ peer, rd, prefix string }{
		{"10.0.0.2", "192.0.2.1:7", "10.1.2.3/32"},
		{"10.0.0.3", "192.0.2.1:65535", "10.1.0.0/16"},
		{"fd00::1", "203.0.113.9:0", "fd00:1::5/128"},
		{"10.0.0.2", "192.0.2.1:7", "::ffff:10.1.2.3/128"},
	} {
		rd, err := bgp.ParseRD(c.rd)
		if err != nil {
			t.Fatal(err)
		}
		k := bgp.RouteKey{RD: rd, Prefix: netip.MustParsePrefix(c.prefix)}
		rk := s.keyLocked(netip.MustParseAddr(c.peer), k)
		if got := rk.routeKey(); got != k || s.peerList[rk.peer] != netip.MustParseAddr(c.peer) {
			t.Errorf("%v from %s: back as %v from %s", k, c.peer, got, s.peerList[rk.peer])
		}
	}
}
