package vpn

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	storekeys "github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// TestRouteWatchSnapshotMemory: a RouteService watch of a network of
// 200,000 routes (IOTFABRIC_WATCH_ROUTES sets another number; 20,000 in the
// tests) reads its snapshot in pages of 1,024 from the watchers' shared
// state. It prints the heap a watch holds while it sends its snapshot and
// what it allocates, next to the whole-table copy a watch made before (one
// slice of every route, sorted), measured in the same run; and checks that
// the pages hold every route once.
func TestRouteWatchSnapshotMemory(t *testing.T) {
	n := 20_000
	if v := os.Getenv("IOTFABRIC_WATCH_ROUTES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > 1<<22 {
			t.Fatalf("IOTFABRIC_WATCH_ROUTES=%q", v)
		}
	}
	st, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	var ops []store.Op
	flush := func() {
		if _, err := st.Txn(ctx, nil, ops); err != nil {
			t.Fatal(err)
		}
		ops = ops[:0]
	}
	add := func(k string, m proto.Message) {
		b, _ := proto.Marshal(m)
		ops = append(ops, store.Put(k, b))
		if len(ops) == 5000 {
			flush()
		}
	}
	add(storekeys.Network("n"), &v1.VirtualNetwork{Name: "n", Id: 1, Encapsulations: []v1.Encapsulation{udp}})
	const perGw = 1000
	for i := range n {
		g := i / perGw
		name := fmt.Sprintf("g%05d", g)
		if i%perGw == 0 {
			add(storekeys.Gateway(name), &v1.Gateway{Name: name, UnderlayAddress: fmt.Sprintf("100.64.%d.%d", byte(g>>8), byte(g)), Encapsulations: []v1.Encapsulation{udp}})
		}
		id := fmt.Sprintf("e%07d", i)
		add(storekeys.Endpoint(id), &v1.Endpoint{Id: id, Network: "n", Gateway: name, Addresses: []string{fmt.Sprintf("10.%d.%d.%d", i>>16, byte(i>>8), byte(i))}, Label: uint32(16 + i%perGw)})
	}
	flush()
	r := NewRunner(st, nil, 64512, nil)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.Run(rctx) }()
	defer func() { cancel(); <-done }()
	<-r.Ready()
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	allocated := func() uint64 {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.TotalAlloc
	}
	// A first watch makes the network's shared watch state (once for all
	// the network's watchers).
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	r.WatchRoutes(wctx, "n")
	base := heap()

	// Before: the snapshot copied whole and sorted, held while it was sent.
	a0 := allocated()
	start := time.Now()
	var cur []NetRoute
	r.do(ctx, func(s *state) {
		nw := s.nets["n"]
		cur = make([]NetRoute, 0, len(nw.sent))
		for _, rt := range nw.sent {
			cur = append(cur, rt)
		}
	})
	sortRoutes(cur)
	copyTook := time.Since(start)
	copyAlloc := allocated() - a0
	copyHeld := heap() - base
	if len(cur) != n {
		t.Fatalf("%d routes copied, want %d", len(cur), n)
	}
	cur = nil

	// After: pages read from the shared state; the largest heap held while
	// a page is being sent.
	wt, known := r.WatchRoutes(wctx, "n")
	if !known {
		t.Fatal("network unknown")
	}
	var pageHeld uint64
	// The test's own bookkeeping (a set of every route seen) is made
	// before base is measured, with room for all.
	seen, pages := make(map[RouteCursor]bool, n), 0
	var nextTook time.Duration
	var pagedAlloc uint64
	base = heap()
	for more := true; more; {
		var page []NetRoute
		var err error
		a0, t0 := allocated(), time.Now()
		if page, more, err = wt.Next(ctx, 1024); err != nil {
			t.Fatal(err)
		}
		nextTook += time.Since(t0)
		pagedAlloc += allocated() - a0
		for _, rt := range page {
			c := rt.Cursor()
			if seen[c] {
				t.Fatalf("route %v in two pages", c)
			}
			seen[c] = true
		}
		if pages%1000 == 0 { // sampled: a GC per page would dominate the time
			pageHeld = max(pageHeld, heap()-min(base, heap()))
		}
		pages++
		runtime.KeepAlive(page)
	}
	if len(seen) != n || wt.CatchUp() != 0 {
		t.Fatalf("%d routes in %d pages (catch-up %d), want %d", len(seen), pages, wt.CatchUp(), n)
	}
	seen = nil
	mb := func(b uint64) float64 { return float64(b) / (1 << 20) }
	fmt.Printf("route watch snapshot of %d routes: whole copy (before) held %.1f MB, allocated %.1f MB, %v; "+
		"pages of 1,024 (now) held at most %.2f MB, allocated %.1f MB in %d pages, %v in Next\n",
		n, mb(copyHeld), mb(copyAlloc), copyTook.Round(time.Millisecond), mb(pageHeld), mb(pagedAlloc), pages, nextTook.Round(time.Millisecond))

}
