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
	"github.com/iotfabric/iotfabric/pkg/bgp/gobgp"
)

// TestGracefulRestartFRR: the speaker process is SIGKILLed; FRR keeps its
// routes marked stale; a new speaker process comes up with the same routes
// and FRR refreshes them, with no withdrawal in between. Peers from the
// configuration, and peers added after Start (as the controller adds the
// peers of its store).
func TestGracefulRestartFRR(t *testing.T) {
	bgptest.RequireRoot(t)
	t.Run("config", func(t *testing.T) { testGracefulRestartFRR(t, false) })
	t.Run("addpeer", func(t *testing.T) { testGracefulRestartFRR(t, true) })
}

func testGracefulRestartFRR(t *testing.T, addPeers bool) {
	tp := link(t)
	frr := bgptest.StartFRR(t, tp.peerNS, bgptest.FRRConfig{
		ASN: asn, RouterID: tp.peer, DebugUpdates: true,
		Neighbors: []bgptest.FRRNeighbor{{Address: tp.local, ASN: asn, Password: "grpw"}},
	})
	routes := endpointRoutes(t, mustAddr("192.0.2.10"), 1001, "10.1.0.5", "fd00:1::5")
	spec := childSpec{
		Config: bgp.Config{ASN: asn, RouterID: tp.local, ListenPort: -1, ConnectRetry: time.Second,
			Peers: []bgp.PeerConfig{{Address: tp.peer, ASN: asn, Password: "grpw"}}},
		Routes:             routes,
		AddPeersAfterStart: addPeers,
	}
	ctx := context.Background()
	route := func(ctx context.Context) (bgptest.FRRPath, error) {
		ps, err := frr.VPNRoute(ctx, "ipv4", "192.0.2.10:1", "10.1.0.5/32")
		if err != nil {
			return bgptest.FRRPath{}, err
		}
		if len(ps) == 0 {
			return bgptest.FRRPath{}, fmt.Errorf("10.1.0.5/32 not in FRR's table")
		}
		return ps[0], nil
	}

	first := startChild(t, spec)
	if l := first.line(t, 10*time.Second); l != "ready" {
		t.Fatalf("speaker process said %q", l)
	}
	err := bgptest.Eventually(ctx, 20*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
		p, err := route(ctx)
		if err == nil && (p.Stale || p.Label != 1001) {
			err = fmt.Errorf("route %+v", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	first.kill()
	err = bgptest.Eventually(ctx, 10*time.Second, 20*time.Millisecond, func(ctx context.Context) error {
		p, err := route(ctx)
		if err != nil {
			t.Fatalf("route gone after SIGKILL: %v", err) // must stay while the speaker restarts
		}
		if !p.Stale {
			return fmt.Errorf("route not marked stale yet: %+v", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("FRR holds the routes as stale")

	second := startChild(t, spec)
	if l := second.line(t, 10*time.Second); l != "ready" {
		t.Fatalf("speaker process said %q", l)
	}
	err = bgptest.Eventually(ctx, 30*time.Second, 20*time.Millisecond, func(ctx context.Context) error {
		p, err := route(ctx)
		if err != nil {
			t.Fatalf("route gone during the restart: %v", err)
		}
		if p.Stale {
			return fmt.Errorf("route still stale: %+v", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The new session announced the Forwarding bit for VPNv4 (without it
	// FRR flushes the stale routes at the OPEN, before our UPDATEs).
	gr, err := frr.GracefulRestart(ctx, tp.local)
	if err != nil {
		t.Fatal(err)
	}
	if !gr.RBit || !gr.FBit["ipv4Vpn"] || !gr.FBit["ipv6Vpn"] {
		t.Errorf("FRR saw %+v: want R bit and F bit for ipv4Vpn and ipv6Vpn", gr)
	}
	if n, err := frr.Prefixes(ctx, "ipv6 vpn", tp.local); err != nil || n != 1 {
		t.Errorf("FRR holds %d VPNv6 prefixes (%v), want 1", n, err)
	}
	log := frr.Log()
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "withdrawn") && (strings.Contains(l, "10.1.0.5") || strings.Contains(l, "fd00:1::5")) {
			t.Errorf("FRR received a withdrawal during the restart: %s", l)
		}
	}
	if !strings.Contains(log, "rcvd UPDATE") {
		t.Errorf("FRR's update log is empty; cannot tell refreshes from withdrawals")
	}
}

// TestGracefulRestartHelper: FRR (graceful restart on) originates a route;
// its bgpd is SIGKILLed and started again. The speaker, as helper, keeps
// the route: the subscription sees no withdrawal, and after FRR's refresh
// the route is still held. Then bgpd is killed for good, and the route is
// withdrawn when FRR's restart time (15 s here; GoBGP itself waits 5 s before it accepts or makes a new connection after a session drop) runs out.
func TestGracefulRestartHelper(t *testing.T) {
	bgptest.RequireRoot(t)
	tp := link(t)
	pfx := netip.MustParsePrefix("10.4.0.0/24")
	frr := bgptest.StartFRR(t, tp.peerNS, bgptest.FRRConfig{
		ASN: asn, RouterID: tp.peer, GracefulRestart: true, RestartTime: 15,
		Neighbors: []bgptest.FRRNeighbor{{Address: tp.local, ASN: asn}},
		Networks:  []bgptest.FRRNetwork{{Prefix: pfx, RD: "192.0.2.40:1", Label: 4004, RouteTargets: []string{"64512:8000001"}}},
	})
	// The speaker also listens (port 179 of the test's own namespace), so
	// the restarted FRR can connect as soon as GoBGP's 5 s idle hold ends.
	s, err := gobgp.New(bgp.Config{ASN: asn, RouterID: tp.local, ListenPort: 179, ListenAddress: []netip.Addr{tp.local},
		Peers: []bgp.PeerConfig{{Address: tp.peer, ASN: asn}}}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	startSpeaker(t, s, nil)
	ctx := context.Background()
	sub, err := s.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	key := bgp.RouteKey{RD: mustRD(t, "192.0.2.40:1"), Prefix: pfx}
	ev := waitReceived(t, sub, key, false, 20*time.Second)
	if ev.Route.Label != 4004 || !ev.Route.HasAnyRouteTarget([]bgp.RouteTarget{bgp.AutoRouteTarget(asn, 1)}) {
		t.Fatalf("received %v", ev.Route)
	}

	frr.Kill()
	restarted := time.Now()
	if err := frr.RestartBGPD(ctx); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, s, tp.peer, bgp.PeerEstablished)
	t.Logf("session back %s after the kill", time.Since(restarted).Round(time.Millisecond))
	// FRR sends its table and End-of-RIB again; give it the time to.
	if err := frr.WaitEstablished(ctx, tp.local, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	quiet := time.After(3 * time.Second)
	for done := false; !done; {
		select {
		case evs := <-sub:
			for _, ev := range evs {
				if ev.Route.Key() == key && ev.Withdraw {
					t.Fatalf("route withdrawn during FRR's graceful restart")
				}
			}
		case <-quiet:
			done = true
		}
	}
	late, err := s.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev := waitReceived(t, late, key, false, 5*time.Second); ev.Route.Label != 4004 {
		t.Errorf("held route %v", ev.Route)
	}

	// No restart this time: held until the restart time runs out.
	frr.Kill()
	killed := time.Now()
	waitReceived(t, sub, key, true, 25*time.Second)
	if held := time.Since(killed); held < 14*time.Second {
		t.Errorf("route withdrawn %s after the kill, before FRR's 15 s restart time", held)
	}
}
