package overlay_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/internal/testenv"
	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	"github.com/iotfabric/iotfabric/pkg/overlay/overlaytest"
)

// benchRoutes is the number of routes BenchmarkSetRoutes programs
// (IOTFABRIC_BENCH_ROUTES overrides it for quick runs).
var benchRoutes = func() int {
	if n, err := strconv.Atoi(os.Getenv("IOTFABRIC_BENCH_ROUTES")); err == nil && n > 0 {
		return n
	}
	return 100000
}()

// benchState is one network with n remote /32 routes behind gateway 192.0.2.2.
func benchState(n int, e encap.Encap) overlay.State {
	rs := make([]overlay.RemoteRoute, n)
	for i := range rs {
		a := netip.AddrFrom4([4]byte{10, byte(100 + i>>16), byte(i >> 8), byte(i)})
		rs[i] = overlay.RemoteRoute{Prefix: netip.PrefixFrom(a, 32), Label: uint32(16 + i),
			RemoteUnderlay: ap("192.0.2.2"), Encaps: []encap.Encap{e}}
	}
	return overlay.State{Underlay: ap("192.0.2.1"), EncapPriority: []encap.Encap{e},
		Networks: []overlay.Network{{Name: "bench", Table: 7001, Routes: rs}}}
}

// benchGateway is a namespace with an underlay link to 192.0.2.2.
func benchGateway(b *testing.B) *netnstest.NS {
	gw := netnstest.New(b, "iofbench")
	peer := netnstest.New(b, "iofbpeer")
	overlaytest.Underlay(b, gw, ap("192.0.2.1"), peer, ap("192.0.2.2"))
	return gw
}

// BenchmarkSetRoutes programs 100,000 remote routes from empty through Set, then
// loads the same routes with `ip -batch` in the same run, and re-applies the
// unchanged state. MPLS-encapsulated (MPLSoUDP) routes where the kernel can,
// plain routes via the gateway otherwise.
func BenchmarkSetRoutes(b *testing.B) {
	netnstest.RequireRoot(b)
	testenv.RequireProgram(b, "ip", "iproute2")
	ctx := context.Background()
	for range b.N {
		gw := benchGateway(b)
		m, err := overlay.New(ctx, overlay.Config{NetNS: gw.Path(), VRF: overlay.VRFOff})
		if err != nil {
			b.Fatal(err)
		}
		kind := encap.Plain
		if m.Features().Supports(encap.MPLSoUDP) {
			kind = encap.MPLSoUDP
		}
		s := benchState(benchRoutes, kind)

		fmt.Printf("overlay bench: programming %d %s routes\n", benchRoutes, kind)
		start := time.Now()
		if err := m.Set(ctx, s); err != nil {
			b.Fatalf("Set: %v", err)
		}
		setDur := time.Since(start)
		fmt.Printf("overlay bench: Set programmed %d routes in %v\n", benchRoutes, setDur.Round(time.Millisecond))
		start = time.Now()
		if err := m.Set(ctx, s); err != nil {
			b.Fatalf("re-apply: %v", err)
		}
		reapply := time.Since(start)
		if out := gw.IP(b, "route", "show", "table", "7001"); strings.Count(out, "\n") != benchRoutes {
			b.Fatalf("table holds %d routes, want %d", strings.Count(out, "\n"), benchRoutes)
		}
		// The tunnel stays for the peer's routes; only the routes go.
		tunnel := ""
		if kind == encap.MPLSoUDP {
			for _, l := range strings.Split(gw.IP(b, "-o", "link", "show"), "\n") {
				if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], "iofu") {
					tunnel, _, _ = strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
				}
			}
		}
		nexthops := m.Features().Nexthops && kind == encap.MPLSoUDP
		// Empty the gateway through Set: routes go before their nexthops. (The
		// other order, `ip nexthop flush`, makes the kernel walk every table
		// once per nexthop that still has routes: quadratic.)
		start = time.Now()
		if err := m.Set(ctx, overlay.State{Underlay: s.Underlay, EncapPriority: s.EncapPriority}); err != nil {
			b.Fatalf("Set to empty: %v", err)
		}
		delDur := time.Since(start)
		if out := gw.IP(b, "route", "show", "table", "7001"); out != "" {
			b.Fatalf("table 7001 not empty before ip -batch:\n%.500s", out)
		}

		// The peer: ip -batch loading the same kernel objects.
		var sb strings.Builder
		if tunnel != "" {
			// The tunnel too, as Set created it.
			fmt.Fprintf(&sb, "link add %s type ipip mode mplsip local %s remote 192.0.2.2 encap fou encap-sport auto encap-dport 6635\n", tunnel, s.Underlay)
			fmt.Fprintf(&sb, "link set %s up\n", tunnel)
		}
		for i, r := range s.Networks[0].Routes {
			switch {
			case nexthops:
				id := overlay.NexthopIDFirst + i
				fmt.Fprintf(&sb, "nexthop add id %d encap mpls %d dev %s proto 165\n", id, r.Label, tunnel)
				fmt.Fprintf(&sb, "route add %s nhid %d table 7001 proto 165\n", r.Prefix, id)
			case kind == encap.MPLSoUDP:
				fmt.Fprintf(&sb, "route add %s encap mpls %d dev %s table 7001 proto 165\n", r.Prefix, r.Label, tunnel)
			default:
				fmt.Fprintf(&sb, "route add %s via %s table 7001 proto 165\n", r.Prefix, r.RemoteUnderlay)
			}
		}
		file := filepath.Join(b.TempDir(), "routes.batch")
		if err := os.WriteFile(file, []byte(sb.String()), 0o644); err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		if out, err := exec.Command("ip", "-n", gw.Name, "-batch", file).CombinedOutput(); err != nil {
			b.Fatalf("ip -batch: %v\n%s", err, out)
		}
		batchDur := time.Since(start)
		if out := gw.IP(b, "route", "show", "table", "7001"); strings.Count(out, "\n") != benchRoutes {
			b.Fatalf("ip -batch: table holds %d routes", strings.Count(out, "\n"))
		}
		// Leave an empty namespace: the kernel tears a namespace down nexthop
		// by nexthop, walking every table each time one still has routes
		// (quadratic; minutes for 100,000 in the VM). Adopt what ip -batch
		// loaded (it carries iotfabric's marks) and remove it routes first.
		if err := m.Resync(ctx); err != nil {
			b.Fatalf("Resync: %v", err)
		}
		if err := m.Set(ctx, overlay.State{}); err != nil {
			b.Fatalf("Set to empty after ip -batch: %v", err)
		}
		m.Close()

		setRate := float64(benchRoutes) / setDur.Seconds()
		batchRate := float64(benchRoutes) / batchDur.Seconds()
		b.ReportMetric(setRate, "set-routes/s")
		b.ReportMetric(batchRate, "ipbatch-routes/s")
		b.ReportMetric(setRate/batchRate, "ratio")
		b.ReportMetric(float64(reapply.Microseconds())/1000, "reapply-ms")
		b.ReportMetric(float64(benchRoutes)/delDur.Seconds(), "delete-routes/s")
		fmt.Printf("overlay bench (%s routes, %d, nexthop objects %v): Set %.0f routes/s (%v) | ip -batch %.0f routes/s (%v) | ratio %.2fx | re-apply unchanged %v | Set to empty %v\n",
			kind, benchRoutes, nexthops, setRate, setDur.Round(time.Millisecond), batchRate, batchDur.Round(time.Millisecond),
			setRate/batchRate, reapply.Round(time.Microsecond), delDur.Round(time.Millisecond))
	}
}

// BenchmarkVMThroughput measures pod-to-pod TCP throughput over MPLSoUDP as a
// ratio of the same transfer over plain routing between the same gateways:
// once on a 1500-byte underlay, once on a 9000-byte one (endpoint MTUs to match).
func BenchmarkVMThroughput(b *testing.B) {
	netnstest.RequireRoot(b)
	for range b.N {
		for _, underlayMTU := range []int{1500, 9000} {
			vmThroughput(b, underlayMTU)
		}
	}
}

func vmThroughput(b *testing.B, underlayMTU int) {
	g := newTwoGatewaysTB(b, overlay.VRFOff)
	if !g.mA.Features().Supports(encap.MPLSoUDP) {
		b.Skip("kernel lacks MPLSoUDP: run make bench-overlay (it runs this inside the VM)")
	}
	podMTU := fmt.Sprint(underlayMTU - overlay.MaxOverhead)
	for _, x := range []struct {
		ns  *netnstest.NS
		ifn string
		mtu string
	}{{g.gwA, "u0", fmt.Sprint(underlayMTU)}, {g.gwB, "u0", fmt.Sprint(underlayMTU)},
		{g.gwA, "vpoda", podMTU}, {g.gwB, "vpodb", podMTU}, {g.podA, "eth0", podMTU}, {g.podB, "eth0", podMTU}} {
		x.ns.IP(b, "link", "set", x.ifn, "mtu", x.mtu)
	}
	// Plain routing needs the receiving gateway to route underlay traffic
	// into the network's table; MPLS traffic arrives through its label.
	for _, gw := range []*netnstest.NS{g.gwA, g.gwB} {
		gw.IP(b, "rule", "add", "pref", "100", "iif", "u0", "lookup", "7001")
	}
	const size = 64 << 20
	measure := func(e encap.Encap) time.Duration {
		g.setTB(b, []encap.Encap{e}, []encap.Encap{e})
		sink := g.podB.Sink(b, g.addrB)
		best := time.Duration(0)
		for range 3 {
			d, err := g.podA.Transfer(sink, size)
			if err != nil {
				b.Fatalf("%s transfer: %v", e, err)
			}
			if best == 0 || d < best {
				best = d
			}
		}
		return best
	}
	plain := measure(encap.Plain)
	udp := measure(encap.MPLSoUDP)
	mbps := func(d time.Duration) float64 { return float64(size*8) / d.Seconds() / 1e6 }
	sfx := fmt.Sprintf("-mtu%d", underlayMTU)
	b.ReportMetric(mbps(udp), "mplsudp-Mbit/s"+sfx)
	b.ReportMetric(mbps(plain), "plain-Mbit/s"+sfx)
	b.ReportMetric(mbps(udp)/mbps(plain), "ratio"+sfx)
	fmt.Printf("overlay throughput (64 MiB TCP pod to pod, best of 3, TCG VM, underlay MTU %d, pod MTU %s): MPLSoUDP %.0f Mbit/s | plain routing %.0f Mbit/s | ratio %.2f\n",
		underlayMTU, podMTU, mbps(udp), mbps(plain), mbps(udp)/mbps(plain))
}
