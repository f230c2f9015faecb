package gobgp_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/internal/heapstat"
	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
	"github.com/iotfabric/iotfabric/pkg/bgp/gobgp"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	"github.com/iotfabric/iotfabric/pkg/vpn"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// importBenchEnv turns TestBenchImport on (make bench-bgp-import); its
// value is the number of routes (default 100000).
const importBenchEnv = "IOTFABRIC_BENCH_BGP_IMPORT"

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	debug.FreeOSMemory()
	return heapstat.Live()
}

// TestBenchImport measures the import path as the controller runs it: BIRD
// (a real peer) sends n VPNv4 routes with a route target network n1
// imports, to the GoBGP speaker and the route table (vpn.Runner) in this
// process. It prints, in one run:
//   - the import rate with no gateway stream attached and with one (a
//     reader draining the gateway's route stream as the agent's stream
//     handler does), and their ratio;
//   - the live heap per imported route (runtime heap after a GC, before
//     and after), and per route refused by the import filter (a second
//     BIRD sends n routes with a route target no network imports).
func TestBenchImport(t *testing.T) {
	if os.Getenv(importBenchEnv) == "" {
		t.Skip("benchmark: run with " + importBenchEnv + "=100000 (make bench-bgp-import)")
	}
	bgptest.RequireRoot(t)
	n := 100000
	if v, err := strconv.Atoi(os.Getenv(importBenchEnv)); err == nil && v > 0 {
		n = v
	}
	if os.Getenv("IOTFABRIC_BGP_HEAPPROFILE") != "" {
		runtime.MemProfileRate = 1 // every allocation: the profile says what holds the heap
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Two BIRDs: one sends routes network n1 imports, one foreign ones.
	tp := link(t)
	tf := link(t)
	dir := t.TempDir()
	inc := filepath.Join(dir, "routes.conf")
	if err := writeBIRDRoutes(inc, n, tp.peer); err != nil {
		t.Fatal(err)
	}
	incF := filepath.Join(dir, "foreign.conf")
	if err := writeBIRDRoutes(incF, n, tf.peer); err != nil {
		t.Fatal(err)
	}
	bird := bgptest.StartBIRD(t, tp.peerNS, bgptest.BIRDConfig{ASN: asn, RouterID: tp.peer, Local: tp.peer,
		Neighbors:      []bgptest.BIRDNeighbor{{Address: tp.local, ASN: asn, RouteTargets: []string{"target:64512:8000001"}}},
		StaticDisabled: true, Include: inc})
	birdF := bgptest.StartBIRD(t, tf.peerNS, bgptest.BIRDConfig{ASN: asn, RouterID: tf.peer, Local: tf.peer,
		Neighbors:      []bgptest.BIRDNeighbor{{Address: tf.local, ASN: asn, RouteTargets: []string{"target:65000:4242"}}},
		StaticDisabled: true, Include: incF})

	// The controller's route path: store, speaker, runner.
	st, err := bolt.Open(filepath.Join(dir, "s.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	putMsg := func(key string, m proto.Message) {
		b, _ := proto.Marshal(m)
		if _, err := st.Txn(ctx, nil, []store.Op{store.Put(key, b)}); err != nil {
			t.Fatal(err)
		}
	}
	udp := v1.Encapsulation_ENCAPSULATION_MPLS_O_UDP
	putMsg("networks/n1", &v1.VirtualNetwork{Name: "n1", Id: 1, Encapsulations: []v1.Encapsulation{udp}})
	putMsg("gateways/g0", &v1.Gateway{Name: "g0", UnderlayAddress: "192.0.2.1", Encapsulations: []v1.Encapsulation{udp}})
	putMsg("endpoints/e0", &v1.Endpoint{Id: "e0", Network: "n1", Gateway: "g0", Addresses: []string{"10.1.0.1"}, Label: 20})
	sp, err := gobgp.New(bgp.Config{ASN: asn, RouterID: tp.local, ListenPort: -1, ConnectRetry: time.Second, MaxPrefixes: uint32(n + 10),
		Peers: []bgp.PeerConfig{{Address: tp.peer, ASN: asn}, {Address: tf.peer, ASN: asn}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := vpn.NewRunner(st, sp, asn, nil)
	r.SetLimits(vpn.Limits{}) // the gateway follows every route (the limit is not what is measured)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-r.Ready()
	waitPeer(t, sp, tp.peer, bgp.PeerEstablished)
	waitPeer(t, sp, tf.peer, bgp.PeerEstablished)

	waitReceived := func(want int) time.Duration {
		t.Helper()
		start := time.Now()
		if err := bgptest.Eventually(ctx, 10*time.Minute, 20*time.Millisecond, func(context.Context) error {
			if got := r.Stats().Received; got != want {
				return fmt.Errorf("table holds %d received routes, want %d", got, want)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	birdc := func(b *bgptest.BIRD, cmd string) {
		t.Helper()
		if _, err := b.Birdc(ctx, cmd); err != nil {
			t.Fatal(err)
		}
	}

	// 1. No gateway stream attached.
	h0 := heapInUse()
	birdc(bird, "enable static4")
	t0 := waitReceived(n)
	h1 := heapInUse()
	if path := os.Getenv("IOTFABRIC_BGP_HEAPPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	birdc(bird, "disable static4")
	waitReceived(0)

	// 2. One gateway stream attached and drained.
	gctx, gcancel := context.WithCancel(ctx)
	ch := r.WatchGateway(gctx, "g0", vpn.Resume{})
	got := make(chan int, 1)
	go func() {
		have := map[string]bool{}
		for u := range ch {
			for _, p := range u.Put {
				have[p.RouteDistinguisher+" "+p.Prefix] = true
			}
			for _, d := range u.Delete {
				delete(have, d.RouteDistinguisher+" "+d.Prefix)
			}
			if len(have) == n+1 {
				got <- len(have)
			}
		}
		close(got)
	}()
	birdc(bird, "enable static4")
	t1 := waitReceived(n)
	select {
	case _, ok := <-got:
		if !ok {
			t.Fatal("the gateway stream was closed (it fell behind)")
		}
	case <-time.After(5 * time.Minute):
		t.Fatal("the gateway stream did not get every route")
	}
	t1g := t1
	h2 := heapInUse()
	gcancel()
	birdc(bird, "disable static4")
	waitReceived(0)

	// 3. Routes no network imports.
	h3 := heapInUse()
	birdc(birdF, "enable static4")
	if err := bgptest.Eventually(ctx, 10*time.Minute, 50*time.Millisecond, func(context.Context) error {
		if f := sp.Counters().Filtered; f < uint64(n) {
			return fmt.Errorf("%d filtered", f)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	h4 := heapInUse()
	if got := r.Stats().Received; got != 0 {
		t.Fatalf("the table holds %d routes no network imports", got)
	}

	per := func(a, b uint64) float64 { return (float64(b) - float64(a)) / float64(n) }
	fmt.Printf("\nbench-bgp-import: %d VPNv4 routes from BIRD 2.0.12 into the speaker (GoBGP v3.37.0) and the route table\n", n)
	fmt.Printf("  no gateway stream:  %6.2f s  %8.0f routes/s\n", t0.Seconds(), float64(n)/t0.Seconds())
	fmt.Printf("  one gateway stream: %6.2f s  %8.0f routes/s (all %d on the stream)\n", t1g.Seconds(), float64(n)/t1g.Seconds(), n+1)
	fmt.Printf("  ratio one stream / none: %.2fx the time\n", t1g.Seconds()/t0.Seconds())
	fmt.Printf("  live heap per imported route: %.0f bytes (goal < 1536); with one gateway stream's copy: %.0f bytes\n", per(h0, h1), per(h0, h2))
	fmt.Printf("  live heap per route refused by the import filter (held in GoBGP's Adj-RIB-In only): %.0f bytes\n", per(h3, h4))
}
