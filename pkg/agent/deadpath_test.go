package agent_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/pkg/agent"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// The agent's side of the controller connection comes from this loopback
// address, so that only its packets are dropped (the test's API client and
// everything else on the host keep working).
const deadPathSource = "127.0.0.3"

// blackhole silently drops the TCP packets between deadPathSource and the
// controller's port (no RST, no ICMP: an LTE outage). The returned restore
// removes the rules; it is also called at the end of the test.
func blackhole(t *testing.T, port int) (restore func()) {
	t.Helper()
	p := strconv.Itoa(port)
	rules := [][]string{
		{"INPUT", "-i", "lo", "-p", "tcp", "-s", deadPathSource, "--dport", p, "-j", "DROP"},
		{"INPUT", "-i", "lo", "-p", "tcp", "-d", deadPathSource, "--sport", p, "-j", "DROP"},
	}
	var added [][]string
	restore = func() {
		for _, r := range added {
			if out, err := exec.Command("iptables", append([]string{"-w", "-D"}, r...)...).CombinedOutput(); err != nil {
				t.Errorf("iptables -D %s: %v: %s", strings.Join(r, " "), err, out)
			}
		}
		added = nil
	}
	t.Cleanup(restore)
	for _, r := range rules {
		if out, err := exec.Command("iptables", append([]string{"-w", "-I"}, r...)...).CombinedOutput(); err != nil {
			t.Fatalf("iptables -I %s: %v: %s", strings.Join(r, " "), err, out)
		}
		added = append(added, r)
	}
	return restore
}

// TestDeadPathNoticedByKeepalive: the path between a gateway and its
// controller drops every packet for longer than the agent's keepalive time
// and timeout. The agent's pings go unanswered, the route stream fails and
// the session ends while the path is still down; once it is back the agent
// reconnects and the 30 endpoints created at the controller during the
// outage reach it, with no local change, well within 90 s (about a second).
// The outage is shortened to keepalive + timeout + 2 s (13 s) in the tests;
// IOTFABRIC_DEADPATH_OUTAGE=2m runs the 2-minute outage (make
// test-deadpath-2m). Without keepalive (Keepalive -1) the test
// fails: the connection stays half-open and the session never ends, so the
// agent depends on the controller's TCP retransmissions (or, once the
// controller has given the connection up, on the kernel's TCP keepalive
// after two hours) to hear anything again.
func TestDeadPathNoticedByKeepalive(t *testing.T) {
	netnstest.RequireRoot(t)
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("no iptables")
	}
	ctx := context.Background()
	// The controller permits the test's pings (gRPC's client pings at
	// most every 10 s) and does not ping itself within the test.
	ctl := fabrictest.StartController(t, grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}))
	api := ctl.Dial()
	createNetwork(t, api, "red", "10.7.0.0/16")
	_, portS, _ := net.SplitHostPort(ctl.Addr)
	port, _ := strconv.Atoi(portS)

	const kaTime, kaTimeout = 10 * time.Second, time.Second
	uA, uX := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.9")
	gwA := fabrictest.StartGateway(t, "gw-a", uA, []string{ctl.Addr}, true, func(o *agent.Options) {
		o.Keepalive, o.KeepaliveTimeout = kaTime, kaTimeout
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(deadPathSource)}}
		o.DialOptions = append(o.DialOptions,
			// The agent's own reconnect backoff: dials that failed
			// while the path was down do not delay the return.
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }))
	})
	c := fabrictest.NewCNI(t, pluginDir)
	if _, err := c.Add(ctx, gwA, "red", "a1", netnstest.New(t, "iofpod")); err != nil {
		t.Fatal(err) // gw-a has an endpoint in red: it gets red's routes
	}
	gwA.WaitLive(20*time.Second, 1)
	if _, err := api.GW.CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{Name: "gw-x", UnderlayAddress: uX.String(),
		Encapsulations: []v1.Encapsulation{v1.Encapsulation_ENCAPSULATION_MPLS_O_UDP}}}); err != nil {
		t.Fatal(err)
	}

	// The outage: a little longer than keepalive time + timeout by default;
	// IOTFABRIC_DEADPATH_OUTAGE=2m for the 2-minute LTE outage.
	outage := kaTime + kaTimeout + 2*time.Second
	if v := os.Getenv("IOTFABRIC_DEADPATH_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < outage {
			t.Fatalf("IOTFABRIC_DEADPATH_OUTAGE=%q: want a duration of at least %v", v, outage)
		}
		outage = d
	}
	restore := blackhole(t, port)
	down := time.Now()
	// 30 endpoints are created during the outage: half before the agent
	// notices it, half after.
	var made []netip.Prefix
	create := func(from, to int) {
		for i := from; i < to; i++ {
			ep, err := api.EP.CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: fmt.Sprint("x", i), Network: "red", Gateway: "gw-x", Label: uint32(1001 + i)}})
			if err != nil {
				t.Fatal(err)
			}
			made = append(made, netip.PrefixFrom(netip.MustParseAddr(ep.Addresses[0]), 32))
		}
	}
	create(0, 15)
	// The session ends while the path is still down: keepalive time +
	// timeout after the last frame received, plus slack.
	gwA.WaitLive(kaTime+kaTimeout+3*time.Second, 0)
	detected := time.Since(down)
	if st, _, err := gwA.Agent().Core().Desired(ctx); err == nil && fabrictest.HasRoute(st, "red", made[0], uX, 1001) {
		t.Fatal("x0 reached gw-a through a dropped path")
	}
	create(15, 30)
	time.Sleep(time.Until(down.Add(outage)))
	restore()
	up := time.Now()
	// Every route within 90 s of the path's return, with no local change.
	gwA.WaitState(90*time.Second, "the 30 endpoints created during the outage, after the path is back", func(s overlay.State) bool {
		for i, p := range made {
			if !fabrictest.HasRoute(s, "red", p, uX, uint32(1001+i)) {
				return false
			}
		}
		return true
	})
	t.Logf("outage %v; session down %v after the path died; the 30 routes made meanwhile at gw-a %v after it came back",
		up.Sub(down).Round(time.Millisecond), detected.Round(time.Millisecond), time.Since(up).Round(time.Millisecond))
}
