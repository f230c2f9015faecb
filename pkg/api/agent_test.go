package api

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	"github.com/iotfabric/iotfabric/pkg/vpn"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

type agentEnv struct {
	agent v1.AgentServiceClient
	net   v1.NetworkServiceClient
	gw    v1.GatewayServiceClient
	ep    v1.EndpointServiceClient
	links v1.GatewayLinkServiceClient
}

// startRunner opens a controller and its running route table on a bbolt
// file of the test's.
func startRunner(t testing.TB) (*controller.Controller, *vpn.Runner) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := controller.New(st, controller.Config{})
	r := vpn.NewRunner(st, nil, 64512, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-r.Ready()
	return c, r
}

func startAgentEnv(t testing.TB) agentEnv {
	c, r := startRunner(t)
	conn := serveGRPC(t, func(gs *grpc.Server) {
		Services{Controller: c, Routes: r}.Register(gs)
	})
	return agentEnv{v1.NewAgentServiceClient(conn), v1.NewNetworkServiceClient(conn), v1.NewGatewayServiceClient(conn), v1.NewEndpointServiceClient(conn),
		v1.NewGatewayLinkServiceClient(conn)}
}

func recvRoutes(t *testing.T, s grpc.ServerStreamingClient[v1.GatewayRoutes]) *v1.GatewayRoutes {
	t.Helper()
	type res struct {
		m   *v1.GatewayRoutes
		err error
	}
	ch := make(chan res, 1)
	go func() { m, err := s.Recv(); ch <- res{m, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.m
	case <-time.After(10 * time.Second):
		t.Fatal("no route update within 10s")
	}
	return nil
}

// waitGatewayState follows the gateways until gw is in state want.
func waitGatewayState(t *testing.T, c v1.GatewayServiceClient, gw string, want v1.GatewayState) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := c.WatchGateways(ctx, &v1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := w.Recv()
		if err != nil {
			t.Fatalf("gateway %s never became %v: %v", gw, want, err)
		}
		if ev.Gateway.GetName() == gw && ev.Gateway.GetState() == want {
			return
		}
	}
}

func prefixes(rs []*v1.Route) string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Prefix)
	}
	sort.Strings(out)
	return fmt.Sprint(out)
}

func TestAgentLifecycle(t *testing.T) {
	e := startAgentEnv(t)
	ctx := context.Background()
	if _, err := e.net.CreateNetwork(ctx, mkNet("n", "10.1.0.0/24")); err != nil {
		t.Fatal(err)
	}
	for i, gw := range []string{"gw-a", "gw-b"} {
		r, err := e.agent.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: gw, UnderlayAddress: fmt.Sprintf("192.0.2.%d", i+1)}, Architecture: "arm64"})
		if err != nil || r.Gateway.State != v1.GatewayState_GATEWAY_STATE_UP || r.Gateway.LastSeen == nil {
			t.Fatalf("register %s: %+v %v", gw, r, err)
		}
	}
	// Registering again updates, never duplicates.
	if _, err := e.agent.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw-a", UnderlayAddress: "192.0.2.1"}}); err != nil {
		t.Fatal(err)
	}
	rep, err := e.agent.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: "gw-a", Endpoints: []*v1.AgentEndpoint{{Id: "pod-a", Network: "n", Label: 100}}})
	if err != nil || rep.Results[0].Error != "" || rep.Results[0].Endpoint.Addresses[0] != "10.1.0.1" {
		t.Fatalf("report: %+v %v", rep, err)
	}

	bctx, bcancel := context.WithCancel(ctx)
	sb, err := e.agent.WatchGatewayRoutes(bctx, &v1.WatchGatewayRoutesRequest{Gateway: "gw-b"})
	if err != nil {
		t.Fatal(err)
	}
	first := recvRoutes(t, sb)
	if first.Kind != v1.GatewayRoutes_KIND_SNAPSHOT || len(first.Put) != 0 {
		t.Fatalf("gw-b has no endpoint yet, its snapshot should be empty: %+v", first)
	}
	// gw-b admits a pod with an address from a block it leased (as while offline).
	blk, err := e.agent.LeaseBlock(ctx, &v1.LeaseBlockRequest{Gateway: "gw-b", Network: "n", Family: 4})
	if err != nil || blk.Block.Prefix != "10.1.0.16/28" {
		t.Fatalf("lease: %+v %v", blk, err)
	}
	rep, _ = e.agent.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: "gw-b", Endpoints: []*v1.AgentEndpoint{{Id: "pod-b", Network: "n", Label: 200, Addresses: []string{"10.1.0.20"}}},
		OfflineLog: []string{"admitted pod-b with 10.1.0.20 while no controller was reachable"}})
	if rep.Results[0].Error != "" {
		t.Fatalf("offline-admitted endpoint refused: %v", rep.Results[0].Error)
	}
	u := recvRoutes(t, sb)
	for len(u.Put) < 2 {
		more := recvRoutes(t, sb)
		u.Put = append(u.Put, more.Put...)
	}
	if prefixes(u.Put) != "[10.1.0.1/32 10.1.0.20/32]" {
		t.Fatalf("gw-b's routes: %v", prefixes(u.Put))
	}
	lastRev, ctlID := u.Revision, u.ControllerId
	bcancel()
	// The controller marks gw-b down once it has detached the stream.
	waitGatewayState(t, e.gw, "gw-b", v1.GatewayState_GATEWAY_STATE_DOWN)

	// While gw-b is disconnected, gw-a adds a pod; gw-b resumes and gets only that.
	sa, err := e.agent.WatchGatewayRoutes(ctx, &v1.WatchGatewayRoutesRequest{Gateway: "gw-a"})
	if err != nil {
		t.Fatal(err)
	}
	recvRoutes(t, sa) // snapshot
	e.agent.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: "gw-a", Endpoints: []*v1.AgentEndpoint{{Id: "pod-a2", Network: "n", Label: 101}}})
	recvRoutes(t, sa) // the route table has the change
	sb2, err := e.agent.WatchGatewayRoutes(ctx, &v1.WatchGatewayRoutesRequest{Gateway: "gw-b", FromRevision: lastRev, ControllerId: ctlID})
	if err != nil {
		t.Fatal(err)
	}
	resumed := recvRoutes(t, sb2)
	if resumed.Kind != v1.GatewayRoutes_KIND_CHANGES || prefixes(resumed.Put) != "[10.1.0.2/32]" {
		t.Fatalf("resumed stream: kind %v put %v, want only 10.1.0.2/32", resumed.Kind, prefixes(resumed.Put))
	}
	// A stale controller id gets a snapshot.
	sb3, _ := e.agent.WatchGatewayRoutes(ctx, &v1.WatchGatewayRoutesRequest{Gateway: "gw-b", FromRevision: lastRev, ControllerId: "another"})
	if snap := recvRoutes(t, sb3); snap.Kind != v1.GatewayRoutes_KIND_SNAPSHOT || len(snap.Put) != 3 {
		t.Fatalf("snapshot after an unknown controller id: %v %v", snap.Kind, prefixes(snap.Put))
	}

	// gw-a's full sync without pod-a deletes it; gw-b's stream gets the withdrawal.
	rep, err = e.agent.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: "gw-a", FullSync: true, Endpoints: []*v1.AgentEndpoint{{Id: "pod-a2", Network: "n", Label: 101}}})
	if err != nil || rep.Deleted != 1 {
		t.Fatalf("full sync: %+v %v", rep, err)
	}
	del := recvRoutes(t, sb3)
	if prefixes(del.Delete) != "[10.1.0.1/32]" {
		t.Fatalf("after the full sync gw-b got put %v delete %v", prefixes(del.Put), prefixes(del.Delete))
	}
	// An address another endpoint holds is refused with a reason, nothing else changes.
	rep, _ = e.agent.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: "gw-b", Endpoints: []*v1.AgentEndpoint{{Id: "pod-c", Network: "n", Label: 201, Addresses: []string{"10.1.0.20"}}}})
	if rep.Results[0].Error == "" {
		t.Fatal("a conflicting address was accepted")
	}
	reg, _ := e.agent.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw-b", UnderlayAddress: "192.0.2.2"}})
	if len(reg.Blocks) != 1 || reg.Blocks[0].Prefix != "10.1.0.16/28" {
		t.Fatalf("register returns gw-b's blocks: %+v", reg.Blocks)
	}
}

// TestGatewayAgentFacts: what the agent registered (kernel features,
// architecture, version) is on the gateway for Get, List and Watch; create
// and update through the API neither set nor clear it.
func TestGatewayAgentFacts(t *testing.T) {
	e := startAgentEnv(t)
	ctx := context.Background()
	forged := &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.1", KernelFeatures: []string{"forged"}, Architecture: "forged", AgentVersion: "forged"}
	g, err := e.gw.CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: forged})
	if err != nil || g.KernelFeatures != nil || g.Architecture != "" || g.AgentVersion != "" {
		t.Fatalf("create with agent facts: %+v %v; want them ignored", g, err)
	}
	if g, err = e.gw.GetGateway(ctx, &v1.NameRequest{Name: "gw"}); err != nil || g.Architecture != "" {
		t.Fatalf("get after create: %+v %v", g, err)
	}
	feats := []string{"mpls", "fou", "gre", "vrf", "bpf-fast-path"}
	if _, err := e.agent.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.1", Architecture: "forged"},
		KernelFeatures: feats, Architecture: "arm64", AgentVersion: "v1.2.3"}); err != nil {
		t.Fatal(err)
	}
	want := func(what string, g *v1.Gateway) {
		t.Helper()
		if !slices.Equal(g.GetKernelFeatures(), feats) || g.GetArchitecture() != "arm64" || g.GetAgentVersion() != "v1.2.3" {
			t.Errorf("%s: kernel features %v, architecture %q, agent version %q; want %v, arm64, v1.2.3",
				what, g.GetKernelFeatures(), g.GetArchitecture(), g.GetAgentVersion(), feats)
		}
	}
	g, err = e.gw.GetGateway(ctx, &v1.NameRequest{Name: "gw"})
	if err != nil {
		t.Fatal(err)
	}
	want("get after register", g)
	l, err := e.gw.ListGateways(ctx, &v1.ListGatewaysRequest{})
	if err != nil || len(l.Gateways) != 1 {
		t.Fatalf("list: %+v %v", l, err)
	}
	want("list", l.Gateways[0])
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	w, err := e.gw.WatchGateways(wctx, &v1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := w.Recv()
	if err != nil {
		t.Fatal(err)
	}
	want("watch", ev.Gateway)
	// An update through the API keeps them, whatever it carries.
	upd := &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.2", KernelFeatures: []string{"forged"}, Architecture: "forged", AgentVersion: "forged"}
	if g, err = e.gw.UpdateGateway(ctx, &v1.UpdateGatewayRequest{Gateway: upd}); err != nil || g.UnderlayAddress != "192.0.2.2" {
		t.Fatalf("update: %+v %v", g, err)
	}
	want("update reply", g)
	if g, err = e.gw.GetGateway(ctx, &v1.NameRequest{Name: "gw"}); err != nil {
		t.Fatal(err)
	}
	want("get after update", g)
	// The next registration replaces them.
	if _, err := e.agent.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.2"},
		KernelFeatures: []string{"mpls"}, Architecture: "amd64", AgentVersion: "v1.2.4"}); err != nil {
		t.Fatal(err)
	}
	if g, err = e.gw.GetGateway(ctx, &v1.NameRequest{Name: "gw"}); err != nil || !slices.Equal(g.KernelFeatures, []string{"mpls"}) ||
		g.Architecture != "amd64" || g.AgentVersion != "v1.2.4" {
		t.Fatalf("after a second registration: %+v %v", g, err)
	}
	// A gateway first made by its agent's registration has them too.
	r, err := e.agent.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw-new", UnderlayAddress: "192.0.2.3"},
		KernelFeatures: feats, Architecture: "arm64", AgentVersion: "v1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	want("register reply", r.Gateway)
	if g, err = e.gw.GetGateway(ctx, &v1.NameRequest{Name: "gw-new"}); err != nil {
		t.Fatal(err)
	}
	want("get after registering a new gateway", g)
}
