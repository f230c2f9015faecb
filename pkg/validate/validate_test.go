package validate

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestQuote(t *testing.T) {
	if got := Quote("eth0"); got != `"eth0"` {
		t.Fatal(got)
	}
	long := strings.Repeat("é", 100) // 200 bytes
	got := Quote(long)
	if !strings.HasSuffix(got, "… (200 bytes)") || len(got) > MaxEcho+40 || !utf8.ValidString(got) {
		t.Fatalf("%q", got)
	}
}

func TestNames(t *testing.T) {
	for _, ok := range []string{"a", "sensors-1", "gw_pisek.2", strings.Repeat("x", 63)} {
		if err := Name("network", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for bad, kind := range map[string]error{"": ErrInvalid, "-x": ErrInvalid, "a b": ErrInvalid, "a:b": ErrInvalid, "é": ErrInvalid,
		strings.Repeat("x", 64): ErrLimit, strings.Repeat("x", 100<<20): ErrLimit} {
		err := Name("network", bad)
		if !errors.Is(err, kind) || len(err.Error()) > 200 {
			t.Errorf("%.20q: %v", bad, err)
		}
	}
}

func TestEndpointIDs(t *testing.T) {
	// Every container id and interface name the plugin accepts makes an
	// endpoint id the controller accepts.
	cid := strings.Repeat("c", MaxContainerIDLen)
	for _, ifn := range []string{"eth0", "net1", "_x", "-", "a.b", strings.Repeat("i", MaxIfNameLen)} {
		id, err := EndpointIDOf(cid, ifn)
		if err != nil {
			t.Fatalf("%q: %v", ifn, err)
		}
		if err := EndpointID(id); err != nil {
			t.Fatalf("%q: %v", id, err)
		}
	}
	for _, ifn := range []string{"", ".", "..", "eth@0", "eth 0", "a/b", "a:b", "eth%d", "é", strings.Repeat("i", 16), "x\x00"} {
		if _, err := EndpointIDOf("c1", ifn); err == nil {
			t.Errorf("interface %q accepted", ifn)
		}
	}
	for _, c := range []string{"", "-c", "c:1", "c/1", strings.Repeat("c", MaxContainerIDLen+1)} {
		if _, err := EndpointIDOf(c, "eth0"); err == nil {
			t.Errorf("container id %.20q accepted", c)
		}
	}
}

func TestSubnets(t *testing.T) {
	for _, ok := range []string{"10.1.0.0/24", " 192.0.2.0/28", "fd00:1::/64", "2001:db8::/48", "100.64.0.0/10"} {
		if _, err := Subnet(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "10.1.0.1/24", "0.0.0.0/0", "0.0.0.0/8", "0.0.0.0/32", "224.0.0.0/24", "239.1.0.0/16", "127.0.0.0/8",
		"169.254.1.0/24", "255.255.255.255/32", "::/0", "::/128", "::1/128", "ff02::/16", "fe80::/64", "::ffff:10.0.0.0/120", "10.0.0.0/24%eth0", "x"} {
		if p, err := Subnet(bad); err == nil {
			t.Errorf("%q accepted as %v", bad, p)
		}
	}
	many := make([]string, MaxSubnets+1)
	for i := range many {
		many[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16).String()
	}
	if _, err := Subnets(many[:MaxSubnets]); err != nil {
		t.Fatal(err)
	}
	if _, err := Subnets(many); !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "limit is 32") {
		t.Fatal(err)
	}
}

func TestUnderlay(t *testing.T) {
	for _, ok := range []string{"192.0.2.11", "10.0.0.1", " 198.51.100.1"} {
		if _, err := Underlay(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "0.0.0.0", "255.255.255.255", "224.0.0.5", "127.0.0.1", "169.254.1.1", "240.0.0.1", "2001:db8::1", "::ffff:192.0.2.1", "x"} {
		if a, err := Underlay(bad); err == nil {
			t.Errorf("%q accepted as %v", bad, a)
		}
	}
}

func TestRouteTargetsAndRDs(t *testing.T) {
	rts, err := RouteTargets("export", []string{"64512:100", "target:64512:100", " target:4200000000:7 "})
	if err != nil || len(rts) != 2 || rts[0] != "target:64512:100" || rts[1] != "target:4200000000:7" {
		t.Fatalf("%v %v", rts, err)
	}
	for _, bad := range []string{"target:0:0", "0:5", "target:", "target:x:1", "target:4200000000:70000", "target:1:" + strings.Repeat("9", 1000)} {
		if _, err := RouteTarget(bad); err == nil || len(err.Error()) > 250 {
			t.Errorf("%.30q: %v", bad, err)
		}
	}
	many := make([]string, MaxRouteTargets+1)
	for i := range many {
		many[i] = "target:64512:" + string(rune('0'+i%10))
	}
	if _, err := RouteTargets("import", many); !errors.Is(err, ErrLimit) {
		t.Fatal(err)
	}
}

func TestLabelMACBulk(t *testing.T) {
	for l, ok := range map[uint32]bool{0: true, 15: false, 16: true, 1<<20 - 1: true, 1 << 20: false} {
		if (Label(l) == nil) != ok {
			t.Errorf("label %d", l)
		}
	}
	if MAC("02:00:00:00:00:01") != nil || MAC("02:00") == nil || MAC("") != nil {
		t.Error("MAC")
	}
	if Bulk(MaxBulk) != nil || !errors.Is(Bulk(MaxBulk+1), ErrLimit) {
		t.Error("bulk")
	}
}

// Every error of the package quotes at most MaxEcho bytes of the value.
func checkShort(t *testing.T, s string, err error) {
	t.Helper()
	if err != nil && len(err.Error()) > 4*MaxEcho+300 {
		t.Fatalf("error for a %d-byte value is %d bytes long", len(s), len(err.Error()))
	}
	if err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrLimit) {
		t.Fatalf("error of no kind: %v", err)
	}
}

func FuzzName(f *testing.F) {
	for _, s := range []string{"a", "", "-x", "é", "gw.1_2-3", strings.Repeat("x", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := Name("network", s)
		checkShort(t, s, err)
		if err == nil && (s == "" || len(s) > MaxNameLen || strings.ContainsAny(s, " /:\x00") || !utf8.ValidString(s)) {
			t.Fatalf("%q accepted", s)
		}
	})
}

func FuzzEndpointIDOf(f *testing.F) {
	for _, s := range [][2]string{{"c1", "eth0"}, {"c1", "eth@0"}, {"", ""}, {"c", ".."}, {"c", "a:b"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, cid, ifn string) {
		id, err := EndpointIDOf(cid, ifn)
		checkShort(t, cid+ifn, err)
		if err == nil {
			if e := EndpointID(id); e != nil {
				t.Fatalf("the plugin accepts %q/%q, the controller refuses %q: %v", cid, ifn, id, e)
			}
		}
	})
}

func FuzzSubnet(f *testing.F) {
	for _, s := range []string{"10.0.0.0/24", "0.0.0.0/0", "224.0.0.0/4", "fd00::/64", "::/0", "1.2.3.4/33", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Subnet(s)
		checkShort(t, s, err)
		if err != nil {
			return
		}
		if p != p.Masked() || p.Addr().IsMulticast() || p.Addr().IsUnspecified() || p.Addr().IsLoopback() || p.Bits() == 0 {
			t.Fatalf("%q accepted as %v", s, p)
		}
		again, err := Subnet(p.String())
		if err != nil || again != p {
			t.Fatalf("round trip %v: %v %v", p, again, err)
		}
	})
}

func FuzzUnderlay(f *testing.F) {
	for _, s := range []string{"192.0.2.1", "0.0.0.0", "224.0.0.1", "::1", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := Underlay(s)
		checkShort(t, s, err)
		if err == nil && (!a.Is4() || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a == netip.MustParseAddr("255.255.255.255")) {
			t.Fatalf("%q accepted", s)
		}
	})
}

func FuzzRouteTarget(f *testing.F) {
	for _, s := range []string{"target:64512:100", "target:0:0", "1:2", "target:4200000000:70000", ":"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rt, err := RouteTarget(s)
		checkShort(t, s, err)
		if err != nil {
			return
		}
		if rt.ASN == 0 {
			t.Fatalf("%q accepted", s)
		}
		again, err := RouteTarget(rt.String())
		if err != nil || again != rt {
			t.Fatalf("round trip %v: %v %v", rt, again, err)
		}
	})
}
