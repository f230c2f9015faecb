package agent_test

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	"github.com/iotfabric/iotfabric/pkg/agent"
	"github.com/iotfabric/iotfabric/pkg/cni"
	"github.com/iotfabric/iotfabric/pkg/overlay"
)

// TestRunLeavesNoGoroutine: an agent with a controller session, a CNI
// server and a data-plane loop stops every goroutine it started.
func TestRunLeavesNoGoroutine(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	// Registered first, so it runs after every other cleanup (controller,
	// its clients).
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	ctl := fabrictest.StartController(t)
	createNetwork(t, ctl.Dial(), "red", "10.7.0.0/16")
	dir := t.TempDir()
	live := make(chan struct{}, 1)
	a, err := agent.New(agent.Options{
		Config:      agent.Config{Gateway: "gw-l", Underlay: netip.MustParseAddr("192.0.2.5"), StateDir: filepath.Join(dir, "state")},
		Controllers: []string{ctl.Addr, fabrictest.DeadAddr(t)}, DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		Applier: nopApplier{}, CNISocket: filepath.Join(dir, "cni.sock"),
		OnSession: func(_ string, up bool) {
			if up {
				select {
				case live <- struct{}{}:
				default:
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cancel()
			<-done
		}
	})
	<-a.Ready()
	<-live
	cl := &cni.Client{Path: filepath.Join(dir, "cni.sock")}
	if _, err := cl.Do(ctx, &cni.Request{Op: cni.OpAdd, ContainerID: "c", IfName: "eth0", Network: "red"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Do(ctx, &cni.Request{Op: cni.OpAttach, ContainerID: "c", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	cancel()
	stopped = true
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

type nopApplier struct{}

func (nopApplier) Set(context.Context, overlay.State) error { return nil }
