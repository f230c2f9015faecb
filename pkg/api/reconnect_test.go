package api

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/iotfabric/iotfabric/internal/syncbuf"
	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	"github.com/iotfabric/iotfabric/pkg/store/storetest"
	"github.com/iotfabric/iotfabric/pkg/vpn"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// A gateway's agent reconnecting with nothing changed (Register, full report
// of its 2 endpoints, route stream) costs the store, through the API: one
// read of the gateway and of its block to register, reads only for the
// report, and one read and one transaction for the stream's marker. A
// registration that moves the gateway is still logged with the address it
// replaced.
func TestReconnectStoreOpsAPI(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cs := storetest.NewCounting(st)
	c := controller.New(cs, controller.Config{})
	r := vpn.NewRunner(st, nil, 64512, nil) // its watch is not counted
	rctx, rcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	t.Cleanup(func() { rcancel(); <-done })
	<-r.Ready()
	var logs syncbuf.Buffer
	a := newAgents(c, r, slog.New(slog.NewTextHandler(&logs, nil)), 0, 0)
	cl := v1.NewAgentServiceClient(serveGRPC(t, func(gs *grpc.Server) { v1.RegisterAgentServiceServer(gs, a) }))
	ctx := context.Background()
	if _, err := c.CreateNetwork(ctx, mkNet("n", "10.1.0.0/24").GetNetwork()); err != nil {
		t.Fatal(err)
	}
	reg := &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.1"}, Architecture: "arm64", AgentVersion: "1.0"}
	first, err := cl.Register(ctx, reg)
	if err != nil {
		t.Fatal(err)
	}
	eps := []*v1.AgentEndpoint{{Id: "pod-a", Network: "n", Label: 100}, {Id: "pod-b", Network: "n", Label: 101}}
	rep, err := cl.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: "gw", Endpoints: eps, FullSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, res := range rep.GetResults() {
		if res.GetError() != "" {
			t.Fatal(res.GetError())
		}
		eps[i].Addresses = res.GetEndpoint().GetAddresses()
	}

	check := func(step string, want storetest.Ops) {
		t.Helper()
		if got, trace := cs.Reset(); got != want {
			t.Errorf("%s cost %v, want %v:\n\t%s", step, got, want, strings.Join(trace, "\n\t"))
		}
	}
	cs.Reset()
	again, err := cl.Register(ctx, reg)
	if err != nil {
		t.Fatal(err)
	}
	check("register again", storetest.Ops{Gets: 2, Ranges: 1})
	if again.GetGateway().GetRevision() != first.GetGateway().GetRevision() || !again.GetGateway().GetLastSeen().AsTime().Equal(first.GetGateway().GetLastSeen().AsTime()) ||
		len(again.GetBlocks()) != 1 {
		t.Errorf("registered again: %v with %v, want %v unchanged and its block", again.GetGateway(), again.GetBlocks(), first.GetGateway())
	}
	rep, err = cl.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: "gw", Endpoints: eps, FullSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, res := range rep.GetResults() {
		if res.GetError() != "" {
			t.Fatal(res.GetError())
		}
	}
	check("full report of 2 unchanged endpoints", storetest.Ops{Gets: 2, Ranges: 2})
	sctx, scancel := context.WithCancel(ctx)
	s, err := cl.WatchGatewayRoutes(sctx, &v1.WatchGatewayRoutesRequest{Gateway: "gw"})
	if err != nil {
		t.Fatal(err)
	}
	recvRoutes(t, s)
	check("route stream open", storetest.Ops{Gets: 1, Txns: 1, Writes: 2})
	scancel()

	moved := &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.9"}, Architecture: "arm64", AgentVersion: "1.0"}
	if _, err := cl.Register(ctx, moved); err != nil {
		t.Fatal(err)
	}
	if l := logs.String(); !strings.Contains(l, `msg="gateway underlay changed" gateway=gw from=192.0.2.1 to=192.0.2.9`) {
		t.Errorf("no underlay change logged:\n%s", l)
	}
}
