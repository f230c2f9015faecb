package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// BenchmarkREST (make bench-rest) measures the REST API against the gRPC
// API in the same run, on one controller (loopback, no TLS): a GetNetwork
// call, and the time from an endpoint's creation (through gRPC) until its
// event arrives on a watch, as server-sent events and as a gRPC stream
// (p50 and p99 reported as metrics).
func BenchmarkREST(b *testing.B) {
	rc := startRESTController(b, nil, func(c *Config) { c.API.HTTPAnonymous = "admin" })
	conn := rc.grpcConn(b)
	ctx := context.Background()
	nets, eps := v1.NewNetworkServiceClient(conn), v1.NewEndpointServiceClient(conn)
	if _, err := nets.CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "sensors", Subnets: []string{"10.0.0.0/16"}}}); err != nil {
		b.Fatal(err)
	}
	if _, err := v1.NewGatewayServiceClient(conn).CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.1"}}); err != nil {
		b.Fatal(err)
	}
	c := rc.client(b, tlsconfig.Files{})
	c.Timeout = 0

	b.Run("get/rest", func(b *testing.B) {
		for b.Loop() {
			resp, err := c.Get(rc.base + "/v1/networks/sensors")
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatal(resp.Status)
			}
		}
	})
	b.Run("get/grpc", func(b *testing.B) {
		for b.Loop() {
			if _, err := nets.GetNetwork(ctx, &v1.NameRequest{Name: "sensors"}); err != nil {
				b.Fatal(err)
			}
		}
	})

	n := 0 // endpoints created so far
	create := func(b *testing.B) time.Time {
		n++
		start := time.Now()
		if _, err := eps.CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: fmt.Sprintf("ep-%d", n), Network: "sensors", Gateway: "gw"}}); err != nil {
			b.Fatal(err)
		}
		return start
	}
	report := func(b *testing.B, lat []time.Duration) {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
	b.Run("watch/rest", func(b *testing.B) {
		resp, err := c.Get(rc.base + "/v1/endpoints:watch?from_revision=0")
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		s := sse{bufio.NewReader(resp.Body)}
		for {
			ev, err := s.next()
			if err != nil {
				b.Fatal(err)
			}
			if strings.Contains(ev, "EVENT_TYPE_SYNCED") {
				break
			}
		}
		var lat []time.Duration
		for b.Loop() {
			start := create(b)
			if _, err := s.next(); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		report(b, lat)
	})
	b.Run("watch/grpc", func(b *testing.B) {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		w, err := eps.WatchEndpoints(wctx, &v1.WatchRequest{})
		if err != nil {
			b.Fatal(err)
		}
		for {
			ev, err := w.Recv()
			if err != nil {
				b.Fatal(err)
			}
			if ev.GetType() == v1.EventType_EVENT_TYPE_SYNCED {
				break
			}
		}
		var lat []time.Duration
		for b.Loop() {
			start := create(b)
			if _, err := w.Recv(); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		report(b, lat)
	})
}
