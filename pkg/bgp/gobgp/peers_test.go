package gobgp_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
)

// waitReceived reads the subscription until want (RD and prefix) arrives
// with withdraw as given, and returns that event.
func waitReceived(t *testing.T, ch <-chan []bgp.RouteEvent, key bgp.RouteKey, withdraw bool, timeout time.Duration) bgp.RouteEvent {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case evs, ok := <-ch:
			if !ok {
				t.Fatal("subscription closed")
			}
			for _, ev := range evs {
				if ev.Route.Key() == key && ev.Withdraw == withdraw {
					return ev
				}
			}
		case <-deadline:
			t.Fatalf("no %s event (withdraw=%v) in %s", key, withdraw, timeout)
		}
	}
}

// TestFRRWrongPassword: a session whose TCP MD5 password differs never comes up.
func TestFRRWrongPassword(t *testing.T) {
	bgptest.RequireRoot(t)
	tp := link(t)
	frr := bgptest.StartFRR(t, tp.peerNS, bgptest.FRRConfig{
		ASN: asn, RouterID: tp.peer,
		Neighbors: []bgptest.FRRNeighbor{{Address: tp.local, ASN: asn, Password: "right"}},
	})
	s := newSpeaker(t, tp.local, bgp.PeerConfig{Address: tp.peer, ASN: asn, Password: "wrong"})
	startSpeaker(t, s, endpointRoutes(t, netip.MustParseAddr("192.0.2.10"), 1001, "10.1.0.5"))
	// Several connect attempts (retry 1 s on both sides) must all fail.
	deadline := time.Now().Add(6 * time.Second)
	ctx := context.Background()
	for time.Now().Before(deadline) {
		ps, err := s.ListPeers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != 1 || ps[0].State == bgp.PeerEstablished {
			t.Fatalf("peers %+v: want one, not established", ps)
		}
		sum, err := frr.Summary(ctx, "ipv4 vpn")
		if err != nil {
			t.Fatal(err)
		}
		if p := sum[tp.local]; p.State == "Established" || p.ConnectionsEstablished != 0 {
			t.Fatalf("FRR established a session with a wrong password: %+v", p)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The same speaker with the right password comes up: the failure was the password.
	if err := s.DeletePeer(ctx, tp.peer); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPeer(ctx, bgp.PeerConfig{Address: tp.peer, ASN: asn, Password: "right"}); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, s, tp.peer, bgp.PeerEstablished)
}

// TestBIRD: our routes reach BIRD 2 (vpn4 and vpn6 channels) with label,
// next hop and communities; a VPNv4 route BIRD originates with our route
// target arrives on the subscription, and its withdrawal too. (BIRD sends
// no VPNv6 route over an IPv4-only session: it has no IPv6 next hop.)
func TestBIRD(t *testing.T) {
	bgptest.RequireRoot(t)
	tp := link(t)
	birdRoute := bgptest.BIRDRoute{RD: "192.0.2.20:1", Prefix: netip.MustParsePrefix("10.2.0.7/32"), NextHop: tp.peer, Label: 2002}
	bird := bgptest.StartBIRD(t, tp.peerNS, bgptest.BIRDConfig{
		ASN: asn, RouterID: tp.peer, Local: tp.peer,
		Neighbors: []bgptest.BIRDNeighbor{{Address: tp.local, ASN: asn, Password: "birdpw", RouteTargets: []string{"target:64512:8000001"}}},
		Routes:    []bgptest.BIRDRoute{birdRoute},
	})
	s := newSpeaker(t, tp.local, bgp.PeerConfig{Address: tp.peer, ASN: asn, Password: "birdpw"})
	startSpeaker(t, s, nil)
	ctx := context.Background()
	sub, err := s.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitPeer(t, s, tp.peer, bgp.PeerEstablished)

	// BIRD -> speaker.
	rd := mustRD(t, "192.0.2.20:1")
	for _, br := range []bgptest.BIRDRoute{birdRoute} {
		ev := waitReceived(t, sub, bgp.RouteKey{RD: rd, Prefix: br.Prefix}, false, 20*time.Second)
		r := ev.Route
		if ev.Peer != tp.peer || r.Label != br.Label || r.NextHop != tp.peer || !r.HasAnyRouteTarget([]bgp.RouteTarget{bgp.AutoRouteTarget(asn, 1)}) {
			t.Errorf("received %v from %s, want label %d next hop %s target:64512:8000001", r, ev.Peer, br.Label, tp.peer)
		}
	}

	// speaker -> BIRD.
	underlay := netip.MustParseAddr("192.0.2.10")
	routes := endpointRoutes(t, underlay, 1001, "10.1.0.5", "fd00:1::5")
	if err := s.Announce(ctx, routes); err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		af := "4"
		if r.IsIPv6() {
			af = "6"
		}
		err := bgptest.Eventually(ctx, 10*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
			tbl, err := bird.VPNTable(ctx, af)
			if err != nil {
				return err
			}
			p, ok := tbl[r.RD.String()+" "+r.Prefix.String()]
			if !ok {
				raw, _ := bird.Birdc(ctx, "show route table vpntab"+af+" all")
				return fmt.Errorf("%s not in BIRD's vpn%s table: %v\n%s", r.Key(), af, tbl, raw)
			}
			if p.Label != r.Label || p.NextHop != underlay || !strings.Contains(p.ExtCommunity, "(rt, 64512, 8000001)") || !strings.Contains(p.ExtCommunity, "0x30c0000, 0xd") {
				return fmt.Errorf("BIRD has %+v, want label %d next hop %s (rt, 64512, 8000001) and encapsulation 13", p, r.Label, underlay)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	// BIRD withdraws its routes when its static protocol is disabled.
	if _, err := bird.Birdc(ctx, "disable static4"); err != nil {
		t.Fatal(err)
	}
	waitReceived(t, sub, bgp.RouteKey{RD: rd, Prefix: birdRoute.Prefix}, true, 10*time.Second)
}

// TestGoBGPD: both directions with gobgpd 3.10, including MPLSoGRE sent
// as tunnel type 2 and type 11 accepted on receive.
func TestGoBGPD(t *testing.T) {
	bgptest.RequireRoot(t)
	tp := link(t)
	g := bgptest.StartGoBGPD(t, tp.peerNS, bgptest.GoBGPDConfig{
		ASN: asn, RouterID: tp.peer,
		Neighbors: []bgptest.GoBGPDNeighbor{{Address: tp.local, ASN: asn, Password: "gopw"}},
	})
	s := newSpeaker(t, tp.local, bgp.PeerConfig{Address: tp.peer, ASN: asn, Password: "gopw"})
	startSpeaker(t, s, nil)
	ctx := context.Background()
	sub, err := s.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitPeer(t, s, tp.peer, bgp.PeerEstablished)

	// speaker -> gobgpd, MPLSoUDP and MPLSoGRE.
	underlay := netip.MustParseAddr("192.0.2.10")
	routes, err := bgp.EndpointRoutes(bgp.Endpoint{
		Addresses: []netip.Addr{netip.MustParseAddr("10.1.0.5"), netip.MustParseAddr("fd00:1::5")},
		Underlay:  underlay, NetworkID: 1, Label: 1001,
		ExportRTs:     []bgp.RouteTarget{bgp.AutoRouteTarget(asn, 1)},
		NetworkEncaps: []bgp.Encap{bgp.EncapMPLSoUDP, bgp.EncapMPLSoGRE},
		GatewayEncaps: []bgp.Encap{bgp.EncapMPLSoGRE, bgp.EncapMPLSoUDP},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Announce(ctx, routes); err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		fam := "vpnv4"
		if r.IsIPv6() {
			fam = "vpnv6"
		}
		err := bgptest.Eventually(ctx, 10*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
			rib, err := g.RIB(ctx, fam)
			if err != nil {
				return err
			}
			p, ok := rib[r.RD.String()+":"+r.Prefix.String()]
			if !ok {
				return fmt.Errorf("%s not in gobgpd's %s RIB: %v", r.Key(), fam, rib)
			}
			ecs := strings.Join(p.ExtCommunities, " ")
			if p.Label != r.Label || p.NextHop != underlay || !strings.Contains(ecs, "64512:8000001") || !strings.Contains(ecs, "encap:13") || !strings.Contains(ecs, "encap:2") {
				return fmt.Errorf("gobgpd has %+v, want label %d next hop %s 64512:8000001 encap 13 and 2", p, r.Label, underlay)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	// gobgpd -> speaker, with MPLSoGRE as type 11.
	pfx := netip.MustParsePrefix("10.3.0.9/32")
	if err := g.AddVPNRoute(ctx, "192.0.2.30:1", pfx, 3003, netip.MustParseAddr("192.0.2.30"), []string{"64512:8000001"}, "mpls-in-gre"); err != nil {
		t.Fatal(err)
	}
	key := bgp.RouteKey{RD: mustRD(t, "192.0.2.30:1"), Prefix: pfx}
	ev := waitReceived(t, sub, key, false, 10*time.Second)
	want := bgp.Route{Prefix: pfx, RD: key.RD, Label: 3003, NextHop: netip.MustParseAddr("192.0.2.30"),
		RouteTargets: []bgp.RouteTarget{bgp.AutoRouteTarget(asn, 1)}, Encaps: []bgp.Encap{bgp.EncapMPLSoGRE}}
	if !ev.Route.Equal(want) || ev.Peer != tp.peer {
		t.Errorf("received %v from %s, want %v from %s", ev.Route, ev.Peer, want, tp.peer)
	}
	if err := g.DeleteVPNRoute(ctx, "192.0.2.30:1", pfx, 3003); err != nil {
		t.Fatal(err)
	}
	waitReceived(t, sub, key, true, 10*time.Second)

	// Routes of a deleted peer are withdrawn from the subscription.
	if err := g.AddVPNRoute(ctx, "192.0.2.30:1", pfx, 3004, netip.MustParseAddr("192.0.2.30"), []string{"64512:8000001"}, "mpls-in-udp"); err != nil {
		t.Fatal(err)
	}
	if ev := waitReceived(t, sub, key, false, 10*time.Second); ev.Route.Label != 3004 || ev.Route.Encaps[0] != bgp.EncapMPLSoUDP {
		t.Errorf("re-added route received as %v", ev.Route)
	}
	late, err := s.Subscribe(ctx) // starts with a snapshot holding the route
	if err != nil {
		t.Fatal(err)
	}
	if ev := waitReceived(t, late, key, false, 5*time.Second); ev.Route.Label != 3004 {
		t.Errorf("snapshot has %v", ev.Route)
	}

	// Our withdrawal reaches gobgpd.
	if err := s.Withdraw(ctx, []bgp.RouteKey{routes[0].Key()}); err != nil {
		t.Fatal(err)
	}
	err = bgptest.Eventually(ctx, 10*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
		rib, err := g.RIB(ctx, "vpnv4")
		if err != nil {
			return err
		}
		if _, ok := rib[routes[0].RD.String()+":"+routes[0].Prefix.String()]; ok {
			return fmt.Errorf("gobgpd still has %s", routes[0].Key())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	if err := s.DeletePeer(ctx, tp.peer); err != nil {
		t.Fatal(err)
	}
	waitReceived(t, sub, key, true, 10*time.Second)
	waitReceived(t, late, key, true, 10*time.Second)
	if ps, err := s.ListPeers(ctx); err != nil || len(ps) != 0 {
		t.Errorf("peers after delete: %v, %v", ps, err)
	}
}

func mustRD(t *testing.T, s string) bgp.RD {
	t.Helper()
	rd, err := bgp.ParseRD(s)
	if err != nil {
		t.Fatal(err)
	}
	return rd
}
