package agent_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
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

// TestFullSyncInPages: a gateway with 2,050 endpoints resyncs after a
// controller restart in messages of at most 1,000 endpoints or ids; the
// endpoints created through the API on the gateway meanwhile (with ids
// before, between and after the agent's) are deleted, and none of the
// agent's is, whatever page it is in.
func TestFullSyncInPages(t *testing.T) {
	const n = 2050
	ctl := fabrictest.StartController(t)
	api := ctl.Dial()
	ctx := context.Background()
	createNetwork(t, api, "red", "10.32.0.0/16")

	var mu sync.Mutex
	largest, prunes := 0, 0
	ic := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if r, ok := req.(*v1.ReportEndpointsRequest); ok {
			mu.Lock()
			largest = max(largest, len(r.GetEndpoints()), len(r.GetPrune().GetKeep()))
			if r.GetPrune() != nil {
				prunes++
			}
			mu.Unlock()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	// The agent's state on tmpfs: 2,050 ADDs, each saving the whole state
	// with fsync, take a minute on a disk.
	stateDir := t.TempDir()
	if d, err := os.MkdirTemp("/dev/shm", "iotfabric-fullsync-"); err == nil {
		stateDir = d
		t.Cleanup(func() { os.RemoveAll(d) })
	}
	gw := fabrictest.StartGateway(t, "gw-a", netip.MustParseAddr("192.0.2.1"), []string{ctl.Addr}, false, func(o *agent.Options) {
		o.StateDir = filepath.Join(stateDir, "state")
		o.DialOptions = append(slices.Clip(o.DialOptions), grpc.WithUnaryInterceptor(ic))
	})
	gw.WaitLive(10*time.Second, 1)
	var want []string
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	start := time.Now()
	for i := range n {
		id := fmt.Sprintf("c%04d", i)
		want = append(want, id+":eth0")
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r := gw.Agent().Handle(ctx, &cni.Request{Op: cni.OpAdd, ContainerID: id, IfName: "eth0", Network: "red", Netns: "/proc/self/ns/net"})
			if r.Error != nil {
				t.Errorf("ADD %s: %v", id, r.Error)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d ADDs in %v", n, time.Since(start))
	ctl.Stop()
	// Endpoints on the gateway the agent does not host, in the first,
	// second and last pages' ranges.
	ctl.Start()
	api = ctl.Dial()
	for _, id := range []string{"a-api", "c0999-api", "c1500-api", "zz-api"} {
		if _, err := api.EP.CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: id, Network: "red", Gateway: "gw-a"}}); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	largest, prunes = 0, 0
	mu.Unlock()
	// Another restart: the session's full sync now has endpoints to delete.
	ctl.Stop()
	ctl.Start()
	restarted := time.Now()
	api = ctl.Dial()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var got []string
		req := &v1.ListEndpointsRequest{Gateway: "gw-a"}
		for {
			r, err := api.EP.ListEndpoints(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range r.GetEndpoints() {
				got = append(got, e.GetId())
			}
			if req.PageToken = r.GetNextPageToken(); req.PageToken == "" {
				break
			}
		}
		slices.Sort(got)
		mu.Lock()
		p := prunes
		mu.Unlock()
		if slices.Equal(got, want) && p >= 3 {
			t.Logf("resynced %v after the restart", time.Since(restarted))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the controller lists %d endpoints on the gateway (want the agent's %d), after %d prune pages", len(got), len(want), p)
		}
		time.Sleep(200 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if largest > agent.MaxReportEndpoints {
		t.Fatalf("a report carried %d endpoints or ids, the limit is %d", largest, agent.MaxReportEndpoints)
	}
}
