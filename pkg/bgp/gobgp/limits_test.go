package gobgp_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
)

// birdRoutes are n VPNv4 routes BIRD originates, 10.3.<i>/32.
func birdRoutes(nh netip.Addr, n int) []bgptest.BIRDRoute {
	var out []bgptest.BIRDRoute
	for i := 0; i < n; i++ {
		out = append(out, bgptest.BIRDRoute{RD: "192.0.2.20:1", Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 3, byte(i >> 8), byte(i)}), 32),
			NextHop: nh, Label: uint32(3000 + i)})
	}
	return out
}

func peerStatus(t *testing.T, s bgp.Speaker, addr netip.Addr) bgp.PeerStatus {
	t.Helper()
	ps, err := s.ListPeers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.Address == addr {
			return p
		}
	}
	t.Fatalf("peer %s not listed", addr)
	return bgp.PeerStatus{}
}

// TestPrefixLimit: BIRD sends 30 routes to a session limited to 20: the
// session is shut down and stays idle with the reason and a count; the
// peer configured again with a higher limit comes up with all 30.
func TestPrefixLimit(t *testing.T) {
	bgptest.RequireRoot(t)
	tp := link(t)
	bgptest.StartBIRD(t, tp.peerNS, bgptest.BIRDConfig{
		ASN: asn, RouterID: tp.peer, Local: tp.peer,
		Neighbors: []bgptest.BIRDNeighbor{{Address: tp.local, ASN: asn, RouteTargets: []string{"target:64512:8000001"}}},
		Routes:    birdRoutes(tp.peer, 30),
	})
	s := newSpeaker(t, tp.local, bgp.PeerConfig{Address: tp.peer, ASN: asn, MaxPrefixes: 20})
	startSpeaker(t, s, nil)
	err := bgptest.Eventually(context.Background(), 20*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
		if p := peerStatus(t, s, tp.peer); p.Reason == "" {
			return fmt.Errorf("peer %s: no reason (%+v)", p.State, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Held idle well past GoBGP's connect retry and idle hold time.
	time.Sleep(3 * time.Second)
	p := peerStatus(t, s, tp.peer)
	if p.State == bgp.PeerEstablished || !strings.Contains(p.Reason, "more than 20 routes") || p.PrefixLimitHits != 1 || p.MaxPrefixes != 20 {
		t.Fatalf("after the limit: %+v", p)
	}
	c := s.Counters()
	if c.PrefixLimitHits[tp.peer] != 1 || c.Peers[tp.peer] == bgp.PeerEstablished {
		t.Fatalf("counters %+v", c)
	}

	ctx := context.Background()
	if err := s.DeletePeer(ctx, tp.peer); err != nil {
		t.Fatal(err)
	}
	sub, err := s.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddPeer(ctx, bgp.PeerConfig{Address: tp.peer, ASN: asn, MaxPrefixes: 40}); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, s, tp.peer, bgp.PeerEstablished)
	got := map[bgp.RouteKey]bool{}
	deadline := time.After(20 * time.Second)
	for len(got) < 30 {
		select {
		case evs := <-sub:
			for _, ev := range evs {
				got[ev.Route.Key()] = !ev.Withdraw
			}
		case <-deadline:
			t.Fatalf("%d of 30 routes after raising the limit", len(got))
		}
	}
	if p := peerStatus(t, s, tp.peer); p.Reason != "" || p.PrefixesReceived != 30 {
		t.Fatalf("after raising the limit: %+v", p)
	}
}

// TestImportFilterRealPeer: routes BIRD sends with a route target the
// filter lacks are not delivered (and counted); a filter that takes the
// target in delivers them from GoBGP's Adj-RIB-In, with no new UPDATE.
func TestImportFilterRealPeer(t *testing.T) {
	bgptest.RequireRoot(t)
	tp := link(t)
	bgptest.StartBIRD(t, tp.peerNS, bgptest.BIRDConfig{
		ASN: asn, RouterID: tp.peer, Local: tp.peer,
		Neighbors: []bgptest.BIRDNeighbor{{Address: tp.local, ASN: asn, RouteTargets: []string{"target:65000:7"}}},
		Routes:    birdRoutes(tp.peer, 10),
	})
	s := newSpeaker(t, tp.local, bgp.PeerConfig{Address: tp.peer, ASN: asn})
	startSpeaker(t, s, nil)
	ctx := context.Background()
	if err := s.SetImportFilter(ctx, []bgp.RouteTarget{bgp.AutoRouteTarget(asn, 1)}); err != nil {
		t.Fatal(err)
	}
	sub, err := s.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitPeer(t, s, tp.peer, bgp.PeerEstablished)
	err = bgptest.Eventually(ctx, 20*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
		if p := peerStatus(t, s, tp.peer); p.PrefixesReceived != 10 {
			return fmt.Errorf("%d received", p.PrefixesReceived)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitCounter(t, func() bool { return s.Counters().Filtered >= 10 })
	for drained := false; !drained; {
		select {
		case evs := <-sub:
			for _, ev := range evs {
				if !ev.Withdraw {
					t.Fatalf("a route the filter refuses was delivered: %v", ev.Route)
				}
			}
		case <-time.After(200 * time.Millisecond):
			drained = true
		}
	}
	// Widened by a target no refused route carries (a network created):
	// GoBGP's Adj-RIB-In is not run through again, and nothing arrives.
	if err := s.SetImportFilter(ctx, []bgp.RouteTarget{bgp.AutoRouteTarget(asn, 1), bgp.AutoRouteTarget(asn, 2)}); err != nil {
		t.Fatal(err)
	}
	if c := s.Counters(); c.InboundRefreshes != 0 {
		t.Fatalf("%d inbound refreshes for a target no refused route carries", c.InboundRefreshes)
	}
	select {
	case evs := <-sub:
		t.Fatalf("routes delivered after a filter no refused route matches: %v", evs)
	case <-time.After(500 * time.Millisecond):
	}
	if err := s.SetImportFilter(ctx, []bgp.RouteTarget{bgp.AutoRouteTarget(asn, 1), bgp.AutoRouteTarget(asn, 2), {ASN: 65000, Value: 7}}); err != nil {
		t.Fatal(err)
	}
	if c := s.Counters(); c.InboundRefreshes != 1 {
		t.Fatalf("%d inbound refreshes after adding the refused routes' target, want 1", c.InboundRefreshes)
	}
	n := 0
	deadline := time.After(10 * time.Second)
	for n < 10 {
		select {
		case evs := <-sub:
			for _, ev := range evs {
				if !ev.Withdraw {
					n++
				}
			}
		case <-deadline:
			t.Fatalf("%d of 10 routes after widening the filter", n)
		}
	}
	// Narrowed again: they are withdrawn.
	if err := s.SetImportFilter(ctx, nil); err != nil {
		t.Fatal(err)
	}
	w := 0
	for w < 10 {
		select {
		case evs := <-sub:
			for _, ev := range evs {
				if ev.Withdraw {
					w++
				}
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of 10 withdrawals after narrowing the filter", w)
		}
	}
}

func waitCounter(t *testing.T, cond func() bool) {
	t.Helper()
	if err := bgptest.Eventually(context.Background(), 10*time.Second, 20*time.Millisecond, func(context.Context) error {
		if !cond() {
			return errors.New("not yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestRouteTooLarge: a route with so many route targets that no UPDATE
// can carry it is refused with NotAdvertisedError (and counted), an
// earlier version of it is withdrawn, and the other routes of the call
// reach FRR.
func TestRouteTooLarge(t *testing.T) {
	bgptest.RequireRoot(t)
	tp := link(t)
	frr := bgptest.StartFRR(t, tp.peerNS, bgptest.FRRConfig{
		ASN: asn, RouterID: tp.peer,
		Neighbors: []bgptest.FRRNeighbor{{Address: tp.local, ASN: asn}},
	})
	s := newSpeaker(t, tp.local, bgp.PeerConfig{Address: tp.peer, ASN: asn})
	startSpeaker(t, s, nil)
	waitPeer(t, s, tp.peer, bgp.PeerEstablished)
	ctx := context.Background()
	underlay := netip.MustParseAddr("192.0.2.10")
	big := endpointRoutes(t, underlay, 1001, "10.1.0.5")[0]
	small := endpointRoutes(t, underlay, 1002, "10.1.0.6")[0]
	if err := s.Announce(ctx, []bgp.Route{big}); err != nil { // first a version that fits
		t.Fatal(err)
	}
	waitFRR := func(want int) {
		t.Helper()
		if err := bgptest.Eventually(ctx, 10*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
			n, err := frr.Prefixes(ctx, "ipv4 vpn", tp.local)
			if err != nil {
				return err
			}
			if n != want {
				return fmt.Errorf("FRR has %d routes, want %d", n, want)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	waitFRR(1)
	for i := 0; i < 600; i++ {
		big.RouteTargets = append(big.RouteTargets, bgp.RouteTarget{ASN: asn, Value: uint32(10 + i)})
	}
	err := s.Announce(ctx, []bgp.Route{big, small})
	var na *bgp.NotAdvertisedError
	if !errors.As(err, &na) || len(na.Routes) != 1 || na.Routes[0].Key != big.Key() || !errors.Is(na.Routes[0].Err, bgp.ErrRouteTooLarge) {
		t.Fatalf("Announce: %v, want the big route not advertised", err)
	}
	t.Logf("refused: %v", err)
	// The small one arrives and the big one's older version is withdrawn.
	if err := bgptest.Eventually(ctx, 10*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
		tbl, err := frr.VPNTable(ctx, "ipv4")
		if err != nil {
			return err
		}
		if len(tbl) != 1 || tbl[small.RD.String()+" "+small.Prefix.String()] == nil {
			return fmt.Errorf("FRR has %v", tbl)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if c := s.Counters(); c.NotAdvertised != 1 {
		t.Fatalf("counters %+v", c)
	}
}
