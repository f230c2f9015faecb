package api

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/vpn"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// sink is a route stream that keeps what is sent.
type sink struct {
	grpc.ServerStream
	msgs []*v1.GatewayRoutes
}

func (s *sink) Send(m *v1.GatewayRoutes) error {
	s.msgs = append(s.msgs, proto.Clone(m).(*v1.GatewayRoutes))
	return nil
}

// TestChunks: an update of 20,000 routes to an agent that takes 64 KiB
// messages goes as messages of at most 64 KiB, all of its kind and
// revision, all but the last with more set, together the whole update; an
// agent that takes no chunks gets one message.
func TestChunks(t *testing.T) {
	u := vpn.GatewayUpdate{Snapshot: true, Revision: 7, Keep: []vpn.Scope{{Network: "a", BucketCount: 4, Buckets: []int{1, 3}}}}
	for i := range 20000 {
		u.Put = append(u.Put, &v1.Route{Network: "n", Prefix: fmt.Sprintf("10.%d.%d.%d/32", i>>16, byte(i>>8), byte(i)), RouteDistinguisher: "192.0.2.1:1",
			Label: uint32(16 + i), NextHop: "192.0.2.1", RouteTargets: []string{"target:64512:1"}, Endpoint: fmt.Sprint("ep-", i)})
	}
	for i := range 100 {
		u.Delete = append(u.Delete, &v1.Route{Network: "n", Prefix: fmt.Sprintf("10.200.0.%d/32", i), RouteDistinguisher: "192.0.2.1:1"})
	}
	s := &sink{}
	const limit = 64 << 10
	if err := sendChunks(s, u, "ctl", limit, true); err != nil {
		t.Fatal(err)
	}
	puts, dels, keeps := 0, 0, 0
	for i, m := range s.msgs {
		if sz := proto.Size(m); sz > limit {
			t.Fatalf("message %d is %d bytes, over %d", i, sz, limit)
		}
		if m.Kind != v1.GatewayRoutes_KIND_SNAPSHOT || m.Revision != 7 || m.ControllerId != "ctl" || m.More != (i < len(s.msgs)-1) {
			t.Fatalf("message %d of %d: kind %v revision %d more %v", i, len(s.msgs), m.Kind, m.Revision, m.More)
		}
		puts, dels, keeps = puts+len(m.Put), dels+len(m.Delete), keeps+len(m.Keep)
	}
	if puts != len(u.Put) || dels != len(u.Delete) || keeps != 1 || len(s.msgs) < 2 {
		t.Fatalf("%d messages carried %d puts, %d deletes, %d scopes", len(s.msgs), puts, dels, keeps)
	}
	whole := &sink{}
	if err := sendChunks(whole, u, "ctl", limit, false); err != nil || len(whole.msgs) != 1 || len(whole.msgs[0].Put) != len(u.Put) {
		t.Fatalf("unchunked: %d messages, %v", len(whole.msgs), err)
	}
}

func retryInfo(err error) (time.Duration, bool) {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}

// TestFullSyncAdmission: with every full-sync slot taken (and no queueing),
// a full report of more endpoints than the small number and a route stream
// whose first update carries more routes than that are refused at once with
// RESOURCE_EXHAUSTED and a retry delay; a stream resumable from the log, a
// small full report and an incremental report are not; once a slot is free,
// the large full report passes.
func TestFullSyncAdmission(t *testing.T) {
	c, r := startRunner(t)
	ctx := context.Background()
	a := newAgents(c, r, nil, 1, 1)
	a.full.wait = 0
	conn := serveGRPC(t, func(gs *grpc.Server) {
		v1.RegisterAgentServiceServer(gs, a)
		v1.RegisterNetworkServiceServer(gs, &resources{c: c, r: r})
	})
	cl := v1.NewAgentServiceClient(conn)
	if _, err := v1.NewNetworkServiceClient(conn).CreateNetwork(ctx, mkNet("n", "10.1.0.0/24")); err != nil {
		t.Fatal(err)
	}
	for i, gw := range []string{"gw", "gw2"} {
		if _, err := cl.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: gw, UnderlayAddress: fmt.Sprintf("192.0.2.%d", i+1)}}); err != nil {
			t.Fatal(err)
		}
	}
	// gw2's two endpoints: two routes in gw's first update.
	pods := []*v1.AgentEndpoint{{Id: "pod-1", Network: "n", Label: 100}, {Id: "pod-2", Network: "n", Label: 101}}
	if _, err := cl.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: "gw2", Endpoints: []*v1.AgentEndpoint{{Id: "pod-3", Network: "n", Label: 102}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: "gw", Endpoints: pods}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: "gw2", Endpoints: []*v1.AgentEndpoint{{Id: "pod-4", Network: "n", Label: 103}}}); err != nil {
		t.Fatal(err)
	}
	// A resume point of this runner, taken while a slot is free, once gw
	// has both routes.
	s, err := cl.WatchGatewayRoutes(ctx, &v1.WatchGatewayRoutesRequest{Gateway: "gw", MaxMessageBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	updates := make(chan *v1.GatewayRoutes, 16)
	go func() {
		defer close(updates)
		for {
			u, err := s.Recv()
			if err != nil {
				return
			}
			updates <- u
		}
	}()
	// The stream carries every route of n, gw's own two too: four.
	last, held := &v1.GatewayRoutes{}, 0
	for held < 4 {
		u, ok := <-updates
		if !ok {
			t.Fatal("gw's route stream ended")
		}
		last, held = u, held+len(u.Put)
	}

	// Take the only slot (the first stream's snapshot may still hold it for
	// a moment after the client has it).
	var release func()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if release, err = a.full.acquire(ctx); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	_, err = cl.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: "gw", FullSync: true, Endpoints: pods})
	if d, ok := retryInfo(err); status.Code(err) != codes.ResourceExhausted || !ok || d < fullSyncRetry || d > maxFullSyncRetry {
		t.Fatalf("large full report with no slot: %v (retry %v %v)", err, d, ok)
	}
	if _, err := cl.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw3", UnderlayAddress: "192.0.2.3"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: "gw3", FullSync: true, Endpoints: []*v1.AgentEndpoint{{Id: "pod-5", Network: "n", Label: 104}}}); err != nil {
		t.Fatalf("small full report with no slot: %v", err)
	}
	if _, err := cl.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: "gw", Endpoints: pods}); err != nil {
		t.Fatalf("incremental report with no slot: %v", err)
	}
	// The resume point: gw's stream has pod-5's route (gw3's) too, and then
	// nothing for a moment. (Taken after four puts only, before pod-5, it
	// could precede some of the first four when they came in more than one
	// update, and the resume then missed more than one route.)
	for held < 5 {
		u, ok := <-updates
		if !ok {
			t.Fatal("gw's route stream ended")
		}
		last, held = u, held+len(u.Put)
	}
	for quiet := false; !quiet; {
		select {
		case u, ok := <-updates:
			if !ok {
				t.Fatal("gw's route stream ended")
			}
			last = u
		case <-time.After(300 * time.Millisecond):
			quiet = true
		}
	}
	s2, err := cl.WatchGatewayRoutes(ctx, &v1.WatchGatewayRoutesRequest{Gateway: "gw", MaxMessageBytes: 1 << 20})
	if err == nil {
		_, err = s2.Recv()
	}
	if _, ok := retryInfo(err); status.Code(err) != codes.ResourceExhausted || !ok {
		t.Fatalf("snapshot stream of 2 routes with no slot: %v", err)
	}
	s3, err := cl.WatchGatewayRoutes(ctx, &v1.WatchGatewayRoutesRequest{Gateway: "gw", MaxMessageBytes: 1 << 20,
		FromRevision: last.Revision, ControllerId: last.ControllerId})
	if err == nil {
		_, err = s3.Recv()
	}
	if err != nil {
		t.Fatalf("resumable stream with no slot: %v", err)
	}
	release()
	if _, err := cl.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: "gw", FullSync: true, Endpoints: pods}); err != nil {
		t.Fatalf("large full report with a free slot: %v", err)
	}
}

// TestRegisterAdmission: with every registration slot taken, a Register is
// refused with RESOURCE_EXHAUSTED and a retry delay, at once when nothing
// may wait, and within half its deadline when the queue could wait longer
// than that (not DeadlineExceeded after doing nothing); with a free slot it
// passes.
func TestRegisterAdmission(t *testing.T) {
	c, r := startRunner(t)
	ctx := context.Background()
	a := newAgents(c, r, nil, 1, 1)
	a.reg = newAdmission(1, "gateway registrations")
	conn := serveGRPC(t, func(gs *grpc.Server) { v1.RegisterAgentServiceServer(gs, a) })
	cl := v1.NewAgentServiceClient(conn)
	reg := func(ctx context.Context, name string) error {
		_, err := cl.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: name, UnderlayAddress: "192.0.2.1"}})
		return err
	}
	if err := reg(ctx, "gw"); err != nil {
		t.Fatal(err)
	}
	release, err := a.reg.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a.reg.wait = 0
	err = reg(ctx, "gw")
	if d, ok := retryInfo(err); status.Code(err) != codes.ResourceExhausted || !ok || d < fullSyncRetry || !strings.Contains(err.Error(), "registrations") {
		t.Fatalf("register with no slot: %v (retry %v %v)", err, d, ok)
	}
	a.reg.wait = admissionWait
	dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
	defer dcancel()
	start := time.Now()
	err = reg(dctx, "gw")
	if took := time.Since(start); status.Code(err) != codes.ResourceExhausted || took > 1500*time.Millisecond {
		t.Fatalf("register with no slot and a 2 s deadline: %v after %s, want RESOURCE_EXHAUSTED within about 1 s", err, took)
	}
	release()
	if err := reg(ctx, "gw"); err != nil {
		t.Fatalf("register with a free slot: %v", err)
	}
	if got := a.reg.refused.Load(); got != 2 {
		t.Errorf("%d registrations refused, want 2", got)
	}
}
