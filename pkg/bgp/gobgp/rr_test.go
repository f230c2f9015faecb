package gobgp_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
	"github.com/iotfabric/iotfabric/pkg/bgp/gobgp"
)

// TestRouteReflector: with route_reflector on, a route gobgpd sends is
// reflected to FRR with our cluster id in CLUSTER_LIST and gobgpd's router
// id as ORIGINATOR_ID (without it, iBGP routes are not passed on).
func TestRouteReflector(t *testing.T) {
	bgptest.RequireRoot(t)
	a := link(t)
	b := link(t)
	g := bgptest.StartGoBGPD(t, a.peerNS, bgptest.GoBGPDConfig{
		ASN: asn, RouterID: a.peer,
		Neighbors: []bgptest.GoBGPDNeighbor{{Address: a.local, ASN: asn}},
	})
	frr := bgptest.StartFRR(t, b.peerNS, bgptest.FRRConfig{
		ASN: asn, RouterID: b.peer,
		Neighbors: []bgptest.FRRNeighbor{{Address: b.local, ASN: asn}},
	})
	cluster := netip.MustParseAddr("10.255.0.1")
	s, err := gobgp.New(bgp.Config{
		ASN: asn, RouterID: a.local, ListenPort: -1, ConnectRetry: time.Second,
		RouteReflector: true, ClusterID: cluster,
		Peers: []bgp.PeerConfig{{Address: a.peer, ASN: asn}, {Address: b.peer, ASN: asn}},
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	startSpeaker(t, s, nil)
	waitPeer(t, s, a.peer, bgp.PeerEstablished)
	waitPeer(t, s, b.peer, bgp.PeerEstablished)

	ctx := context.Background()
	pfx := netip.MustParsePrefix("10.3.0.9/32")
	if err := g.AddVPNRoute(ctx, "192.0.2.30:1", pfx, 3003, netip.MustParseAddr("192.0.2.30"), []string{"64512:8000001"}, "mpls-in-udp"); err != nil {
		t.Fatal(err)
	}
	err = bgptest.Eventually(ctx, 10*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
		ps, err := frr.VPNRoute(ctx, "ipv4", "192.0.2.30:1", pfx.String())
		if err != nil {
			return err
		}
		if len(ps) == 0 {
			return fmt.Errorf("reflected route not in FRR")
		}
		p := ps[0]
		if p.Label != 3003 || p.OriginatorID != a.peer.String() || len(p.ClusterList) != 1 || p.ClusterList[0] != cluster.String() {
			return fmt.Errorf("FRR has %+v, want label 3003, originator %s, cluster list [%s]", p, a.peer, cluster)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
