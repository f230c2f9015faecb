package overlay_test

import (
	"context"
	"fmt"
	"os"
	"os/user"
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

// frrDir holds FRR's daemons (Debian's frr package).
const frrDir = "/usr/lib/frr"

// requireFRR skips without FRR's zebra, or fails when the VM
// image was packed with them (scripts/vmtest/run.sh sets
// IOTFABRIC_VMTEST_FRR=1) or under IOTFABRIC_TEST_STRICT=1.
func requireFRR(t testing.TB) {
	t.Helper()
	for _, d := range []string{"zebra"} {
		if _, err := os.Stat(filepath.Join(frrDir, d)); err != nil {
			if os.Getenv("IOTFABRIC_VMTEST_FRR") == "1" {
				t.Fatalf("the VM image lacks FRR's %s: %v", d, err)
			}
			testenv.RequireFile(t, filepath.Join(frrDir, d), "frr")
		}
	}
}

// frrDirFor makes a directory for FRR's files owned by the frr user (the
// daemons drop to it), removed when the test ends.
func frrDirFor(t testing.TB) string {
	t.Helper()
	u, err := user.Lookup("frr")
	if err != nil {
		t.Fatalf("user frr: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "iofrr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startFRRDaemon starts one of FRR's daemons inside ns with config conf; it
// is killed when the test ends. Its output goes to dir/<daemon>.log.
func startFRRDaemon(t testing.TB, ns *netnstest.NS, dir, daemon string) {
	t.Helper()
	out, err := os.Create(filepath.Join(dir, daemon+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := ns.Command(filepath.Join(frrDir, daemon), "-f", filepath.Join(dir, "frr.conf"),
		"-i", filepath.Join(dir, daemon+".pid"), "-z", filepath.Join(dir, "zserv.api"),
		"--vty_socket", dir, "-P", "0", "-u", "frr", "-g", "frr", "--log", "stdout")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", daemon, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		out.Close()
	})
	// zserv.api appears once zebra listens; staticd connects to it.
	if daemon == "zebra" {
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if _, err := os.Stat(filepath.Join(dir, "zserv.api")); err == nil {
				return
			}
			select {
			case err := <-exited:
				exited <- err
				b, _ := os.ReadFile(out.Name())
				t.Fatalf("zebra exited: %v\n%s", err, b)
			default:
			}
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(out.Name())
				t.Fatalf("zebra did not open %s/zserv.api\n%s", dir, b)
			}
		}
	}
}

// TestVMFastPathFRREdge sends a fast-path gateway's MPLSoUDP to an edge
// router whose label route FRR programs: zebra installs the static LSP that
// pops the gateway's label toward a service network behind the edge. The
// edge decapsulates with the kernel (fou port 6635 and the mpls_router label
// route zebra put there); the way back is a labelled route into the edge's
// MPLSoUDP tunnel (FRR's staticd reads its labelled routes before zebra
// tells it the kernel has MPLS, and refuses them at start). Ping and TCP
// both ways between the pod and the service.
func TestVMFastPathFRREdge(t *testing.T) {
	netnstest.RequireRoot(t)
	gw := netnstest.New(t, "iofgwa")
	edge := netnstest.New(t, "iofedge")
	svc := netnstest.New(t, "iofsvc")
	ulGW, ulEdge := ap("192.0.2.1"), ap("192.0.2.3")
	podAddr, svcAddr := ap("10.1.0.1"), ap("10.9.0.2")
	overlaytest.Underlay(t, gw, ulGW, edge, ulEdge)
	pod := overlaytest.Pod(t, gw, "vpoda", podAddr, gwAddr)
	m := newManager(t, gw, overlay.VRFAuto)
	requireFullKernel(t, m)
	requireFRR(t)
	m.Close()
	m = newFastManager(t, gw, overlay.VRFAuto)

	// The edge router: a service network behind it, the FOU port and an
	// MPLSoUDP tunnel toward the gateway (the data plane FRR does not
	// build), MPLS input on the tunnel, and FRR for the label routes.
	l := netnstest.Connect(t, edge, svc, pp("10.9.0.1/30"), pp("10.9.0.2/30"))
	svc.IP(t, "route", "add", "default", "via", "10.9.0.1", "dev", l.NameB)
	svc.IP(t, "link", "set", l.NameB, "mtu", fmt.Sprint(overlaytest.PodMTU))
	edge.IP(t, "link", "set", l.NameA, "mtu", fmt.Sprint(overlaytest.PodMTU))
	edge.Sysctl(t, "net/ipv4/ip_forward", "1")
	edge.Sysctl(t, "net/mpls/platform_labels", "100000")
	edge.IP(t, "fou", "add", "port", fmt.Sprint(overlay.MPLSoUDPPort), "ipproto", "137")
	edge.IP(t, "link", "add", "edge0", "type", "ipip", "mode", "mplsip", "local", ulEdge.String(), "remote", ulGW.String(),
		"encap", "fou", "encap-sport", "auto", "encap-dport", fmt.Sprint(overlay.MPLSoUDPPort))
	edge.IP(t, "link", "set", "edge0", "mtu", "1468", "up")
	edge.Sysctl(t, "net/mpls/conf/edge0/input", "1")
	dir := frrDirFor(t)
	conf := fmt.Sprintf(`hostname edge
mpls lsp 2001 %s implicit-null
`, svcAddr)
	if err := os.WriteFile(filepath.Join(dir, "frr.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	startFRRDaemon(t, edge, dir, "zebra")
	// The way back to the pod: label 1001 pushed into the tunnel.
	edge.IP(t, "route", "add", podAddr.String()+"/32", "encap", "mpls", "1001", "dev", "edge0")
	// zebra's static LSP: label 2001 popped toward the service, installed
	// with zebra's route protocol (196, "static" in FRR's terms).
	var lsp string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		lsp = ""
		for _, l := range strings.Split(edge.IP(t, "-f", "mpls", "route", "show"), "\n") {
			if strings.HasPrefix(l, "2001 ") {
				lsp = l
			}
		}
		if strings.Contains(lsp, "proto 196") {
			break
		}
		if time.Now().After(deadline) {
			z, _ := os.ReadFile(filepath.Join(dir, "zebra.log"))
			t.Fatalf("zebra did not program label 2001: %q\nzebra:\n%s", lsp, z)
		}
	}
	t.Logf("label route zebra programmed on the edge: %s", lsp)

	// The gateway: its pod (label 1001) and the service prefix through the
	// edge with label 2001, MPLSoUDP on the fast path.
	udp := []encap.Encap{encap.MPLSoUDP}
	s := overlay.State{Underlay: ulGW, EncapPriority: udp, Networks: []overlay.Network{{Name: "red", Table: 7001,
		Endpoints: []overlay.Endpoint{{Interface: "vpoda", Address: podAddr, Label: 1001}},
		Routes:    []overlay.RemoteRoute{{Prefix: pp("10.9.0.0/30"), Label: 2001, RemoteUnderlay: ulEdge, Encaps: udp}}}}}
	if err := m.Set(context.Background(), s); err != nil {
		t.Fatalf("Set: %v\n%s", err, overlaytest.Dump(t, gw))
	}
	if st := m.FastPathStats(); st.RoutesFast != 1 {
		t.Fatalf("paths %+v: want the route to the edge on the fast path", st)
	}
	cap := overlaytest.StartCapture(t, gw, "u0")
	tun := "iofuc0000203"
	tx, enc := tunnelTx(t, gw, tun), m.FastPathStats().Encapsulated
	if err := overlaytest.Ping(pod, svcAddr, 10*time.Second); err != nil {
		t.Fatalf("ping pod -> service behind FRR: %v\ngateway:\n%s\nedge mpls:\n%s", err, overlaytest.Dump(t, gw), edge.IP(t, "-s", "link", "show"))
	}
	d, err := pod.Transfer(svc.Sink(t, svcAddr), 4<<20)
	if err != nil {
		t.Fatalf("TCP pod -> service behind FRR: %v", err)
	}
	t.Logf("4 MiB pod -> service behind FRR in %v", d)
	d, err = svc.Transfer(pod.Sink(t, podAddr), 4<<20)
	if err != nil {
		t.Fatalf("TCP service behind FRR -> pod: %v", err)
	}
	t.Logf("4 MiB service behind FRR -> pod in %v", d)
	p, ok := cap.Find(overlay.MPLSoUDPPort, 5*time.Second, func(p overlaytest.OverlayPacket) bool {
		return p.InnerSrc == podAddr && p.InnerDst == svcAddr
	})
	if !ok {
		t.Fatal("no MPLSoUDP packet from the pod to the service captured on the gateway's underlay")
	}
	if p.Label != 2001 || !p.BOS || p.UDPDst != overlay.MPLSoUDPPort {
		t.Errorf("captured %s: want label 2001, bottom of stack, UDP port 6635", p)
	}
	if st := m.FastPathStats(); st.Encapsulated <= enc {
		t.Errorf("the fast path encapsulated nothing toward the edge (%+v)", st)
	}
	if dt := tunnelTx(t, gw, tun) - tx; dt > 10 {
		t.Errorf("%d packets toward the edge took the gateway's kernel tunnel", dt)
	}
}
