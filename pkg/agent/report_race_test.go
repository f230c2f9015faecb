package agent_test

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	"github.com/iotfabric/iotfabric/pkg/agent"
	"github.com/iotfabric/iotfabric/pkg/cni"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// TestRefusedRecordRacesFullSync replays, in a fixed order, the race behind
// "endpoint p1:eth0 has addresses [A] at the controller, the gateway reports
// [B]": an ADD's record is refused (its address is taken by an endpoint
// created through the API), and before the agent acts on the refusal a full
// sync of the session's reporter (kicked by a DEL) lists the ADD in flight
// with the same address, deletes the API endpoint and records it. The agent
// must not then give the pod other addresses than those the controller
// recorded: the ADD succeeds, and the controller and the gateway agree.
func TestRefusedRecordRacesFullSync(t *testing.T) {
	ctl := fabrictest.StartController(t)
	api := ctl.Dial()
	ctx := context.Background()
	createNetwork(t, api, "red", "10.9.0.0/24")

	// armedP1 is set once p0 and api-0 exist. The interceptor plays the race in phases: 1, the next record of p1 is
	// answered, then a DEL kicks a full sync, which is let through and
	// waited for (at most 2 s) before the agent reads the answer; 2, the
	// next full sync waits (at most 2 s) until p1 is recorded again.
	var (
		mu         sync.Mutex
		phase      int
		fullDone   = make(chan struct{}) // closed when the full sync of phase 1 is answered
		reRecorded = make(chan struct{}) // closed when p1 is recorded in phase 2
		gwAgent    func() *agent.Agent
		armedP1    bool
	)
	ic := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		r, ok := req.(*v1.ReportEndpointsRequest)
		if !ok {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		isRecord := !r.GetFullSync() && len(r.GetEndpoints()) == 1 && r.GetEndpoints()[0].GetId() == "p1:eth0"
		mu.Lock()
		ph := phase
		mu.Unlock()
		if ph == 2 && r.GetFullSync() {
			select {
			case <-reRecorded:
			case <-time.After(2 * time.Second): // the record waits for this full sync
			}
		}
		err := invoker(ctx, method, req, reply, cc, opts...)
		switch {
		case ph == 0 && isRecord:
			mu.Lock()
			armed := phase == 0 && armedP1
			if armed {
				phase = 1
			}
			mu.Unlock()
			if !armed {
				break
			}
			if _, _, err := gwAgent().Core().Del(context.Background(), "p0:eth0"); err != nil {
				t.Error(err)
			}
			select {
			case <-fullDone:
			case <-time.After(2 * time.Second): // the full sync waits for this record
			}
		case ph == 1 && r.GetFullSync():
			mu.Lock()
			phase = 2
			mu.Unlock()
			close(fullDone)
		case ph == 2 && isRecord:
			mu.Lock()
			if phase == 2 {
				phase = 3
				close(reRecorded)
			}
			mu.Unlock()
		}
		return err
	}
	gw := fabrictest.StartGateway(t, "gw-a", netip.MustParseAddr("192.0.2.1"), []string{ctl.Addr}, false, func(o *agent.Options) {
		o.DialOptions = append(slices.Clip(o.DialOptions), grpc.WithUnaryInterceptor(ic))
	})
	gwAgent = gw.Agent
	gw.WaitLive(10*time.Second, 1)

	add := func(id string) *cni.Response {
		t.Helper()
		r := gw.Agent().Handle(ctx, &cni.Request{Op: cni.OpAdd, ContainerID: id, IfName: "eth0", Network: "red", Netns: "/proc/self/ns/net"})
		if r.Error != nil {
			t.Fatalf("ADD %s: %v", id, r.Error)
		}
		return r
	}
	add("p0")
	// An endpoint created through the API takes the next address of the
	// gateway's block, which the agent does not know.
	if _, err := api.EP.CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: "api-0", Network: "red", Gateway: "gw-a"}}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	armedP1 = true
	mu.Unlock()
	r := add("p1")
	mu.Lock()
	if phase == 0 {
		t.Fatal("the record of p1 was not seen")
	}
	mu.Unlock()

	// The controller and the gateway agree on p1, whichever report wins.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ep, err := api.EP.GetEndpoint(ctx, &v1.GetEndpointRequest{Id: "p1:eth0"})
		var got []string
		if err == nil {
			got = ep.GetAddresses()
		}
		want := []string{r.Endpoint.Addresses[0].String()}
		if slices.Equal(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("p1:eth0 has addresses %v at the controller (%v), the ADD gave %v", got, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	local, err := gw.Agent().Core().Endpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(local) != 1 || local[0].ID != "p1:eth0" || local[0].Addresses[0] != r.Endpoint.Addresses[0] {
		t.Fatalf("the gateway holds %v, want only p1:eth0 with %v", local, r.Endpoint.Addresses)
	}
}
