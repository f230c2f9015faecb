package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/iotfabric/iotfabric/internal/proctest"
	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// TestMain lets a test start this package's controller as a real process
// (the test binary re-executed with IOTFABRIC_CONTROLLER_ARGS set runs main),
// and, as root, runs the tests in a network namespace of their own, so the
// links and addresses they make never touch the host's.
func TestMain(m *testing.M) {
	if args, ok := os.LookupEnv("IOTFABRIC_CONTROLLER_ARGS"); ok {
		os.Exit(run(strings.Split(args, "\n"), os.Stderr))
	}
	bgptest.ReexecInNewNetns()
	os.Exit(m.Run())
}

var servingRE = regexp.MustCompile(`msg="controller serving" api=(\S+)`)

// startProcess starts the controller binary's main with args in a process of
// its own; its Ready is the API address.
func startProcess(t *testing.T, args ...string) *proctest.Proc {
	t.Helper()
	return proctest.Start(t, []string{"IOTFABRIC_CONTROLLER_ARGS=" + strings.Join(args, "\n")}, true, func(line string) (string, bool) {
		if m := servingRE.FindStringSubmatch(line); m != nil {
			return m[1], true
		}
		return "", false
	})
}

// TestGracefulRestartSIGKILL: the controller process is killed with SIGKILL;
// FRR keeps its endpoint routes, marked stale; the controller comes back on
// the same data directory and FRR's routes are refreshed, never withdrawn.
func TestGracefulRestartSIGKILL(t *testing.T) {
	bgptest.RequireRoot(t)
	self := bgptest.Self(t)
	ns := bgptest.NewNetns(t)
	local, peer := netip.MustParsePrefix("10.98.3.1/24"), netip.MustParsePrefix("10.98.3.2/24")
	bgptest.Connect(t, self, ns, local, peer)
	frr := bgptest.StartFRR(t, ns, bgptest.FRRConfig{ASN: 64512, RouterID: peer.Addr(), DebugUpdates: true,
		Neighbors: []bgptest.FRRNeighbor{{Address: local.Addr(), ASN: 64512, Password: "gr"}}})
	dir := t.TempDir()
	conf := filepath.Join(dir, "controller.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`
data_dir: %s
api:
  listen: 127.0.0.1:0
metrics:
  listen: ""
bgp:
  asn: 64512
  router_id: %s
  listen_port: -1
  peers:
    - {address: %s, asn: 64512, password: gr}
`, filepath.Join(dir, "data"), local.Addr(), peer.Addr())), 0o600)

	first := startProcess(t, "--config", conf)
	conn, err := grpc.NewClient(first.Ready, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	v1.NewNetworkServiceClient(conn).CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "n", Subnets: []string{"10.1.0.0/24"}}})
	v1.NewGatewayServiceClient(conn).CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{Name: "g", UnderlayAddress: "192.0.2.10"}})
	if _, err := v1.NewEndpointServiceClient(conn).CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: "e", Network: "n", Gateway: "g", Label: 1001}}); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	route := func(ctx context.Context) (bgptest.FRRPath, error) {
		ps, err := frr.VPNRoute(ctx, "ipv4", "192.0.2.10:1", "10.1.0.1/32")
		if err != nil {
			return bgptest.FRRPath{}, err
		}
		if len(ps) == 0 {
			return bgptest.FRRPath{}, fmt.Errorf("10.1.0.1/32 not in FRR's table")
		}
		return ps[0], nil
	}
	waitStale := func(want bool, what string) {
		t.Helper()
		err := bgptest.Eventually(ctx, 30*time.Second, 20*time.Millisecond, func(ctx context.Context) error {
			p, err := route(ctx)
			if err != nil {
				if what != "first announcement" {
					t.Fatalf("%s: route gone: %v", what, err)
				}
				return err
			}
			if p.Stale != want {
				return fmt.Errorf("%s: route %+v, want stale=%v", what, p, want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	waitStale(false, "first announcement")
	first.Kill()
	waitStale(true, "after SIGKILL")
	startProcess(t, "--config", conf)
	waitStale(false, "after the restart")
	for _, l := range strings.Split(frr.Log(), "\n") {
		if strings.Contains(l, "withdrawn") && strings.Contains(l, "10.1.0.1") {
			t.Errorf("FRR received a withdrawal during the restart: %s", l)
		}
	}
}
