package api

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	"github.com/iotfabric/iotfabric/pkg/vpn"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// TestConditions: a network over the route limit and an endpoint whose
// routes cannot be made carry conditions in Get and List.
func TestConditions(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := vpn.NewRunner(st, nil, 64512, nil)
	r.SetLimits(vpn.Limits{MaxNetworkRoutes: 1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-r.Ready()
	conn := serveGRPC(t, func(gs *grpc.Server) {
		Services{Controller: controller.New(st, controller.Config{}), Routes: r}.Register(gs)
	})
	nets, gws, eps := v1.NewNetworkServiceClient(conn), v1.NewGatewayServiceClient(conn), v1.NewEndpointServiceClient(conn)
	udp, gre := v1.Encapsulation_ENCAPSULATION_MPLS_O_UDP, v1.Encapsulation_ENCAPSULATION_MPLS_O_GRE
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(nets.CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "big", Subnets: []string{"10.1.0.0/24"}}}))
	must(nets.CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "gre", Subnets: []string{"10.2.0.0/24"}, Encapsulations: []v1.Encapsulation{gre}}}))
	must(gws.CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{Name: "g", UnderlayAddress: "192.0.2.1", Encapsulations: []v1.Encapsulation{udp}}}))
	for _, e := range []*v1.Endpoint{
		{Id: "a", Network: "big", Gateway: "g", Label: 20},
		{Id: "b", Network: "big", Gateway: "g", Label: 21},
		{Id: "c", Network: "gre", Gateway: "g", Label: 22},
	} {
		must(eps.CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: e}))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := nets.GetNetwork(ctx, &v1.NameRequest{Name: "big"})
		if err != nil {
			t.Fatal(err)
		}
		e, err := eps.GetEndpoint(ctx, &v1.GetEndpointRequest{Id: "c"})
		if err != nil {
			t.Fatal(err)
		}
		if len(n.Conditions) == 1 && len(e.Conditions) == 1 {
			if c := n.Conditions[0]; c.Type != vpn.ConditionRouteLimit || !strings.Contains(c.Message, "more than the limit of 1") {
				t.Fatalf("network condition %v", c)
			}
			if c := e.Conditions[0]; c.Type != ConditionNotAdvertised || !strings.HasPrefix(c.Message, "not advertised: ") {
				t.Fatalf("endpoint condition %v", c)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("conditions: network %v, endpoint %v", n.Conditions, e.Conditions)
		}
		time.Sleep(10 * time.Millisecond)
	}
	ln, err := nets.ListNetworks(ctx, &v1.ListNetworksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ln.Networks {
		if want := map[string]int{"big": 1, "gre": 0}[n.Name]; len(n.Conditions) != want {
			t.Errorf("listed network %s has %d conditions, want %d", n.Name, len(n.Conditions), want)
		}
	}
	le, err := eps.ListEndpoints(ctx, &v1.ListEndpointsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range le.Endpoints {
		if want := map[string]int{"c": 1}[e.Id]; len(e.Conditions) != want {
			t.Errorf("listed endpoint %s has %d conditions, want %d", e.Id, len(e.Conditions), want)
		}
	}
}
