package gobgp_test

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
	"github.com/iotfabric/iotfabric/pkg/bgp/gobgp"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(speakerChild())
	}
	bgptest.ReexecInNewNetns()
	os.Exit(m.Run())
}

const asn = 64512

var linkSeq int

// topo is the in-process speaker's side of a link to a peer namespace.
type topo struct {
	self, peerNS *bgptest.Netns
	local, peer  netip.Addr
}

// link makes a fresh namespace for a peer and a veth pair to it; each call
// uses its own /24.
func link(t *testing.T) topo {
	t.Helper()
	linkSeq++
	self := bgptest.Self(t)
	ns := bgptest.NewNetns(t)
	a := netip.MustParsePrefix(netip.AddrFrom4([4]byte{10, 99, byte(linkSeq), 1}).String() + "/24")
	b := netip.MustParsePrefix(netip.AddrFrom4([4]byte{10, 99, byte(linkSeq), 2}).String() + "/24")
	bgptest.Connect(t, self, ns, a, b)
	return topo{self: self, peerNS: ns, local: a.Addr(), peer: b.Addr()}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

func newSpeaker(t *testing.T, routerID netip.Addr, peers ...bgp.PeerConfig) *gobgp.Speaker {
	t.Helper()
	s, err := gobgp.New(bgp.Config{
		ASN: asn, RouterID: routerID, ListenPort: -1, Peers: peers,
		ConnectRetry: time.Second,
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func startSpeaker(t *testing.T, s *gobgp.Speaker, initial []bgp.Route) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Start(ctx, initial); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
}

func waitPeer(t *testing.T, s bgp.Speaker, addr netip.Addr, want bgp.PeerState) {
	t.Helper()
	err := bgptest.Eventually(context.Background(), 20*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
		ps, err := s.ListPeers(ctx)
		if err != nil {
			return err
		}
		for _, p := range ps {
			if p.Address == addr {
				if p.State == want {
					return nil
				}
				return &stateErr{addr, p.State}
			}
		}
		return &stateErr{addr, "absent"}
	})
	if err != nil {
		t.Fatalf("peer %s not %s: %v", addr, want, err)
	}
}

type stateErr struct {
	addr netip.Addr
	st   bgp.PeerState
}

func (e *stateErr) Error() string { return "peer " + e.addr.String() + " is " + string(e.st) }

// endpointRoutes is the route set of one endpoint of network 1 on a gateway.
func endpointRoutes(t *testing.T, underlay netip.Addr, label uint32, addrs ...string) []bgp.Route {
	t.Helper()
	ep := bgp.Endpoint{
		Underlay: underlay, NetworkID: 1, Label: label,
		ExportRTs:     []bgp.RouteTarget{bgp.AutoRouteTarget(asn, 1)},
		NetworkEncaps: []bgp.Encap{bgp.EncapMPLSoUDP, bgp.EncapMPLSoGRE},
		GatewayEncaps: []bgp.Encap{bgp.EncapMPLSoUDP},
	}
	for _, a := range addrs {
		ep.Addresses = append(ep.Addresses, netip.MustParseAddr(a))
	}
	rs, err := bgp.EndpointRoutes(ep)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
