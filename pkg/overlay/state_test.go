package overlay

import (
	"testing"
)

// FuzzParseState feeds arbitrary documents to the state file decoder: errors,
// never panics, and a state that parses validates and re-parses the same.
func FuzzParseState(f *testing.F) {
	f.Add([]byte("underlay: 192.0.2.1\nnetworks:\n- name: red\n  table: 7001\n  endpoints:\n  - {interface: veth1, address: 10.1.0.1, label: 1001}\n  routes:\n  - {prefix: 10.1.0.2/32, label: 1002, gateway: 192.0.2.2, encaps: [mpls-udp]}\n"))
	f.Add([]byte(`{"networks":[{"name":"a","table":7000}]}`))
	f.Add([]byte("networks: [ {table: nope"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseState(data)
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
		"underlay: 192.0.2.1\nnetworks: [{name: a, table: 7001, routes: [{prefix: 10.0.0.1/24, label: 100, gateway: 192.0.2.2, encaps: [mpls-udp]}]}]",
		"underlay: 192.0.2.1\nnetworks: [{name: a, table: 7001, routes: [{prefix: 10.0.0.0/24, label: 100, gateway: 192.0.2.2, encaps: [vxlan]}]}]",
		"networks: [{name: a, table: 7001, routes: [{prefix: 10.0.0.0/24, label: 100, gateway: 192.0.2.2, encaps: [mpls-udp]}]}]",
		"networks: [{name: a, table: 7001, unknown: 1}]",
	}
	for _, doc := range bad {
		if _, err := ParseState([]byte(doc)); err == nil {
			t.Errorf("accepted: %s", doc)
		}
	}
}

func TestChooseEncap(t *testing.T) {
	all := Features{MPLS: true, MPLSTunnel: true, FOU: true, IPIP: true, GRE: true}
	noFOU := all
	noFOU.FOU = false
	udp, gre := EncapMPLSoUDP, EncapMPLSoGRE
	cases := []struct {
		prio, offered []Encap
		f             Features
		want          Encap
		ok            bool
	}{
		{[]Encap{udp, gre}, []Encap{udp, gre}, all, udp, true},
		{[]Encap{gre, udp}, []Encap{udp, gre}, all, gre, true},
		{[]Encap{udp, gre}, []Encap{gre}, all, gre, true},
		{[]Encap{udp, gre}, []Encap{udp, gre}, noFOU, gre, true},
		{[]Encap{udp}, []Encap{gre}, all, "", false},
		{[]Encap{udp, gre}, []Encap{udp, gre}, Features{}, "", false},
	}
	for _, c := range cases {
		got, ok := chooseEncap(c.prio, c.offered, c.f)
		if got != c.want || ok != c.ok {
			t.Errorf("chooseEncap(%v, %v, %+v) = %v %v, want %v %v", c.prio, c.offered, c.f, got, ok, c.want, c.ok)
		}
	}
}
