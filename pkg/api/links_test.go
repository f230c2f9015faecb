package api

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// GetGatewayLinks: a gateway's tunnels are the remote next hops of the
// routes it receives (its networks' routes, its own left out), with the
// encapsulation both ends offer; its link history follows its route
// streams, newest first.
func TestGatewayLinks(t *testing.T) {
	e := startAgentEnv(t)
	ctx := context.Background()
	for _, n := range []string{"n", "other"} {
		if _, err := e.net.CreateNetwork(ctx, mkNet(n, map[string]string{"n": "10.1.0.0/24", "other": "10.2.0.0/24"}[n])); err != nil {
			t.Fatal(err)
		}
	}
	gre := []v1.Encapsulation{v1.Encapsulation_ENCAPSULATION_MPLS_O_GRE}
	for i, gw := range []*v1.Gateway{
		{Name: "gw-a"},
		{Name: "gw-b"},
		{Name: "gw-gre", Encapsulations: gre}, // offers only MPLSoGRE
		{Name: "gw-far"},                      // in another network only
	} {
		gw.UnderlayAddress = fmt.Sprintf("192.0.2.%d", i+1)
		if _, err := e.agent.Register(ctx, &v1.RegisterRequest{Gateway: gw}); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []struct {
		gw, id, net string
		label       uint32
	}{{"gw-a", "a1", "n", 100}, {"gw-b", "b1", "n", 200}, {"gw-b", "b2", "n", 201}, {"gw-gre", "g1", "n", 300}, {"gw-far", "f1", "other", 400}} {
		rep, err := e.agent.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: r.gw, Endpoints: []*v1.AgentEndpoint{{Id: r.id, Network: r.net, Label: r.label}}})
		if err != nil || rep.Results[0].Error != "" {
			t.Fatalf("report %s: %v %v", r.id, rep, err)
		}
	}
	sctx, cancel := context.WithCancel(ctx)
	s, err := e.agent.WatchGatewayRoutes(sctx, &v1.WatchGatewayRoutesRequest{Gateway: "gw-a"})
	if err != nil {
		t.Fatal(err)
	}
	recvRoutes(t, s)
	var links *v1.GatewayLinks
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if links, err = e.links.GetGatewayLinks(ctx, &v1.GetGatewayLinksRequest{Name: "gw-a"}); err != nil {
			t.Fatal(err)
		}
		if len(links.Tunnels) == 2 || time.Now().After(deadline) {
			break
		}
	}
	got := ""
	for _, tn := range links.Tunnels {
		got += fmt.Sprintf("%s %s %v %v routes %d labels %d %v; ", tn.Remote, tn.RemoteGateway, tn.Encapsulation, tn.Offered, tn.Routes, tn.Labels, tn.Networks)
	}
	want := "192.0.2.2 gw-b ENCAPSULATION_MPLS_O_UDP [ENCAPSULATION_MPLS_O_UDP ENCAPSULATION_MPLS_O_GRE] routes 2 labels 2 [n]; " +
		"192.0.2.3 gw-gre ENCAPSULATION_MPLS_O_GRE [ENCAPSULATION_MPLS_O_GRE] routes 1 labels 1 [n]; "
	if got != want {
		t.Errorf("gw-a's tunnels:\n%s\nwant\n%s", got, want)
	}
	if links.Controller == "" || links.Gateway != "gw-a" {
		t.Errorf("links of %q answered by %q", links.Gateway, links.Controller)
	}

	cancel() // the agent ends its stream
	waitGatewayState(t, e.gw, "gw-a", v1.GatewayState_GATEWAY_STATE_DOWN)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		// The history is written right after the gateway's record.
		if links, err = e.links.GetGatewayLinks(ctx, &v1.GetGatewayLinksRequest{Name: "gw-a"}); err != nil {
			t.Fatal(err)
		}
		if links.HistoryTotal >= 3 || time.Now().After(deadline) {
			break
		}
	}
	var hist []string
	for _, ev := range links.History {
		hist = append(hist, ev.State.String()+" "+ev.Reason.String())
	}
	wantHist := "[GATEWAY_STATE_DOWN GATEWAY_LINK_REASON_STREAM_ENDED GATEWAY_STATE_UP GATEWAY_LINK_REASON_STREAM_OPENED GATEWAY_STATE_UP GATEWAY_LINK_REASON_REGISTERED]"
	if fmt.Sprint(hist) != wantHist || links.HistoryTotal != 3 || links.History[0].Detail == "" {
		t.Errorf("gw-a's link history %v (total %d, detail %q), want %s", hist, links.HistoryTotal, links.History[0].GetDetail(), wantHist)
	}

	_, err = e.links.GetGatewayLinks(ctx, &v1.GetGatewayLinksRequest{Name: "nope"})
	wantCode(t, err, codes.NotFound, "nope")
}
