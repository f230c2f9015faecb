package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// TestBGPEndToEnd drives the controller only through its API: a peer added
// with PeerService (MD5), a network, a gateway and an endpoint; the endpoint's
// route appears at a real FRR with the right RD, label, next hop, route
// targets and encapsulation, and disappears when the endpoint is deleted. A
// route that a real gobgpd originates with the network's import route target
// shows up in RouteService.
func TestBGPEndToEnd(t *testing.T) {
	bgptest.RequireRoot(t)
	self := bgptest.Self(t)
	frrNS, gobgpNS := bgptest.NewNetns(t), bgptest.NewNetns(t)
	local := netip.MustParsePrefix("10.98.1.1/24")
	frrAddr := netip.MustParsePrefix("10.98.1.2/24")
	local2 := netip.MustParsePrefix("10.98.2.1/24")
	gobgpAddr := netip.MustParsePrefix("10.98.2.2/24")
	bgptest.Connect(t, self, frrNS, local, frrAddr)
	bgptest.Connect(t, self, gobgpNS, local2, gobgpAddr)
	const asn = 64512
	frr := bgptest.StartFRR(t, frrNS, bgptest.FRRConfig{ASN: asn, RouterID: frrAddr.Addr(),
		Neighbors: []bgptest.FRRNeighbor{{Address: local.Addr(), ASN: asn, Password: "pisek"}}})
	gobgpd := bgptest.StartGoBGPD(t, gobgpNS, bgptest.GoBGPDConfig{ASN: asn, RouterID: gobgpAddr.Addr(),
		Neighbors: []bgptest.GoBGPDNeighbor{{Address: local2.Addr(), ASN: asn}}})

	cfg := defaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.API.Listen = "127.0.0.1:0"
	cfg.Metrics.Listen = ""
	cfg.BGP.RouterID = local.Addr().String()
	cfg.BGP.ListenPort = -1
	cfg.BGP.Peers = []PeerConfig{{Address: gobgpAddr.Addr().String(), ASN: asn}}
	ctx := context.Background()
	conn := serveInProcess(t, cfg)
	peers := v1.NewPeerServiceClient(conn)
	routes := v1.NewRouteServiceClient(conn)
	if _, err := peers.AddPeer(ctx, &v1.AddPeerRequest{Peer: &v1.Peer{Address: frrAddr.Addr().String(), Asn: asn, Password: "pisek"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := v1.NewNetworkServiceClient(conn).CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{
		Name: "sensors", Subnets: []string{"10.1.0.0/24"}, ExportRouteTargets: []string{"target:64512:100"}, ImportRouteTargets: []string{"target:64512:200"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := v1.NewGatewayServiceClient(conn).CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{Name: "gw1", UnderlayAddress: "192.0.2.10",
		Encapsulations: []v1.Encapsulation{v1.Encapsulation_ENCAPSULATION_MPLS_O_UDP}}}); err != nil {
		t.Fatal(err)
	}
	eps := v1.NewEndpointServiceClient(conn)
	if _, err := eps.CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: "pod-a", Network: "sensors", Gateway: "gw1", Label: 1001}}); err != nil {
		t.Fatal(err)
	}

	var path bgptest.FRRPath
	err := bgptest.Eventually(ctx, 30*time.Second, 100*time.Millisecond, func(ctx context.Context) error {
		tbl, err := frr.VPNTable(ctx, "ipv4")
		if err != nil {
			return err
		}
		ps := tbl["192.0.2.10:1 10.1.0.1/32"]
		if len(ps) == 0 {
			return fmt.Errorf("10.1.0.1/32 with RD 192.0.2.10:1 not in FRR's table: %v", tbl)
		}
		path = ps[0]
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if path.Label != 1001 || path.NextHop.String() != "192.0.2.10" {
		t.Errorf("FRR path: label %d next hop %s, want 1001 and 192.0.2.10", path.Label, path.NextHop)
	}
	for _, want := range []string{"RT:64512:100", "RT:64512:8000001", "ET:13"} {
		if !strings.Contains(path.ExtCommunity, want) {
			t.Errorf("FRR path communities %q lack %s", path.ExtCommunity, want)
		}
	}

	// A route originated by gobgpd with the imported route target.
	if err := gobgpd.AddVPNRoute(ctx, "192.0.2.99:7", netip.MustParsePrefix("10.200.0.0/24"), 2000, netip.MustParseAddr("192.0.2.99"), []string{"64512:200"}, ""); err != nil {
		t.Fatal(err)
	}
	err = bgptest.Eventually(ctx, 30*time.Second, 100*time.Millisecond, func(ctx context.Context) error {
		r, err := routes.ListRoutes(ctx, &v1.ListRoutesRequest{Network: "sensors"})
		if err != nil {
			return err
		}
		var got []string
		for _, rt := range r.Routes {
			got = append(got, fmt.Sprintf("%s %s %s %d %s", rt.Origin, rt.Prefix, rt.RouteDistinguisher, rt.Label, rt.NextHop))
		}
		want := []string{"ROUTE_ORIGIN_LOCAL 10.1.0.1/32 192.0.2.10:1 1001 192.0.2.10", "ROUTE_ORIGIN_IMPORTED 10.200.0.0/24 192.0.2.99:7 2000 192.0.2.99"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("routes of sensors: %v, want %v", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := peers.ListPeers(ctx, &v1.ListPeersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, p := range ps.Peers {
		states[p.Peer.Address+"/"+p.Source] = p.State
	}
	if states["10.98.1.2/api"] != "established" || states["10.98.2.2/config"] != "established" {
		t.Errorf("peers: %v", states)
	}

	if _, err := eps.DeleteEndpoint(ctx, &v1.GetEndpointRequest{Id: "pod-a"}); err != nil {
		t.Fatal(err)
	}
	err = bgptest.Eventually(ctx, 30*time.Second, 100*time.Millisecond, func(ctx context.Context) error {
		n, err := frr.Prefixes(ctx, "ipv4 vpn", local.Addr())
		if err != nil {
			return err
		}
		if n != 0 {
			return fmt.Errorf("FRR still holds %d prefixes", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// serveInProcess runs the controller with cfg in this process until the test
// ends (then checks it stopped cleanly) and returns a connection to its API.
func serveInProcess(t *testing.T, cfg Config) *grpc.ClientConn {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), func(a, _ string) { ready <- a })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	var api string
	select {
	case api = <-ready:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	}
	conn, err := grpc.NewClient(api, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
