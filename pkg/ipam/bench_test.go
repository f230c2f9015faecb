package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/iotfabric/iotfabric/pkg/store/bolt"
)

// BenchmarkAllocate measures persisted allocations (fsync on, bbolt store):
// b.N endpoints allocated by 8 and by 32 concurrent callers over 8 gateways. It reports
// allocations per second, p50 and p99 latency, and, as the peer measured in the
// same run, the rate of the naive design: one bbolt transaction per allocation.
// It also reports the p99 of the store's commits (fsync included) and how many
// transactions each carried. NOSYNC=1 turns fsync off, to tell the disk's
// share of the latency from the code's.
func BenchmarkAllocate(b *testing.B) {
	for _, workers := range []int{8, 32} {
		b.Run(fmt.Sprintf("callers=%d", workers), func(b *testing.B) { benchAllocate(b, workers) })
	}
}

func benchAllocate(b *testing.B, workers int) {
	ctx := context.Background()
	var cmu sync.Mutex
	var commits []time.Duration
	txns := 0
	st, err := bolt.Open(filepath.Join(b.TempDir(), "bench.db"), bolt.Options{NoSync: os.Getenv("NOSYNC") != "", OnCommit: func(d time.Duration, n int) {
		cmu.Lock()
		commits = append(commits, d)
		txns += n
		cmu.Unlock()
	}})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	m := NewManager(st)
	if err := m.Configure("net", Config{Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t0 := time.Now()
				if _, err := m.Allocate(ctx, "net", fmt.Sprintf("ep-%d", i), fmt.Sprintf("gw-%d", w%8)); err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	rate := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(rate, "allocs/s")
	b.ReportMetric(float64(lat[b.N/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[b.N*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op")
	cmu.Lock()
	sort.Slice(commits, func(i, j int) bool { return commits[i] < commits[j] })
	b.ReportMetric(float64(commits[len(commits)*99/100].Microseconds())/1000, "commit-p99-ms")
	b.ReportMetric(float64(txns)/float64(len(commits)), "txns/commit")
	cmu.Unlock()
	kvs, _, _ := st.List(ctx, "ipam/net/addrs/")
	if len(kvs) != b.N {
		b.Fatalf("store holds %d addresses after %d allocations", len(kvs), b.N)
	}

	// Peer: the same key writes, one bbolt Update (two fsyncs) per allocation, same concurrency.
	db, err := bbolt.Open(filepath.Join(b.TempDir(), "naive.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("kv")); return err })
	n := min(b.N, 5000)
	next.Store(0)
	start = time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				db.Update(func(tx *bbolt.Tx) error {
					return tx.Bucket([]byte("kv")).Put([]byte(fmt.Sprint("addr/", time.Now().UnixNano())), []byte("owner"))
				})
			}
		}()
	}
	wg.Wait()
	naive := float64(n) / time.Since(start).Seconds()
	b.ReportMetric(naive, "naive-allocs/s")
	b.ReportMetric(rate/naive, "x-naive")
}
