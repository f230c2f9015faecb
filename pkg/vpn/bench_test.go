package vpn

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// BenchmarkPropagation measures the runner alone (bbolt without fsync, an
// in-memory speaker): 1,000 endpoints over 10 gateways, each put in its own
// transaction; the latency from the put to the route on every gateway's
// stream and on a RouteService watch of the network.
func BenchmarkPropagation(b *testing.B) {
	const gateways, endpoints = 10, 1000
	for range b.N {
		st, err := bolt.Open(filepath.Join(b.TempDir(), "s.db"), bolt.Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		bput(b, st, "networks/n", &v1.VirtualNetwork{Name: "n", Id: 1, Encapsulations: []v1.Encapsulation{udp}})
		for g := range gateways {
			bput(b, st, fmt.Sprint("gateways/g", g), &v1.Gateway{Name: fmt.Sprint("g", g), UnderlayAddress: fmt.Sprintf("192.0.2.%d", g+1), Encapsulations: []v1.Encapsulation{udp}})
			// One endpoint per gateway first, so every stream follows the network.
			bput(b, st, fmt.Sprint("endpoints/first", g), &v1.Endpoint{Id: fmt.Sprint("first", g), Network: "n", Gateway: fmt.Sprint("g", g),
				Addresses: []string{fmt.Sprintf("10.2.0.%d", g+1)}, Label: uint32(16 + g)})
		}
		sp := bgptest.NewFakeSpeaker()
		r := NewRunner(st, sp, 64512, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		<-r.Ready()

		var mu sync.Mutex
		start := map[string]time.Time{}
		var lat []time.Duration
		var wg sync.WaitGroup
		seen := func(prefix string) {
			now := time.Now()
			mu.Lock()
			if t0, ok := start[prefix]; ok {
				lat = append(lat, now.Sub(t0))
			}
			mu.Unlock()
		}
		for g := range gateways {
			ch := r.WatchGateway(ctx, fmt.Sprint("g", g), Resume{})
			wg.Add(1)
			go func() {
				defer wg.Done()
				n := 0
				for u := range ch {
					for _, rt := range u.Put {
						if rt.Endpoint[0] == 'e' {
							seen(rt.Prefix)
							n++
						}
					}
					if n >= endpoints {
						return
					}
				}
			}()
		}
		_, wch := r.watchAll(ctx, "n")
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for batch := range wch {
				for _, c := range batch {
					if !c.Delete && c.Route.Endpoint[0] == 'e' {
						seen(c.Route.Prefix.String())
						n++
					}
				}
				if n >= endpoints {
					return
				}
			}
		}()
		b.ResetTimer()
		t0 := time.Now()
		for i := range endpoints {
			addr := fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)
			mu.Lock()
			start[addr+"/32"] = time.Now()
			mu.Unlock()
			bput(b, st, fmt.Sprint("endpoints/e", i), &v1.Endpoint{Id: fmt.Sprint("e", i), Network: "n", Gateway: fmt.Sprint("g", i%gateways),
				Addresses: []string{addr}, Label: uint32(100 + i)})
		}
		wg.Wait()
		total := time.Since(t0)
		b.StopTimer()
		cancel()
		<-done
		st.Close()
		slices.Sort(lat)
		pct := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
		b.ReportMetric(float64(pct(.5).Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(pct(.99).Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(total.Milliseconds()), "total-ms")
	}
}

func bput(b *testing.B, st store.Store, key string, m proto.Message) {
	v, _ := proto.Marshal(m)
	if _, err := st.Txn(context.Background(), nil, []store.Op{store.Put(key, v)}); err != nil {
		b.Fatal(err)
	}
}
