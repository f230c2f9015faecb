package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// benchAPIEnv turns TestBenchEndpointsToFRR on (make bench-bgp-api); its value
// is the number of endpoints.
const benchAPIEnv = "IOTFABRIC_BENCH_BGP_API"

// TestBenchEndpointsToFRR measures, in one run: the time from creating N
// endpoints in bulk through the controller's API (bbolt store, fsync on) until
// FRR holds all N routes; and the time BIRD takes to send N vpn4 routes to
// another FRR. It also reports the controller's Go heap growth per route.
func TestBenchEndpointsToFRR(t *testing.T) {
	if os.Getenv(benchAPIEnv) == "" {
		t.Skip("benchmark: run with " + benchAPIEnv + "=100000 (make bench-bgp-api)")
	}
	bgptest.RequireRoot(t)
	n, _ := strconv.Atoi(os.Getenv(benchAPIEnv))
	if n < 1 {
		n = 100000
	}
	const asn = 64512
	ctx := context.Background()
	waitCount := func(frr *bgptest.FRR, peer netip.Addr) error {
		return bgptest.Eventually(ctx, 5*time.Minute, 50*time.Millisecond, func(ctx context.Context) error {
			got, err := frr.Prefixes(ctx, "ipv4 vpn", peer)
			if err == nil && got < n {
				err = fmt.Errorf("FRR holds %d of %d", got, n)
			}
			return err
		})
	}

	// --- controller -> FRR ---
	self := bgptest.Self(t)
	frrNS := bgptest.NewNetns(t)
	local, peer := netip.MustParsePrefix("10.96.1.1/24"), netip.MustParsePrefix("10.96.1.2/24")
	bgptest.Connect(t, self, frrNS, local, peer)
	frr := bgptest.StartFRR(t, frrNS, bgptest.FRRConfig{ASN: asn, RouterID: peer.Addr(),
		Neighbors: []bgptest.FRRNeighbor{{Address: local.Addr(), ASN: asn}}})
	cfg := defaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.API.Listen = "127.0.0.1:0"
	cfg.Metrics.Listen = ""
	cfg.BGP.RouterID = local.Addr().String()
	cfg.BGP.ListenPort = -1
	cfg.BGP.Peers = []PeerConfig{{Address: peer.Addr().String(), ASN: asn}}
	conn := serveInProcess(t, cfg)
	if _, err := v1.NewNetworkServiceClient(conn).CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "bench", Subnets: []string{"10.64.0.0/12"}}}); err != nil {
		t.Fatal(err)
	}
	const gateways = 50
	for g := 0; g < gateways; g++ {
		if _, err := v1.NewGatewayServiceClient(conn).CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{Name: fmt.Sprint("gw", g), UnderlayAddress: fmt.Sprintf("192.0.2.%d", g+1)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := frr.WaitEstablished(ctx, local.Addr(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)

	eps := v1.NewEndpointServiceClient(conn)
	const batch = 2000
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n/batch+1)
	for b := 0; b < n; b += batch {
		req := &v1.CreateEndpointsRequest{}
		for i := b; i < min(b+batch, n); i++ {
			req.Endpoints = append(req.Endpoints, &v1.Endpoint{Id: fmt.Sprint("ep", i), Network: "bench", Gateway: fmt.Sprint("gw", i%gateways), Label: uint32(16 + i/gateways)})
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := eps.CreateEndpoints(ctx, req)
			if err != nil {
				errs <- err
				return
			}
			for _, e := range resp.Errors {
				if e != "" {
					errs <- fmt.Errorf("%s", e)
					return
				}
			}
		}()
	}
	wg.Wait()
	apiTime := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := waitCount(frr, local.Addr()); err != nil {
		t.Fatal(err)
	}
	ctlTime := time.Since(start)
	runtime.GC()
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	frr.Stop()

	// --- BIRD -> FRR, the same number of routes ---
	birdNS, frr2NS := bgptest.NewNetns(t), bgptest.NewNetns(t)
	bl := bgptest.Connect(t, birdNS, frr2NS, netip.MustParsePrefix("10.96.2.1/24"), netip.MustParsePrefix("10.96.2.2/24"))
	frr2 := bgptest.StartFRR(t, frr2NS, bgptest.FRRConfig{ASN: asn, RouterID: bl.AddrB, Neighbors: []bgptest.FRRNeighbor{{Address: bl.AddrA, ASN: asn}}})
	routes := make([]bgptest.BIRDRoute, n)
	for i := range routes {
		routes[i] = bgptest.BIRDRoute{RD: "192.0.2.20:1", Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(64 + i>>16), byte(i >> 8), byte(i)}), 32),
			NextHop: bl.AddrA, Label: uint32(16 + i)}
	}
	bird := bgptest.StartBIRD(t, birdNS, bgptest.BIRDConfig{ASN: asn, RouterID: bl.AddrA, Local: bl.AddrA,
		Neighbors:      []bgptest.BIRDNeighbor{{Address: bl.AddrB, ASN: asn, RouteTargets: []string{"target:64512:8000001"}}},
		Routes:         routes,
		StaticDisabled: true})
	if err := frr2.WaitEstablished(ctx, bl.AddrA, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if _, err := bird.Birdc(ctx, "enable static4"); err != nil {
		t.Fatal(err)
	}
	if err := waitCount(frr2, bl.AddrA); err != nil {
		t.Fatal(err)
	}
	birdTime := time.Since(start)

	heap := float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / float64(n)
	fmt.Printf("\nbench-bgp-api: %d endpoints created in bulk through the API (bbolt, fsync on) until FRR 8.4 holds all their VPNv4 routes\n", n)
	fmt.Printf("  controller (API + store + IPAM + speaker): %7.2f s  (API calls returned after %.2f s)\n", ctlTime.Seconds(), apiTime.Seconds())
	fmt.Printf("  BIRD 2.0.12 sending %d vpn4 routes:       %7.2f s\n", n, birdTime.Seconds())
	fmt.Printf("  ratio controller/BIRD:                     %7.2fx  (goal <= 1.0x, and under 10 s)\n", ctlTime.Seconds()/birdTime.Seconds())
	fmt.Printf("  controller Go heap growth: %.0f bytes per endpoint with its route (store cache, IPAM, route table, GoBGP RIB)\n", heap)
}
