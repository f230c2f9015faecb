package overlay

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestRouteCodecRoundTrip(t *testing.T) {
	routes := []kroute{
		{Family: afInet, Table: 7001, Dst: netip.MustParsePrefix("10.1.0.2/32"), Oif: 7, Encap: 1002, Protocol: RouteProtocol, Scope: rtScopeLink, Type: rtnUnicast},
		{Family: afInet, Table: 7001, Dst: netip.MustParsePrefix("10.2.0.0/16"), Gw: netip.MustParseAddr("192.0.2.2"), Protocol: RouteProtocol, Type: rtnUnicast},
		{Family: afInet6, Table: 7002, Dst: netip.MustParsePrefix("fd00::1/128"), Oif: 3, Protocol: RouteProtocol, Type: rtnUnicast},
		{Family: afMPLS, Label: 1001, Via: netip.MustParseAddr("10.1.0.1"), Oif: 5, Protocol: RouteProtocol, Type: rtnUnicast},
		{Family: afInet, Table: 100, Dst: netip.MustParsePrefix("0.0.0.0/0"), Oif: 2, Protocol: RouteProtocol, Type: rtnUnicast},
	}
	for _, r := range routes {
		msg, err := appendRouteMsg(nil, rtmNewRoute, nlmFRequest, 1, r)
		if err != nil {
			t.Fatalf("encode %v: %v", r, err)
		}
		msgs, err := splitMessages(msg)
		if err != nil || len(msgs) != 1 {
			t.Fatalf("split %v: %v (%d messages)", r, err, len(msgs))
		}
		got, err := decodeRoute(msgs[0].Data)
		if err != nil {
			t.Fatalf("decode %v: %v", r, err)
		}
		if got != r {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, r)
		}
	}
	if _, err := appendRouteMsg(nil, rtmNewRoute, 0, 1, kroute{Family: afInet, Dst: netip.MustParsePrefix("fd00::/8")}); err == nil {
		t.Error("IPv6 prefix in an IPv4 route encoded without error")
	}
}

// FuzzDecodeRoute feeds arbitrary bytes to the rtnetlink decoders: they must
// never panic, and whatever decodes must survive encode-decode unchanged.
func FuzzDecodeRoute(f *testing.F) {
	for _, r := range []kroute{
		{Family: afInet, Table: 7001, Dst: netip.MustParsePrefix("10.1.0.2/32"), Oif: 7, Encap: 1002, Protocol: RouteProtocol, Scope: rtScopeLink, Type: rtnUnicast},
		{Family: afMPLS, Label: 1001, Via: netip.MustParseAddr("10.1.0.1"), Oif: 5, Protocol: RouteProtocol, Type: rtnUnicast},
		{Family: afInet6, Table: 7002, Dst: netip.MustParsePrefix("fd00::/64"), Gw: netip.MustParseAddr("fe80::1"), Protocol: RouteProtocol, Type: rtnUnicast},
	} {
		msg, _ := appendRouteMsg(nil, rtmNewRoute, nlmFRequest, 1, r)
		f.Add(msg)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, _ := splitMessages(data)
		for _, m := range msgs {
			r, err := decodeRoute(m.Data)
			if err != nil {
				if !errors.Is(err, errTruncated) && !strings.Contains(err.Error(), "prefix length") {
					t.Fatalf("unexpected error kind: %v", err)
				}
				continue
			}
			if r.Family != afInet && r.Family != afInet6 && r.Family != afMPLS {
				continue
			}
			if r.EncapMore || r.Label > LabelLast || r.Encap > LabelLast {
				continue // not representable in what iotfabric writes
			}
			if r.Family == afMPLS && r.Label == 0 {
				continue
			}
			if r.Via.IsValid() && r.Family != afMPLS || r.Family == afMPLS && (r.Gw.IsValid() || r.Dst.IsValid()) {
				continue
			}
			if r.Family != afMPLS && r.Gw.IsValid() && r.Gw.Is4() != r.Dst.Addr().Is4() {
				continue
			}
			if r.Family == afMPLS {
				r.Scope, r.Type = rtScopeUniv, rtnUnicast
			}
			if r.Type == 0 {
				r.Type = rtnUnicast
			}
			msg, err := appendRouteMsg(nil, rtmNewRoute, nlmFRequest, 1, r)
			if err != nil {
				continue
			}
			again, _ := splitMessages(msg)
			r2, err := decodeRoute(again[0].Data)
			if err != nil {
				t.Fatalf("re-decode of %+v: %v", r, err)
			}
			if r2 != r {
				t.Fatalf("round trip changed the route:\n got %+v\nwant %+v", r2, r)
			}
		}
	})
}

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

// FuzzDecodeNexthop: arbitrary nexthop messages never panic the decoder, and a
// decoded nexthop survives encode-decode unchanged.
func FuzzDecodeNexthop(f *testing.F) {
	f.Add(appendNexthopMsg(nil, rtmNewNexthop, nlmFRequest, 1, knexthop{ID: NexthopIDFirst, Oif: 7, Encap: 1002, Protocol: RouteProtocol}))
	f.Add(appendNexthopMsg(nil, rtmNewNexthop, nlmFRequest, 1, knexthop{ID: 5, Oif: 1}))
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, _ := splitMessages(data)
		for _, m := range msgs {
			n, err := decodeNexthop(m.Data)
			if err != nil || n.Encap > LabelLast {
				continue
			}
			again, _ := splitMessages(appendNexthopMsg(nil, rtmNewNexthop, nlmFRequest, 1, n))
			n2, err := decodeNexthop(again[0].Data)
			if err != nil || n2 != n {
				t.Fatalf("round trip: %+v -> %+v (%v)", n, n2, err)
			}
		}
	})
}

func TestNexthopCodecRoundTrip(t *testing.T) {
	n := knexthop{ID: NexthopIDFirst + 3, Oif: 9, Encap: 4242, Protocol: RouteProtocol}
	msgs, err := splitMessages(appendNexthopMsg(nil, rtmNewNexthop, nlmFRequest, 1, n))
	if err != nil || len(msgs) != 1 {
		t.Fatalf("split: %v", err)
	}
	got, err := decodeNexthop(msgs[0].Data)
	if err != nil || got != n {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, n)
	}
}

// FuzzDecodeRule: arbitrary rule messages never panic the rule decoder.
func FuzzDecodeRule(f *testing.F) {
	msg := appendRuleDumpRequest(nil, 1, afInet)
	msg = appendAttr(msg, fraPriority, u32(RulePriority))
	msg = appendAttr(msg, fraTable, u32(7001))
	msg = appendAttr(msg, fraIifname, []byte("veth1\x00"))
	msg = appendAttr(msg, fraProtocol, []byte{RouteProtocol})
	binary.NativeEndian.PutUint32(msg, uint32(len(msg)))
	f.Add(msg)
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, _ := splitMessages(data)
		for _, m := range msgs {
			_, _ = decodeRule(m.Data)
		}
	})
}

func TestDecodeRule(t *testing.T) {
	msg := appendRuleDumpRequest(nil, 1, afInet)
	msg = appendAttr(msg, fraPriority, u32(RulePriority))
	msg = appendAttr(msg, fraTable, u32(7001))
	msg = appendAttr(msg, fraIifname, []byte("veth1\x00"))
	msg = appendAttr(msg, fraProtocol, []byte{RouteProtocol})
	binary.NativeEndian.PutUint32(msg, uint32(len(msg)))
	msgs, _ := splitMessages(msg)
	r, err := decodeRule(msgs[0].Data)
	want := krule{Family: afInet, Priority: RulePriority, Table: 7001, Iif: "veth1", Protocol: RouteProtocol}
	if err != nil || r != want {
		t.Fatalf("decodeRule = %+v, %v; want %+v", r, err, want)
	}
}
