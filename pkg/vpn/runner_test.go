package vpn

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
	"github.com/iotfabric/iotfabric/pkg/routedigest"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func TestNetRouteEqual(t *testing.T) {
	rd := func(s string) bgp.RD { r, _ := bgp.ParseRD(s); return r }
	base := NetRoute{Route: bgp.Route{Prefix: netip.MustParsePrefix("10.0.0.1/32"), RD: rd("192.0.2.1:1"), Label: 100,
		NextHop: netip.MustParseAddr("192.0.2.1"), RouteTargets: []bgp.RouteTarget{{ASN: 64512, Value: 1}, {ASN: 64512, Value: 2}},
		Encaps: []bgp.Encap{bgp.EncapMPLSoUDP, bgp.EncapMPLSoGRE}}, Origin: Local, Endpoint: "e"}
	// Each row changes one field. The route diffs this replaced compared
	// different subsets: the table's per-endpoint diff the BGP route only,
	// the route watchers' the route and Origin, the gateway streams' the
	// route, Origin and Endpoint; none compared Peer.
	for _, c := range []struct {
		name  string
		edit  func(r *NetRoute)
		equal bool
	}{
		{"same", func(r *NetRoute) {}, true},
		{"route targets in another order", func(r *NetRoute) { r.RouteTargets = []bgp.RouteTarget{{ASN: 64512, Value: 2}, {ASN: 64512, Value: 1}} }, true},
		{"encapsulations in another order", func(r *NetRoute) { r.Encaps = []bgp.Encap{bgp.EncapMPLSoGRE, bgp.EncapMPLSoUDP} }, true},
		{"prefix", func(r *NetRoute) { r.Prefix = netip.MustParsePrefix("10.0.0.2/32") }, false},
		{"rd", func(r *NetRoute) { r.RD = rd("192.0.2.1:2") }, false},
		{"label", func(r *NetRoute) { r.Label = 101 }, false},
		{"next hop", func(r *NetRoute) { r.NextHop = netip.MustParseAddr("192.0.2.2") }, false},
		{"one route target fewer", func(r *NetRoute) { r.RouteTargets = r.RouteTargets[:1] }, false},
		{"another encapsulation", func(r *NetRoute) { r.Encaps = []bgp.Encap{bgp.EncapMPLSoUDP} }, false},
		{"origin", func(r *NetRoute) { r.Origin = Imported }, false},
		{"endpoint", func(r *NetRoute) { r.Endpoint = "f" }, false},
		{"peer", func(r *NetRoute) { r.Peer = netip.MustParseAddr("10.9.9.9") }, false},
	} {
		o := base
		o.RouteTargets, o.Encaps = append([]bgp.RouteTarget(nil), base.RouteTargets...), append([]bgp.Encap(nil), base.Encaps...)
		c.edit(&o)
		if got := base.Equal(o); got != c.equal || o.Equal(base) != c.equal {
			t.Errorf("%s: Equal %v, want %v", c.name, got, c.equal)
		}
	}
}

func TestDiff(t *testing.T) {
	mk := func(pfx string, label uint32) NetRoute {
		return NetRoute{Route: bgp.Route{Prefix: netip.MustParsePrefix(pfx), Label: label}, Origin: Local, Endpoint: "e"}
	}
	old := routeMap{}
	cur := routeMap{}
	for _, rt := range []NetRoute{mk("10.0.0.1/32", 1), mk("10.0.0.2/32", 2), mk("10.0.0.3/32", 3)} {
		old[rt.Key()] = rt
	}
	for _, rt := range []NetRoute{mk("10.0.0.1/32", 1), mk("10.0.0.2/32", 20), mk("10.0.0.4/32", 4)} {
		cur[rt.Key()] = rt
	}
	names := func(rs []NetRoute) string {
		var out []string
		for _, r := range rs {
			out = append(out, fmt.Sprintf("%s/%d", r.Prefix, r.Label))
		}
		sort.Strings(out)
		return fmt.Sprint(out)
	}
	put, del := diff(old, cur)
	if names(put) != "[10.0.0.2/32/20 10.0.0.4/32/4]" || names(del) != "[10.0.0.3/32/3]" {
		t.Fatalf("put %s del %s", names(put), names(del))
	}
	// The per-endpoint form gives the same answer.
	ep := func(m routeMap) endpointRoutes {
		e := endpointRoutes{id: "e"}
		for _, rt := range m {
			e.rs = append(e.rs, rt.Route)
		}
		return e
	}
	put, del = diff(ep(old), ep(cur))
	if names(put) != "[10.0.0.2/32/20 10.0.0.4/32/4]" || names(del) != "[10.0.0.3/32/3]" {
		t.Fatalf("endpoint form: put %s del %s", names(put), names(del))
	}
	if put, del := diff(cur, cur); len(put)+len(del) != 0 {
		t.Fatalf("a set differs from itself: %v %v", put, del)
	}
}

// startRunner runs a runner over a fresh store until the test ends.
func startRunner(t *testing.T, sp bgp.Speaker) (*Runner, store.Store, context.Context) {
	t.Helper()
	return startRunnerWith(t, sp, Limits{})
}

// startRunnerWith is startRunner with limits.
func startRunnerWith(t *testing.T, sp bgp.Speaker, lim Limits) (*Runner, store.Store, context.Context) {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for i, n := range []string{"n1", "n2"} {
		put(t, st, "networks/"+n, &v1.VirtualNetwork{Name: n, Id: uint32(i + 1), Encapsulations: []v1.Encapsulation{udp, gre}})
	}
	for i := 0; i < 3; i++ {
		put(t, st, fmt.Sprint("gateways/g", i), &v1.Gateway{Name: fmt.Sprint("g", i), UnderlayAddress: fmt.Sprintf("192.0.2.%d", i+1), Encapsulations: []v1.Encapsulation{udp}})
	}
	r := NewRunner(st, sp, 64512, nil)
	r.SetLimits(lim)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-r.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	return r, st, ctx
}

// randomChange makes one random change: endpoints put, moved to the other
// network, relabelled or deleted; gateways' encapsulations; networks' route
// targets; and, with sp, routes received from a peer.
func randomChange(t *testing.T, ctx context.Context, st store.Store, sp *bgptest.FakeSpeaker, rng *rand.Rand, step int) {
	id := fmt.Sprint("e", rng.IntN(20))
	net := []string{"n1", "n2"}[rng.IntN(2)]
	rts := func() []string {
		return [][]string{nil, {"target:65000:7"}, {fmt.Sprint("target:64512:", rng.IntN(3))}}[rng.IntN(3)]
	}
	switch k := rng.IntN(12); {
	case k == 0:
		st.Txn(ctx, nil, []store.Op{store.Delete("endpoints/" + id)})
	case k == 1:
		i := rng.IntN(3)
		encs := [][]v1.Encapsulation{{udp}, {gre}, {udp, gre}}[rng.IntN(3)]
		put(t, st, fmt.Sprint("gateways/g", i), &v1.Gateway{Name: fmt.Sprint("g", i), UnderlayAddress: fmt.Sprintf("192.0.2.%d", i+1), Encapsulations: encs})
	case k == 2:
		put(t, st, "networks/"+net, &v1.VirtualNetwork{Name: net, Id: map[string]uint32{"n1": 1, "n2": 2}[net], Encapsulations: []v1.Encapsulation{udp, gre},
			ExportRouteTargets: rts(), ImportRouteTargets: rts()})
	case k <= 4 && sp != nil:
		// A peer sends, replaces or withdraws one of 10 routes, with route
		// targets that n1, n2, both or neither import.
		i := rng.IntN(10)
		rd, _ := bgp.ParseRD(fmt.Sprintf("198.51.100.%d:1", i%3+1))
		targets := [][]bgp.RouteTarget{{bgp.AutoRouteTarget(64512, 1)}, {bgp.AutoRouteTarget(64512, 2)}, {{ASN: 65000, Value: 7}},
			{bgp.AutoRouteTarget(64512, 1), bgp.AutoRouteTarget(64512, 2)}, {{ASN: 1, Value: 1}}}[rng.IntN(5)]
		ev := bgp.RouteEvent{Peer: netip.AddrFrom4([4]byte{10, 9, 0, byte(rng.IntN(2) + 1)}), Withdraw: rng.IntN(4) == 0,
			Route: bgp.Route{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(i), 0}), 24), RD: rd, Label: uint32(1000 + rng.IntN(3)),
				NextHop: rd.Addr, RouteTargets: targets}}
		sp.Receive(ev)
	default:
		if kv, err := st.Get(ctx, "endpoints/"+id); err == nil {
			var e v1.Endpoint
			proto.Unmarshal(kv.Value, &e)
			if rng.IntN(4) == 0 {
				e.Network = map[string]string{"n1": "n2", "n2": "n1"}[e.Network]
			} else {
				e.Label = uint32(rng.IntN(3) * (16 + step))
			}
			put(t, st, "endpoints/"+id, &e)
			break
		}
		put(t, st, "endpoints/"+id, &v1.Endpoint{Id: id, Network: net, Gateway: fmt.Sprint("g", rng.IntN(3)),
			Addresses: []string{fmt.Sprintf("10.1.%d.%d", step/250, step%250+1)}, Label: uint32(16 + step)})
	}
}

// barrier returns once the runner has applied every store change and every
// received route made so far: it puts a marker endpoint (and with sp, a
// received marker route) and waits until n1's routes show them.
func barrier(t *testing.T, r *Runner, st store.Store, sp *bgptest.FakeSpeaker, step int) {
	t.Helper()
	addr := fmt.Sprintf("10.99.%d.%d", step/250, step%250+1)
	put(t, st, "endpoints/marker", &v1.Endpoint{Id: "marker", Network: "n1", Gateway: "g0", Addresses: []string{addr}, Label: uint32(5000 + step)})
	want := map[string]bool{addr + "/32": true}
	if sp != nil {
		pfx := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 98, byte(step / 250), byte(step % 250)}), 32)
		rd, _ := bgp.ParseRD("198.51.100.99:1")
		sp.Receive(bgp.RouteEvent{Peer: netip.MustParseAddr("10.9.0.99"), Route: bgp.Route{Prefix: pfx, RD: rd, Label: 99,
			NextHop: rd.Addr, RouteTargets: []bgp.RouteTarget{bgp.AutoRouteTarget(64512, 1)}}})
		want[pfx.String()] = true
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		rs, _ := r.Routes("n1")
		seen := 0
		for _, rt := range rs {
			if want[rt.Prefix.String()] {
				seen++
			}
		}
		if seen == len(want) {
			return
		}
		runtime.Gosched()
	}
	t.Fatalf("step %d: the runner never applied the marker changes", step)
}

// converge reads updates with read until have equals snapshot(). Everything
// the runner published before it answered snapshot() is already queued, so
// once the queue is drained have is never behind the snapshot; when it is
// ahead, the snapshot is taken again.
func converge(t *testing.T, what string, read func(block bool) bool, have map[string]NetRoute, snapshot func() map[string]NetRoute) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		want := snapshot()
		for read(false) {
		}
		if same(have, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never matched the snapshot:\nhave %v\nwant %v", what, describe(have), describe(want))
		}
		read(true)
	}
}

func same(a, b map[string]NetRoute) bool {
	if len(a) != len(b) {
		return false
	}
	for k, rt := range a {
		if o, ok := b[k]; !ok || !o.Equal(rt) {
			return false
		}
	}
	return true
}

func describe(m map[string]NetRoute) []string {
	var out []string
	for k, rt := range m {
		out = append(out, fmt.Sprintf("%s %d %v %v o%d %s %s", k, rt.Label, rt.RouteTargets, rt.Encaps, rt.Origin, rt.Endpoint, rt.Peer))
	}
	sort.Strings(out)
	return out
}

// TestRouteWatchMatchesSnapshot applies random endpoint, gateway, network and
// received-route changes; the routes each network's watch accumulates (from
// the table's deltas and recomputations alike) must always equal the
// network's routes.
func TestRouteWatchMatchesSnapshot(t *testing.T) {
	sp := bgptest.NewFakeSpeaker()
	r, st, ctx := startRunner(t, sp)
	type watch struct {
		ch   <-chan []RouteChange
		have map[string]NetRoute
	}
	watches := map[string]*watch{}
	for _, n := range []string{"n1", "n2"} {
		cur, ch := r.watchAll(ctx, n)
		w := &watch{ch: ch, have: map[string]NetRoute{}}
		for _, rt := range cur {
			w.have[rt.Key().String()] = rt
		}
		watches[n] = w
	}
	check := func(step int) {
		for n, w := range watches {
			read := func(block bool) bool {
				var b []RouteChange
				var ok bool
				if block {
					select {
					case b, ok = <-w.ch:
					case <-time.After(time.Millisecond):
						return false
					}
				} else {
					select {
					case b, ok = <-w.ch:
					default:
						return false
					}
				}
				if !ok {
					t.Fatalf("step %d: %s's watch closed", step, n)
				}
				for _, c := range b {
					if c.Delete {
						delete(w.have, c.Route.Key().String())
					} else {
						w.have[c.Route.Key().String()] = c.Route
					}
				}
				return true
			}
			converge(t, fmt.Sprintf("step %d: %s", step, n), read, w.have, func() map[string]NetRoute {
				rs, _ := r.Routes(n)
				out := map[string]NetRoute{}
				for _, rt := range rs {
					out[rt.Key().String()] = rt
				}
				return out
			})
		}
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for step := 0; step < 400; step++ {
		randomChange(t, ctx, st, sp, rng, step)
		check(step)
	}
	barrier(t, r, st, sp, 400)
	check(400)
	imported := 0
	for _, w := range watches {
		for _, rt := range w.have {
			if rt.Origin == Imported {
				imported++
			}
		}
	}
	if imported == 0 {
		t.Fatal("no received route was imported: the test does not cover them")
	}
	t.Logf("n1 %d routes, n2 %d routes (%d imported) followed through 400 random changes", len(watches["n1"].have), len(watches["n2"].have), imported)
	// The speaker ends up with every local route.
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var want []string
	r.do(ctx, func(s *state) {
		for _, rt := range s.tbl.Announced() {
			want = append(want, rt.String())
		}
	})
	sort.Strings(want)
	if err := sp.WaitFor(sctx, func(m map[bgp.RouteKey]bgp.Route) bool {
		var got []string
		for _, rt := range m {
			got = append(got, rt.String())
		}
		sort.Strings(got)
		return fmt.Sprint(got) == fmt.Sprint(want)
	}); err != nil {
		t.Fatalf("the speaker's routes never matched the table's: %v", err)
	}
}

// TestGatewayStreamMatchesSnapshot: the same random changes; the routes a
// gateway's stream accumulates must always equal a fresh snapshot of the
// gateway's networks.
func TestGatewayStreamMatchesSnapshot(t *testing.T) {
	sp := bgptest.NewFakeSpeaker()
	r, st, ctx := startRunner(t, sp)
	ch := r.WatchGateway(ctx, "g0", Resume{})
	have := map[string]*v1.Route{}
	read := func(block bool) bool {
		var u *GatewayUpdate
		var ok bool
		if block {
			select {
			case u, ok = <-ch:
			case <-time.After(time.Millisecond):
				return false
			}
		} else {
			select {
			case u, ok = <-ch:
			default:
				return false
			}
		}
		if !ok {
			t.Fatal("stream closed")
		}
		applyUpdate(have, u)
		return true
	}
	snapshot := func() map[string]*v1.Route {
		out := map[string]*v1.Route{}
		r.do(ctx, func(s *state) {
			for n := range s.gatewayNets("g0") {
				for _, rt := range s.tbl.routeMap(n) {
					a := APIRoute(n, rt)
					out[gwKey(a)] = a
				}
			}
		})
		return out
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for step := 0; step < 300; step++ {
		randomChange(t, ctx, st, sp, rng, step)
		convergeAPI(t, fmt.Sprintf("step %d", step), read, have, snapshot)
	}
	barrier(t, r, st, sp, 300)
	convergeAPI(t, "at the end", read, have, snapshot)
	t.Logf("%d routes followed through 300 random changes", len(have))
}

func gwKey(r *v1.Route) string { return r.Network + " " + r.RouteDistinguisher + ":" + r.Prefix }

// applyUpdate applies a gateway update as the agent does: a snapshot keeps
// only the routes of its scopes, then deletes, then puts.
func applyUpdate(have map[string]*v1.Route, u *GatewayUpdate) {
	if u.Snapshot {
		for k, r := range have {
			kept := false
			for _, sc := range u.Keep {
				if sc.Network == r.Network && (sc.BucketCount == 0 || slices.Contains(sc.Buckets, routedigest.Bucket(r.Prefix, r.RouteDistinguisher, sc.BucketCount))) {
					kept = true
				}
			}
			if !kept {
				delete(have, k)
			}
		}
	}
	for _, r := range u.Delete {
		delete(have, gwKey(r))
	}
	for _, r := range u.Put {
		have[gwKey(r)] = r
	}
}

func convergeAPI(t *testing.T, what string, read func(bool) bool, have map[string]*v1.Route, snapshot func() map[string]*v1.Route) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		want := snapshot()
		for read(false) {
		}
		if len(want) == len(have) {
			same := true
			for k, w := range want {
				if h, ok := have[k]; !ok || !proto.Equal(h, w) {
					same = false
					break
				}
			}
			if same {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the stream holds %d routes, a snapshot has %d", what, len(have), len(want))
		}
		read(true)
	}
}

// TestSlowWatchersAreDropped: a route watcher or gateway stream that does not
// read is dropped (its channel closed) once its buffer is full; the runner
// keeps serving everyone else, and the gateway's next stream gets a snapshot.
func TestSlowWatchersAreDropped(t *testing.T) {
	r, st, ctx := startRunner(t, nil)
	put(t, st, "endpoints/g1", &v1.Endpoint{Id: "g1", Network: "n1", Gateway: "g1", Addresses: []string{"10.1.255.1"}, Label: 16})
	put(t, st, "endpoints/g0", &v1.Endpoint{Id: "g0", Network: "n1", Gateway: "g0", Addresses: []string{"10.1.255.2"}, Label: 17})
	barrier(t, r, st, nil, 0)
	_, slow := r.watchAll(ctx, "n1")
	_, fast := r.watchAll(ctx, "n1")
	gslow := r.WatchGateway(ctx, "g0", Resume{})
	first := <-gslow
	// Every endpoint put is its own store transaction, hence its own batch.
	n := routeWatchBuffer + 10
	got := 0
	for i := 0; i < n; i++ {
		put(t, st, fmt.Sprint("endpoints/e", i), &v1.Endpoint{Id: fmt.Sprint("e", i), Network: "n1", Gateway: "g1",
			Addresses: []string{fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)}, Label: uint32(100 + i)})
		// The fast watcher keeps up.
		for b := range fast {
			got += len(b)
			break
		}
	}
	if got != n {
		t.Fatalf("the reading watcher got %d changes, want %d", got, n)
	}
	// The slow one holds a full buffer, then was closed.
	batches := 0
	for range slow {
		batches++
	}
	if batches != routeWatchBuffer {
		t.Fatalf("the slow route watcher had %d batches before it was closed, want %d", batches, routeWatchBuffer)
	}
	updates := 0
	var last int64
	for u := range gslow {
		updates++
		last = u.Revision
	}
	if updates != gatewayStreamBuffer {
		t.Fatalf("the slow gateway stream had %d updates after its first before it was closed, want %d", updates, gatewayStreamBuffer)
	}
	// The changes are logged once for the network: the agent resumes from
	// the last revision it read and gets what it missed, and from its first
	// revision every change since.
	again := r.WatchGateway(ctx, "g0", Resume{Revision: last, RunnerID: r.ID()})
	u := <-again
	if u.Snapshot || len(u.Put) != n-gatewayStreamBuffer || len(u.Delete) != 0 {
		t.Fatalf("resuming from the last revision read: snapshot=%v keep=%v with %d puts and %d deletes, want changes with %d puts",
			u.Snapshot, u.Keep, len(u.Put), len(u.Delete), n-gatewayStreamBuffer)
	}
	again = r.WatchGateway(ctx, "g0", Resume{Revision: first.Revision, RunnerID: r.ID()})
	// The n endpoints changed since.
	if u := <-again; u.Snapshot || len(u.Put) != n {
		t.Fatalf("resuming from the first revision: snapshot=%v keep=%v with %d puts, want %d", u.Snapshot, u.Keep, len(u.Put), n)
	}
	// Another runner's revision: a snapshot (no digests given).
	again = r.WatchGateway(ctx, "g0", Resume{Revision: last, RunnerID: "another"})
	if u := <-again; !u.Snapshot || len(u.Keep) != 0 || len(u.Put) != n+3 {
		t.Fatalf("from another runner's revision the gateway got snapshot=%v keep=%v with %d routes, want a snapshot of %d", u.Snapshot, u.Keep, len(u.Put), n+3)
	}
	if rs, ok := r.Routes("n1"); !ok || len(rs) != n+3 {
		t.Fatalf("Routes: %d routes", len(rs))
	}
}

// TestSlowSpeakerDoesNotHoldTheTable: while the speaker's calls are held,
// the table goes on following the store and serving watchers; the changes
// queued meanwhile reach the speaker merged into one batch once it is free.
func TestSlowSpeakerDoesNotHoldTheTable(t *testing.T) {
	sp := bgptest.NewFakeSpeaker()
	r, st, ctx := startRunner(t, sp)
	_, ch := r.watchAll(ctx, "n1")
	release := sp.Hold()
	defer release()
	const n = 50
	have := map[string]bool{}
	for i := 0; i < n; i++ {
		put(t, st, fmt.Sprint("endpoints/e", i), &v1.Endpoint{Id: fmt.Sprint("e", i), Network: "n1", Gateway: "g0",
			Addresses: []string{fmt.Sprintf("10.1.0.%d", i+1)}, Label: uint32(100 + i)})
		// Withdrawn before the speaker is free: never announced.
		if i%10 == 5 {
			st.Txn(ctx, nil, []store.Op{store.Delete(fmt.Sprint("endpoints/e", i))})
		}
	}
	deadline := time.After(10 * time.Second)
	want := map[string]bool{}
	for i := 0; i < n; i++ {
		if i%10 != 5 {
			want[fmt.Sprint("e", i)] = true
		}
	}
	// The last change is e49's put: once the watch has it, it has all.
	for fmt.Sprint(have) != fmt.Sprint(want) {
		select {
		case b := <-ch:
			for _, c := range b {
				if c.Delete {
					delete(have, c.Route.Endpoint)
				} else {
					have[c.Route.Endpoint] = true
				}
			}
		case <-deadline:
			t.Fatalf("route watch has %d of %d routes while the speaker was held", len(have), n-n/10)
		}
	}
	if rs, _ := r.Routes("n1"); len(rs) != n-n/10 {
		t.Fatalf("Routes: %d, want %d", len(rs), n-n/10)
	}
	if st := r.Stats(); st.Announced != n-n/10 {
		t.Fatalf("Stats: %+v", st)
	}
	if len(sp.Announced()) != 0 {
		t.Fatal("the speaker was changed while held")
	}
	calls := sp.Calls()
	release()
	waitAnnounced(t, sp, n-n/10)
	// The held batch carried the first store batch; everything after it
	// was merged into one more: at most a withdrawal and an announcement
	// each, whatever the number of store changes.
	if c := sp.Calls() - calls; c > 4 {
		t.Fatalf("%d speaker calls for the queued changes, want them merged into 2 batches (at most 4 calls)", c)
	}
}

// TestPeersFromTheStore: peers stored under PeerPrefix are configured on the
// speaker, replaced when changed and deleted when removed.
func TestPeersFromTheStore(t *testing.T) {
	sp := bgptest.NewFakeSpeaker()
	r, st, ctx := startRunner(t, sp)
	a := netip.MustParseAddr("192.0.2.50")
	p := bgp.PeerConfig{Address: a, ASN: 65000}
	if _, err := st.Txn(ctx, nil, []store.Op{store.Put(PeerPrefix+a.String(), EncodePeer(p))}); err != nil {
		t.Fatal(err)
	}
	waitPeers := func(want map[netip.Addr]bgp.PeerConfig) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for fmt.Sprint(sp.Peers()) != fmt.Sprint(want) {
			if time.Now().After(deadline) {
				t.Fatalf("speaker peers %v, want %v", sp.Peers(), want)
			}
			barrier(t, r, st, nil, 0)
		}
	}
	waitPeers(map[netip.Addr]bgp.PeerConfig{a: p})
	p.ASN = 65001
	st.Txn(ctx, nil, []store.Op{store.Put(PeerPrefix+a.String(), EncodePeer(p))})
	waitPeers(map[netip.Addr]bgp.PeerConfig{a: p})
	st.Txn(ctx, nil, []store.Op{store.Delete(PeerPrefix + a.String())})
	waitPeers(map[netip.Addr]bgp.PeerConfig{})
	if ps, err := r.Peers(ctx); err != nil || len(ps) != 0 {
		t.Fatalf("Peers: %v %v", ps, err)
	}
}

// TestRunnerStops: once Run returns, every watcher's channel is closed, the
// queries answer at once, and no goroutine of the runner is left.
func TestRunnerStops(t *testing.T) {
	before := runtime.NumGoroutine()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sp := bgptest.NewFakeSpeaker()
	r := NewRunner(st, sp, 64512, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	<-r.Ready()
	wctx, wcancel := context.WithCancel(context.Background())
	_, rch := r.watchAll(wctx, "n1")
	gch := r.WatchGateway(wctx, "g0", Resume{})
	<-gch
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, ok := <-rch; ok {
		t.Fatal("route watch still open")
	}
	if _, ok := <-gch; ok {
		t.Fatal("gateway stream still open")
	}
	if _, ok := r.Routes("n1"); ok {
		t.Fatal("Routes answered for a stopped runner")
	}
	if _, ch := r.watchAll(wctx, "n1"); ch == nil {
		t.Fatal("nil channel")
	} else if _, ok := <-ch; ok {
		t.Fatal("a watch of a stopped runner is open")
	}
	wcancel()
	st.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
