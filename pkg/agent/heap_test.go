package agent

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/internal/heapstat"
	"github.com/iotfabric/iotfabric/pkg/cni"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// heapRoutesDefault is the table TestRouteTableHeap loads (IOTFABRIC_HEAP_ROUTES
// sets another).
const heapRoutesDefault = 10_000

// maxHeapPerRoute bounds the live heap the core (the routes, the session's
// map, the desired-state cache) may hold per route: 216 bytes on amd64 when
// written, 785 before docs/agent.md's "Memory"; the gateway goal (under 30
// MiB RSS with 10,000 routes) leaves little more.
const maxHeapPerRoute = 300

// maxGarbagePerChange bounds what one route change allocates on its way from
// the session to the data plane (the route, the route log's record, the
// route change handed to the applier), however large the table.
const maxGarbagePerChange = 16 << 10

// countingApplier applies whole states and route changes by counting the
// remote routes (it keeps none: the data plane's own model is pkg/overlay's).
type countingApplier struct {
	mu      sync.Mutex
	routes  int
	sets    int
	updates int
}

func (a *countingApplier) Set(_ context.Context, s overlay.State) error {
	n := 0
	for _, nw := range s.Networks {
		n += len(nw.Routes)
	}
	a.mu.Lock()
	a.routes, a.sets = n, a.sets+1
	a.mu.Unlock()
	return nil
}

func (a *countingApplier) UpdateRoutes(_ context.Context, ch []overlay.RouteChange) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range ch {
		if c.Remove {
			a.routes--
		} else if c.Route.Label%2 == 0 { // heapRoute's labels: even when new
			a.routes++
		}
	}
	a.updates++
	return nil
}

func (a *countingApplier) count() (routes, sets, updates int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.routes, a.sets, a.updates
}

// heapRoute is the i-th remote endpoint's route as the controller sends it.
func heapRoute(i int, label uint32) *v1.Route {
	a := netip.AddrFrom4([4]byte{10, byte(96 + i>>16), byte(i >> 8), byte(i)})
	return &v1.Route{Network: "red", Prefix: netip.PrefixFrom(a, 32).String(), RouteDistinguisher: "192.0.2.2:1",
		Label: label, NextHop: "192.0.2.2", RouteTargets: []string{"target:64512:100"},
		Encapsulations: []v1.Encapsulation{v1.Encapsulation_ENCAPSULATION_MPLS_O_UDP, v1.Encapsulation_ENCAPSULATION_MPLS_O_GRE},
		Origin:         v1.RouteOrigin_ROUTE_ORIGIN_LOCAL, Endpoint: fmt.Sprintf("ep-%d", i)}
}

// wire returns m as the session receives it: decoded from its encoding (as
// gRPC decodes it), so that its strings and slices are laid out the same.
func wire(t testing.TB, m *v1.GatewayRoutes) *v1.GatewayRoutes {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out := &v1.GatewayRoutes{}
	if err := proto.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func totalAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

func writeHeapProfile(t *testing.T, name string) {
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		t.Fatal(err)
	}
}

// TestRouteTableHeap: 10,000 routes from one controller go through the
// session's path (a snapshot decoded from the wire, applyRoutes, the reconcile
// loop, the route log) into an applier that keeps none of them; the core's
// live heap per route and the garbage one route change makes are printed
// (HEAP lines) and bounded. IOTFABRIC_HEAP_PROFILE=heap.out writes the heap
// profile with the table loaded; go tool pprof -sample_index=inuse_space
// -top heap.out shows where it goes.
func TestRouteTableHeap(t *testing.T) {
	n := heapRoutesDefault
	if v := os.Getenv("IOTFABRIC_HEAP_ROUTES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > 1<<20 {
			t.Fatalf("IOTFABRIC_HEAP_ROUTES=%q: want a number of routes up to %d", v, 1<<20)
		}
	}
	if os.Getenv("IOTFABRIC_HEAP_PROFILE") != "" {
		defer func(r int) { runtime.MemProfileRate = r }(runtime.MemProfileRate)
		runtime.MemProfileRate = 1
	}
	dir := filepath.Join(t.TempDir(), "state")
	c, stop := runCore(t, dir)
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.do(ctx, func(s *coreState) {
		s.p.Tables["red"] = 7001
		s.eps["pod"] = &Endpoint{Endpoint: cni.Endpoint{ID: "pod", Network: "red", Label: 20, HostIf: "iofe1",
			Attached: true, Addresses: []netip.Addr{netip.MustParseAddr("10.1.0.3")}}}
	})
	app := &countingApplier{}
	rec := NewReconciler(coreSource{c}, app, nil, 0, nil)
	recDone := make(chan struct{})
	go func() { defer close(recDone); rec.Run(ctx) }()
	defer func() { cancel(); <-recDone }()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); !ok(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				r, s, u := app.count()
				t.Fatalf("%s: the applier has %d routes after %d sets and %d updates", what, r, s, u)
			}
		}
	}
	// flushed waits until the route log holds what the core has.
	flushed := func() {
		t.Helper()
		waitFor("route log", func() bool {
			done := false
			c.do(ctx, func(s *coreState) { done = len(s.routesPending) == 0 && s.routeFlushes == c.rlog.flushes.Load() })
			return done
		})
	}
	waitFor("first state", func() bool { _, s, _ := app.count(); return s > 0 })
	flushed()
	h0 := heapstat.Live()

	put := make([]*v1.Route, n)
	for i := range n {
		put[i] = heapRoute(i, uint32(1000+2*i))
	}
	snap := wire(t, &v1.GatewayRoutes{Kind: v1.GatewayRoutes_KIND_SNAPSHOT, Revision: 1, ControllerId: "ctl-1", Put: put})
	put = nil
	if err := c.applyRoutes(ctx, "ctl", snap); err != nil {
		t.Fatal(err)
	}
	snap = nil
	waitFor("snapshot", func() bool { r, _, _ := app.count(); return r == n })
	flushed()
	h1 := heapstat.Live()
	if f := os.Getenv("IOTFABRIC_HEAP_PROFILE"); f != "" {
		writeHeapProfile(t, f)
	}
	perRoute := float64(int64(h1)-int64(h0)) / float64(n)

	// Route changes one update each (as the controller streams them): a
	// new route, then a changed one, then a withdrawal.
	const changes = 150
	upd := make([]*v1.GatewayRoutes, 0, changes)
	for i := range changes / 3 {
		rev := int64(2 + 3*i)
		upd = append(upd,
			wire(t, &v1.GatewayRoutes{Kind: v1.GatewayRoutes_KIND_CHANGES, Revision: rev, ControllerId: "ctl-1", Put: []*v1.Route{heapRoute(n+i, uint32(1000+2*(n+i)))}}),
			wire(t, &v1.GatewayRoutes{Kind: v1.GatewayRoutes_KIND_CHANGES, Revision: rev + 1, ControllerId: "ctl-1", Put: []*v1.Route{heapRoute(i, uint32(1001+2*i))}}),
			wire(t, &v1.GatewayRoutes{Kind: v1.GatewayRoutes_KIND_CHANGES, Revision: rev + 2, ControllerId: "ctl-1", Delete: []*v1.Route{{Network: "red", Prefix: heapRoute(n+i, 0).Prefix, RouteDistinguisher: "192.0.2.2:1"}}}),
		)
	}
	_, sets0, upd0 := app.count()
	a0 := totalAlloc()
	for i, m := range upd {
		if err := c.applyRoutes(ctx, "ctl", m); err != nil {
			t.Fatal(err)
		}
		upd[i] = nil
		// One change at a time, as a steady stream brings them.
		waitFor("change", func() bool { _, _, u := app.count(); return u > upd0+i })
	}
	waitFor("changes", func() bool { r, _, _ := app.count(); return r == n })
	flushed()
	perChange := float64(totalAlloc()-a0) / changes
	_, sets1, upd1 := app.count()
	h2 := heapstat.Live()

	fmt.Printf("HEAP core with %d routes: %.0f B live heap per route (%.1f MiB), %.0f B allocated per route change (%d changes: %d route updates, %d whole sets); after the changes %.0f B per route\n",
		n, perRoute, float64(h1-h0)/(1<<20), perChange, changes, upd1-upd0, sets1-sets0, float64(int64(h2)-int64(h0))/float64(n))
	if perRoute > maxHeapPerRoute {
		t.Errorf("the core holds %.0f B per route, want at most %d", perRoute, maxHeapPerRoute)
	}
	if perChange > maxGarbagePerChange {
		t.Errorf("a route change allocates %.0f B, want at most %d", perChange, maxGarbagePerChange)
	}
	if sets1 != sets0 {
		t.Errorf("route changes made %d whole sets, want none", sets1-sets0)
	}
}
