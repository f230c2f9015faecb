package gobgp

import (
	"context"
	"net/netip"
	"runtime"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"

	"github.com/iotfabric/iotfabric/internal/heapstat"
	"github.com/iotfabric/iotfabric/pkg/bgp"
)

// A flood of received routes, once withdrawn, leaves the speaker's heap
// where it was before: the paths come as GoBGP's watch reports them (wire
// encoded, from a peer), through the watch callback, the dispatcher and a
// subscription drained as the route table drains it. Without the rebuild
// of the received-route map the heap keeps about 2.5 MB for 20,000 routes.
func TestReceivedFloodGivesMemoryBack(t *testing.T) {
	s, err := New(bgp.Config{ASN: 64512, RouterID: netip.MustParseAddr("192.0.2.1"), ListenPort: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The dispatcher and a subscription, without a GoBGP server: the
	// test plays GoBGP's part by calling the watch callback.
	s.running = true
	s.wg.Add(1)
	go s.dispatch(ctx)
	defer s.wg.Wait()
	defer cancel()
	sub, err := s.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	held := 0
	counted := make(chan int, 1)
	go func() {
		for evs := range sub {
			for _, ev := range evs {
				if ev.Withdraw {
					held--
				} else {
					held++
				}
			}
			select {
			case <-counted:
			default:
			}
			counted <- held
		}
	}()
	waitHeld := func(want int) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case n := <-counted:
				if n == want {
					return
				}
			case <-deadline:
				t.Fatalf("the subscription does not get to %d routes", want)
			}
		}
	}

	const n = 20000
	peer := "10.9.9.9"
	cache := attrCache{}
	paths := make([]*api.Path, n)
	for i := range paths {
		r := bgp.Route{
			Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{100, byte(64 + i>>16), byte(i >> 8), byte(i)}), 32),
			RD:     bgp.RD{Addr: netip.MustParseAddr("10.9.9.9"), Index: uint16(1 + i%4)}, Label: uint32(100000 + i%1000),
			NextHop: netip.MustParseAddr("10.9.9.9"), RouteTargets: []bgp.RouteTarget{{ASN: 65000, Value: 1}}}
		p, err := cache.apiPath(r)
		if err != nil {
			t.Fatal(err)
		}
		p.NeighborIp = peer
		paths[i] = p
	}
	// GoBGP reports paths in events of a few hundred (one per UPDATE or
	// table walk).
	report := func(withdraw bool) {
		for i := 0; i < n; i += 500 {
			batch := make([]*api.Path, 0, 500)
			for _, p := range paths[i : i+500] {
				q := &api.Path{Family: p.Family, NlriBinary: p.NlriBinary, PattrsBinary: p.PattrsBinary, NeighborIp: p.NeighborIp, IsWithdraw: withdraw}
				batch = append(batch, q)
			}
			s.onEvent(&api.WatchEventResponse{Event: &api.WatchEventResponse_Table{Table: &api.WatchEventResponse_TableEvent{Paths: batch}}})
		}
	}
	// A few routes first, so that the peer's index and the attribute
	// set exist before the baseline.
	s.onEvent(&api.WatchEventResponse{Event: &api.WatchEventResponse_Table{Table: &api.WatchEventResponse_TableEvent{Paths: paths[:1]}}})
	waitHeld(1)
	before := heapstat.Live()
	report(false)
	waitHeld(n)
	peak := heapstat.Live()
	report(true)
	waitHeld(0)
	after := heapstat.Live()
	t.Logf("speaker heap: %d KB before the flood, %d KB with %d routes, %d KB after they were withdrawn", before>>10, peak>>10, n, after>>10)
	if after > before+512<<10 {
		t.Errorf("heap %d KB after a flood of %d routes was withdrawn, %d KB before", after>>10, n, before>>10)
	}
	runtime.KeepAlive(paths)
}
