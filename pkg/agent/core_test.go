package agent

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/iotfabric/iotfabric/pkg/cni"
	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func runCore(t *testing.T, dir string) (*Core, func()) {
	t.Helper()
	c, st, err := NewCore(Config{Gateway: "gw", Underlay: netip.MustParseAddr("192.0.2.1"), StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx, st) }()
	return c, func() { cancel(); <-done }
}

// TestCoreLabelsAndAddressesSurviveRestart: labels from 16 upward, addresses
// from the leased block, both persisted; a released label is not reused
// before the label space wraps; an exhausted block asks for another one.
func TestCoreLabelsAndAddressesSurviveRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	ctx := context.Background()
	c, stop := runCore(t, dir)
	if _, err := c.Add(ctx, &cni.Request{Op: cni.OpAdd, ContainerID: "x", IfName: "eth0", Network: "red"}); err == nil {
		t.Fatal("admitted a pod into a network with no block")
	}
	if err := c.SetNetwork(ctx, "red", NetInfo{Subnets: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}, BlockV4: 29}); err != nil {
		t.Fatal(err)
	}
	if err := c.AddBlocks(ctx, []Block{{Network: "red", Prefix: netip.MustParsePrefix("10.1.0.8/29")}}); err != nil {
		t.Fatal(err)
	}
	var got []cni.Endpoint
	for _, id := range []string{"a", "b", "c"} {
		e, err := c.Add(ctx, &cni.Request{Op: cni.OpAdd, ContainerID: id, IfName: "eth0", Network: "red"})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
	}
	if got[0].Label != 16 || got[1].Label != 17 || got[2].Label != 18 || got[0].Addresses[0] != netip.MustParseAddr("10.1.0.8") {
		t.Fatalf("first endpoints: %+v", got)
	}
	if _, ok, _ := c.Del(ctx, "b:eth0"); !ok {
		t.Fatal("del b")
	}
	stop()

	c, stop = runCore(t, dir)
	defer stop()
	for _, want := range []cni.Endpoint{got[0], got[2]} {
		e, ok, _ := c.Get(ctx, want.ID)
		if !ok || e.Label != want.Label || e.Addresses[0] != want.Addresses[0] {
			t.Fatalf("after restart %s is %+v, want label %d address %v", want.ID, e, want.Label, want.Addresses)
		}
	}
	d, _ := c.Add(ctx, &cni.Request{Op: cni.OpAdd, ContainerID: "d", IfName: "eth0", Network: "red"})
	if d.Label != 19 || d.Addresses[0] != netip.MustParseAddr("10.1.0.9") {
		t.Fatalf("after restart the next endpoint got label %d address %v, want 19 (17 not reused yet) and 10.1.0.9 (b's, free again)", d.Label, d.Addresses)
	}
	// The /29 holds 8: fill it, then the core asks for a block.
	var err error
	for i := 0; err == nil && i < 10; i++ {
		_, err = c.Add(ctx, &cni.Request{Op: cni.OpAdd, ContainerID: "f" + string(rune('a'+i)), IfName: "eth0", Network: "red"})
	}
	if nb, ok := err.(*errNeedBlock); !ok || !nb.known || nb.network != "red" {
		t.Fatalf("full block: %v", err)
	}
	// An endpoint that exists in another network is refused, not moved.
	if _, err := c.Add(ctx, &cni.Request{Op: cni.OpAdd, ContainerID: "a", IfName: "eth0", Network: "blue"}); err == nil {
		t.Fatal("endpoint moved to another network")
	}
}

func TestBuildDesired(t *testing.T) {
	u := netip.MustParseAddr("192.0.2.1")
	eps := map[string]*Endpoint{
		"a:eth0": {Endpoint: cni.Endpoint{ID: "a:eth0", Network: "red", HostIf: "iotfa", Label: 16, Attached: true,
			Addresses: []netip.Addr{netip.MustParseAddr("fd00::1"), netip.MustParseAddr("10.1.0.1")}}},
		"b:eth0": {Endpoint: cni.Endpoint{ID: "b:eth0", Network: "red", HostIf: "iotfb", Label: 17, // not attached yet
			Addresses: []netip.Addr{netip.MustParseAddr("10.1.0.2")}}},
	}
	type keyed struct {
		k routeKey
		r *route
	}
	mk := func(prefix, rd, nh string, label uint32, encaps ...v1.Encapsulation) keyed {
		network := "red"
		if prefix == "10.9.0.0/24" {
			network = "green"
		}
		k, r, err := newRoute(&v1.Route{Network: network, Prefix: prefix, RouteDistinguisher: rd, NextHop: nh, Label: label, Encapsulations: encaps})
		if err != nil {
			t.Fatal(err)
		}
		return keyed{k, r}
	}
	routes := map[routeKey]*route{}
	for _, r := range []keyed{
		mk("10.1.0.1/32", "192.0.2.1:1", "192.0.2.1", 16),                                            // own
		mk("10.1.0.5/32", "192.0.2.9:1", "192.0.2.9", 30, v1.Encapsulation_ENCAPSULATION_MPLS_O_GRE), // remote
		mk("10.1.0.5/32", "192.0.2.3:1", "192.0.2.3", 31),                                            // same prefix, lower RD: wins
		mk("10.1.0.6/32", "192.0.2.9:1", "192.0.2.9", 5),                                             // reserved label
		mk("10.1.0.7/31", "192.0.2.9:1", "192.0.2.9", 40),                                            // unmasked
		mk("10.9.0.0/24", "192.0.2.9:2", "192.0.2.9", 41),                                            // network without a table here
	} {
		routes[r.k] = r.r
	}
	st := buildDesired(u, nil, map[string]uint32{"red": 7001}, eps, routes)
	if err := st.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(st.Networks) != 1 {
		t.Fatalf("networks: %+v", st.Networks)
	}
	n := st.Networks[0]
	if len(n.Endpoints) != 1 || n.Endpoints[0] != (overlay.Endpoint{Interface: "iotfa", Address: netip.MustParseAddr("10.1.0.1"), Label: 16}) {
		t.Fatalf("endpoints: %+v", n.Endpoints)
	}
	if len(n.Routes) != 1 || n.Routes[0].RemoteUnderlay != netip.MustParseAddr("192.0.2.3") || n.Routes[0].Label != 31 ||
		len(n.Routes[0].Encaps) != 2 {
		t.Fatalf("routes: %+v", n.Routes)
	}
}

// TestHeadlessKeepsRoutes: with no live controller the last route set stays
// in force; a snapshot from a controller replaces it.
func TestHeadlessKeepsRoutes(t *testing.T) {
	c, stop := runCore(t, filepath.Join(t.TempDir(), "state"))
	defer stop()
	ctx := context.Background()
	r := func(p string) *v1.Route {
		return &v1.Route{Network: "red", Prefix: p, RouteDistinguisher: "192.0.2.9:1", NextHop: "192.0.2.9", Label: 99}
	}
	count := func() int {
		var n int
		c.do(ctx, func(s *coreState) { n = len(effectiveRoutes(s)) })
		return n
	}
	c.applyRoutes(ctx, "ctl", &v1.GatewayRoutes{Kind: v1.GatewayRoutes_KIND_SNAPSHOT, Revision: 1, Put: []*v1.Route{r("10.1.0.5/32"), r("10.1.0.6/32")}})
	c.sessionDown(ctx, "ctl")
	if n := count(); n != 2 {
		t.Fatalf("headless: %d routes in force, want 2", n)
	}
	c.applyRoutes(ctx, "ctl", &v1.GatewayRoutes{Kind: v1.GatewayRoutes_KIND_SNAPSHOT, Revision: 5, Put: []*v1.Route{r("10.1.0.6/32")}})
	if n := count(); n != 1 {
		t.Fatalf("after the resync: %d routes, want 1", n)
	}
}

// TestEncapsFlag: --encaps takes the API's names; the old spellings still work,
// with a deprecation warning; VXLAN, which the data plane lacks, is refused.
func TestEncapsFlag(t *testing.T) {
	opts := func(encaps string) (Options, string, error) {
		var logs bytes.Buffer
		f := Flags{Gateway: "gw", Underlay: "192.0.2.1", StateDir: "/var/lib/x", CNISocket: "/run/x.sock", Encaps: encaps}
		o, err := f.Options(slog.New(slog.NewTextHandler(&logs, nil)))
		return o, logs.String(), err
	}
	o, logs, err := opts("mplsogre,mplsoudp,plain")
	if err != nil || !slices.Equal(o.Encaps, []encap.Encap{encap.MPLSoGRE, encap.MPLSoUDP, encap.Plain}) || strings.Contains(logs, "deprecated") {
		t.Fatalf("names: %v %v\n%s", o.Encaps, err, logs)
	}
	o, logs, err = opts("mpls-udp, mpls-gre")
	if err != nil || !slices.Equal(o.Encaps, []encap.Encap{encap.MPLSoUDP, encap.MPLSoGRE}) ||
		!strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "value=mpls-udp use=mplsoudp") || !strings.Contains(logs, "value=mpls-gre use=mplsogre") {
		t.Fatalf("old spellings: %v %v\n%s", o.Encaps, err, logs)
	}
	for _, bad := range []string{"vxlan", "mplsoudp,udp"} {
		if _, _, err := opts(bad); err == nil {
			t.Errorf("--encaps %s accepted", bad)
		}
	}
}
