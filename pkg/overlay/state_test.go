package overlay

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/iotfabric/iotfabric/pkg/encap"
)

// FuzzParseState feeds arbitrary documents to the state file decoder: errors,
// never panics, and a state that parses validates and re-parses the same.
func FuzzParseState(f *testing.F) {
	f.Add([]byte("underlay: 192.0.2.1\nnetworks:\n- name: red\n  table: 7001\n  endpoints:\n  - {interface: veth1, address: 10.1.0.1, label: 1001}\n  routes:\n  - {prefix: 10.1.0.2/32, label: 1002, remoteUnderlay: 192.0.2.2, encaps: [mplsoudp]}\n"))
	f.Add([]byte("underlay: 192.0.2.1\nencapPriority: [mpls-gre]\nnetworks:\n- {name: red, table: 7001, routes: [{prefix: 10.1.0.0/24, label: 20, gateway: 192.0.2.2, encaps: [mpls-gre, mplsoudp]}]}\n"))
	f.Add([]byte(`{"networks":[{"name":"a","table":7000}]}`))
	f.Add([]byte("networks: [ {table: nope"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseState(data, nil)
		if err != nil {
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("parsed state does not validate: %v", err)
		}
	})
}

func TestValidateRejects(t *testing.T) {
	bad := []string{
		"networks: [{name: a, table: 5}]",
		"networks: [{name: a, table: 7001}, {name: b, table: 7001}]",
		"networks: [{name: a, table: 7001, endpoints: [{interface: iofx, address: 10.0.0.1, label: 100}]}]",
		"networks: [{name: a, table: 7001, endpoints: [{interface: v1, address: 10.0.0.1, label: 3}]}]",
		"networks: [{name: a, table: 7001, endpoints: [{interface: v1, address: 10.0.0.1, label: 100}, {interface: v2, address: 10.0.0.2, label: 100}]}]",
		"underlay: 192.0.2.1\nnetworks: [{name: a, table: 7001, routes: [{prefix: 10.0.0.1/24, label: 100, gateway: 192.0.2.2, encaps: [mplsoudp]}]}]",
		"underlay: 192.0.2.1\nnetworks: [{name: a, table: 7001, routes: [{prefix: 10.0.0.0/24, label: 100, gateway: 192.0.2.2, encaps: [vxlan]}]}]",
		"networks: [{name: a, table: 7001, routes: [{prefix: 10.0.0.0/24, label: 100, gateway: 192.0.2.2, encaps: [mplsoudp]}]}]",
		"networks: [{name: a, table: 7001, unknown: 1}]",
		"underlay: 192.0.2.1\nnetworks: [{name: a, table: 7001, routes: [{prefix: 10.0.0.0/24, label: 100, remoteUnderlay: 192.0.2.2, encaps: [mplsoudp], unknown: 1}]}]",
		"underlay: 192.0.2.1\nnetworks: [{name: a, table: 7001, routes: [{prefix: 10.0.0.0/24, label: 100, remoteUnderlay: 192.0.2.2, gateway: 192.0.2.3, encaps: [mplsoudp]}]}]",
	}
	for _, doc := range bad {
		if _, err := ParseState([]byte(doc), nil); err == nil {
			t.Errorf("accepted: %s", doc)
		}
	}
}

func TestChooseEncap(t *testing.T) {
	all := Features{MPLS: true, MPLSTunnel: true, FOU: true, IPIP: true, GRE: true}
	noFOU := all
	noFOU.FOU = false
	udp, gre := encap.MPLSoUDP, encap.MPLSoGRE
	cases := []struct {
		prio, offered []encap.Encap
		f             Features
		want          encap.Encap
		ok            bool
	}{
		{[]encap.Encap{udp, gre}, []encap.Encap{udp, gre}, all, udp, true},
		{[]encap.Encap{gre, udp}, []encap.Encap{udp, gre}, all, gre, true},
		{[]encap.Encap{udp, gre}, []encap.Encap{gre}, all, gre, true},
		{[]encap.Encap{udp, gre}, []encap.Encap{udp, gre}, noFOU, gre, true},
		{[]encap.Encap{udp}, []encap.Encap{gre}, all, encap.Unknown, false},
		{[]encap.Encap{udp, gre}, []encap.Encap{udp, gre}, Features{}, encap.Unknown, false},
	}
	for _, c := range cases {
		got, ok := chooseEncap(c.prio, c.offered, c.f)
		if got != c.want || ok != c.ok {
			t.Errorf("chooseEncap(%v, %v, %+v) = %v %v, want %v %v", c.prio, c.offered, c.f, got, ok, c.want, c.ok)
		}
	}
}

// TestDeprecatedSpellings: a state file written with the old encapsulation
// spellings and the old key "gateway" (now remoteUnderlay) still applies, as
// the same state, with one warning per old spelling.
func TestDeprecatedSpellings(t *testing.T) {
	doc := func(udp, gre, key string) []byte {
		return []byte("underlay: 192.0.2.1\nencapPriority: [" + udp + ", " + gre + "]\nnetworks:\n- name: red\n  table: 7001\n  routes:\n" +
			"  - {prefix: 10.1.0.2/32, label: 1002, " + key + ": 192.0.2.2, encaps: [" + udp + ", " + gre + "]}\n" +
			"  - {prefix: 10.1.0.3/32, label: 1003, " + key + ": 192.0.2.3, encaps: [" + gre + "]}\n")
	}
	var logs bytes.Buffer
	old, err := ParseState(doc("mpls-udp", "mpls-gre", "gateway"), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("old spellings refused: %v", err)
	}
	cur, err := ParseState(doc("mplsoudp", "mplsogre", "remoteUnderlay"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if stateDigest(&old) != stateDigest(&cur) || old.EncapPriority[0] != encap.MPLSoUDP || old.Networks[0].Routes[1].Encaps[0] != encap.MPLSoGRE ||
		old.Networks[0].Routes[1].RemoteUnderlay != netip.MustParseAddr("192.0.2.3") {
		t.Fatalf("old spellings give %+v, the names give %+v", old, cur)
	}
	out := logs.String()
	if strings.Count(out, "level=WARN") != 3 || !strings.Contains(out, "value=mpls-udp use=mplsoudp") || !strings.Contains(out, "value=mpls-gre use=mplsogre") ||
		!strings.Contains(out, "value=gateway use=remoteUnderlay") {
		t.Fatalf("warnings:\n%s", out)
	}
	logs.Reset()
	if _, err := ParseState(doc("mplsoudp", "mplsogre", "remoteUnderlay"), slog.New(slog.NewTextHandler(&logs, nil))); err != nil || logs.Len() != 0 {
		t.Fatalf("current names: %v, warnings:\n%s", err, logs.String())
	}
}

// TestFeatureSummaryNamesEncaps: the warning about missing modules names the
// encapsulations as users write them.
func TestFeatureSummaryNamesEncaps(t *testing.T) {
	noFOU := Features{MPLS: true, MPLSTunnel: true, IPIP: true, GRE: true, VRF: true, IPv6: true, Nexthops: true}
	if s := noFOU.Summary(); !strings.Contains(s, "still works: ") || !strings.Contains(s, "mplsogre") || !strings.Contains(s, "unavailable: mplsoudp") {
		t.Errorf("summary without fou: %q", s)
	}
	if s := (Features{}).Summary(); !strings.Contains(s, "unavailable: mplsoudp, mplsogre, MPLS label routes") {
		t.Errorf("summary without any module: %q", s)
	}
}
