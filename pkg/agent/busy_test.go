package agent_test

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	"github.com/iotfabric/iotfabric/pkg/api"
	"github.com/iotfabric/iotfabric/pkg/model"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// TestBusyControllerKeepsRegistration: a controller that sheds load refuses
// the session's full report once and its route stream twice with
// RESOURCE_EXHAUSTED and a retry delay. The agent asks each again no sooner
// than the delay and no later than twice it, on the same connection, and
// registers once: a refusal costs the gateway one call, not a session.
func TestBusyControllerKeepsRegistration(t *testing.T) {
	const delay = 300 * time.Millisecond
	var (
		mu                sync.Mutex
		registers         int
		reports, watches  []time.Time // attempts
		refReport, refWat int
	)
	busy := func() error { return api.Status(model.Busy(delay, "busy")) }
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		mu.Lock()
		switch r := req.(type) {
		case *v1.RegisterRequest:
			registers++
		case *v1.ReportEndpointsRequest:
			if r.GetFullSync() {
				reports = append(reports, time.Now())
				if refReport < 1 {
					refReport++
					mu.Unlock()
					return nil, busy()
				}
			}
		}
		mu.Unlock()
		return h(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if info.FullMethod == v1.AgentService_WatchGatewayRoutes_FullMethodName {
			mu.Lock()
			watches = append(watches, time.Now())
			if refWat < 2 {
				refWat++
				mu.Unlock()
				return busy()
			}
			mu.Unlock()
		}
		return h(srv, ss)
	}
	ctl := fabrictest.StartController(t, grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream))
	gw := fabrictest.StartGateway(t, "gw-a", netip.MustParseAddr("192.0.2.1"), []string{ctl.Addr}, false)
	gw.WaitLive(30*time.Second, 1)
	mu.Lock()
	defer mu.Unlock()
	if registers != 1 {
		t.Fatalf("the agent registered %d times; a refused call should be asked again without a new Register", registers)
	}
	if len(reports) != 2 || len(watches) != 3 {
		t.Fatalf("%d full reports and %d route streams asked; want 2 and 3", len(reports), len(watches))
	}
	for _, gaps := range [][]time.Time{reports, watches} {
		for i := 1; i < len(gaps); i++ {
			if d := gaps[i].Sub(gaps[i-1]); d < delay || d > 2*delay+time.Second {
				t.Fatalf("asked again after %v; the controller asked for %v (up to twice that)", d, delay)
			}
		}
	}
}
