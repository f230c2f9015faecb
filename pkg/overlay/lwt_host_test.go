package overlay_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	"github.com/iotfabric/iotfabric/pkg/overlay/overlaytest"
)

// TestLWTEncapOnTheWire routes a pod's packets through the lwt alternative's
// `encap bpf xmit` route on the host kernel (it needs no MPLS module to send):
// the gateway's underlay carries MPLSoUDP with label 1002 and the inner packet.
func TestLWTEncapOnTheWire(t *testing.T) {
	netnstest.RequireRoot(t)
	gwA, gwB := netnstest.New(t, "iofgwa"), netnstest.New(t, "iofgwb")
	overlaytest.Underlay(t, gwA, ap("192.0.2.1"), gwB, ap("192.0.2.2"))
	podA := overlaytest.Pod(t, gwA, "vpoda", ap("10.1.0.1"), gwAddr)
	gwA.IP(t, "addr", "add", gwAddr.String()+"/32", "dev", "vpoda")
	gwA.IP(t, "link", "set", "vpoda", "up")
	gwA.IP(t, "route", "add", "10.1.0.1/32", "dev", "vpoda")
	gwA.Sysctl(t, "net/ipv4/ip_forward", "1")
	u, err := gwA.Handle().LinkByName("u0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := overlay.NewLWTEncap(254)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Route(gwA.Handle(), netip.MustParsePrefix("10.1.0.2/32"), ap("192.0.2.2"), ap("192.0.2.1"), 1002, false, u.Attrs().Index); err != nil {
		t.Fatal(err)
	}
	cap := overlaytest.StartCapture(t, gwB, "u0")
	go overlaytest.Ping(podA, ap("10.1.0.2"), 2*time.Second) // no answer: B has no MPLS
	p, ok := cap.Find(overlay.MPLSoUDPPort, 5*time.Second, func(p overlaytest.OverlayPacket) bool {
		return p.InnerSrc == ap("10.1.0.1") && p.InnerDst == ap("10.1.0.2")
	})
	if !ok {
		e, d := l.Counts()
		t.Fatalf("no MPLSoUDP packet on B's underlay (program: %d encapsulated, %d dropped)", e, d)
	}
	if p.Label != 1002 || !p.BOS || p.LabelTTL != 63 || p.InnerTTL != 63 || !p.InnerChecksumOK {
		t.Errorf("captured %s, label TTL %d inner TTL %d checksum ok %v", p, p.LabelTTL, p.InnerTTL, p.InnerChecksumOK)
	}
}
