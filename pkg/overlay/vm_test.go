package overlay_test

import (
	"context"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	"github.com/iotfabric/iotfabric/pkg/overlay/overlaytest"
)

// requireFullKernel skips unless the kernel has everything the MPLS overlay
// needs; `make vmtest` runs these tests inside qemu on Debian's kernel, where
// IOTFABRIC_VMTEST=1 turns the skip into a failure.
func requireFullKernel(t testing.TB, m *overlay.Manager) {
	t.Helper()
	f := m.Features()
	if f.Supports(encap.MPLSoUDP) && f.Supports(encap.MPLSoGRE) {
		return
	}
	if os.Getenv("IOTFABRIC_VMTEST") != "" {
		t.Fatalf("kernel inside the VM lacks overlay features: %s", f.Summary())
	}
	t.Skipf("kernel lacks MPLS/FOU/GRE (%v): run `make vmtest`", f.Missing())
}

// twoGateways is the VM topology: gateways A and B joined by an underlay link,
// one pod on each, in network red.
type twoGateways struct {
	gwA, gwB     *netnstest.NS
	podA, podB   *netnstest.NS
	mA, mB       *overlay.Manager
	ulA, ulB     netip.Addr
	addrA, addrB netip.Addr
}

func newTwoGateways(t *testing.T, vrf overlay.VRFMode) *twoGateways { return newTwoGatewaysTB(t, vrf) }

func newTwoGatewaysTB(t testing.TB, vrf overlay.VRFMode) *twoGateways {
	g := &twoGateways{ulA: ap("192.0.2.1"), ulB: ap("192.0.2.2"), addrA: ap("10.1.0.1"), addrB: ap("10.1.0.2")}
	g.gwA = netnstest.New(t, "iofgwa")
	g.gwB = netnstest.New(t, "iofgwb")
	overlaytest.Underlay(t, g.gwA, g.ulA, g.gwB, g.ulB)
	g.podA = overlaytest.Pod(t, g.gwA, "vpoda", g.addrA, gwAddr)
	g.podB = overlaytest.Pod(t, g.gwB, "vpodb", g.addrB, gwAddr)
	g.mA = newManager(t, g.gwA, vrf)
	g.mB = newManager(t, g.gwB, vrf)
	requireFullKernel(t, g.mA)
	return g
}

// state is one gateway's desired state: its pod (label own) and a route to the
// other pod (label peer) through the peer's gateway offering encaps.
func gatewayState(underlay, peerUnderlay, own, peer netip.Addr, ownLabel, peerLabel uint32, ifname string,
	prio, offered []encap.Encap, withRoute bool) overlay.State {
	n := overlay.Network{Name: "red", Table: 7001,
		Endpoints: []overlay.Endpoint{{Interface: ifname, Address: own, Label: ownLabel}}}
	if withRoute {
		n.Routes = []overlay.RemoteRoute{{Prefix: netip.PrefixFrom(peer, 32), Label: peerLabel, RemoteUnderlay: peerUnderlay, Encaps: offered}}
	}
	return overlay.State{Underlay: underlay, EncapPriority: prio, Networks: []overlay.Network{n}}
}

func (g *twoGateways) setTB(t testing.TB, prio, offered []encap.Encap) {
	g.set(t, prio, offered, true, true)
}

func (g *twoGateways) set(t testing.TB, prio, offered []encap.Encap, routeA, routeB bool) (overlay.State, overlay.State) {
	t.Helper()
	sA := gatewayState(g.ulA, g.ulB, g.addrA, g.addrB, 1001, 1002, "vpoda", prio, offered, routeA)
	sB := gatewayState(g.ulB, g.ulA, g.addrB, g.addrA, 1002, 1001, "vpodb", prio, offered, routeB)
	ctx := context.Background()
	if err := g.mA.Set(ctx, sA); err != nil {
		t.Fatalf("Set on A: %v\n%s", err, overlaytest.Dump(t, g.gwA))
	}
	if err := g.mB.Set(ctx, sB); err != nil {
		t.Fatalf("Set on B: %v\n%s", err, overlaytest.Dump(t, g.gwB))
	}
	return sA, sB
}

// checkPath proves pod-to-pod traffic over encap: ping, a TCP transfer, and a
// capture on A's underlay showing the encapsulation, label 1002 with the
// bottom-of-stack bit and the inner packet.
func (g *twoGateways) checkPath(t *testing.T, e encap.Encap, cap *overlaytest.Capture) {
	t.Helper()
	cap.Reset()
	if err := overlaytest.Ping(g.podA, g.addrB, 10*time.Second); err != nil {
		t.Fatalf("%s: ping pod A -> pod B: %v\nA:\n%s\nB:\n%s", e, err, overlaytest.Dump(t, g.gwA), overlaytest.Dump(t, g.gwB))
	}
	sink := g.podB.Sink(t, g.addrB)
	const size = 4 << 20
	d, err := g.podA.Transfer(sink, size)
	if err != nil {
		t.Fatalf("%s: TCP transfer pod A -> pod B: %v", e, err)
	}
	t.Logf("%s: ping ok; %d bytes pod A -> pod B in %v (%.1f Mbit/s)", e, size, d, float64(size*8)/d.Seconds()/1e6)
	p, ok := cap.Find(overlay.MPLSoUDPPort, 5*time.Second, func(p overlaytest.OverlayPacket) bool {
		return p.Encap == e.String() && p.InnerSrc == g.addrA && p.InnerDst == g.addrB
	})
	if !ok {
		t.Fatalf("%s: no %s packet from pod A to pod B captured on A's underlay", e, e)
	}
	t.Logf("captured on A's underlay: %s", p)
	if p.Label != 1002 || !p.BOS || p.Stack != 1 {
		t.Errorf("%s: label %d bos %v stack %d, want 1002, bottom of stack, one label", e, p.Label, p.BOS, p.Stack)
	}
	// The pod sends with TTL 64; gateway A forwards it once: label and
	// inner packet both carry 63, and the inner header checksum verifies.
	if p.LabelTTL != 63 || p.InnerTTL != 63 || !p.InnerChecksumOK {
		t.Errorf("%s: label TTL %d, inner TTL %d (checksum ok %v), want 63 and 63", e, p.LabelTTL, p.InnerTTL, p.InnerChecksumOK)
	}
	switch e {
	case encap.MPLSoUDP:
		if p.UDPDst != 6635 {
			t.Errorf("UDP destination port %d, want 6635", p.UDPDst)
		}
	case encap.MPLSoGRE:
		if p.GREProto != 0x8847 {
			t.Errorf("GRE protocol %#x, want 0x8847", p.GREProto)
		}
	}
}

func TestVMOverlay(t *testing.T) {
	for _, mode := range []overlay.VRFMode{overlay.VRFAuto, overlay.VRFOff} {
		t.Run("vrf="+string(mode), func(t *testing.T) { testVMOverlay(t, mode) })
	}
}

func testVMOverlay(t *testing.T, mode overlay.VRFMode) {
	g := newTwoGateways(t, mode)
	if mode == overlay.VRFAuto && !g.mA.Features().VRF {
		t.Fatal("kernel has no VRF devices")
	}
	cap := overlaytest.StartCapture(t, g.gwA, "u0")
	both := []encap.Encap{encap.MPLSoUDP, encap.MPLSoGRE}

	// MPLSoUDP, preferred by both.
	sA, _ := g.set(t, both, both, true, true)
	g.checkPath(t, encap.MPLSoUDP, cap)
	t.Logf("gateway A kernel state:\n%s", overlaytest.Dump(t, g.gwA))

	// Re-applying the same state changes nothing.
	if n := watchChanges(t, g.gwA, func() {
		if err := g.mA.Set(context.Background(), sA); err != nil {
			t.Fatalf("re-apply: %v", err)
		}
	}); n != 0 {
		t.Errorf("re-applying the same state made %d kernel changes", n)
	}

	// A restarted agent adopts tunnels, nexthops and routes without touching them.
	g.mA.Close()
	g.mA = newManager(t, g.gwA, mode)
	if n := watchChanges(t, g.gwA, func() {
		if err := g.mA.Set(context.Background(), sA); err != nil {
			t.Fatalf("Set after restart: %v", err)
		}
	}); n != 0 {
		t.Errorf("a restarted manager made %d kernel changes for the same state", n)
	}
	g.checkPath(t, encap.MPLSoUDP, cap)

	// MPLSoGRE as the preferred encapsulation.
	g.set(t, []encap.Encap{encap.MPLSoGRE, encap.MPLSoUDP}, both, true, true)
	g.checkPath(t, encap.MPLSoGRE, cap)
	if d := overlaytest.Dump(t, g.gwA); strings.Contains(d, "link iofu") {
		t.Errorf("the unused MPLSoUDP tunnel was not removed:\n%s", d)
	}

	// Fallback: MPLSoUDP preferred locally, but the remote offers only GRE.
	g.set(t, both, []encap.Encap{encap.MPLSoGRE}, true, true)
	g.checkPath(t, encap.MPLSoGRE, cap)

	// Removing the route on A stops the traffic.
	g.set(t, both, both, false, true)
	if err := overlaytest.Ping(g.podA, g.addrB, 2*time.Second); err == nil {
		t.Fatalf("pod A still reaches pod B after its route was removed")
	}
	if d := overlaytest.Dump(t, g.gwA); strings.Contains(d, "link iofu") || strings.Contains(d, "link iofg") {
		t.Errorf("tunnels remain without routes:\n%s", d)
	}
	// And putting it back restores it.
	g.set(t, both, both, true, true)
	g.checkPath(t, encap.MPLSoUDP, cap)

	// Gateway A's underlay address changes: A replaces its tunnel to B (same
	// name, new local address), B makes a new one toward A's new address.
	g.gwA.IP(t, "addr", "add", "192.0.2.11/24", "dev", "u0")
	g.ulA = ap("192.0.2.11")
	g.set(t, both, both, true, true)
	g.checkPath(t, encap.MPLSoUDP, cap)
	if d := overlaytest.Dump(t, g.gwB); strings.Contains(d, "link iofuc0000201") || !strings.Contains(d, "link iofuc000020b") {
		t.Errorf("B's tunnels after A's underlay change:\n%s", d)
	}

	for _, x := range []struct {
		m  *overlay.Manager
		ns *netnstest.NS
	}{{g.mA, g.gwA}, {g.mB, g.gwB}} {
		if err := x.m.Cleanup(context.Background()); err != nil {
			t.Fatalf("Cleanup: %v", err)
		}
		if d := overlaytest.Dump(t, x.ns); d != "" {
			t.Errorf("after cleanup:\n%s", d)
		}
	}
}
