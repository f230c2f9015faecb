package overlay_test

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	"github.com/iotfabric/iotfabric/pkg/overlay/overlaytest"
)

// TestUpdateRoutesMatchesSet: random route changes applied with UpdateRoutes
// leave the kernel exactly as a Set of the whole resulting state does (after
// a Resync, so that Set repairs whatever UpdateRoutes got wrong: missing or
// extra routes, nexthop objects left behind or removed while in use). Routes
// share labels, so nexthop objects are shared. Through tunnels (MPLSoUDP)
// when the kernel has MPLS, plain routes otherwise.
func TestUpdateRoutesMatchesSet(t *testing.T) {
	gw := netnstest.New(t, "iofgw")
	overlaytest.Pod(t, gw, "vred1", ap("10.1.0.1"), gwAddr)
	gw.IP(t, "link", "add", "u0", "type", "veth", "peer", "name", "u1")
	gw.IP(t, "link", "set", "u1", "up")
	gw.IP(t, "addr", "add", "192.0.2.1/24", "dev", "u0")
	gw.IP(t, "link", "set", "u0", "up")
	m := newManager(t, gw, overlay.VRFOff)
	ctx := context.Background()
	encaps := []encap.Encap{encap.MPLSoUDP, encap.Plain}
	remotes := []netip.Addr{ap("192.0.2.2"), ap("192.0.2.3")}
	rng := rand.New(rand.NewPCG(1, 2))
	route := func(i int) overlay.RemoteRoute {
		return overlay.RemoteRoute{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 2, 0, byte(i)}), 32),
			Label: 1000 + uint32(rng.IntN(20)), RemoteUnderlay: remotes[rng.IntN(2)], Encaps: encaps}
	}
	model := map[netip.Prefix]overlay.RemoteRoute{}
	for i := range 60 {
		r := route(i)
		model[r.Prefix] = r
	}
	// Both remotes in use, so that both tunnels exist.
	model[pp("10.2.1.0/32")] = overlay.RemoteRoute{Prefix: pp("10.2.1.0/32"), Label: 2000, RemoteUnderlay: remotes[0], Encaps: encaps}
	model[pp("10.2.1.1/32")] = overlay.RemoteRoute{Prefix: pp("10.2.1.1/32"), Label: 2001, RemoteUnderlay: remotes[1], Encaps: encaps}
	state := func() overlay.State {
		return overlay.State{Underlay: ap("192.0.2.1"), EncapPriority: []encap.Encap{encap.MPLSoUDP, encap.Plain},
			Networks: []overlay.Network{{Name: "red", Table: 7001,
				Endpoints: []overlay.Endpoint{{Interface: "vred1", Address: ap("10.1.0.1"), Label: 1001}},
				Routes:    slices.SortedFunc(maps.Values(model), func(a, b overlay.RemoteRoute) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })}}}
	}
	if err := m.Set(ctx, state()); err != nil {
		t.Fatalf("Set: %v", err)
	}
	for round := range 9 {
		var changes []overlay.RouteChange
		for range 1 + rng.IntN(12) {
			r := route(rng.IntN(100))
			if _, ok := model[r.Prefix]; ok && rng.IntN(2) == 0 {
				delete(model, r.Prefix)
				changes = append(changes, overlay.RouteChange{Network: "red", Remove: true, Route: overlay.RemoteRoute{Prefix: r.Prefix}})
				continue
			}
			model[r.Prefix] = r
			changes = append(changes, overlay.RouteChange{Network: "red", Route: r})
		}
		if round%4 == 3 {
			// Removing what is not there is no error.
			changes = append(changes, overlay.RouteChange{Network: "red", Remove: true, Route: overlay.RemoteRoute{Prefix: pp("10.3.0.1/32")}})
		}
		if err := m.UpdateRoutes(ctx, changes); err != nil {
			t.Fatalf("round %d: UpdateRoutes: %v", round, err)
		}
		if round%3 != 2 {
			continue // keep building on UpdateRoutes' own record for a while
		}
		got := overlaytest.Dump(t, gw)
		if err := m.Resync(ctx); err != nil {
			t.Fatal(err)
		}
		if err := m.Set(ctx, state()); err != nil {
			t.Fatalf("round %d: Set: %v", round, err)
		}
		if want := overlaytest.Dump(t, gw); got != want {
			t.Fatalf("round %d: after UpdateRoutes:\n%s\nafter Set of the same state:\n%s", round, got, want)
		}
	}

	// What needs more than routes is refused, changing nothing.
	before := overlaytest.Dump(t, gw)
	for _, c := range []overlay.RouteChange{
		{Network: "blue", Route: route(1)},
		{Network: "red", Route: overlay.RemoteRoute{Prefix: pp("10.2.9.0/24"), Label: 1, RemoteUnderlay: remotes[0], Encaps: encaps}},
	} {
		if err := m.UpdateRoutes(ctx, []overlay.RouteChange{{Network: "red", Route: route(99)}, c}); !errors.Is(err, overlay.ErrNeedSet) {
			t.Errorf("UpdateRoutes(%+v): %v, want ErrNeedSet", c, err)
		}
	}
	if m.Features().MPLS {
		// A remote gateway with no tunnel yet.
		c := overlay.RouteChange{Network: "red", Route: overlay.RemoteRoute{Prefix: pp("10.2.9.0/24"), Label: 1500, RemoteUnderlay: ap("192.0.2.9"), Encaps: encaps}}
		if err := m.UpdateRoutes(ctx, []overlay.RouteChange{c}); !errors.Is(err, overlay.ErrNeedSet) {
			t.Errorf("UpdateRoutes to a new remote gateway: %v, want ErrNeedSet", err)
		}
	}
	if got := overlaytest.Dump(t, gw); got != before {
		t.Fatalf("a refused UpdateRoutes changed the kernel:\n%s\nbefore:\n%s", got, before)
	}
	// After a Resync, until the next Set.
	if err := m.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.UpdateRoutes(ctx, []overlay.RouteChange{{Network: "red", Route: route(1)}}); !errors.Is(err, overlay.ErrNeedSet) {
		t.Errorf("UpdateRoutes after Resync: %v, want ErrNeedSet", err)
	}
}
