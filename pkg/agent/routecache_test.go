package agent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/iotfabric/iotfabric/pkg/cni"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// TestRouteChangesMatchDesired: random route changes from one controller
// (several route distinguishers per prefix, own routes, routes to a local
// endpoint's address, unusable routes), read back with DesiredChanges and
// applied to a copy of the last whole state, give exactly the remote routes
// a whole build gives; most of them go route by route.
func TestRouteChangesMatchDesired(t *testing.T) {
	t.Run("one controller", func(t *testing.T) { testRouteChangesMatchDesired(t, []string{"ctl"}) })
	// Two live controllers (an HA pair): changes from either, mostly the
	// same routes, some only on one; the route in force is the first
	// controller's that holds it.
	t.Run("two controllers", func(t *testing.T) { testRouteChangesMatchDesired(t, []string{"ctl-a", "ctl-b"}) })
}

func testRouteChangesMatchDesired(t *testing.T, ctls []string) {
	c, stop := runCore(t, filepath.Join(t.TempDir(), "state"))
	defer stop()
	ctx := context.Background()
	c.do(ctx, func(s *coreState) {
		s.p.Tables["red"], s.p.Tables["blue"] = 7001, 7002
		s.eps["pod"] = &Endpoint{Endpoint: cni.Endpoint{ID: "pod", Network: "red", Label: 20, HostIf: "iofe1",
			Attached: true, Addresses: []netip.Addr{netip.MustParseAddr("10.1.0.3")}}}
	})
	rng := rand.New(rand.NewPCG(3, 4))
	nexthops := []string{"192.0.2.2", "192.0.2.3", "192.0.2.1" /* own */, "2001:db8::1" /* unusable */}
	randRoute := func() *v1.Route {
		return &v1.Route{Network: []string{"red", "blue"}[rng.IntN(2)], Prefix: fmt.Sprintf("10.1.0.%d/32", rng.IntN(12)),
			RouteDistinguisher: fmt.Sprintf("192.0.2.%d:1", 2+rng.IntN(3)), NextHop: nexthops[rng.IntN(len(nexthops))], Label: 100 + uint32(rng.IntN(50))}
	}
	type model map[string]map[netip.Prefix]overlay.RemoteRoute
	fromState := func(st overlay.State) model {
		m := model{}
		for _, n := range st.Networks {
			m[n.Name] = map[netip.Prefix]overlay.RemoteRoute{}
			for _, r := range n.Routes {
				m[n.Name][r.Prefix] = r
			}
		}
		return m
	}
	whole := func() model { // built without touching the cache
		var st overlay.State
		c.do(ctx, func(s *coreState) {
			st = buildDesired(c.cfg.Underlay, c.cfg.Encaps, s.p.Tables, s.eps, effectiveRoutes(s))
		})
		return fromState(st)
	}
	var snap []*v1.Route
	for range 20 {
		snap = append(snap, randRoute())
	}
	for _, ctl := range ctls {
		if err := c.applyRoutes(ctx, ctl, &v1.GatewayRoutes{Kind: v1.GatewayRoutes_KIND_SNAPSHOT, Revision: 1, Put: snap}); err != nil {
			t.Fatal(err)
		}
	}
	st, _, err := c.Desired(ctx)
	if err != nil {
		t.Fatal(err)
	}
	have := fromState(st)
	byChange, whole_ := 0, 0
	for round := range 400 {
		m := &v1.GatewayRoutes{Kind: v1.GatewayRoutes_KIND_CHANGES, Revision: int64(2 + round)}
		for range 1 + rng.IntN(4) {
			if rng.IntN(3) == 0 {
				m.Delete = append(m.Delete, randRoute())
			} else {
				m.Put = append(m.Put, randRoute())
			}
		}
		if round%97 == 50 {
			m.Kind = v1.GatewayRoutes_KIND_SNAPSHOT // invalidates: a whole build follows
		}
		// One controller's change, or (half the time with two) the same
		// change from both, in either order, as an HA pair sends it.
		to := []string{ctls[rng.IntN(len(ctls))]}
		if len(ctls) > 1 && rng.IntN(2) == 0 {
			to = []string{to[0], ctls[0]}
			if to[0] == ctls[0] {
				to[1] = ctls[1]
			}
		}
		for _, ctl := range to {
			if err := c.applyRoutes(ctx, ctl, m); err != nil {
				t.Fatal(err)
			}
		}
		ch, err := c.DesiredChanges(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		if ch.OK {
			byChange++
			for _, rc := range ch.Changes {
				if have[rc.Network] == nil {
					have[rc.Network] = map[netip.Prefix]overlay.RemoteRoute{}
				}
				if rc.Remove {
					delete(have[rc.Network], rc.Route.Prefix)
				} else {
					have[rc.Network][rc.Route.Prefix] = rc.Route
				}
			}
		} else {
			whole_++
			st, _, err := c.Desired(ctx)
			if err != nil {
				t.Fatal(err)
			}
			have = fromState(st)
		}
		want := whole()
		for _, n := range []string{"red", "blue"} {
			if len(have[n]) != len(want[n]) {
				t.Fatalf("round %d: network %s has %d routes by changes, %d by a whole build:\n%v\n%v", round, n, len(have[n]), len(want[n]), have[n], want[n])
			}
			for p, r := range want[n] {
				if h, ok := have[n][p]; !ok || h.Label != r.Label || h.RemoteUnderlay != r.RemoteUnderlay {
					t.Fatalf("round %d: network %s %s: %+v by changes, %+v by a whole build", round, n, p, h, r)
				}
			}
		}
	}
	t.Logf("%d rounds route by route, %d whole", byChange, whole_)
	if byChange < 300 {
		t.Fatalf("only %d of 400 rounds went route by route", byChange)
	}
}
