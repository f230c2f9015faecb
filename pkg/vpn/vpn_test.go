package vpn

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

var (
	udp = v1.Encapsulation_ENCAPSULATION_MPLS_O_UDP
	gre = v1.Encapsulation_ENCAPSULATION_MPLS_O_GRE
)

func keys(rs []bgp.Route) []string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s %d %v %v", r.Key(), r.Label, r.RouteTargets, r.Encaps))
	}
	sort.Strings(out)
	return out
}

func TestTableFollowsState(t *testing.T) {
	tb := NewTable(64512, nil)
	tb.PutNetwork(&v1.VirtualNetwork{Name: "n", Id: 3, ExportRouteTargets: []string{"target:64512:100"}, Encapsulations: []v1.Encapsulation{udp, gre}})
	tb.PutGateway(&v1.Gateway{Name: "g", UnderlayAddress: "192.0.2.1", Encapsulations: []v1.Encapsulation{gre}})
	tb.PutEndpoint(&v1.Endpoint{Id: "e", Network: "n", Gateway: "g", Addresses: []string{"10.0.0.1", "fd00::1"}, Label: 100})
	tb.PutEndpoint(&v1.Endpoint{Id: "nolabel", Network: "n", Gateway: "g", Addresses: []string{"10.0.0.2"}})
	ann, wd, nets := tb.Flush()
	want := []string{
		"192.0.2.1:3:10.0.0.1/32 100 [target:64512:8000003 target:64512:100] [MPLSoGRE]",
		"192.0.2.1:3:fd00::1/128 100 [target:64512:8000003 target:64512:100] [MPLSoGRE]",
	}
	if fmt.Sprint(keys(ann)) != fmt.Sprint(want) || len(wd) != 0 || fmt.Sprint(nets) != "[n]" {
		t.Fatalf("first flush: announce %v withdraw %v nets %v", keys(ann), wd, nets)
	}
	if ann, wd, _ := tb.Flush(); len(ann)+len(wd) != 0 {
		t.Fatalf("a flush with no change sent %d/%d", len(ann), len(wd))
	}
	// The gateway gains MPLSoUDP: the routes are re-announced with both.
	tb.PutGateway(&v1.Gateway{Name: "g", UnderlayAddress: "192.0.2.1", Encapsulations: []v1.Encapsulation{udp, gre}})
	ann, _, _ = tb.Flush()
	if len(ann) != 2 || fmt.Sprint(ann[0].Encaps) != "[MPLSoUDP MPLSoGRE]" {
		t.Fatalf("after the gateway change: %v", keys(ann))
	}
	// The label changes: same keys, re-announced.
	tb.PutEndpoint(&v1.Endpoint{Id: "e", Network: "n", Gateway: "g", Addresses: []string{"10.0.0.1", "fd00::1"}, Label: 200})
	ann, wd, _ = tb.Flush()
	if len(ann) != 2 || ann[0].Label != 200 || len(wd) != 0 {
		t.Fatalf("label change: announce %v withdraw %v", keys(ann), wd)
	}
	// The label goes away: withdrawn.
	tb.PutEndpoint(&v1.Endpoint{Id: "e", Network: "n", Gateway: "g", Addresses: []string{"10.0.0.1", "fd00::1"}})
	ann, wd, _ = tb.Flush()
	if len(ann) != 0 || len(wd) != 2 {
		t.Fatalf("label removed: announce %v withdraw %v", keys(ann), wd)
	}
	tb.PutEndpoint(&v1.Endpoint{Id: "e", Network: "n", Gateway: "g", Addresses: []string{"10.0.0.1"}, Label: 300})
	tb.Flush()
	// Deleting the network withdraws everything in it.
	tb.DeleteNetwork("n")
	ann, wd, _ = tb.Flush()
	if len(ann) != 0 || len(wd) != 1 {
		t.Fatalf("network deleted: announce %v withdraw %v", keys(ann), wd)
	}
}

func TestTableImportsByRouteTarget(t *testing.T) {
	tb := NewTable(64512, nil)
	tb.PutNetwork(&v1.VirtualNetwork{Name: "a", Id: 1, ImportRouteTargets: []string{"target:65000:5"}})
	tb.PutNetwork(&v1.VirtualNetwork{Name: "b", Id: 2})
	rd, _ := bgp.ParseRD("192.0.2.9:1")
	mk := func(pfx string, rts ...bgp.RouteTarget) bgp.RouteEvent {
		return bgp.RouteEvent{Peer: netip.MustParseAddr("10.0.0.9"), Route: bgp.Route{Prefix: netip.MustParsePrefix(pfx), RD: rd, Label: 50,
			NextHop: netip.MustParseAddr("192.0.2.9"), RouteTargets: rts}}
	}
	tb.Received([]bgp.RouteEvent{
		mk("10.50.0.0/24", bgp.RouteTarget{ASN: 65000, Value: 5}),
		mk("10.60.0.0/24", bgp.AutoRouteTarget(64512, 2)),
		mk("10.70.0.0/24", bgp.RouteTarget{ASN: 1, Value: 1}),
	})
	_, _, nets := tb.Flush()
	if fmt.Sprint(nets) != "[a b]" {
		t.Fatalf("touched networks %v", nets)
	}
	ra, rb := tb.Routes("a"), tb.Routes("b")
	if len(ra) != 1 || ra[0].Prefix.String() != "10.50.0.0/24" || ra[0].Origin != Imported {
		t.Fatalf("a imports %v", ra)
	}
	if len(rb) != 1 || rb[0].Prefix.String() != "10.60.0.0/24" {
		t.Fatalf("b imports %v (its automatic route target)", rb)
	}
	ev := mk("10.50.0.0/24")
	ev.Withdraw = true
	tb.Received([]bgp.RouteEvent{ev})
	if len(tb.Routes("a")) != 0 {
		t.Fatal("withdrawn route still imported")
	}
}

// fakeSpeaker records what the runner asks of a speaker.
type fakeSpeaker struct {
	mu        sync.Mutex
	started   []bgp.Route
	announced map[bgp.RouteKey]bgp.Route
	calls     int
	recv      chan []bgp.RouteEvent
}

func newFake() *fakeSpeaker {
	return &fakeSpeaker{announced: map[bgp.RouteKey]bgp.Route{}, recv: make(chan []bgp.RouteEvent, 10)}
}

func (f *fakeSpeaker) Start(_ context.Context, initial []bgp.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.started = initial
	for _, r := range initial {
		f.announced[r.Key()] = r
	}
	return nil
}
func (f *fakeSpeaker) Stop(context.Context) error                          { return nil }
func (f *fakeSpeaker) AddPeer(context.Context, bgp.PeerConfig) error       { return nil }
func (f *fakeSpeaker) DeletePeer(context.Context, netip.Addr) error        { return nil }
func (f *fakeSpeaker) ListPeers(context.Context) ([]bgp.PeerStatus, error) { return nil, nil }
func (f *fakeSpeaker) Announce(_ context.Context, rs []bgp.Route) error {
	f.mu.Lock()
	for _, r := range rs {
		f.announced[r.Key()] = r
	}
	f.calls++
	f.mu.Unlock()
	return nil
}
func (f *fakeSpeaker) Withdraw(_ context.Context, ks []bgp.RouteKey) error {
	f.mu.Lock()
	for _, k := range ks {
		delete(f.announced, k)
	}
	f.calls++
	f.mu.Unlock()
	return nil
}
func (f *fakeSpeaker) Subscribe(ctx context.Context) (<-chan []bgp.RouteEvent, error) {
	return f.recv, nil
}
func (f *fakeSpeaker) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.announced)
}

func put(t *testing.T, st store.Store, key string, m proto.Message) {
	b, _ := proto.Marshal(m)
	if _, err := st.Txn(context.Background(), nil, []store.Op{store.Put(key, b)}); err != nil {
		t.Fatal(err)
	}
}

func TestRunnerFollowsTheStore(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	put(t, st, "networks/n", &v1.VirtualNetwork{Name: "n", Id: 1, Encapsulations: []v1.Encapsulation{udp}})
	put(t, st, "gateways/g", &v1.Gateway{Name: "g", UnderlayAddress: "192.0.2.1", Encapsulations: []v1.Encapsulation{udp}})
	put(t, st, "endpoints/e0", &v1.Endpoint{Id: "e0", Network: "n", Gateway: "g", Addresses: []string{"10.0.0.1"}, Label: 16})
	sp := newFake()
	r := NewRunner(st, sp, 64512, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-r.Ready()
	if len(sp.started) != 1 {
		t.Fatalf("the speaker started with %d routes, want the one existing endpoint's", len(sp.started))
	}
	cur, ch := r.WatchRoutes(ctx, "n")
	if len(cur) != 1 {
		t.Fatalf("route listing %v", cur)
	}
	for i := 1; i <= 100; i++ {
		put(t, st, fmt.Sprintf("endpoints/e%d", i), &v1.Endpoint{Id: fmt.Sprint("e", i), Network: "n", Gateway: "g", Addresses: []string{fmt.Sprintf("10.0.1.%d", i)}, Label: uint32(100 + i)})
	}
	deadline := time.After(10 * time.Second)
	seen := 1
	for seen < 101 {
		select {
		case chs := <-ch:
			seen += len(chs)
		case <-deadline:
			t.Fatalf("route watch saw %d of 101 routes; speaker holds %d", seen, sp.count())
		}
	}
	if sp.count() != 101 {
		t.Fatalf("speaker holds %d routes, want 101", sp.count())
	}
	if _, err := st.Txn(ctx, nil, []store.Op{store.Delete("endpoints/e5")}); err != nil {
		t.Fatal(err)
	}
	select {
	case chs := <-ch:
		if len(chs) != 1 || !chs[0].Delete || chs[0].Route.Endpoint != "e5" {
			t.Fatalf("delete published as %+v", chs)
		}
	case <-deadline:
		t.Fatal("no change published for the delete")
	}
	if sp.count() != 100 {
		t.Fatalf("speaker holds %d routes after a delete, want 100", sp.count())
	}
}

func FuzzDecodePeer(f *testing.F) {
	f.Add(EncodePeer(bgp.PeerConfig{Address: netip.MustParseAddr("10.0.0.1"), ASN: 64512, Password: "x"}))
	f.Add([]byte(`{"address":"::1","asn":0}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePeer(b)
		if err != nil {
			return
		}
		again, err := DecodePeer(EncodePeer(p))
		if err != nil || again.Address != p.Address || again.ASN != p.ASN || again.Password != p.Password {
			t.Fatalf("round trip %+v -> %+v %v", p, again, err)
		}
	})
}

// TestGatewayStreamMatchesSnapshot applies random endpoint, gateway and
// network changes; the routes a gateway's stream accumulates (from deltas and
// recomputations alike) must always equal a fresh snapshot.
func TestGatewayStreamMatchesSnapshot(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i, n := range []string{"n1", "n2"} {
		put(t, st, "networks/"+n, &v1.VirtualNetwork{Name: n, Id: uint32(i + 1), Encapsulations: []v1.Encapsulation{udp, gre}})
	}
	for i := 0; i < 3; i++ {
		put(t, st, fmt.Sprint("gateways/g", i), &v1.Gateway{Name: fmt.Sprint("g", i), UnderlayAddress: fmt.Sprintf("192.0.2.%d", i+1), Encapsulations: []v1.Encapsulation{udp}})
	}
	r := NewRunner(st, nil, 64512, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-r.Ready()
	ch := r.WatchGateway(ctx, "g0", 0, "")
	have := map[string]GatewayRoute{}
	apply := func(u GatewayUpdate) {
		if u.Snapshot {
			clear(have)
		}
		for _, rt := range u.Put {
			have[rt.Network+" "+rt.Key().String()] = rt
		}
		for _, rt := range u.Delete {
			delete(have, rt.Network+" "+rt.Key().String())
		}
	}
	apply(<-ch)
	snapshot := func() map[string]GatewayRoute {
		r.mu.Lock()
		defer r.mu.Unlock()
		out := map[string]GatewayRoute{}
		for n := range r.gatewayNetsLocked("g0") {
			for k, rt := range r.netRoutesLocked(n) {
				out[n+" "+k.String()] = rt
			}
		}
		return out
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for step := 0; step < 300; step++ {
		id := fmt.Sprint("e", rng.IntN(20))
		net := []string{"n1", "n2"}[rng.IntN(2)]
		switch rng.IntN(10) {
		case 0:
			st.Txn(ctx, nil, []store.Op{store.Delete("endpoints/" + id)})
		case 1:
			i := rng.IntN(3)
			encs := [][]v1.Encapsulation{{udp}, {gre}, {udp, gre}}[rng.IntN(3)]
			put(t, st, fmt.Sprint("gateways/g", i), &v1.Gateway{Name: fmt.Sprint("g", i), UnderlayAddress: fmt.Sprintf("192.0.2.%d", i+1), Encapsulations: encs})
		case 2:
			put(t, st, "networks/"+net, &v1.VirtualNetwork{Name: net, Id: map[string]uint32{"n1": 1, "n2": 2}[net], Encapsulations: []v1.Encapsulation{udp, gre},
				ExportRouteTargets: []string{fmt.Sprint("target:64512:", rng.IntN(5))}})
		default:
			if kv, err := st.Get(ctx, "endpoints/"+id); err == nil {
				var e v1.Endpoint
				proto.Unmarshal(kv.Value, &e)
				net = e.Network // an endpoint never changes network
				e.Label = uint32(rng.IntN(3) * (16 + step))
				put(t, st, "endpoints/"+id, &e)
				break
			}
			put(t, st, "endpoints/"+id, &v1.Endpoint{Id: id, Network: net, Gateway: fmt.Sprint("g", rng.IntN(3)),
				Addresses: []string{fmt.Sprintf("10.%d.0.%d", len(net), step%250+1)}, Label: uint32(16 + step)})
		}
		// Wait until the runner has applied this write: the stream is then
		// quiet, and what it carried must equal the snapshot.
		deadline := time.After(5 * time.Second)
		for {
			select {
			case u, ok := <-ch:
				if !ok {
					t.Fatal("stream closed")
				}
				apply(u)
				continue
			case <-time.After(20 * time.Millisecond):
			case <-deadline:
				t.Fatalf("step %d: stream never matched the snapshot", step)
			}
			if fmt.Sprint(keysOf(have)) == fmt.Sprint(keysOf(snapshot())) {
				break
			}
		}
	}
	got, want := have, snapshot()
	for k, rt := range want {
		if g, ok := got[k]; !ok || !g.Equal(rt.Route) {
			t.Fatalf("%s: stream has %+v, snapshot %+v", k, g, rt)
		}
	}
	t.Logf("%d routes followed through 300 random changes", len(want))
}

func keysOf(m map[string]GatewayRoute) []string {
	var out []string
	for k, rt := range m {
		out = append(out, fmt.Sprintf("%s %d %v %v", k, rt.Label, rt.RouteTargets, rt.Encaps))
	}
	sort.Strings(out)
	return out
}
