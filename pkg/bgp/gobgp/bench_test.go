package gobgp_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
)

// benchEnv turns TestBenchFRRvsBIRD on (make bench-bgp); its value is the
// number of routes (default 100000).
const benchEnv = "IOTFABRIC_BENCH_BGP"

// TestBenchFRRvsBIRD measures, in one run and on the same machine:
//   - speaker: 100,000 VPNv4 routes (one per endpoint) generated and
//     announced through the Speaker (its own process, session with FRR
//     already up) until FRR counts all of them;
//   - BIRD: the same number of vpn4 static routes enabled in a running
//     BIRD (session with its own FRR already up) until that FRR counts all
//     of them;
//
// and prints both times, their ratio, and the speaker process's RSS growth
// per advertised route.
func TestBenchFRRvsBIRD(t *testing.T) {
	if os.Getenv(benchEnv) == "" {
		t.Skip("benchmark: run with " + benchEnv + "=1 (make bench-bgp)")
	}
	bgptest.RequireRoot(t)
	n := 100000
	if v, err := strconv.Atoi(os.Getenv(benchEnv)); err == nil && v > 1 {
		n = v
	}
	ctx := context.Background()
	countTimeout := 5 * time.Minute
	waitCount := func(frr *bgptest.FRR, peer netip.Addr) error {
		return bgptest.Eventually(ctx, countTimeout, 50*time.Millisecond, func(ctx context.Context) error {
			got, err := frr.Prefixes(ctx, "ipv4 vpn", peer)
			if err == nil && got < n {
				err = fmt.Errorf("FRR holds %d of %d", got, n)
			}
			return err
		})
	}

	// --- iotfabric speaker -> FRR ---
	tp := link(t)
	frrA := bgptest.StartFRR(t, tp.peerNS, bgptest.FRRConfig{
		ASN: asn, RouterID: tp.peer,
		Neighbors: []bgptest.FRRNeighbor{{Address: tp.local, ASN: asn}},
	})
	c := startChild(t, childSpec{
		Config: bgp.Config{ASN: asn, RouterID: tp.local, ListenPort: -1, ConnectRetry: time.Second,
			Peers: []bgp.PeerConfig{{Address: tp.peer, ASN: asn}}},
		Generate: n,
	})
	if l := c.line(t, 10*time.Second); l != "ready" {
		t.Fatalf("speaker process said %q", l)
	}
	if err := frrA.WaitEstablished(ctx, tp.local, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	cpuA0, _ := frrA.BGPDCPUTime()
	start := time.Now()
	io.WriteString(c.stdin, "announce\n")
	if err := waitCount(frrA, tp.local); err != nil {
		t.Fatal(err)
	}
	speakerTime := time.Since(start)
	cpuA1, _ := frrA.BGPDCPUTime()
	sumA, _ := frrA.Summary(ctx, "ipv4 vpn")
	announceLine := c.line(t, time.Minute)
	io.WriteString(c.stdin, "rss\n")
	var rssBefore, rssAfter, heap int64
	if _, err := fmt.Sscanf(c.line(t, time.Minute), "rss %d %d %d", &rssBefore, &rssAfter, &heap); err != nil {
		t.Fatal(err)
	}
	c.stdin.Close()
	frrA.Stop()

	// --- BIRD -> FRR ---
	birdNS := bgptest.NewNetns(t)
	frrNS := bgptest.NewNetns(t)
	bl := bgptest.Connect(t, birdNS, frrNS, netip.MustParsePrefix("10.98.0.1/24"), netip.MustParsePrefix("10.98.0.2/24"))
	frrB := bgptest.StartFRR(t, frrNS, bgptest.FRRConfig{
		ASN: asn, RouterID: bl.AddrB,
		Neighbors: []bgptest.FRRNeighbor{{Address: bl.AddrA, ASN: asn}},
	})
	dir := t.TempDir()
	inc := filepath.Join(dir, "routes.conf")
	if err := writeBIRDRoutes(inc, n, bl.AddrA); err != nil {
		t.Fatal(err)
	}
	bird := bgptest.StartBIRD(t, birdNS, bgptest.BIRDConfig{
		ASN: asn, RouterID: bl.AddrA, Local: bl.AddrA,
		Neighbors:      []bgptest.BIRDNeighbor{{Address: bl.AddrB, ASN: asn, RouteTargets: []string{"target:64512:8000001"}}},
		StaticDisabled: true, Include: inc,
	})
	if err := frrB.WaitEstablished(ctx, bl.AddrA, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	cpuB0, _ := frrB.BGPDCPUTime()
	start = time.Now()
	if _, err := bird.Birdc(ctx, "enable static4"); err != nil {
		t.Fatal(err)
	}
	if err := waitCount(frrB, bl.AddrA); err != nil {
		t.Fatal(err)
	}
	birdTime := time.Since(start)
	cpuB1, _ := frrB.BGPDCPUTime()
	sumB, _ := frrB.Summary(ctx, "ipv4 vpn")

	announceNS, _ := strconv.ParseInt(strings.TrimPrefix(announceLine, "announced "), 10, 64)
	perRoute := float64(rssAfter-rssBefore) / float64(n)
	fmt.Printf("\nbench-bgp: %d VPNv4 routes into FRR 8.4 (same machine, same run; sessions already up)\n", n)
	fmt.Printf("  iotfabric speaker (GoBGP %s): %7.2f s  (Announce call returned after %.2f s)\n", "v3.37.0", speakerTime.Seconds(), time.Duration(announceNS).Seconds())
	fmt.Printf("  BIRD 2.0.12:                    %7.2f s\n", birdTime.Seconds())
	fmt.Printf("  messages FRR received: from the speaker %d, from BIRD %d\n", sumA[tp.local].MsgRcvd, sumB[bl.AddrA].MsgRcvd)
	fmt.Printf("  FRR bgpd CPU while receiving: from the speaker %.2f s, from BIRD %.2f s\n", (cpuA1 - cpuA0).Seconds(), (cpuB1 - cpuB0).Seconds())
	fmt.Printf("  ratio speaker/BIRD:             %7.2fx  (goal <= 1.0x, and under 10 s)\n", speakerTime.Seconds()/birdTime.Seconds())
	fmt.Printf("  speaker memory: RSS %.1f MB -> %.1f MB, %.0f bytes per route (goal < 1024); Go heap in use %.1f MB\n",
		float64(rssBefore)/1e6, float64(rssAfter)/1e6, perRoute, float64(heap)/1e6)
}

func writeBIRDRoutes(path string, n int, via netip.Addr) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for i := range n {
		a := netip.AddrFrom4([4]byte{10, byte(64 + i>>16), byte(i >> 8), byte(i)})
		fmt.Fprintf(w, "route 192.0.2.20:1 %s/32 via %s mpls %d;\n", a, via, bgp.MinLabel+uint32(i))
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
