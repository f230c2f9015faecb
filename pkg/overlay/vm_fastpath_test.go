package overlay_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	"github.com/iotfabric/iotfabric/pkg/overlay/overlaytest"
)

// newFastManager is newManager with the BPF fast path required.
func newFastManager(t testing.TB, ns *netnstest.NS, vrf overlay.VRFMode) *overlay.Manager {
	t.Helper()
	m, err := overlay.New(context.Background(), overlay.Config{NetNS: ns.Path(), Logger: testLogger(t), VRF: vrf, FastPath: overlay.FastPathOn})
	if err != nil {
		t.Fatalf("overlay.New with the fast path: %v", err)
	}
	t.Cleanup(m.Close)
	return m
}

// tunnelTx counts the packets sent through a gateway's kernel MPLSoUDP tunnel
// (0 when there is none): the fast path bypasses it.
func tunnelTx(t testing.TB, ns *netnstest.NS, name string) uint64 {
	t.Helper()
	l, err := ns.Handle().LinkByName(name)
	if err != nil {
		return 0
	}
	return l.Attrs().Statistics.TxPackets
}

// fastPathFilters lists the fast path's filters on a link's ingress.
func fastPathFilters(t testing.TB, ns *netnstest.NS, ifname string) int {
	t.Helper()
	l, err := ns.Handle().LinkByName(ifname)
	if err != nil {
		t.Fatalf("%s: %v", ifname, err)
	}
	fs, err := ns.Handle().FilterList(l, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return 0
	}
	n := 0
	for _, f := range fs {
		if b, ok := f.(*netlink.BpfFilter); ok && strings.HasPrefix(b.Name, overlay.FastPathFilterName) {
			n++
		}
	}
	return n
}

// reverse proves pod B -> pod A: ping and a TCP transfer.
func (g *twoGateways) reverse(t *testing.T, what string) {
	t.Helper()
	if err := overlaytest.Ping(g.podB, g.addrA, 10*time.Second); err != nil {
		t.Fatalf("%s: ping pod B -> pod A: %v", what, err)
	}
	d, err := g.podB.Transfer(g.podA.Sink(t, g.addrA), 4<<20)
	if err != nil {
		t.Fatalf("%s: TCP pod B -> pod A: %v", what, err)
	}
	t.Logf("%s: 4 MiB pod B -> pod A in %v", what, d)
}

// wholeToPod sends 4 MiB from pod A to pod B and checks that TCP
// super-packets cross A's underlay and that the receiving gateway's
// decapsulation (fou or GRE, then mpls_router's label route) hands them to
// pod B as they came: pod B receives no more frames than A's underlay sent.
// One frame per MSS would be about 3,000; a super-packet carries at least
// two segments (TCP sizes them to about 1 ms of its pacing rate, so a slow
// emulated CPU gets small ones: 764 frames on 32-bit ARM, 110-250 on x86).
func (g *twoGateways) wholeToPod(t *testing.T, what string) {
	t.Helper()
	const size = 4 << 20
	sink := g.podB.Sink(t, g.addrB)
	tx, rx := linkTx(t, g.gwA, "u0"), linkRx(t, g.podB, "eth0")
	if _, err := g.podA.Transfer(sink, size); err != nil {
		t.Fatalf("%s: TCP pod A -> pod B: %v", what, err)
	}
	sent, got := linkTx(t, g.gwA, "u0")-tx, linkRx(t, g.podB, "eth0")-rx
	segments := uint64(size / (overlaytest.PodMTU - 40))
	t.Logf("%s: 4 MiB in %d frames on A's underlay, %d frames into pod B (%d at one per MSS)", what, sent, got, segments)
	if sent > segments*3/4 {
		t.Errorf("%s: %d frames on A's underlay for 4 MiB: the super-packets were segmented before the underlay (%d segments at the MSS)",
			what, sent, segments)
	}
	if got > sent+sent/10+10 {
		t.Errorf("%s: pod B received %d frames for the %d A's underlay sent: the receiving gateway segmented them", what, got, sent)
	}
}

// TestVMFastPath carries MPLSoUDP pod to pod through the BPF fast path: a fast
// gateway facing a kernel-path gateway, then two fast gateways (MPLSoUDP and
// MPLSoGRE), a restarted
// agent, a switch back to the kernel path, and cleanup. The receiving side is
// the kernel's (fou + mpls_router) in every case, and the capture on the
// underlay checks the wire format as for the kernel path.
func TestVMFastPath(t *testing.T) {
	g := newTwoGateways(t, overlay.VRFAuto)
	udp := []encap.Encap{encap.MPLSoUDP}
	tun := "iofuc0000202" // A's kernel tunnel to B
	g.mA.Close()
	g.mA = newFastManager(t, g.gwA, overlay.VRFAuto)
	if !g.mA.UsesFastPath() {
		t.Fatal("fast path requested but not used")
	}
	// Whether the program runs JIT-compiled or interpreted (32-bit ARM
	// kernels leave the JIT off by default).
	if jit, err := os.ReadFile("/proc/sys/net/core/bpf_jit_enable"); err == nil {
		t.Logf("net.core.bpf_jit_enable = %s", strings.TrimSpace(string(jit)))
	}
	cap := overlaytest.StartCapture(t, g.gwA, "u0")

	sA, _ := g.set(t, udp, udp, true, true)
	if n := fastPathFilters(t, g.gwA, "vpoda"); n != 1 {
		t.Fatalf("%d fast path filters on vpoda, want 1", n)
	}
	tx := tunnelTx(t, g.gwA, tun)
	g.checkPath(t, encap.MPLSoUDP, cap)
	if d := tunnelTx(t, g.gwA, tun) - tx; d > 10 {
		t.Errorf("fast path: %d packets went through the kernel tunnel %s", d, tun)
	}
	g.wholeToPod(t, "fast path A -> kernel path B")
	g.reverse(t, "kernel path B -> fast path A")
	// A packet about to expire goes to the kernel path, which answers ICMP
	// time exceeded as without the fast path; the counter says so.
	before := g.mA.FastPathStats().ToKernel
	if from, err := overlaytest.TimeExceeded(g.podA, g.addrB, 10*time.Second); err != nil {
		t.Errorf("TTL 1 through the fast path: %v", err)
	} else {
		t.Logf("TTL 1: time exceeded from %s", from)
	}
	// MTU: with the pod's MTU at the underlay's (no room for the headers),
	// a full-size packet with DF goes to the kernel path too, which answers
	// "fragmentation needed" (the VRF device routes it back to the pod).
	for _, ifn := range []struct {
		ns   *netnstest.NS
		name string
	}{{g.podA, "eth0"}, {g.gwA, "vpoda"}} {
		ifn.ns.IP(t, "link", "set", ifn.name, "mtu", "1500")
	}
	if mtu, err := overlaytest.FragNeeded(g.podA, g.addrB, 1500, 10*time.Second); err != nil {
		t.Errorf("1500-byte packet through the fast path: %v", err)
	} else {
		t.Logf("1500 bytes with DF: fragmentation needed, MTU %d", mtu)
	}
	for _, ifn := range []struct {
		ns   *netnstest.NS
		name string
	}{{g.podA, "eth0"}, {g.gwA, "vpoda"}} {
		ifn.ns.IP(t, "link", "set", ifn.name, "mtu", fmt.Sprint(overlaytest.PodMTU))
	}
	if st := g.mA.FastPathStats(); st.ToKernel < before+2 || st.Encapsulated == 0 {
		t.Errorf("fast path counters %+v: want packets encapsulated and the TTL 1 one handed to the kernel path", st)
	}

	// Both gateways on the fast path.
	g.mB.Close()
	g.mB = newFastManager(t, g.gwB, overlay.VRFAuto)
	g.set(t, udp, udp, true, true)
	g.checkPath(t, encap.MPLSoUDP, cap)
	g.reverse(t, "fast path both ways")
	g.ipv6Pods(t, cap)

	// MPLSoGRE through the fast path, the kernel's GRE tunnel bypassed.
	both := []encap.Encap{encap.MPLSoGRE, encap.MPLSoUDP}
	g.set(t, both, both, true, true)
	gtx := tunnelTx(t, g.gwA, "iofgc0000202")
	g.checkPath(t, encap.MPLSoGRE, cap)
	if d := tunnelTx(t, g.gwA, "iofgc0000202") - gtx; d > 10 {
		t.Errorf("MPLSoGRE fast path: %d packets went through the kernel tunnel", d)
	}
	g.wholeToPod(t, "MPLSoGRE fast path")
	g.reverse(t, "MPLSoGRE fast path both ways")
	g.set(t, udp, udp, true, true)

	// A restarted agent re-attaches its program over the old one and traffic goes on.
	g.mA.Close()
	g.mA = newFastManager(t, g.gwA, overlay.VRFAuto)
	if err := g.mA.Set(context.Background(), sA); err != nil {
		t.Fatalf("Set after restart: %v", err)
	}
	if n := fastPathFilters(t, g.gwA, "vpoda"); n != 1 {
		t.Fatalf("after restart: %d fast path filters on vpoda, want 1", n)
	}
	g.checkPath(t, encap.MPLSoUDP, cap)

	// Back to the kernel path: the filter goes, traffic takes the tunnel.
	g.mA.Close()
	g.mA = newManager(t, g.gwA, overlay.VRFAuto)
	g.set(t, udp, udp, true, true)
	if n := fastPathFilters(t, g.gwA, "vpoda"); n != 0 {
		t.Fatalf("kernel path: %d fast path filters left on vpoda", n)
	}
	tx = tunnelTx(t, g.gwA, tun)
	g.checkPath(t, encap.MPLSoUDP, cap)
	if tunnelTx(t, g.gwA, tun) == tx {
		t.Errorf("kernel path: nothing went through the tunnel %s", tun)
	}

	// Cleanup on B (fast path) leaves no filter.
	if err := g.mB.Cleanup(context.Background()); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if n := fastPathFilters(t, g.gwB, "vpodb"); n != 0 {
		t.Errorf("after cleanup: %d fast path filters on vpodb", n)
	}
	if d := overlaytest.Dump(t, g.gwB); d != "" {
		t.Errorf("after cleanup:\n%s", d)
	}
}

// ipv6Pods adds an IPv6-only pod to each gateway of g (network red, labels
// 1003 and 1004), routed to each other over MPLSoUDP: the fast path program
// leaves IPv6 to the kernel path, which must carry it unchanged.
func (g *twoGateways) ipv6Pods(t *testing.T, cap *overlaytest.Capture) {
	t.Helper()
	addrC, addrD := ap("fd00:1::1"), ap("fd00:1::2")
	pod := func(gw *netnstest.NS, hostIf string, addr netip.Addr) *netnstest.NS {
		p := netnstest.New(t, "iofpod")
		netnstest.Veth(t, gw, hostIf, p, "eth0")
		for _, x := range []struct {
			ns  *netnstest.NS
			ifn string
		}{{p, "eth0"}, {gw, hostIf}} {
			x.ns.IP(t, "link", "set", x.ifn, "mtu", fmt.Sprint(overlaytest.PodMTU))
		}
		p.IP(t, "addr", "add", addr.String()+"/128", "dev", "eth0", "nodad")
		return p
	}
	podC := pod(g.gwA, "vpodc", addrC)
	podD := pod(g.gwB, "vpodd", addrD)
	udp := []encap.Encap{encap.MPLSoUDP}
	sA := gatewayState(g.ulA, g.ulB, g.addrA, g.addrB, 1001, 1002, "vpoda", udp, udp, true)
	sB := gatewayState(g.ulB, g.ulA, g.addrB, g.addrA, 1002, 1001, "vpodb", udp, udp, true)
	sA.Networks[0].Endpoints = append(sA.Networks[0].Endpoints, overlay.Endpoint{Interface: "vpodc", Address: addrC, Label: 1003})
	sA.Networks[0].Routes = append(sA.Networks[0].Routes, overlay.RemoteRoute{Prefix: netip.PrefixFrom(addrD, 128), Label: 1004, RemoteUnderlay: g.ulB, Encaps: udp})
	sB.Networks[0].Endpoints = append(sB.Networks[0].Endpoints, overlay.Endpoint{Interface: "vpodd", Address: addrD, Label: 1004})
	sB.Networks[0].Routes = append(sB.Networks[0].Routes, overlay.RemoteRoute{Prefix: netip.PrefixFrom(addrC, 128), Label: 1003, RemoteUnderlay: g.ulA, Encaps: udp})
	ctx := context.Background()
	if err := g.mA.Set(ctx, sA); err != nil {
		t.Fatalf("Set on A with IPv6 pods: %v", err)
	}
	if err := g.mB.Set(ctx, sB); err != nil {
		t.Fatalf("Set on B with IPv6 pods: %v", err)
	}
	// A fixed link-local on the host side for the pods' default route (after
	// Set: enslaving the interface to the VRF device flushes its addresses).
	for _, x := range []struct {
		gw, pod *netnstest.NS
		hostIf  string
	}{{g.gwA, podC, "vpodc"}, {g.gwB, podD, "vpodd"}} {
		x.gw.IP(t, "addr", "add", "fe80::1/64", "dev", x.hostIf, "nodad")
		x.pod.IP(t, "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")
	}
	if st := g.mA.FastPathStats(); st.RoutesFast != 1 || st.RoutesKernel != 1 || st.EndpointsFast != 2 {
		t.Errorf("A's paths %+v: want the IPv4 route on the fast path, the IPv6 one on the kernel path, both endpoints seen", st)
	}
	tx := tunnelTx(t, g.gwA, "iofuc0000202")
	sink := podD.Sink(t, addrD)
	var err error
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		var d time.Duration
		if d, err = podC.Transfer(sink, 1<<20); err == nil {
			t.Logf("IPv6 over the kernel path: 1 MiB pod C -> pod D in %v", d)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("IPv6 TCP pod C -> pod D: %v\nA:\n%s", err, overlaytest.Dump(t, g.gwA))
		}
	}
	if tunnelTx(t, g.gwA, "iofuc0000202") == tx {
		t.Errorf("IPv6 traffic did not take A's kernel tunnel")
	}
	// IPv4 still takes the fast path next to it.
	g.checkPath(t, encap.MPLSoUDP, cap)
}
