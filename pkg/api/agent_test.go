package api

import (
	"context"
	"fmt"
	"path/filepath"
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
}

func startAgentEnv(t testing.TB) agentEnv {
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
	conn := serveGRPC(t, func(gs *grpc.Server) {
		Services{Controller: c, Routes: r}.Register(gs)
	})
	return agentEnv{v1.NewAgentServiceClient(conn), v1.NewNetworkServiceClient(conn), v1.NewGatewayServiceClient(conn), v1.NewEndpointServiceClient(conn)}
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
