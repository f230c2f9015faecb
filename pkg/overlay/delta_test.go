package overlay_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/internal/testenv"
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
func TestUpdateRoutesMatchesSet(t *testing.T) { testUpdateRoutesMatchesSet(t, false) }

// TestUpdateRoutesMatchesSetFastPath is TestUpdateRoutesMatchesSet with the
// BPF fast path (on a kernel with MPLS, FOU and GRE: `make vmtest`): the fast path's map after UpdateRoutes holds exactly what a
// Set of the same state writes, and the per-path counts agree, with
// MPLSoUDP, MPLSoGRE, plain and IPv6 routes mixed. A fast-path route in a
// network whose endpoint has no program attached needs a Set; a network whose
// last fast-path route went keeps its program and takes routes again
// without one.
func TestUpdateRoutesMatchesSetFastPath(t *testing.T) {
	testenv.RequireRoot(t, "loads BPF programs")
	testUpdateRoutesMatchesSet(t, true)
}

func testUpdateRoutesMatchesSet(t *testing.T, fast bool) {
	gw := netnstest.New(t, "iofgw")
	overlaytest.Pod(t, gw, "vred1", ap("10.1.0.1"), gwAddr)
	gw.IP(t, "link", "add", "u0", "type", "veth", "peer", "name", "u1")
	gw.IP(t, "link", "set", "u1", "up")
	gw.IP(t, "addr", "add", "192.0.2.1/24", "dev", "u0")
	gw.IP(t, "link", "set", "u0", "up")
	var m *overlay.Manager
	prio := []encap.Encap{encap.MPLSoUDP, encap.Plain}
	encaps := prio
	// The fast variant's choices of encapsulations per route.
	choices := [][]encap.Encap{encaps}
	if fast {
		overlaytest.Pod(t, gw, "vamber1", ap("10.1.1.1"), gwAddr)
		m = newFastManager(t, gw, overlay.VRFOff)
		requireFullKernel(t, m)
		prio = []encap.Encap{encap.MPLSoUDP, encap.MPLSoGRE, encap.Plain}
		choices = append(choices, []encap.Encap{encap.Plain}, []encap.Encap{encap.MPLSoGRE, encap.Plain})
	} else {
		m = newManager(t, gw, overlay.VRFOff)
	}
	ctx := context.Background()
	remotes := []netip.Addr{ap("192.0.2.2"), ap("192.0.2.3")}
	rng := rand.New(rand.NewPCG(1, 2))
	route := func(i int) overlay.RemoteRoute {
		r := overlay.RemoteRoute{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 2, 0, byte(i)}), 32),
			Label: 1000 + uint32(rng.IntN(20)), RemoteUnderlay: remotes[rng.IntN(2)], Encaps: encaps}
		if fast {
			r.Encaps = choices[rng.IntN(len(choices))]
			if rng.IntN(8) == 0 {
				// IPv6 prefixes take the kernel tunnel only.
				r.Prefix = netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 2, 15: byte(i)}), 128)
				r.Encaps = []encap.Encap{encap.MPLSoUDP}
			}
		}
		return r
	}
	model := map[netip.Prefix]overlay.RemoteRoute{}
	for i := range 60 {
		r := route(i)
		model[r.Prefix] = r
	}
	// Both remotes in use, so that both tunnels exist.
	model[pp("10.2.1.0/32")] = overlay.RemoteRoute{Prefix: pp("10.2.1.0/32"), Label: 2000, RemoteUnderlay: remotes[0], Encaps: encaps}
	model[pp("10.2.1.1/32")] = overlay.RemoteRoute{Prefix: pp("10.2.1.1/32"), Label: 2001, RemoteUnderlay: remotes[1], Encaps: encaps}
	// The fast variant: MPLSoGRE tunnels too, an IPv6 route from the start,
	// and a second network with only a plain route, so its endpoint has no
	// program.
	var amber []overlay.RemoteRoute
	if fast {
		gre := []encap.Encap{encap.MPLSoGRE}
		model[pp("10.2.1.2/32")] = overlay.RemoteRoute{Prefix: pp("10.2.1.2/32"), Label: 2002, RemoteUnderlay: remotes[0], Encaps: gre}
		model[pp("10.2.1.3/32")] = overlay.RemoteRoute{Prefix: pp("10.2.1.3/32"), Label: 2003, RemoteUnderlay: remotes[1], Encaps: gre}
		model[pp("fd00:2::1:0/128")] = overlay.RemoteRoute{Prefix: pp("fd00:2::1:0/128"), Label: 2004, RemoteUnderlay: remotes[0], Encaps: []encap.Encap{encap.MPLSoUDP}}
		amber = []overlay.RemoteRoute{{Prefix: pp("10.4.0.1/32"), Label: 3001, RemoteUnderlay: remotes[0], Encaps: []encap.Encap{encap.Plain}}}
	}
	state := func() overlay.State {
		s := overlay.State{Underlay: ap("192.0.2.1"), EncapPriority: prio,
			Networks: []overlay.Network{{Name: "red", Table: 7001,
				Endpoints: []overlay.Endpoint{{Interface: "vred1", Address: ap("10.1.0.1"), Label: 1001}},
				Routes:    slices.SortedFunc(maps.Values(model), func(a, b overlay.RemoteRoute) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })}}}
		if fast {
			s.Networks = append(s.Networks, overlay.Network{Name: "amber", Table: 7002,
				Endpoints: []overlay.Endpoint{{Interface: "vamber1", Address: ap("10.1.1.1"), Label: 1002}},
				Routes:    slices.Clone(amber)})
		}
		return s
	}
	// snapshot is what UpdateRoutes and Set must agree on: the kernel, the
	// fast path's map and the per-path counts.
	snapshot := func() string {
		t.Helper()
		fp, err := overlay.FastPathMapDump(m)
		if err != nil {
			t.Fatalf("fast path map: %v", err)
		}
		st := m.FastPathStats()
		st.Encapsulated, st.ToKernel = 0, 0
		return fmt.Sprintf("%s\nfast path map:\n%s\ncounts: %+v", overlaytest.Dump(t, gw), fp, st)
	}
	// matchesSet checks the snapshot against a Set of the same state after
	// a Resync.
	matchesSet := func(what string) {
		t.Helper()
		got := snapshot()
		if err := m.Resync(ctx); err != nil {
			t.Fatal(err)
		}
		if err := m.Set(ctx, state()); err != nil {
			t.Fatalf("%s: Set: %v", what, err)
		}
		if want := snapshot(); got != want {
			t.Fatalf("%s: after UpdateRoutes:\n%s\nafter Set of the same state:\n%s", what, got, want)
		}
	}
	if err := m.Set(ctx, state()); err != nil {
		t.Fatalf("Set: %v", err)
	}
	if fast {
		if fp, _ := overlay.FastPathMapDump(m); fp == "" {
			t.Fatal("no fast path map entries after Set")
		}
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
		matchesSet(fmt.Sprintf("round %d", round))
	}

	// What needs more than routes is refused, changing nothing.
	before := snapshot()
	refused := []overlay.RouteChange{
		{Network: "blue", Route: route(1)},
		{Network: "red", Route: overlay.RemoteRoute{Prefix: pp("10.2.9.0/24"), Label: 1, RemoteUnderlay: remotes[0], Encaps: encaps}},
	}
	if fast {
		// vamber1 has no program: attachment work.
		refused = append(refused, overlay.RouteChange{Network: "amber",
			Route: overlay.RemoteRoute{Prefix: pp("10.4.0.2/32"), Label: 3002, RemoteUnderlay: remotes[0], Encaps: encaps}})
	}
	for _, c := range refused {
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
	if got := snapshot(); got != before {
		t.Fatalf("a refused UpdateRoutes changed the kernel:\n%s\nbefore:\n%s", got, before)
	}
	if fast {
		// Once Set attached amber's program, its last fast-path route goes
		// and comes back route by route; the program stays meanwhile.
		fastAmber := overlay.RemoteRoute{Prefix: pp("10.4.0.2/32"), Label: 3002, RemoteUnderlay: remotes[0], Encaps: encaps}
		amber = append(amber, fastAmber)
		if err := m.Set(ctx, state()); err != nil {
			t.Fatalf("Set with a fast-path route in amber: %v", err)
		}
		if n := fastPathFilters(t, gw, "vamber1"); n != 1 {
			t.Fatalf("%d fast path filters on vamber1, want 1", n)
		}
		withRoute := m.FastPathStats()
		if err := m.UpdateRoutes(ctx, []overlay.RouteChange{{Network: "amber", Remove: true, Route: fastAmber}}); err != nil {
			t.Fatalf("UpdateRoutes removing amber's fast-path route: %v", err)
		}
		if n := fastPathFilters(t, gw, "vamber1"); n != 1 {
			t.Errorf("%d fast path filters on vamber1 after its last fast-path route went, want 1 until the next Set", n)
		}
		st := m.FastPathStats()
		if st.RoutesFast != withRoute.RoutesFast-1 || st.EndpointsFast != withRoute.EndpointsFast-1 || st.EndpointsKernel != withRoute.EndpointsKernel+1 {
			t.Errorf("counts after amber's last fast-path route went: %+v, with it: %+v", st, withRoute)
		}
		if err := m.UpdateRoutes(ctx, []overlay.RouteChange{{Network: "amber", Route: fastAmber}}); err != nil {
			t.Fatalf("UpdateRoutes adding amber's fast-path route back: %v", err)
		}
		matchesSet("amber's route back")
	}
	// After a Resync, until the next Set.
	if err := m.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.UpdateRoutes(ctx, []overlay.RouteChange{{Network: "red", Route: route(1)}}); !errors.Is(err, overlay.ErrNeedSet) {
		t.Errorf("UpdateRoutes after Resync: %v, want ErrNeedSet", err)
	}
}
