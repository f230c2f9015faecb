package overlay_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/iotfabric/iotfabric/internal/heapstat"
	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/internal/testenv"
	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	"github.com/iotfabric/iotfabric/pkg/overlay/overlaytest"
)

// maxManagerHeapPerRoute bounds the live heap the Manager keeps per remote
// route it programmed: its record of the kernel's routes (about 70 bytes a
// route) and, with MPLSoUDP where the kernel has nexthop objects, of one
// nexthop a route (each remote endpoint has its label), with the ids in use
// and, once UpdateRoutes ran, the routes per nexthop (about 75 more). The
// gateway's agent holds its own copy of the routes (pkg/agent
// TestRouteTableHeap); docs/agent.md has the whole budget.
const maxManagerHeapPerRoute = 176

// TestManagerHeap: the Manager's live heap per route once Set programmed
// 10,000 remote routes (MPLSoUDP where the kernel can, plain routes
// otherwise), and after one route change went through UpdateRoutes; printed
// (HEAP lines) and bounded.
func TestManagerHeap(t *testing.T) {
	netnstest.RequireRoot(t)
	testenv.RequireProgram(t, "ip", "iproute2")
	const n = 10_000
	ctx := context.Background()
	gw, peer := netnstest.New(t, "iofheap"), netnstest.New(t, "iofhpeer")
	overlaytest.Underlay(t, gw, netip.MustParseAddr("192.0.2.1"), peer, netip.MustParseAddr("192.0.2.2"))
	m, err := overlay.New(ctx, overlay.Config{NetNS: gw.Path(), VRF: overlay.VRFOff})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	kind := encap.Plain
	if m.Features().Supports(encap.MPLSoUDP) {
		kind = encap.MPLSoUDP
	}
	empty := benchState(0, kind)
	empty.Networks[0].Routes = nil
	if err := m.Set(ctx, empty); err != nil {
		t.Fatal(err)
	}
	h0 := heapstat.Live()
	s := benchState(n, kind)
	if err := m.Set(ctx, s); err != nil {
		t.Fatal(err)
	}
	r := s.Networks[0].Routes[0]
	s = overlay.State{}
	h1 := heapstat.Live()
	r.Label++
	if err := m.UpdateRoutes(ctx, []overlay.RouteChange{{Network: "bench", Route: r}}); err != nil {
		t.Fatal(err)
	}
	h2 := heapstat.Live()
	afterSet, afterUpdate := float64(int64(h1)-int64(h0))/n, float64(int64(h2)-int64(h0))/n
	fmt.Printf("HEAP overlay.Manager with %d %s routes: %.0f B live heap per route after Set, %.0f B after a route change\n", n, kind, afterSet, afterUpdate)
	if afterSet > maxManagerHeapPerRoute || afterUpdate > maxManagerHeapPerRoute {
		t.Errorf("the manager keeps %.0f B per route after Set and %.0f B after UpdateRoutes, want at most %d", afterSet, afterUpdate, maxManagerHeapPerRoute)
	}
	if err := m.Set(ctx, empty); err != nil { // routes before the namespace's nexthops
		t.Fatal(err)
	}
}
