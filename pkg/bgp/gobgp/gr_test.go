package gobgp_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
)

// TestGracefulRestartFRR: the speaker process is SIGKILLed; FRR keeps its
// routes marked stale; a new speaker process comes up with the same routes
// and FRR refreshes them, with no withdrawal in between.
func TestGracefulRestartFRR(t *testing.T) {
	bgptest.RequireRoot(t)
	tp := link(t)
	frr := bgptest.StartFRR(t, tp.peerNS, bgptest.FRRConfig{
		ASN: asn, RouterID: tp.peer, DebugUpdates: true,
		Neighbors: []bgptest.FRRNeighbor{{Address: tp.local, ASN: asn, Password: "grpw"}},
	})
	routes := endpointRoutes(t, mustAddr("192.0.2.10"), 1001, "10.1.0.5", "fd00:1::5")
	spec := childSpec{
		Config: bgp.Config{ASN: asn, RouterID: tp.local, ListenPort: -1, ConnectRetry: time.Second,
			Peers: []bgp.PeerConfig{{Address: tp.peer, ASN: asn, Password: "grpw"}}},
		Routes: routes,
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
