package bgptest

import (
	"net/netip"
	"strings"
	"testing"
)

func TestFRRRender(t *testing.T) {
	c := FRRConfig{
		ASN: 64512, RouterID: netip.MustParseAddr("10.0.0.2"), GracefulRestart: true, RestartTime: 15,
		Neighbors: []FRRNeighbor{{Address: netip.MustParseAddr("10.0.0.1"), ASN: 64512, Password: "pw", RouteReflectorClient: true}},
		Networks:  []FRRNetwork{{Prefix: netip.MustParsePrefix("10.4.0.0/24"), RD: "192.0.2.40:1", Label: 4004, RouteTargets: []string{"64512:8000001"}}},
	}
	got := c.Render("h")
	for _, want := range []string{
		"router bgp 64512\n", " bgp router-id 10.0.0.2\n", " bgp graceful-restart\n", " bgp graceful-restart restart-time 15\n",
		" neighbor 10.0.0.1 remote-as 64512\n", " neighbor 10.0.0.1 password pw\n",
		" address-family ipv4 vpn\n  network 10.4.0.0/24 rd 192.0.2.40:1 label 4004 route-map net0\n",
		"  neighbor 10.0.0.1 route-reflector-client\n", " address-family ipv6 vpn\n",
		"route-map net0 permit 10\n set extcommunity rt 64512:8000001\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("FRR config lacks %q:\n%s", want, got)
		}
	}
	if strings.Index(got, "route-map net0 permit") > strings.Index(got, "router bgp") {
		t.Errorf("route-map must come before router bgp (FRR drops a network whose route-map is unknown):\n%s", got)
	}
}

func TestBIRDRender(t *testing.T) {
	c := BIRDConfig{
		ASN: 64512, RouterID: netip.MustParseAddr("10.0.0.2"), Local: netip.MustParseAddr("10.0.0.2"), StaticDisabled: true,
		Neighbors: []BIRDNeighbor{{Address: netip.MustParseAddr("10.0.0.1"), ASN: 64512, Password: "pw", RouteTargets: []string{"target:64512:8000001"}}},
		Routes:    []BIRDRoute{{RD: "192.0.2.20:1", Prefix: netip.MustParsePrefix("10.2.0.7/32"), NextHop: netip.MustParseAddr("10.0.0.2"), Label: 2002}},
	}
	got := c.Render("/tmp/bird.log")
	for _, want := range []string{
		"vpn4 table vpntab4;", "vpn6 table vpntab6;", "  disabled;\n",
		"route 192.0.2.20:1 10.2.0.7/32 via 10.0.0.2 mpls 2002;",
		"bgp_ext_community.add((rt, 64512, 8000001));", `password "pw";`,
		"vpn4 mpls { table vpntab4;", "extended next hop on;",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("BIRD config lacks %q:\n%s", want, got)
		}
	}
}

func TestGoBGPDRender(t *testing.T) {
	got := GoBGPDConfig{ASN: 64512, RouterID: netip.MustParseAddr("10.0.0.2"),
		Neighbors: []GoBGPDNeighbor{{Address: netip.MustParseAddr("10.0.0.1"), ASN: 64512, Password: "pw"}}}.Render()
	for _, want := range []string{`router-id = "10.0.0.2"`, `neighbor-address = "10.0.0.1"`, `auth-password = "pw"`, `"l3vpn-ipv4-unicast"`, `"l3vpn-ipv6-unicast"`} {
		if !strings.Contains(got, want) {
			t.Errorf("gobgpd config lacks %q:\n%s", want, got)
		}
	}
}
