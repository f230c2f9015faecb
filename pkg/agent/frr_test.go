package agent_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/internal/testenv"
	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
)

// TestPodsRoutesAtFRR: a controller with its BGP speaker peers with FRR (the
// edge router); pods added through libcni on two gateways appear in FRR's
// VPNv4 table with their gateway's RD, label and next hop; a pod added while
// the controller is stopped appears once it is back.
func TestPodsRoutesAtFRR(t *testing.T) {
	bgptest.RequireRoot(t)
	testenv.RequireFile(t, "/usr/lib/frr/bgpd", "frr")
	self := bgptest.Self(t)
	frrNS := bgptest.NewNetns(t)
	n := os.Getpid() % 250
	local := netip.MustParsePrefix(fmt.Sprintf("10.95.%d.1/24", n))
	edge := netip.MustParsePrefix(fmt.Sprintf("10.95.%d.2/24", n))
	bgptest.Connect(t, self, frrNS, local, edge)
	const asn = 64512
	frr := bgptest.StartFRR(t, frrNS, bgptest.FRRConfig{ASN: asn, RouterID: edge.Addr(),
		Neighbors: []bgptest.FRRNeighbor{{Address: local.Addr(), ASN: asn, Password: "pisek"}}})
	ctl := fabrictest.StartControllerWith(t, &fabrictest.Controller{BGP: &bgp.Config{ASN: asn, RouterID: local.Addr(), ListenPort: -1,
		Peers: []bgp.PeerConfig{{Address: edge.Addr(), ASN: asn, Password: "pisek"}}}})
	createNetwork(t, ctl.Dial(), "red", "10.6.0.0/16")
	ctx := context.Background()
	uA, uB := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	gwA := fabrictest.StartGateway(t, "gw-a", uA, []string{ctl.Addr}, true)
	gwB := fabrictest.StartGateway(t, "gw-b", uB, []string{ctl.Addr}, true)
	c := fabrictest.NewCNI(t, pluginDir)

	atFRR := func(g *fabrictest.Gateway, id string, u netip.Addr, addr netip.Addr) {
		t.Helper()
		ep, _, err := g.Agent().Core().Get(ctx, id+":eth0")
		if err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprintf("%s:1 %s/32", u, addr)
		err = bgptest.Eventually(ctx, 30*time.Second, 100*time.Millisecond, func(ctx context.Context) error {
			tbl, err := frr.VPNTable(ctx, "ipv4")
			if err != nil {
				return err
			}
			ps := tbl[key]
			if len(ps) == 0 {
				return fmt.Errorf("%s not at FRR", key)
			}
			if ps[0].Label != ep.Label || ps[0].NextHop != u {
				return fmt.Errorf("%s at FRR with label %d next hop %s, want %d and %s", key, ps[0].Label, ps[0].NextHop, ep.Label, u)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []struct {
		g  *fabrictest.Gateway
		id string
		u  netip.Addr
	}{{gwA, "a1", uA}, {gwB, "b1", uB}} {
		r, err := c.Add(ctx, p.g, "red", p.id, netnstest.New(t, "iofpod"))
		if err != nil {
			t.Fatal(err)
		}
		a, _ := netip.AddrFromSlice(r.IPs[0].Address.IP.To4())
		atFRR(p.g, p.id, p.u, a)
	}

	ctl.Stop()
	gwA.WaitLive(10*time.Second, 0)
	r, err := c.Add(ctx, gwA, "red", "a2", netnstest.New(t, "iofpod"))
	if err != nil {
		t.Fatalf("ADD with the controller stopped: %v", err)
	}
	ctl.Start()
	a, _ := netip.AddrFromSlice(r.IPs[0].Address.IP.To4())
	atFRR(gwA, "a2", uA, a)
}
