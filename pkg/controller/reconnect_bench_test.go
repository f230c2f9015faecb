package controller

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/iotfabric/iotfabric/pkg/ipam"
	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/etcd"
	"github.com/iotfabric/iotfabric/pkg/store/etcd/etcdtest"
	"github.com/iotfabric/iotfabric/pkg/store/storetest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// reconnectBefore is a gateway's reconnection as the controller served it
// before a registration of an unchanged gateway was made read-only, store
// call for store call: the API read the gateway (for its underlay warning),
// RegisterGateway read it (for the link history), then read and rewrote it
// (state up, last seen now) and listed its blocks; the full report read the
// gateway, listed and read its endpoints, then read each reported endpoint
// again; the route stream opened as it does now.
func reconnectBefore(ctx context.Context, c *Controller, i int, eps []*v1.AgentEndpoint, stream string) error {
	g := reconnectGateway(i)
	for range 2 {
		if _, err := c.GetGateway(ctx, g.Name); err != nil {
			return err
		}
	}
	u := proto.Clone(g).(*v1.Gateway)
	u.State, u.LastSeen = v1.GatewayState_GATEWAY_STATE_UP, timestamppb.Now()
	a := reconnectAgent
	if _, err := c.updateGateway(ctx, u, &a); err != nil {
		return err
	}
	if _, err := ipam.IndexedGatewayBlocks(ctx, c.st, g.Name); err != nil {
		return err
	}
	if _, err := c.GetGateway(ctx, g.Name); err != nil {
		return err
	}
	if _, _, err := c.ListEndpoints(ctx, "", g.Name); err != nil {
		return err
	}
	for _, e := range eps {
		if _, err := c.reportOne(ctx, g.Name, e, nil); err != nil {
			return err
		}
	}
	return c.OpenGatewayStream(ctx, g.Name, stream)
}

// TestBenchReconnect is make bench-register: IOTFABRIC_BENCH_REGISTER
// gateways (2,000) with 2 endpoints each on a real etcd all reconnect to a
// controller, 64 at once, as after the controller's restart: Register, a full
// report of their unchanged endpoints, and their route stream's opening. It
// prints reconnections per second now (the controller running its gateway
// cache, as pkg/server starts it), now without the cache (another controller
// over the same store), as before (reconnectBefore), and a bare etcd read and
// conditional write per gateway measured in the same run (the machine is noisy: compare the ratios), with the store calls each
// costs; five rounds, each way in turn (each round starting with the next),
// and the medians of the rates and of the ratios within a round. It also
// prints the heap the gateway cache adds per gateway.
func TestBenchReconnect(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("IOTFABRIC_BENCH_REGISTER"))
	if n <= 0 {
		t.Skip("benchmark: run with IOTFABRIC_BENCH_REGISTER=<gateways> (make bench-register)")
	}
	const conc, rounds = 64, 5
	srv := etcdtest.Start(t)
	st, err := etcd.Open(context.Background(), etcd.Options{Endpoints: []string{srv.Endpoint}, Namespace: "/bench/"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cs := storetest.NewCounting(st)
	c := New(cs, Config{})
	ctx := context.Background()
	newReconnectNet(t, c)
	// each runs fn for every gateway, conc at once, and returns how long
	// that took.
	each := func(fn func(i int) error) (time.Duration, error) {
		var next atomic.Int64
		var wg sync.WaitGroup
		errs := make([]error, conc)
		start := time.Now()
		for w := range conc {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= n || errs[w] != nil {
						return
					}
					errs[w] = fn(i)
				}
			})
		}
		wg.Wait()
		return time.Since(start), errors.Join(errs...)
	}
	eps := make([][]*v1.AgentEndpoint, n)
	took, err := each(func(i int) (err error) {
		eps[i], err = connectGateway(ctx, c, i, 2)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("bench-register: %d gateways with 2 endpoints each on etcd, connected for the first time in %.1f s; each reconnects (Register, full report, route stream open), %d at once\n",
		n, took.Seconds(), conc)
	// The controller runs its gateway cache, as a running controller does
	// (pkg/server): what it holds is measured as the heap it adds.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	runGatewayCache(t, c)
	listed := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	fmt.Printf("bench-register: gateway cache listed %d gateways in %.0f ms, %.0f bytes of heap per gateway\n",
		n, listed.Seconds()*1000, float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(n))
	// The same controller's registrations without the cache: another
	// controller over the same store.
	plain := New(cs, Config{})
	stream := 0
	ways := []struct {
		name string
		fn   func(i int) error
	}{
		{"before", func(i int) error {
			return reconnectBefore(ctx, c, i, eps[i], keys.StreamID("before", uint64(stream*n+i)))
		}},
		{"now", func(i int) error {
			_, err := reconnect(ctx, c, i, eps[i], keys.StreamID("now", uint64(stream*n+i)))
			return err
		}},
		// Without the gateway cache: Register reads the store.
		{"now, no cache", func(i int) error {
			_, err := reconnect(ctx, plain, i, eps[i], keys.StreamID("plain", uint64(stream*n+i)))
			return err
		}},
		// What etcd itself does for one read and one conditional write.
		{"bare etcd get+txn", func(i int) error {
			kv, err := cs.Get(ctx, keys.Gateway(reconnectGateway(i).Name))
			if err != nil {
				return err
			}
			_, err = cs.Txn(ctx, []store.Cond{store.Unchanged(kv)}, []store.Op{store.Put("bench/"+kv.Key, kv.Value)})
			return err
		}},
	}
	rates := make([][]float64, len(ways))
	var ratios, nowBare, beforeBare, nowPlain []float64 // now / before, now / bare, before / bare, now / no cache, round by round
	cost := make([]storetest.Ops, len(ways))
	memory := make([]int, rounds) // registrations of "now" answered from memory, by round
	for r := range rounds {
		stream = r
		line := fmt.Sprintf("bench-register: round %d:", r+1)
		round := make([]float64, len(ways))
		for j := range ways {
			k := (j + r) % len(ways) // each way in turn goes first
			w := ways[k]
			cs.Reset()
			mem0, _ := c.RegisterCounts()
			took, err := each(w.fn)
			if mem, _ := c.RegisterCounts(); k == 1 {
				memory[r] = int(mem - mem0)
			}
			if err != nil {
				t.Fatalf("%s: %v", w.name, err)
			}
			cost[k], _ = cs.Reset()
			round[k] = float64(n) / took.Seconds()
			rates[k] = append(rates[k], round[k])
		}
		for k, w := range ways {
			line += fmt.Sprintf(" %s %.0f/s;", w.name, round[k])
		}
		ratios, nowBare, beforeBare = append(ratios, round[1]/round[0]), append(nowBare, round[1]/round[3]), append(beforeBare, round[0]/round[3])
		nowPlain = append(nowPlain, round[1]/round[2])
		fmt.Printf("%s now/before %.2f, now/no cache %.2f (now: %d of %d registrations from memory)\n", line, round[1]/round[0], round[1]/round[2], memory[r], n)
	}
	median := func(xs []float64) float64 {
		xs = slices.Clone(xs)
		slices.Sort(xs)
		return xs[len(xs)/2]
	}
	for k, w := range ways {
		o := cost[k]
		fmt.Printf("bench-register: %-18s %6.0f reconnects/s (median of %d rounds), per reconnect %.1f gets, %.1f ranges, %.1f txns (%.1f writes)\n",
			w.name, median(rates[k]), rounds, float64(o.Gets)/float64(n), float64(o.Ranges)/float64(n), float64(o.Txns)/float64(n), float64(o.Writes)/float64(n))
	}
	fmt.Printf("bench-register: now / before = %.2f (rounds %.2f-%.2f); now / no cache = %.2f (rounds %.2f-%.2f); now / bare etcd get+txn = %.2f, before / bare = %.2f (medians of the rounds' ratios)\n",
		median(ratios), slices.Min(ratios), slices.Max(ratios), median(nowPlain), slices.Min(nowPlain), slices.Max(nowPlain), median(nowBare), median(beforeBare))
}
