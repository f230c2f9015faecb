package vpn

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Paging through a network's routes gives every route once, in cursor order,
// whatever the page size, the first page walked and the others cut from the
// sorted routes; a change between pages is seen by the next page.
func TestRoutesPage(t *testing.T) {
	tb := NewTable(64512, nil)
	udp := v1.Encapsulation_ENCAPSULATION_MPLS_O_UDP
	tb.PutNetwork(&v1.VirtualNetwork{Name: "n", Id: 1, ImportRouteTargets: []string{"target:65000:5"}, Encapsulations: []v1.Encapsulation{udp}})
	tb.PutGateway(&v1.Gateway{Name: "g", UnderlayAddress: "192.0.2.1", Encapsulations: []v1.Encapsulation{udp}})
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 700 {
		tb.PutEndpoint(&v1.Endpoint{Id: fmt.Sprint("e", i), Network: "n", Gateway: "g",
			Addresses: []string{fmt.Sprintf("10.0.%d.%d", rng.IntN(4), i%250+1), fmt.Sprintf("fd00::%x", i+1)}, Label: uint32(16 + i)})
	}
	var evs []bgp.RouteEvent
	for i := range 300 { // the same prefixes as some local routes, other RDs
		rd := bgp.RD{Addr: netip.MustParseAddr("192.0.2.99"), Index: uint16(i % 3)}
		evs = append(evs, bgp.RouteEvent{Peer: netip.MustParseAddr("10.9.9.9"), Route: bgp.Route{Prefix: netip.MustParsePrefix(fmt.Sprintf("10.0.%d.%d/32", i%4, i%250+1)),
			RD: rd, Label: 50, NextHop: netip.MustParseAddr("192.0.2.99"), RouteTargets: []bgp.RouteTarget{{ASN: 65000, Value: 5}}}})
	}
	tb.Received(evs)
	tb.Flush()
	all := tb.Routes("n")
	if len(all) != 2*700+300 {
		t.Fatalf("%d routes in the table", len(all))
	}
	for _, size := range []int{1, 7, 100, 5000} {
		var got []NetRoute
		var after *RouteCursor
		for pages := 0; ; pages++ {
			rs, more := tb.routesPage("n", after, size)
			if len(rs) > size || pages > len(all) {
				t.Fatalf("size %d: page of %d", size, len(rs))
			}
			got = append(got, rs...)
			if !more {
				break
			}
			c := rs[len(rs)-1].Cursor()
			after = &c
		}
		if len(got) != len(all) {
			t.Fatalf("size %d: %d routes, want %d", size, len(got), len(all))
		}
		for i := 1; i < len(got); i++ {
			if !got[i-1].Cursor().Less(got[i].Cursor()) {
				t.Fatalf("size %d: %v then %v", size, got[i-1].Cursor(), got[i].Cursor())
			}
		}
	}
	// A change between pages: the next page is cut from the new table.
	rs, _ := tb.routesPage("n", nil, 10)
	c := rs[9].Cursor()
	rs, _ = tb.routesPage("n", &c, 10) // sorted and kept
	c = rs[9].Cursor()
	tb.PutEndpoint(&v1.Endpoint{Id: "late", Network: "n", Gateway: "g", Addresses: []string{"10.255.0.1"}, Label: 9999})
	tb.Flush()
	n, late := 20, false
	for {
		page, more := tb.routesPage("n", &c, 50)
		n += len(page)
		for _, r := range page {
			late = late || r.Endpoint == "late"
		}
		if !more {
			break
		}
		c = page[len(page)-1].Cursor()
	}
	if n != len(all)+1 || !late {
		t.Fatalf("%d routes after a change between pages (the new one listed: %v), want %d", n, late, len(all)+1)
	}
}

// WatchRoutes as a test reads it: the whole snapshot, then the changes.
func (r *Runner) watchAll(ctx context.Context, network string) ([]NetRoute, <-chan []RouteChange) {
	wt, _ := r.WatchRoutes(ctx, network)
	var cur []NetRoute
	for {
		page, more, err := wt.Next(ctx, 1000)
		if err != nil {
			return cur, wt.Changes()
		}
		cur = append(cur, page...)
		if !more {
			break
		}
	}
	// The changes published while the pages were read, applied.
	byKey := map[bgp.RouteKey]int{}
	for i, rt := range cur {
		byKey[rt.Key()] = i
	}
	for range wt.CatchUp() {
		batch, ok := <-wt.Changes()
		if !ok {
			break
		}
		for _, c := range batch {
			i, had := byKey[c.Route.Key()]
			switch {
			case c.Delete && had:
				cur[i].Origin = 0
				delete(byKey, c.Route.Key())
			case !c.Delete && had:
				cur[i] = c.Route
			case !c.Delete:
				byKey[c.Route.Key()] = len(cur)
				cur = append(cur, c.Route)
			}
		}
	}
	cur = slices.DeleteFunc(cur, func(rt NetRoute) bool { return rt.Origin == 0 })
	sortRoutes(cur)
	return cur, wt.Changes()
}

// A route watch's snapshot read in small pages while random changes land
// between them: the pages plus the catch-up batches are exactly the table
// when the last page was read.
func TestRouteWatchPagesDuringChanges(t *testing.T) {
	sp := bgptest.NewFakeSpeaker()
	r, st, ctx := startRunner(t, sp)
	rng := rand.New(rand.NewPCG(7, 8))
	for step := range 200 {
		randomChange(t, ctx, st, sp, rng, step)
		if step%20 == 0 {
			barrier(t, r, st, sp, step) // received markers accumulate: more routes
		}
	}
	barrier(t, r, st, sp, 200)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wt, known := r.WatchRoutes(wctx, "n1")
	if !known {
		t.Fatal("n1 unknown")
	}
	have := map[string]NetRoute{}
	step := 201
	for more := true; more; step++ {
		var page []NetRoute
		var err error
		if page, more, err = wt.Next(ctx, 3); err != nil {
			t.Fatal(err)
		}
		for _, rt := range page {
			have[rt.Key().String()] = rt
		}
		if more {
			randomChange(t, ctx, st, sp, rng, step)
			barrier(t, r, st, sp, step)
		}
	}
	for range wt.CatchUp() {
		for _, c := range <-wt.Changes() {
			if c.Delete {
				delete(have, c.Route.Key().String())
			} else {
				have[c.Route.Key().String()] = c.Route
			}
		}
	}
	rs, _ := r.Routes("n1")
	want := map[string]NetRoute{}
	for _, rt := range rs {
		want[rt.Key().String()] = rt
	}
	if !same(have, want) {
		t.Fatalf("after %d pages the watch has %v, the table %v", step-201, describe(have), describe(want))
	}
	t.Logf("%d routes in %d pages with a change after each", len(want), step-201)
}
