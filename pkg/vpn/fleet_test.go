package vpn

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	storekeys "github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// TestSharedRouteStateMemory: gateways in one network, 10 endpoints each,
// every gateway with its route stream attached: the route table's memory
// per gateway (the routes are held once) and the time one endpoint change
// takes to reach every stream. 1,000 gateways in the tests;
// IOTFABRIC_BENCH_GATEWAYS=10000 for the figure make bench-fleet quotes.
func TestSharedRouteStateMemory(t *testing.T) {
	gateways, perGw := 1000, 10
	if v := os.Getenv("IOTFABRIC_BENCH_GATEWAYS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100_000 {
			t.Fatalf("IOTFABRIC_BENCH_GATEWAYS=%q", v)
		}
		gateways = n
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
	for g := range gateways {
		name := fmt.Sprintf("g%05d", g)
		add(storekeys.Gateway(name), &v1.Gateway{Name: name, UnderlayAddress: fmt.Sprintf("100.%d.%d.%d", 64+g>>16, byte(g>>8), byte(g)), Encapsulations: []v1.Encapsulation{udp}})
		for e := range perGw {
			i := g*perGw + e
			id := fmt.Sprintf("e%07d", i)
			add(storekeys.Endpoint(id), &v1.Endpoint{Id: id, Network: "n", Gateway: name, Addresses: []string{fmt.Sprintf("10.%d.%d.%d", i>>16, byte(i>>8), byte(i))}, Label: uint32(16 + e)})
		}
	}
	flush()
	r := NewRunner(st, nil, 64512, nil)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.Run(rctx) }()
	defer func() { cancel(); <-done }()
	<-r.Ready()
	routes, _ := r.Routes("n") // the table is loaded
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	// One stream first: the network's shared state is made.
	first := r.WatchGateway(ctx, "g00000", Resume{})
	<-first
	base := heap()

	var mu sync.Mutex
	var lat []time.Duration
	var t0 time.Time
	var wg sync.WaitGroup
	probe := "10.255.0.1/32"
	start := time.Now()
	for g := 1; g < gateways; g++ {
		ch := r.WatchGateway(ctx, fmt.Sprintf("g%05d", g), Resume{})
		if u := <-ch; len(u.Put) != len(routes) {
			t.Fatalf("gateway %d: snapshot of %d routes, want %d", g, len(u.Put), len(routes))
		}
		wg.Go(func() {
			for u := range ch {
				for _, rt := range u.Put {
					if rt.Prefix == probe {
						mu.Lock()
						lat = append(lat, time.Since(t0))
						mu.Unlock()
						return
					}
				}
			}
		})
	}
	attach := time.Since(start)
	all := heap()
	perGateway := float64(all-base) / float64(gateways-1)

	b, _ := proto.Marshal(&v1.Endpoint{Id: "probe", Network: "n", Gateway: "g00000", Addresses: []string{"10.255.0.1"}, Label: 9999})
	mu.Lock()
	t0 = time.Now()
	mu.Unlock()
	if _, err := st.Txn(ctx, nil, []store.Op{store.Put(storekeys.Endpoint("probe"), b)}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[int(float64(len(lat)-1)*q)].Round(time.Microsecond) }
	fmt.Printf("shared route state: %d gateways x %d endpoints in one network (%d routes): heap %.0f MB, %.1f KB per gateway stream beyond the routes; "+
		"%d snapshots in %v; one change to every stream p50 %v p99 %v max %v\n",
		gateways, perGw, len(routes), float64(all)/(1<<20), perGateway/1024, gateways, attach.Round(time.Millisecond), p(.5), p(.99), p(1))
	if perGateway > 20<<10 {
		t.Errorf("%.1f KB per gateway, want under 20 KB", perGateway/1024)
	}
}
