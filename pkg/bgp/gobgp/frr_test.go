package gobgp_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
)

// TestFRRAnnounceWithdraw: an endpoint's VPNv4 and VPNv6 routes appear in
// FRR 8.4 with the right RD, label, next hop, route target and ET:13, over
// an MD5-protected session; deleting the endpoint withdraws them.
func TestFRRAnnounceWithdraw(t *testing.T) {
	bgptest.RequireRoot(t)
	tp := link(t)
	frr := bgptest.StartFRR(t, tp.peerNS, bgptest.FRRConfig{
		ASN: asn, RouterID: tp.peer,
		Neighbors: []bgptest.FRRNeighbor{{Address: tp.local, ASN: asn, Password: "s3cret"}},
	})
	s := newSpeaker(t, tp.local, bgp.PeerConfig{Address: tp.peer, ASN: asn, Password: "s3cret"})
	startSpeaker(t, s, nil)
	waitPeer(t, s, tp.peer, bgp.PeerEstablished)

	underlay := netip.MustParseAddr("192.0.2.10")
	routes := endpointRoutes(t, underlay, 1001, "10.1.0.5", "fd00:1::5")
	ctx := context.Background()
	if err := s.Announce(ctx, routes); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ipv4": "10.1.0.5/32", "ipv6": "fd00:1::5/128"}
	for afi, pfx := range want {
		var got []bgptest.FRRPath
		err := bgptest.Eventually(ctx, 10*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
			tbl, err := frr.VPNTable(ctx, afi)
			if err != nil {
				return err
			}
			got = tbl["192.0.2.10:1 "+pfx]
			if len(got) == 0 {
				return fmt.Errorf("%s not in FRR's %s vpn table: %v", pfx, afi, tbl)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		p := got[0]
		if p.Label != 1001 {
			t.Errorf("%s: label %d, want 1001", pfx, p.Label)
		}
		if p.NextHop != underlay {
			t.Errorf("%s: next hop %s, want %s", pfx, p.NextHop, underlay)
		}
		if p.ExtCommunity != "RT:64512:8000001 ET:13" {
			t.Errorf("%s: extended communities %q, want \"RT:64512:8000001 ET:13\"", pfx, p.ExtCommunity)
		}
	}

	// Announcing the same RD and prefix again replaces the route.
	moved := routes[0]
	moved.Label = 1002
	if err := s.Announce(ctx, []bgp.Route{moved}); err != nil {
		t.Fatal(err)
	}
	err := bgptest.Eventually(ctx, 10*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
		ps, err := frr.VPNRoute(ctx, "ipv4", "192.0.2.10:1", "10.1.0.5/32")
		if err == nil && (len(ps) != 1 || ps[0].Label != 1002) {
			err = fmt.Errorf("FRR has %+v, want one path with label 1002", ps)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	if err := s.Withdraw(ctx, []bgp.RouteKey{routes[0].Key(), routes[1].Key()}); err != nil {
		t.Fatal(err)
	}
	for _, afi := range []string{"ipv4 vpn", "ipv6 vpn"} {
		err := bgptest.Eventually(ctx, 10*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
			n, err := frr.Prefixes(ctx, afi, tp.local)
			if err != nil {
				return err
			}
			if n != 0 {
				return fmt.Errorf("FRR still holds %d %s prefixes", n, afi)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
