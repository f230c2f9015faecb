package agent_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/pkg/agent"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig/tlstest"
)

// TestBenchCNIAddAuthz: CNI ADD latency with the controller's authorization
// on and off, in the same run: two controllers serving mutual TLS, one
// without its Authorizer, a gateway (agent with the real data plane) on
// each with its own gateway certificate; serial ADDs, one on each side in
// turn.
func TestBenchCNIAddAuthz(t *testing.T) {
	benchOnly(t)
	const perSide = 200
	ctx := context.Background()
	ca := tlstest.NewCA(t, "iotfabric-ca")
	stc, err := tlsconfig.Server(ca.Issue("controller"))
	if err != nil {
		t.Fatal(err)
	}
	admin, err := tlsconfig.Client(ca.Admin("admin"))
	if err != nil {
		t.Fatal(err)
	}
	c := fabrictest.NewCNI(t, pluginDir)
	type side struct {
		name string
		list *libcni.NetworkConfigList
		lat  []time.Duration
	}
	var sides []*side
	for i, on := range []bool{true, false} {
		ctl := fabrictest.StartControllerWith(t, &fabrictest.Controller{NoAuthorization: !on}, grpc.Creds(credentials.NewTLS(stc)))
		createNetwork(t, ctl.Dial(grpc.WithTransportCredentials(credentials.NewTLS(admin))), "red", fmt.Sprintf("10.%d.0.0/16", 20+i))
		name := fmt.Sprintf("gw-authz-%t", on)
		gc, err := tlsconfig.Client(ca.Gateway(name))
		if err != nil {
			t.Fatal(err)
		}
		gw := fabrictest.StartGateway(t, name, netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", 60+i)), []string{ctl.Addr}, true,
			func(o *agent.Options) {
				o.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(gc))}
			})
		s := &side{name: map[bool]string{true: "on", false: "off"}[on], list: c.List(gw, "red")}
		sides = append(sides, s)
		addLatencies(t, newPods(t, 2), 1, func(k int, pod *netnstest.NS) error { // warm up: first exec, block lease
			_, err := c.Conf.AddNetworkList(ctx, s.list, &libcni.RuntimeConf{ContainerID: fmt.Sprintf("warm%d", k), NetNS: pod.Path(), IfName: "eth0"})
			return err
		})
	}
	// One ADD on each side in turn, so that both see the same load.
	for r := 0; r < perSide; r++ {
		for _, s := range sides {
			lat := addLatencies(t, newPods(t, 1), 1, func(k int, pod *netnstest.NS) error {
				_, err := c.Conf.AddNetworkList(ctx, s.list, &libcni.RuntimeConf{ContainerID: fmt.Sprintf("r%d", r), NetNS: pod.Path(), IfName: "eth0"})
				return err
			})
			s.lat = append(s.lat, lat...)
		}
	}
	on, off := sides[0], sides[1]
	fmt.Printf("\nbench-cni authz: CNI ADD over mutual TLS, %d serial ADDs each, one on each side in turn\n", perSide)
	for _, s := range sides {
		fmt.Printf("  authorization %-3s p50 %s  p90 %s  p99 %s\n", s.name, ms(pct(s.lat, .5)), ms(pct(s.lat, .9)), ms(pct(s.lat, .99)))
	}
	fmt.Printf("  p99 overhead of authorization: %.1f %%\n\n", 100*float64(pct(on.lat, .99)-pct(off.lat, .99))/float64(pct(off.lat, .99)))
}
