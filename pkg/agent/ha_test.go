package agent_test

import (
	"context"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/etcd"
	"github.com/iotfabric/iotfabric/pkg/store/etcd/etcdtest"
)

// TestTwoControllersShareEtcd: two controllers on one etcd both serve the
// agents; with either of them stopped, a new pod on gateway A still reaches
// gateway B's desired state through the other.
func TestTwoControllersShareEtcd(t *testing.T) {
	netnstest.RequireRoot(t)
	srv := startEtcdPinned(t)
	open := func() (store.Store, error) {
		return etcd.Open(context.Background(), etcd.Options{Endpoints: []string{srv.Endpoint}, Namespace: "/ha/"})
	}
	c1, c2 := fabrictest.StartControllerStore(t, open), fabrictest.StartControllerStore(t, open)
	createNetwork(t, c1.Dial(), "red", "10.5.0.0/16")
	ctx := context.Background()
	uA, uB := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	gwA := fabrictest.StartGateway(t, "gw-a", uA, []string{c1.Addr, c2.Addr}, true)
	gwB := fabrictest.StartGateway(t, "gw-b", uB, []string{c1.Addr, c2.Addr}, true)
	c := fabrictest.NewCNI(t, pluginDir)
	gwA.WaitLive(20*time.Second, 2)
	gwB.WaitLive(20*time.Second, 2)
	if _, err := c.Add(ctx, gwB, "red", "b1", netnstest.New(t, "iofpod")); err != nil {
		t.Fatal(err)
	}
	for i, stop := range []*fabrictest.Controller{c1, c2} {
		stop.Stop()
		gwA.WaitLive(10*time.Second, 1)
		gwB.WaitLive(10*time.Second, 1)
		r, err := c.Add(ctx, gwA, "red", []string{"a1", "a2"}[i], netnstest.New(t, "iofpod"))
		if err != nil {
			t.Fatalf("ADD with one controller stopped: %v", err)
		}
		a, _ := netip.AddrFromSlice(r.IPs[0].Address.IP.To4())
		gwB.WaitState(10*time.Second, "route of "+a.String()+" through the controller still up", func(s overlay.State) bool {
			return fabrictest.HasRoute(s, "red", netip.PrefixFrom(a, 32), uA, 0)
		})
		stop.Start()
		gwA.WaitLive(10*time.Second, 2)
		gwB.WaitLive(10*time.Second, 2)
	}
}

// startEtcdPinned starts etcd from an OS thread that stays alive for the
// whole test: etcdtest sets Pdeathsig, which fires when the forking thread
// exits, and the namespace helpers retire the threads they lock.
func startEtcdPinned(t *testing.T) *etcdtest.Server {
	ch := make(chan *etcdtest.Server, 1)
	release := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread() // the thread goes back to the pool, alive
		ch <- etcdtest.Start(t)
		<-release
	}()
	srv := <-ch
	t.Cleanup(func() { close(release) })
	return srv
}
