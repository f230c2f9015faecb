package api

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// OnRouteChangeSent sees every route change a gateway stream sends, with the
// time since the route table took it in, and no snapshot or resume.
func TestRouteChangeSentObserved(t *testing.T) {
	c, r := startRunner(t)
	var mu sync.Mutex
	var seen []time.Duration
	conn := serveGRPC(t, func(gs *grpc.Server) {
		Services{Controller: c, Routes: r, OnRouteChangeSent: func(d time.Duration) {
			mu.Lock()
			seen = append(seen, d)
			mu.Unlock()
		}}.Register(gs)
	})
	observed := func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Duration(nil), seen...)
	}
	agent, nets := v1.NewAgentServiceClient(conn), v1.NewNetworkServiceClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := nets.CreateNetwork(ctx, mkNet("n", "10.1.0.0/24")); err != nil {
		t.Fatal(err)
	}
	for i, gw := range []string{"gw-a", "gw-b"} {
		if _, err := agent.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: gw, UnderlayAddress: fmt.Sprintf("192.0.2.%d", i+1)}}); err != nil {
			t.Fatal(err)
		}
	}
	if rep, err := agent.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: "gw-b", Endpoints: []*v1.AgentEndpoint{{Id: "pod-b", Network: "n", Label: 200}}}); err != nil || rep.Results[0].Error != "" {
		t.Fatalf("report: %+v %v", rep, err)
	}
	s, err := agent.WatchGatewayRoutes(ctx, &v1.WatchGatewayRoutesRequest{Gateway: "gw-b"})
	if err != nil {
		t.Fatal(err)
	}
	if first := recvRoutes(t, s); first.Kind != v1.GatewayRoutes_KIND_SNAPSHOT {
		t.Fatalf("first update: %v", first.Kind)
	}
	if n := len(observed()); n != 0 {
		t.Fatalf("the snapshot was observed as a change (%d observations)", n)
	}
	start := time.Now()
	if rep, err := agent.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: "gw-a", Endpoints: []*v1.AgentEndpoint{{Id: "pod-a", Network: "n", Label: 100}}}); err != nil || rep.Results[0].Error != "" {
		t.Fatalf("report: %+v %v", rep, err)
	}
	if u := recvRoutes(t, s); u.Kind != v1.GatewayRoutes_KIND_CHANGES || len(u.Put) != 1 {
		t.Fatalf("change: %v %v", u.Kind, prefixes(u.Put))
	}
	took := time.Since(start)
	deadline := time.Now().Add(5 * time.Second)
	for len(observed()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got := observed()
	if len(got) != 1 || got[0] < 0 || got[0] > took {
		t.Fatalf("observed %v for one change received %v after it was made; want one delay within that", got, took)
	}
}
