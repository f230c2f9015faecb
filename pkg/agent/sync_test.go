package agent_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

var pluginDir string

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	if d := os.Getenv("IOTFABRIC_PLUGIN_DIR"); d != "" {
		pluginDir = d // built beforehand (the qemu VM has no Go)
		os.Exit(m.Run())
	}
	if os.Geteuid() == 0 {
		dir, err := os.MkdirTemp("", "iotfabric-agent-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if pluginDir, err = fabrictest.BuildPlugin(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func createNetwork(t *testing.T, api fabrictest.Clients, name, subnet string) {
	t.Helper()
	if _, err := api.Net.CreateNetwork(context.Background(), &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: name, Subnets: []string{subnet}}}); err != nil {
		t.Fatal(err)
	}
}

func hostPrefix(r interface{ String() string }) netip.Prefix {
	a := netip.MustParseAddr(strings.Split(r.String(), "/")[0])
	return netip.PrefixFrom(a, a.BitLen())
}

func endpointIDs(t *testing.T, api fabrictest.Clients, gw string) string {
	t.Helper()
	r, err := api.EP.ListEndpoints(context.Background(), &v1.ListEndpointsRequest{Gateway: gw})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range r.Endpoints {
		ids = append(ids, e.Id)
	}
	return fmt.Sprint(ids)
}

// TestTwoGatewaysThroughTheController: pods added through libcni on gateway A
// reach the controller and gateway B's desired state; with the controller
// stopped, A still admits pods from its leased block and B keeps A's routes;
// once the controller is back, the new pod is reported and learned, and the
// one deleted meanwhile is withdrawn.
func TestTwoGatewaysThroughTheController(t *testing.T) {
	netnstest.RequireRoot(t)
	ctx := context.Background()
	ctl := fabrictest.StartController(t)
	api := ctl.Dial()
	createNetwork(t, api, "red", "10.1.0.0/16")
	uA, uB := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	// A second controller address that never answers: the agents work while
	// any one controller is up.
	dead := fabrictest.DeadAddr(t)
	gwA := fabrictest.StartGateway(t, "gw-a", uA, []string{dead, ctl.Addr}, true)
	gwB := fabrictest.StartGateway(t, "gw-b", uB, []string{ctl.Addr, dead}, true)
	c := fabrictest.NewCNI(t, pluginDir)

	podA1, podB1 := netnstest.New(t, "iofpod"), netnstest.New(t, "iofpod")
	rA1, err := c.Add(ctx, gwA, "red", "a1", podA1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Add(ctx, gwB, "red", "b1", podB1); err != nil {
		t.Fatal(err)
	}
	a1 := hostPrefix(&rA1.IPs[0].Address)
	epA1, _, _ := gwA.Agent().Core().Get(ctx, "a1:eth0")
	gwB.WaitState(10*time.Second, "route of a1", func(s overlay.State) bool { return fabrictest.HasRoute(s, "red", a1, uA, epA1.Label) })
	if got := endpointIDs(t, api, "gw-a"); got != "[a1:eth0]" {
		t.Fatalf("controller has gw-a endpoints %s", got)
	}

	// The controller goes away: nothing is flushed, pods are still admitted.
	ctl.Stop()
	gwA.WaitLive(10*time.Second, 0)
	gwB.WaitLive(10*time.Second, 0)
	podA2 := netnstest.New(t, "iofpod")
	rA2, err := c.Add(ctx, gwA, "red", "a2", podA2)
	if err != nil {
		t.Fatalf("ADD while headless: %v", err)
	}
	a2 := hostPrefix(&rA2.IPs[0].Address)
	if err := c.Del(ctx, gwA, "red", "a1", podA1); err != nil {
		t.Fatalf("DEL while headless: %v", err)
	}
	st := gwB.WaitState(5*time.Second, "b keeps a1 while headless", func(s overlay.State) bool { return fabrictest.HasRoute(s, "red", a1, uA, 0) })
	if fabrictest.HasRoute(st, "red", a2, uA, 0) {
		t.Fatal("gw-b learned a2 with no controller")
	}

	// The controller is back: a2 is reported and learned, a1 withdrawn.
	ctl.Start()
	gwB.WaitState(20*time.Second, "a2 learned and a1 withdrawn after the resync", func(s overlay.State) bool {
		return fabrictest.HasRoute(s, "red", a2, uA, 0) && !fabrictest.HasRoute(s, "red", a1, uA, 0)
	})
	if got := endpointIDs(t, api, "gw-a"); got != "[a2:eth0]" {
		t.Fatalf("controller has gw-a endpoints %s after the resync", got)
	}
}
