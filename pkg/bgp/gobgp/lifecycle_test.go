package gobgp_test

import (
	"context"
	"errors"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/gobgp"
)

// TestLifecycle: a speaker without peers (no privileges needed): errors for
// bad input and wrong states, and Stop closes subscriptions.
func TestLifecycle(t *testing.T) {
	if _, err := gobgp.New(bgp.Config{RouterID: mustAddr("10.0.0.1")}, nil); !errors.Is(err, bgp.ErrInvalidConfig) {
		t.Errorf("config without asn: %v", err)
	}
	s, err := gobgp.New(bgp.Config{ASN: asn, RouterID: mustAddr("10.0.0.1"), ListenPort: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Announce(ctx, generateRoutes(1)); !errors.Is(err, bgp.ErrNotRunning) {
		t.Errorf("announce before start: %v", err)
	}
	bad := generateRoutes(2)
	bad[1].Label = 3
	if err := s.Start(ctx, bad); !errors.Is(err, bgp.ErrInvalidRoute) {
		t.Errorf("start with an invalid route: %v", err)
	}

	s, err = gobgp.New(bgp.Config{ASN: asn, RouterID: mustAddr("10.0.0.1"), ListenPort: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx, generateRoutes(10)); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx, nil); !errors.Is(err, bgp.ErrAlreadyRunning) {
		t.Errorf("second start: %v", err)
	}
	sub, err := s.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if evs := <-sub; len(evs) != 0 {
		t.Errorf("first batch %v, want empty (our own routes are not received routes)", evs)
	}
	if err := s.Announce(ctx, bad); !errors.Is(err, bgp.ErrInvalidRoute) {
		t.Errorf("invalid route: %v", err)
	}
	if err := s.Withdraw(ctx, []bgp.RouteKey{{}}); !errors.Is(err, bgp.ErrInvalidRoute) {
		t.Errorf("invalid key: %v", err)
	}
	if err := s.Withdraw(ctx, []bgp.RouteKey{bad[0].Key(), {RD: bad[0].RD, Prefix: netip.MustParsePrefix("10.200.0.1/32")}}); err != nil {
		t.Errorf("withdraw (one key never announced): %v", err)
	}
	p := bgp.PeerConfig{Address: mustAddr("10.0.0.2"), ASN: asn}
	if err := s.AddPeer(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPeer(ctx, p); !errors.Is(err, bgp.ErrPeerExists) {
		t.Errorf("duplicate peer: %v", err)
	}
	if err := s.AddPeer(ctx, bgp.PeerConfig{Address: mustAddr("10.0.0.3")}); !errors.Is(err, bgp.ErrInvalidConfig) {
		t.Errorf("peer without asn: %v", err)
	}
	ps, err := s.ListPeers(ctx)
	if err != nil || len(ps) != 1 || ps[0].Address != p.Address || ps[0].State == bgp.PeerEstablished {
		t.Errorf("peers %+v, %v", ps, err)
	}
	if err := s.DeletePeer(ctx, mustAddr("10.0.0.9")); !errors.Is(err, bgp.ErrPeerNotFound) {
		t.Errorf("unknown peer: %v", err)
	}
	if err := s.DeletePeer(ctx, p.Address); err != nil {
		t.Fatal(err)
	}

	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-sub:
		if ok {
			t.Error("subscription delivered after stop")
		}
	case <-time.After(5 * time.Second):
		t.Error("subscription not closed by Stop")
	}
	if err := s.Announce(ctx, generateRoutes(1)); !errors.Is(err, bgp.ErrNotRunning) {
		t.Errorf("announce after stop: %v", err)
	}
	// The speaker's own goroutines are gone (GoBGP's Serve loop never
	// returns, upstream: not counted).
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		left := strings.Contains(stacks, "gobgp.(*Speaker).dispatch") || strings.Contains(stacks, "gobgp.(*subscriber).run")
		if !left {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("speaker goroutines left after Stop:\n%s", stacks)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := s.Start(ctx, nil); !errors.Is(err, bgp.ErrAlreadyRunning) {
		t.Errorf("start after stop: %v", err)
	}
}

// TestSubscriptionContext: a subscription ends with its context.
func TestSubscriptionContext(t *testing.T) {
	s, err := gobgp.New(bgp.Config{ASN: asn, RouterID: mustAddr("10.0.0.1"), ListenPort: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Start(ctx, nil); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(ctx)
	sctx, cancel := context.WithCancel(ctx)
	sub, err := s.Subscribe(sctx)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-sub:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("subscription not closed when its context ended")
		}
	}
}
