package api

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/vpn"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

type pageEnv struct {
	net v1.NetworkServiceClient
	gw  v1.GatewayServiceClient
	ep  v1.EndpointServiceClient
	rt  v1.RouteServiceClient
	r   *vpn.Runner
	c   *controller.Controller
}

func servePaged(t *testing.T) pageEnv {
	c, r := startRunner(t)
	conn := serveGRPC(t, func(gs *grpc.Server) { Services{Controller: c, Routes: r}.Register(gs) })
	return pageEnv{v1.NewNetworkServiceClient(conn), v1.NewGatewayServiceClient(conn), v1.NewEndpointServiceClient(conn), v1.NewRouteServiceClient(conn), r, c}
}

// Every List RPC pages: each record once, pages no larger than asked, a
// default and a maximum page size, and tokens that are checked.
func TestListPagination(t *testing.T) {
	e := servePaged(t)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := e.net.CreateNetwork(ctx, mkNet(fmt.Sprint("n", i), fmt.Sprintf("10.%d.0.0/16", i), fmt.Sprintf("fd00:%d::/64", i))); err != nil {
			t.Fatal(err)
		}
		if _, err := e.gw.CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{Name: fmt.Sprint("g", i), UnderlayAddress: fmt.Sprintf("192.0.2.%d", i+1)}}); err != nil {
			t.Fatal(err)
		}
	}
	const n = DefaultPageSize + 100 // more than a default page
	var reqs []*v1.Endpoint
	for i := 0; i < n; i++ {
		reqs = append(reqs, &v1.Endpoint{Id: fmt.Sprintf("e%04d", i), Network: "n0", Gateway: "g0", Label: uint32(16 + i)})
	}
	createAll(t, e.ep, reqs)
	// Default page size.
	first, err := e.ep.ListEndpoints(ctx, &v1.ListEndpointsRequest{})
	if err != nil || len(first.Endpoints) != DefaultPageSize || first.NextPageToken == "" {
		t.Fatalf("first default page: %d endpoints, token %q, %v", len(first.GetEndpoints()), first.GetNextPageToken(), err)
	}
	// Pages of 7, through every filter.
	for _, f := range []*v1.ListEndpointsRequest{{}, {Network: "n0"}, {Gateway: "g0"}, {Network: "n0", Gateway: "g0"}} {
		seen := map[string]bool{}
		req := &v1.ListEndpointsRequest{Network: f.Network, Gateway: f.Gateway, PageSize: 97}
		for {
			p, err := e.ep.ListEndpoints(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Endpoints) > 97 {
				t.Fatalf("page of %d", len(p.Endpoints))
			}
			for _, x := range p.Endpoints {
				if seen[x.Id] {
					t.Fatalf("%v: %s listed twice", f, x.Id)
				}
				seen[x.Id] = true
			}
			if p.NextPageToken == "" {
				break
			}
			req.PageToken = p.NextPageToken
		}
		if len(seen) != n {
			t.Fatalf("%v: %d endpoints listed, want %d", f, len(seen), n)
		}
	}
	// A token with other filters, altered, or not base64 is refused; a
	// negative size too; a size above the maximum is lowered to it.
	tok := first.NextPageToken
	raw, _ := base64.RawURLEncoding.DecodeString(tok)
	raw[2] ^= 1
	for _, bad := range []*v1.ListEndpointsRequest{
		{PageToken: tok, Network: "n0"},
		{PageToken: base64.RawURLEncoding.EncodeToString(raw)},
		{PageToken: tok[:len(tok)-2]},
		{PageToken: "!!!"},
		{PageSize: -1},
	} {
		_, err := e.ep.ListEndpoints(ctx, bad)
		wantCode(t, err, codes.InvalidArgument, "page")
	}
	big, err := e.ep.ListEndpoints(ctx, &v1.ListEndpointsRequest{PageSize: 1 << 30})
	if err != nil || len(big.Endpoints) != n || big.NextPageToken != "" {
		t.Fatalf("page_size 2^30: %d endpoints, token %q, %v", len(big.GetEndpoints()), big.GetNextPageToken(), err)
	}
	// Networks and gateways.
	var names []string
	req := &v1.ListNetworksRequest{PageSize: 2}
	for {
		p, err := e.net.ListNetworks(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range p.Networks {
			names = append(names, x.Name)
		}
		if req.PageToken = p.NextPageToken; req.PageToken == "" {
			break
		}
	}
	if fmt.Sprint(names) != "[n0 n1 n2]" {
		t.Fatalf("networks paged: %v", names)
	}
	gp, err := e.gw.ListGateways(ctx, &v1.ListGatewaysRequest{PageSize: 2})
	if err != nil || len(gp.Gateways) != 2 || gp.NextPageToken == "" {
		t.Fatalf("gateways page: %v %v", gp, err)
	}
	_, err = e.gw.ListGateways(ctx, &v1.ListGatewaysRequest{PageToken: first.NextPageToken})
	wantCode(t, err, codes.InvalidArgument, "page")

	// Routes: every labelled endpoint's two routes (IPv4 and IPv6), in order.
	deadline := time.Now().Add(20 * time.Second)
	for e.r.Stats().Announced < 2*n {
		if time.Now().After(deadline) {
			t.Fatalf("%d routes announced, want %d", e.r.Stats().Announced, 2*n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var got []*v1.Route
	rreq := &v1.ListRoutesRequest{Network: "n0", PageSize: 333}
	for {
		p, err := e.rt.ListRoutes(ctx, rreq)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Routes) > 333 {
			t.Fatalf("route page of %d", len(p.Routes))
		}
		got = append(got, p.Routes...)
		if rreq.PageToken = p.NextPageToken; rreq.PageToken == "" {
			break
		}
	}
	if len(got) != 2*n {
		t.Fatalf("%d routes listed, want %d", len(got), 2*n)
	}
	seen := map[string]bool{}
	for _, rt := range got {
		k := rt.Prefix + " " + rt.RouteDistinguisher
		if seen[k] {
			t.Fatalf("route %s listed twice", k)
		}
		seen[k] = true
	}
	_, err = e.rt.ListRoutes(ctx, &v1.ListRoutesRequest{Network: "n1", PageToken: rreq.PageToken + first.NextPageToken})
	wantCode(t, err, codes.InvalidArgument, "page")
	if p, err := e.rt.ListRoutes(ctx, &v1.ListRoutesRequest{Network: "n1"}); err != nil || len(p.Routes) != 0 || p.NextPageToken != "" {
		t.Fatalf("empty network's routes: %v %v", p, err)
	}
}

// createAll creates the endpoints in bulk, again those refused as Aborted
// (concurrent change), until all are created.
func createAll(t testing.TB, c v1.EndpointServiceClient, reqs []*v1.Endpoint) {
	for try := 0; len(reqs) > 0; try++ {
		r, err := c.CreateEndpoints(context.Background(), &v1.CreateEndpointsRequest{Endpoints: reqs})
		if err != nil {
			t.Fatal(err)
		}
		var again []*v1.Endpoint
		for i, msg := range r.Errors {
			switch {
			case msg == "":
			case strings.Contains(msg, "Aborted") && try < 10:
				again = append(again, reqs[i])
			default:
				t.Fatalf("endpoint %s: %s", reqs[i].Id, msg)
			}
		}
		reqs = again
	}
}
