package bgp

import (
	"errors"
	"net/netip"
	"testing"
)

func TestParseRD(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want RD
		err  bool
	}{
		{"192.0.2.10:1", RD{netip.MustParseAddr("192.0.2.10"), 1}, false},
		{"10.0.0.1:65535", RD{netip.MustParseAddr("10.0.0.1"), 65535}, false},
		{"10.0.0.1:65536", RD{}, true},
		{"64512:1", RD{}, true},
		{"fd00::1:1", RD{}, true},
		{"10.0.0.1", RD{}, true},
		{"", RD{}, true},
		{"10.0.0.1:-1", RD{}, true},
	} {
		got, err := ParseRD(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseRD(%q) = %v, %v; want %v, err=%v", tc.in, got, err, tc.want, tc.err)
		}
		if err != nil && !errors.Is(err, ErrInvalidRD) {
			t.Errorf("ParseRD(%q): error %v does not wrap ErrInvalidRD", tc.in, err)
		}
		if err == nil && got.String() != tc.in {
			t.Errorf("RD %q formats as %q", tc.in, got.String())
		}
	}
}

func TestParseRouteTarget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want RouteTarget
		err  bool
	}{
		{"target:64512:8000001", RouteTarget{64512, 8000001}, false},
		{"64512:100", RouteTarget{64512, 100}, false},
		{"target:4200000000:100", RouteTarget{4200000000, 100}, false},
		{"target:4200000000:70000", RouteTarget{}, true}, // 4-byte ASN leaves 2 bytes
		{"target:64512", RouteTarget{}, true},
		{"target:x:1", RouteTarget{}, true},
		{"target:1:4294967296", RouteTarget{}, true},
	} {
		got, err := ParseRouteTarget(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseRouteTarget(%q) = %v, %v; want %v, err=%v", tc.in, got, err, tc.want, tc.err)
		}
		if err != nil && !errors.Is(err, ErrInvalidRT) {
			t.Errorf("ParseRouteTarget(%q): error %v does not wrap ErrInvalidRT", tc.in, err)
		}
	}
	if got := AutoRouteTarget(64512, 1).String(); got != "target:64512:8000001" {
		t.Errorf("AutoRouteTarget = %s", got)
	}
}

func TestEncap(t *testing.T) {
	for _, tc := range []struct {
		e    Encap
		sent uint16
	}{{EncapMPLSoUDP, 13}, {EncapMPLSoGRE, 2}, {EncapVXLAN, 8}} {
		if got := TunnelType(tc.e); got != tc.sent {
			t.Errorf("%s sent as %d, want %d", tc.e, got, tc.sent)
		}
		back, ok := EncapFromTunnelType(tc.sent)
		if !ok || back != tc.e {
			t.Errorf("tunnel type %d received as %v", tc.sent, back)
		}
		p, err := ParseEncap(tc.e.String())
		if err != nil || p != tc.e {
			t.Errorf("ParseEncap(%q) = %v, %v", tc.e.String(), p, err)
		}
	}
	if e, ok := EncapFromTunnelType(11); !ok || e != EncapMPLSoGRE {
		t.Errorf("type 11 received as %v, %v; want MPLSoGRE", e, ok)
	}
	if _, ok := EncapFromTunnelType(7); ok {
		t.Error("type 7 (IP-in-IP) is not one of ours")
	}
	if _, err := ParseEncap("ipip"); !errors.Is(err, ErrInvalidEncap) {
		t.Errorf("ParseEncap(ipip) error %v", err)
	}
}

func TestEndpointRoutes(t *testing.T) {
	underlay := netip.MustParseAddr("192.0.2.10")
	rt := AutoRouteTarget(64512, 7)
	ep := Endpoint{
		Addresses:     []netip.Addr{netip.MustParseAddr("10.1.0.5"), netip.MustParseAddr("fd00:1::5"), netip.MustParseAddr("::ffff:10.1.0.5")},
		Underlay:      underlay,
		NetworkID:     7,
		ExportRTs:     []RouteTarget{rt, {64512, 100}, rt},
		Label:         1001,
		NetworkEncaps: []Encap{EncapMPLSoUDP, EncapMPLSoGRE, EncapVXLAN},
		GatewayEncaps: []Encap{EncapMPLSoGRE, EncapMPLSoUDP},
	}
	rs, err := EndpointRoutes(ep)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 {
		t.Fatalf("got %d routes, want 2 (the IPv4-mapped address is the IPv4 one): %v", len(rs), rs)
	}
	want := []Route{
		{Prefix: netip.MustParsePrefix("10.1.0.5/32"), RD: RD{underlay, 7}, Label: 1001, NextHop: underlay,
			RouteTargets: []RouteTarget{rt, {64512, 100}}, Encaps: []Encap{EncapMPLSoUDP, EncapMPLSoGRE}},
		{Prefix: netip.MustParsePrefix("fd00:1::5/128"), RD: RD{underlay, 7}, Label: 1001, NextHop: underlay,
			RouteTargets: []RouteTarget{rt, {64512, 100}}, Encaps: []Encap{EncapMPLSoUDP, EncapMPLSoGRE}},
	}
	for i := range want {
		if !rs[i].Equal(want[i]) || len(rs[i].RouteTargets) != 2 || len(rs[i].Encaps) != 2 {
			t.Errorf("route %d = %v, want %v", i, rs[i], want[i])
		}
		if err := rs[i].Validate(); err != nil {
			t.Errorf("route %d invalid: %v", i, err)
		}
	}

	noLabel := ep
	noLabel.Label = 0
	if rs, err := EndpointRoutes(noLabel); err != nil || rs != nil {
		t.Errorf("endpoint without label: %v, %v; want no routes", rs, err)
	}
	noEncap := ep
	noEncap.GatewayEncaps = []Encap{EncapVXLAN}
	noEncap.NetworkEncaps = []Encap{EncapMPLSoUDP}
	if _, err := EndpointRoutes(noEncap); !errors.Is(err, ErrNoEncapsulation) {
		t.Errorf("no common encapsulation: error %v", err)
	}
	v6underlay := ep
	v6underlay.Underlay = netip.MustParseAddr("fd00::10")
	if _, err := EndpointRoutes(v6underlay); !errors.Is(err, ErrInvalidRoute) {
		t.Errorf("IPv6 underlay: error %v", err)
	}
	badLabel := ep
	badLabel.Label = 15
	if _, err := EndpointRoutes(badLabel); !errors.Is(err, ErrInvalidLabel) {
		t.Errorf("label 15: error %v", err)
	}
}

func TestRouteValidate(t *testing.T) {
	good := Route{Prefix: netip.MustParsePrefix("10.1.0.5/32"), RD: RD{netip.MustParseAddr("192.0.2.1"), 1}, Label: 16, NextHop: netip.MustParseAddr("192.0.2.1")}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Route){
		"unmasked prefix": func(r *Route) { r.Prefix = netip.MustParsePrefix("10.1.0.5/24") },
		"no RD":           func(r *Route) { r.RD = RD{} },
		"label 0":         func(r *Route) { r.Label = 0 },
		"label 2^20":      func(r *Route) { r.Label = 1 << 20 },
		"no next hop":     func(r *Route) { r.NextHop = netip.Addr{} },
		"v6 next hop v4":  func(r *Route) { r.NextHop = netip.MustParseAddr("fd00::1") },
		"bad encap":       func(r *Route) { r.Encaps = []Encap{9} },
		"bad RT":          func(r *Route) { r.RouteTargets = []RouteTarget{{4200000000, 70000}} },
	} {
		r := good
		mut(&r)
		if err := r.Validate(); !errors.Is(err, ErrInvalidRoute) {
			t.Errorf("%s: error %v, want ErrInvalidRoute", name, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	c := Config{ASN: 64512, RouterID: netip.MustParseAddr("10.0.0.1"),
		Peers: []PeerConfig{{Address: netip.MustParseAddr("10.0.0.2"), ASN: 64512, Password: "x"}}}.WithDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.GracefulRestart.Disabled || c.GracefulRestart.RestartTime.Seconds() != 120 || c.ListenPort != 179 {
		t.Errorf("defaults: %+v", c)
	}
	rr := c
	rr.RouteReflector = true
	if rr = rr.WithDefaults(); rr.ClusterID != rr.RouterID || rr.Validate() != nil {
		t.Errorf("route reflector cluster id defaults to the router id: %+v", rr)
	}
	for name, mut := range map[string]func(*Config){
		"no asn":       func(c *Config) { c.ASN = 0 },
		"v6 router id": func(c *Config) { c.RouterID = netip.MustParseAddr("fd00::1") },
		"dup peer":     func(c *Config) { c.Peers = append(c.Peers, c.Peers[0]) },
		"peer no asn":  func(c *Config) { c.Peers = []PeerConfig{{Address: netip.MustParseAddr("10.0.0.3")}} },
		"port":         func(c *Config) { c.ListenPort = 70000 },
		"restart time": func(c *Config) { c.GracefulRestart.RestartTime = 5000e9 },
	} {
		cc := c
		cc.Peers = append([]PeerConfig(nil), c.Peers...)
		mut(&cc)
		if err := cc.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: error %v", name, err)
		}
	}
}

func FuzzParseRD(f *testing.F) {
	for _, s := range []string{"192.0.2.10:1", "0.0.0.0:0", "1.2.3.4:65536", "::1:1", ":", "a:b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rd, err := ParseRD(s)
		if err != nil {
			return
		}
		again, err := ParseRD(rd.String())
		if err != nil || again != rd {
			t.Fatalf("%q -> %v -> %q -> %v, %v", s, rd, rd.String(), again, err)
		}
	})
}

func FuzzParseRouteTarget(f *testing.F) {
	for _, s := range []string{"target:64512:8000001", "1:1", "target:4200000000:65535", "target::", "target:1:-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rt, err := ParseRouteTarget(s)
		if err != nil {
			return
		}
		if rt.Validate() != nil {
			t.Fatalf("%q parsed to invalid %v", s, rt)
		}
		again, err := ParseRouteTarget(rt.String())
		if err != nil || again != rt {
			t.Fatalf("%q -> %v -> %v, %v", s, rt, again, err)
		}
	})
}
