package overlay_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	"github.com/iotfabric/iotfabric/pkg/overlay/overlaytest"
)

var (
	gwAddr = overlay.DefaultPodGatewayAddr
	ap     = netip.MustParseAddr
	pp     = netip.MustParsePrefix
)

func testLogger(t testing.TB) *slog.Logger {
	if _, bench := t.(*testing.B); bench {
		return slog.New(slog.DiscardHandler) // keep the figures readable
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func newManager(t testing.TB, ns *netnstest.NS, vrf overlay.VRFMode) *overlay.Manager {
	t.Helper()
	m, err := overlay.New(context.Background(), overlay.Config{NetNS: ns.Path(), Logger: testLogger(t), VRF: vrf})
	if err != nil {
		t.Fatalf("overlay.New: %v", err)
	}
	t.Cleanup(m.Close)
	return m
}

// hostFeatures reads the kernel's MPLS support independently of the package.
func hostHasMPLS() bool {
	_, err := os.Stat("/proc/sys/net/mpls")
	return err == nil
}

func TestFeatureDetection(t *testing.T) {
	gw := netnstest.New(t, "iofgw")
	m := newManager(t, gw, overlay.VRFAuto)
	f := m.Features()
	if f.MPLS != hostHasMPLS() {
		t.Errorf("MPLS detected %v, /proc/sys/net/mpls exists %v", f.MPLS, hostHasMPLS())
	}
	_, vrfErr := gw.TryIP("link", "add", "iofxvrf", "type", "vrf", "table", "7998")
	if f.VRF != (vrfErr == nil) {
		t.Errorf("VRF detected %v, ip link add type vrf error: %v", f.VRF, vrfErr)
	}
	_, greErr := gw.TryIP("link", "add", "iofxgre", "type", "gre", "remote", "192.0.2.1", "local", "192.0.2.2")
	if f.GRE != (greErr == nil) {
		t.Errorf("GRE detected %v, ip link add type gre error: %v", f.GRE, greErr)
	}
	for _, l := range []string{"iofxvrf", "iofxgre"} {
		_, _ = gw.TryIP("link", "del", l)
	}
	sum := f.Summary()
	for _, mod := range f.Missing() {
		if !strings.Contains(sum, mod) {
			t.Errorf("summary %q does not name missing module %s", sum, mod)
		}
	}
	if len(f.Missing()) > 0 && !strings.Contains(sum, "still works") {
		t.Errorf("summary %q does not say what still works", sum)
	}
	// No probe interface is left behind.
	if d := overlaytest.Dump(t, gw); d != "" {
		t.Errorf("feature detection left state behind:\n%s", d)
	}
	t.Logf("features: %+v; %s", f, sum)
}

// localState is two networks on one gateway, two endpoints in the first.
func localState() overlay.State {
	return overlay.State{
		Underlay: ap("192.0.2.1"),
		Networks: []overlay.Network{
			{Name: "red", Table: 7001, Endpoints: []overlay.Endpoint{
				{Interface: "vred1", Address: ap("10.1.0.1"), Label: 1001},
				{Interface: "vred2", Address: ap("10.1.0.2"), Label: 1002},
			}},
			{Name: "blue", Table: 7002, Endpoints: []overlay.Endpoint{
				{Interface: "vblue1", Address: ap("10.1.0.1"), Label: 2001},
			}},
		},
	}
}

func TestLocalEndpointsCarryTraffic(t *testing.T) {
	gw := netnstest.New(t, "iofgw")
	red1 := overlaytest.Pod(t, gw, "vred1", ap("10.1.0.1"), gwAddr)
	red2 := overlaytest.Pod(t, gw, "vred2", ap("10.1.0.2"), gwAddr)
	blue1 := overlaytest.Pod(t, gw, "vblue1", ap("10.1.0.1"), gwAddr)
	m := newManager(t, gw, overlay.VRFAuto)
	if err := m.Set(context.Background(), localState()); err != nil {
		t.Fatalf("Set: %v", err)
	}
	srv := red2.Echo(t, ap("10.1.0.2"))
	if err := red1.CheckEcho(srv, "hello red"); err != nil {
		t.Fatalf("red1 -> red2 over the network table: %v\n%s", err, overlaytest.Dump(t, gw))
	}
	// blue1 has the same address as red1 but lives in another table: the same
	// destination is not reachable from blue.
	if err := blue1.CheckEcho(srv, "hello"); err == nil {
		t.Fatalf("blue1 reached red2: networks are not isolated")
	}
	d := overlaytest.Dump(t, gw)
	for _, want := range []string{
		"route 10.1.0.1 dev vred1 table 7001 scope link",
		"route 10.1.0.2 dev vred2 table 7001 scope link",
		"route 10.1.0.1 dev vblue1 table 7002 scope link",
	} {
		if !strings.Contains(d, want) {
			t.Errorf("kernel state lacks %q:\n%s", want, d)
		}
	}
}

// watchChanges counts notifications of changes to iotfabric's routes (protocol
// 165) and interfaces (iof prefix) in ns while fn runs.
func watchChanges(t *testing.T, ns *netnstest.NS, fn func()) int {
	t.Helper()
	done := make(chan struct{})
	routes := make(chan netlink.RouteUpdate, 1024)
	links := make(chan netlink.LinkUpdate, 1024)
	if err := netlink.RouteSubscribeAt(ns.NsHandle(), routes, done); err != nil {
		t.Fatalf("route subscribe: %v", err)
	}
	if err := netlink.LinkSubscribeAt(ns.NsHandle(), links, done); err != nil {
		t.Fatalf("link subscribe: %v", err)
	}
	defer close(done)
	fn()
	// A marker change after fn: every notification caused by fn is queued before it.
	ns.IP(t, "route", "add", "blackhole", "198.51.100.255/32", "table", "100")
	n := 0
	deadline := time.After(5 * time.Second)
	for {
		select {
		case u := <-routes:
			if u.Table == 100 {
				ns.IP(t, "route", "del", "blackhole", "198.51.100.255/32", "table", "100")
				return n
			}
			if u.Protocol != overlay.RouteProtocol {
				// The kernel's own routes (IPv6 link-local, multicast)
				// come and go asynchronously, e.g. after DAD.
				continue
			}
			t.Logf("route change: %v", u.Route)
			n++
		case u := <-links:
			if !strings.HasPrefix(u.Attrs().Name, overlay.IfPrefix) {
				continue // endpoint interfaces change state by themselves (carrier, IPv6)
			}
			t.Logf("link change: %s", u.Attrs().Name)
			n++
		case <-deadline:
			t.Fatal("marker route notification never came")
		}
	}
}

func TestSetIsIdempotentAndAdopts(t *testing.T) {
	gw := netnstest.New(t, "iofgw")
	for _, ifn := range []string{"vred1", "vred2", "vblue1"} {
		overlaytest.Pod(t, gw, ifn, ap("10.9.9.9"), gwAddr)
	}
	ctx := context.Background()
	s := localState()
	m := newManager(t, gw, overlay.VRFAuto)
	if err := m.Set(ctx, s); err != nil {
		t.Fatalf("Set: %v", err)
	}
	want := overlaytest.Dump(t, gw)
	if n := watchChanges(t, gw, func() {
		if err := m.Set(ctx, s); err != nil {
			t.Fatalf("second Set: %v", err)
		}
	}); n != 0 {
		t.Errorf("re-applying the same state made %d kernel changes", n)
	}
	m.Close()

	// An orphan with our marks, and a foreign route that must survive.
	gw.IP(t, "route", "add", "10.77.0.0/16", "dev", "vred1", "table", "7003", "proto", "165")
	gw.IP(t, "rule", "add", "pref", "7000", "iif", "vgone", "lookup", "7003")
	gw.IP(t, "route", "add", "10.88.0.0/16", "dev", "lo", "table", "7001")

	m2 := newManager(t, gw, overlay.VRFAuto)
	n := watchChanges(t, gw, func() {
		if err := m2.Set(ctx, s); err != nil {
			t.Fatalf("Set after restart: %v", err)
		}
	})
	// Exactly the orphan route goes; the adopted routes are not touched.
	if n != 1 {
		t.Errorf("adoption made %d route/link changes, want 1 (the orphan route's removal)", n)
	}
	if got := overlaytest.Dump(t, gw); got != want {
		t.Errorf("after adoption:\n%s\nwant:\n%s", got, want)
	}
	if out := gw.IP(t, "route", "show", "table", "7001"); !strings.Contains(out, "10.88.0.0/16") {
		t.Errorf("foreign route removed:\n%s", out)
	}
	if err := m2.Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if got := overlaytest.Dump(t, gw); got != "" {
		t.Errorf("after cleanup:\n%s", got)
	}
	if out := gw.IP(t, "route", "show", "table", "7001"); !strings.Contains(out, "10.88.0.0/16") {
		t.Errorf("cleanup removed a foreign route:\n%s", out)
	}
}

func TestRemoteRoutesWithoutKernelSupport(t *testing.T) {
	gw := netnstest.New(t, "iofgw")
	overlaytest.Pod(t, gw, "vred1", ap("10.1.0.1"), gwAddr)
	gw.IP(t, "link", "add", "u0", "type", "veth", "peer", "name", "u1")
	gw.IP(t, "link", "set", "u1", "up")
	gw.IP(t, "addr", "add", "192.0.2.1/24", "dev", "u0")
	gw.IP(t, "link", "set", "u0", "up")
	m := newManager(t, gw, overlay.VRFAuto)
	s := overlay.State{Underlay: ap("192.0.2.1"), Networks: []overlay.Network{{Name: "red", Table: 7001,
		Endpoints: []overlay.Endpoint{{Interface: "vred1", Address: ap("10.1.0.1"), Label: 1001}},
		Routes: []overlay.RemoteRoute{
			{Prefix: pp("10.1.0.2/32"), Label: 1002, RemoteUnderlay: ap("192.0.2.2"), Encaps: []encap.Encap{encap.MPLSoUDP, encap.Plain}},
			{Prefix: pp("10.1.0.3/32"), Label: 1003, RemoteUnderlay: ap("192.0.2.3"), Encaps: []encap.Encap{encap.MPLSoGRE}},
		}}},
		EncapPriority: []encap.Encap{encap.MPLSoUDP, encap.MPLSoGRE, encap.Plain}}
	err := m.Set(context.Background(), s)
	f := m.Features()
	d := overlaytest.Dump(t, gw)
	if f.Supports(encap.MPLSoGRE) {
		if err != nil {
			t.Fatalf("Set: %v", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), "10.1.0.3/32") {
		t.Fatalf("Set error %v does not name the route that has no usable encapsulation", err)
	}
	// Everything else was still applied: the endpoint, and the route that falls
	// back to plain routing.
	for _, want := range []string{
		"route 10.1.0.1 dev vred1 table 7001 scope link",
		"route 10.1.0.2 via 192.0.2.2 dev u0 table 7001",
		"rule 7000: from all iif vred1 lookup 7001 proto 165",
	} {
		if !strings.Contains(d, want) {
			t.Errorf("kernel state lacks %q:\n%s", want, d)
		}
	}
}

// TestTransitions replays desired states in random order; after each Set the
// kernel must hold exactly the expected text, whatever came before.
func TestTransitions(t *testing.T) {
	gw := netnstest.New(t, "iofgw")
	for _, ifn := range []string{"va", "vb", "vc"} {
		overlaytest.Pod(t, gw, ifn, ap("10.9.9.9"), gwAddr)
	}
	gw.IP(t, "link", "add", "u0", "type", "veth", "peer", "name", "u1")
	gw.IP(t, "link", "set", "u1", "up")
	gw.IP(t, "addr", "add", "192.0.2.1/24", "dev", "u0")
	gw.IP(t, "link", "set", "u0", "up")
	m := newManager(t, gw, overlay.VRFOff)
	plain := []encap.Encap{encap.Plain}
	ep := func(i string, a string, l uint32) overlay.Endpoint {
		return overlay.Endpoint{Interface: i, Address: ap(a), Label: l}
	}
	rr := func(p, g string, l uint32) overlay.RemoteRoute {
		return overlay.RemoteRoute{Prefix: pp(p), RemoteUnderlay: ap(g), Label: l, Encaps: plain}
	}
	rows := []struct {
		name  string
		state overlay.State
		want  []string
		mpls  []string // label routes, present when the kernel has MPLS
	}{
		{"empty", overlay.State{}, nil, nil},
		{"one endpoint", overlay.State{Networks: []overlay.Network{{Name: "a", Table: 7001,
			Endpoints: []overlay.Endpoint{ep("va", "10.1.0.1", 100)}}}},
			[]string{
				"route 10.1.0.1 dev va table 7001 scope link",
				"rule 7000: from all iif va lookup 7001 proto 165",
			}, []string{"mpls 100 via inet 10.1.0.1 dev va proto 165"}},
		{"two networks, remote routes", overlay.State{Underlay: ap("192.0.2.1"), EncapPriority: plain, Networks: []overlay.Network{
			{Name: "a", Table: 7001, Endpoints: []overlay.Endpoint{ep("va", "10.1.0.1", 100), ep("vb", "10.1.0.2", 101)},
				Routes: []overlay.RemoteRoute{rr("10.1.1.0/24", "192.0.2.2", 200)}},
			{Name: "b", Table: 7002, Endpoints: []overlay.Endpoint{ep("vc", "10.1.0.1", 102)},
				Routes: []overlay.RemoteRoute{rr("10.1.1.0/24", "192.0.2.3", 201), rr("10.2.0.0/16", "192.0.2.3", 202)}},
		}}, []string{
			"route 10.1.0.1 dev va table 7001 scope link",
			"route 10.1.0.1 dev vc table 7002 scope link",
			"route 10.1.0.2 dev vb table 7001 scope link",
			"route 10.1.1.0/24 via 192.0.2.2 dev u0 table 7001",
			"route 10.1.1.0/24 via 192.0.2.3 dev u0 table 7002",
			"route 10.2.0.0/16 via 192.0.2.3 dev u0 table 7002",
			"rule 7000: from all iif va lookup 7001 proto 165",
			"rule 7000: from all iif vb lookup 7001 proto 165",
			"rule 7000: from all iif vc lookup 7002 proto 165",
		}, []string{
			"mpls 100 via inet 10.1.0.1 dev va proto 165",
			"mpls 101 via inet 10.1.0.2 dev vb proto 165",
			"mpls 102 via inet 10.1.0.1 dev vc proto 165",
		}},
		{"endpoint moves network, route changes gateway", overlay.State{Underlay: ap("192.0.2.1"), EncapPriority: plain, Networks: []overlay.Network{
			{Name: "a", Table: 7001, Endpoints: []overlay.Endpoint{ep("va", "10.1.0.1", 100)},
				Routes: []overlay.RemoteRoute{rr("10.1.1.0/24", "192.0.2.4", 200)}},
			{Name: "b", Table: 7002, Endpoints: []overlay.Endpoint{ep("vb", "10.1.0.2", 101)}},
		}}, []string{
			"route 10.1.0.1 dev va table 7001 scope link",
			"route 10.1.0.2 dev vb table 7002 scope link",
			"route 10.1.1.0/24 via 192.0.2.4 dev u0 table 7001",
			"rule 7000: from all iif va lookup 7001 proto 165",
			"rule 7000: from all iif vb lookup 7002 proto 165",
		}, []string{
			"mpls 100 via inet 10.1.0.1 dev va proto 165",
			"mpls 101 via inet 10.1.0.2 dev vb proto 165",
		}},
		{"IPv6 endpoint", overlay.State{Networks: []overlay.Network{{Name: "a", Table: 7005,
			Endpoints: []overlay.Endpoint{ep("vc", "fd00::1", 300)}}}},
			[]string{
				"route fd00::1 dev vc table 7005 metric 1024 pref medium",
				"rule 7000: from all iif vc lookup 7005 proto 165",
			}, []string{"mpls 300 via inet6 fd00::1 dev vc proto 165"}},
	}
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	order := []int{}
	for range 3 {
		order = append(order, rng.Perm(len(rows))...)
	}
	t.Logf("order %v", order)
	for step, i := range order {
		row := rows[i]
		if err := m.Set(ctx, row.state); err != nil {
			t.Fatalf("step %d (%s): Set: %v", step, row.name, err)
		}
		got := overlaytest.Dump(t, gw)
		want := append([]string(nil), row.want...)
		if m.Features().MPLS {
			want = append(want, row.mpls...)
		}
		sortLines(want)
		if got != strings.Join(want, "\n") {
			t.Fatalf("step %d (%s), order %v:\ngot:\n%s\nwant:\n%s", step, row.name, order, got, strings.Join(want, "\n"))
		}
	}
}

func sortLines(s []string) { slices.Sort(s) }

var _ = fmt.Sprint

// TestDriftRepair: an endpoint interface that is recreated is noticed by the
// next Set; a route removed behind the manager's back is restored after Resync.
func TestDriftRepair(t *testing.T) {
	gw := netnstest.New(t, "iofgw")
	for _, ifn := range []string{"vred1", "vred2", "vblue1"} {
		overlaytest.Pod(t, gw, ifn, ap("10.9.9.9"), gwAddr)
	}
	ctx := context.Background()
	s := localState()
	m := newManager(t, gw, overlay.VRFAuto)
	if err := m.Set(ctx, s); err != nil {
		t.Fatalf("Set: %v", err)
	}
	want := overlaytest.Dump(t, gw)

	// The CNI plugin recreates vred2 (new interface index).
	gw.IP(t, "link", "del", "vred2")
	overlaytest.Pod(t, gw, "vred2", ap("10.9.9.9"), gwAddr)
	if err := m.Set(ctx, s); err != nil {
		t.Fatalf("Set after vred2 was recreated: %v", err)
	}
	if got := overlaytest.Dump(t, gw); got != want {
		t.Fatalf("after vred2 was recreated:\n%s\nwant:\n%s", got, want)
	}

	// An operator deletes one of iotfabric's routes.
	gw.IP(t, "route", "del", "10.1.0.1/32", "table", "7002")
	if err := m.Resync(ctx); err != nil {
		t.Fatalf("Resync: %v", err)
	}
	if err := m.Set(ctx, s); err != nil {
		t.Fatalf("Set after Resync: %v", err)
	}
	if got := overlaytest.Dump(t, gw); got != want {
		t.Fatalf("after Resync and Set:\n%s\nwant:\n%s", got, want)
	}
}

// TestBatchErrorsMapToRoutes: one route the kernel refuses in the middle of a
// batch is reported by name, and the routes around it are programmed.
func TestBatchErrorsMapToRoutes(t *testing.T) {
	gw := netnstest.New(t, "iofgw")
	gw.IP(t, "link", "add", "u0", "type", "veth", "peer", "name", "u1")
	gw.IP(t, "link", "set", "u1", "up")
	gw.IP(t, "addr", "add", "192.0.2.1/24", "dev", "u0")
	gw.IP(t, "link", "set", "u0", "up")
	m := newManager(t, gw, overlay.VRFOff)
	plain := []encap.Encap{encap.Plain}
	var routes []overlay.RemoteRoute
	for i := range 1000 {
		g := ap("192.0.2.2")
		if i == 500 {
			g = ap("203.0.113.9") // not reachable: the kernel refuses this one
		}
		routes = append(routes, overlay.RemoteRoute{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 50, byte(i >> 8), byte(i)}), 32),
			Label: 100, RemoteUnderlay: g, Encaps: plain})
	}
	s := overlay.State{Underlay: ap("192.0.2.1"), EncapPriority: plain,
		Networks: []overlay.Network{{Name: "a", Table: 7001, Routes: routes}}}
	err := m.Set(context.Background(), s)
	if err == nil || !strings.Contains(err.Error(), "10.50.1.244/32") || strings.Count(err.Error(), "add route") != 1 {
		t.Fatalf("Set error %v, want exactly one failed route, 10.50.1.244/32", err)
	}
	if n := strings.Count(gw.IP(t, "route", "show", "table", "7001"), "\n"); n != 999 {
		t.Fatalf("table holds %d routes, want 999", n)
	}
	// The failed route is retried by the next Set (no fast path after an error).
	gw.IP(t, "route", "add", "203.0.113.0/24", "dev", "u0")
	if err := m.Set(context.Background(), s); err != nil {
		t.Fatalf("second Set: %v", err)
	}
	if n := strings.Count(gw.IP(t, "route", "show", "table", "7001"), "\n"); n != 1000 {
		t.Fatalf("table holds %d routes after retry, want 1000", n)
	}
}
