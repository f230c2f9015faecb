package vpn

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

var peerA = netip.MustParseAddr("10.9.0.1")

// peerRoute is a received route for 10.50.<i>/32 with the given route targets.
func peerRoute(i int, rts ...bgp.RouteTarget) bgp.RouteEvent {
	return bgp.RouteEvent{Peer: peerA, Route: bgp.Route{
		Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 50, byte(i >> 8), byte(i)}), 32),
		RD:     bgp.RD{Addr: netip.MustParseAddr("192.0.2.200"), Index: 1}, Label: uint32(100 + i),
		NextHop: netip.MustParseAddr("192.0.2.200"), RouteTargets: rts, Encaps: []bgp.Encap{bgp.EncapMPLSoUDP}}}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func importedCount(r *Runner, n string) int {
	rs, _ := r.Routes(n)
	c := 0
	for _, rt := range rs {
		if rt.Origin == Imported {
			c++
		}
	}
	return c
}

// TestImportFilter: the speaker is told the route targets the networks
// import; a received route with none of them is not kept, one with an
// imported target is; a network that starts importing a target gets the
// routes the filter refused before.
func TestImportFilter(t *testing.T) {
	sp := bgptest.NewFakeSpeaker()
	r, st, _ := startRunner(t, sp)
	want := []bgp.RouteTarget{bgp.AutoRouteTarget(64512, 1), bgp.AutoRouteTarget(64512, 2)}
	waitFor(t, "the initial import filter", func() bool { return slices.Equal(sp.ImportFilter(), want) })

	foreign := bgp.RouteTarget{ASN: 65000, Value: 7}
	sp.Receive(peerRoute(1, foreign), peerRoute(2, bgp.AutoRouteTarget(64512, 1)))
	waitFor(t, "the imported route", func() bool { return importedCount(r, "n1") == 1 })
	if st := r.Stats(); st.Received != 1 {
		t.Fatalf("the table holds %d received routes, want 1 (the foreign one is filtered)", st.Received)
	}

	put(t, st, "networks/n2", &v1.VirtualNetwork{Name: "n2", Id: 2, Encapsulations: []v1.Encapsulation{udp}, ImportRouteTargets: []string{"target:65000:7"}})
	waitFor(t, "the route with the newly imported target", func() bool { return importedCount(r, "n2") == 1 })
	if got := sp.ImportFilter(); !slices.Contains(got, foreign) {
		t.Fatalf("filter %v lacks %v", got, foreign)
	}
	// And back: n2 stops importing it, the route goes.
	put(t, st, "networks/n2", &v1.VirtualNetwork{Name: "n2", Id: 2, Encapsulations: []v1.Encapsulation{udp}})
	waitFor(t, "the route to go", func() bool { return importedCount(r, "n2") == 0 && r.Stats().Received == 1 })
}

// TestNetworkRouteLimit: past the limit a network's gateways keep the set
// they had and get no changes; a gateway that joins gets the frozen set;
// the network reports the condition; back within the limit the gateways
// get the difference.
func TestNetworkRouteLimit(t *testing.T) {
	sp := bgptest.NewFakeSpeaker()
	r, st, ctx := startRunnerWith(t, sp, Limits{MaxNetworkRoutes: 5})
	put(t, st, "endpoints/e0", &v1.Endpoint{Id: "e0", Network: "n1", Gateway: "g0", Addresses: []string{"10.1.0.1"}, Label: 20})
	put(t, st, "endpoints/e1", &v1.Endpoint{Id: "e1", Network: "n1", Gateway: "g1", Addresses: []string{"10.1.0.2"}, Label: 21})
	ch := r.WatchGateway(ctx, "g0", Resume{})
	have := map[string]bool{} // by prefix: unique in this network
	read := func(want int) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for len(have) != want {
			select {
			case u := <-ch:
				for _, p := range u.Put {
					have[p.Prefix] = true
				}
				for _, d := range u.Delete {
					delete(have, d.Prefix)
				}
			case <-deadline:
				t.Fatalf("gateway has %d routes, want %d", len(have), want)
			}
		}
	}
	read(2)
	rt := bgp.AutoRouteTarget(64512, 1)
	sp.Receive(peerRoute(1, rt), peerRoute(2, rt), peerRoute(3, rt))
	read(5)
	if c := r.NetworkStatus("n1"); len(c) != 0 {
		t.Fatalf("conditions %v at the limit", c)
	}
	sp.Receive(peerRoute(4, rt), peerRoute(5, rt))
	waitFor(t, "the condition", func() bool { return len(r.NetworkStatus("n1")) == 1 })
	c := r.NetworkStatus("n1")[0]
	if c.Type != ConditionRouteLimit || !strings.Contains(c.Message, "7 routes, more than the limit of 5") {
		t.Fatalf("condition %+v", c)
	}
	if st := r.Stats(); st.NetworksFrozen != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Changes while frozen do not reach the gateway, nor does the rest.
	sp.Receive(bgp.RouteEvent{Peer: peerA, Withdraw: true, Route: peerRoute(1, rt).Route})
	put(t, st, "endpoints/e2", &v1.Endpoint{Id: "e2", Network: "n1", Gateway: "g2", Addresses: []string{"10.1.0.3"}, Label: 22})
	waitFor(t, "the table to take the changes", func() bool { rs, _ := r.Routes("n1"); return len(rs) == 7 })
	select {
	case u := <-ch:
		t.Fatalf("a frozen network's gateway got %+v", u)
	case <-time.After(100 * time.Millisecond):
	}
	// A gateway joining gets the frozen set (the 5 of before).
	g1 := r.WatchGateway(ctx, "g1", Resume{})
	first := <-g1
	if !first.Snapshot || len(first.Put) != 5 {
		t.Fatalf("joining gateway got %d routes (snapshot %v), want the frozen 5", len(first.Put), first.Snapshot)
	}
	// Back within the limit: the difference arrives at once.
	sp.Receive(bgp.RouteEvent{Peer: peerA, Withdraw: true, Route: peerRoute(2, rt).Route},
		bgp.RouteEvent{Peer: peerA, Withdraw: true, Route: peerRoute(3, rt).Route})
	waitFor(t, "the condition to clear", func() bool { return len(r.NetworkStatus("n1")) == 0 })
	want := map[string]bool{}
	rs, _ := r.Routes("n1")
	for _, rt := range rs {
		want[rt.Prefix.String()] = true
	}
	if len(want) != 5 {
		t.Fatalf("table has %d routes, want 5", len(want))
	}
	select {
	case u := <-ch:
		for _, p := range u.Put {
			have[p.Prefix] = true
		}
		for _, d := range u.Delete {
			delete(have, d.Prefix)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no update after the network came back within the limit")
	}
	if fmt.Sprint(want) != fmt.Sprint(have) {
		t.Fatalf("gateway has %v, table %v", have, want)
	}
}

// TestNotAdvertised: an endpoint whose route the speaker refuses (a network
// with more export route targets than an UPDATE carries, written to the
// store past any API check) says why; the count and the reason go when the
// network is fixed. An endpoint with no route at all (no common
// encapsulation) says so too.
func TestNotAdvertised(t *testing.T) {
	sp := bgptest.NewFakeSpeaker()
	sp.RefuseOver(100)
	r, st, _ := startRunner(t, sp)
	var rts []string
	for i := range 200 {
		rts = append(rts, fmt.Sprint("target:64512:", 1000+i))
	}
	put(t, st, "networks/n1", &v1.VirtualNetwork{Name: "n1", Id: 1, Encapsulations: []v1.Encapsulation{udp, gre}, ExportRouteTargets: rts})
	put(t, st, "endpoints/big", &v1.Endpoint{Id: "big", Network: "n1", Gateway: "g0", Addresses: []string{"10.1.0.1"}, Label: 20})
	put(t, st, "endpoints/ok", &v1.Endpoint{Id: "ok", Network: "n2", Gateway: "g0", Addresses: []string{"10.2.0.1"}, Label: 21})
	waitFor(t, "the refusal", func() bool { return r.EndpointStatus([]string{"big"})["big"] != "" })
	why := r.EndpointStatus([]string{"big", "ok"})
	if len(why) != 1 || !strings.HasPrefix(why["big"], "not advertised: ") || !strings.Contains(why["big"], "does not fit in a BGP UPDATE") {
		t.Fatalf("status %q", why)
	}
	if s := r.Stats(); s.NotAdvertised != 1 {
		t.Fatalf("stats %+v", s)
	}
	// Fixed: advertised, and the reason goes.
	put(t, st, "networks/n1", &v1.VirtualNetwork{Name: "n1", Id: 1, Encapsulations: []v1.Encapsulation{udp, gre}, ExportRouteTargets: rts[:10]})
	waitFor(t, "the route to be advertised", func() bool { return len(sp.Announced()) == 2 })
	waitFor(t, "the reason to go", func() bool { return len(r.EndpointStatus([]string{"big"})) == 0 })

	// No encapsulation common to network (MPLSoGRE only) and gateway (MPLSoUDP only).
	put(t, st, "networks/n3", &v1.VirtualNetwork{Name: "n3", Id: 3, Encapsulations: []v1.Encapsulation{gre}})
	put(t, st, "endpoints/noenc", &v1.Endpoint{Id: "noenc", Network: "n3", Gateway: "g0", Addresses: []string{"10.3.0.1"}, Label: 22})
	waitFor(t, "the reason", func() bool { return r.EndpointStatus([]string{"noenc"})["noenc"] != "" })
	if why := r.EndpointStatus([]string{"noenc"})["noenc"]; !strings.HasPrefix(why, "not advertised: ") || !strings.Contains(why, "no encapsulation common") {
		t.Fatalf("status %q", why)
	}
}

// TestNetworkRouteLimitNobodyFollowing: a network passes the limit while no
// gateway follows it; a gateway that joins gets the set from before the
// change that passed the limit (a route changed by it in its earlier
// version), not the table's current routes.
func TestNetworkRouteLimitNobodyFollowing(t *testing.T) {
	sp := bgptest.NewFakeSpeaker()
	r, st, ctx := startRunnerWith(t, sp, Limits{MaxNetworkRoutes: 3})
	put(t, st, "endpoints/e0", &v1.Endpoint{Id: "e0", Network: "n1", Gateway: "g0", Addresses: []string{"10.1.0.1"}, Label: 20})
	rt := bgp.AutoRouteTarget(64512, 1)
	sp.Receive(peerRoute(1, rt), peerRoute(2, rt))
	waitFor(t, "three routes", func() bool { rs, _ := r.Routes("n1"); return len(rs) == 3 })
	changed := peerRoute(1, rt)
	changed.Route.Label = 999
	sp.Receive(changed, peerRoute(3, rt))
	waitFor(t, "the condition", func() bool { return len(r.NetworkStatus("n1")) == 1 })
	first := <-r.WatchGateway(ctx, "g0", Resume{})
	got := map[string]uint32{}
	for _, p := range first.Put {
		got[p.Prefix] = p.Label
	}
	want := map[string]uint32{"10.1.0.1/32": 20, "10.50.0.1/32": 101, "10.50.0.2/32": 102}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("joining gateway got %v, want the set before the limit %v", got, want)
	}
}
