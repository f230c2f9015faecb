package vpn

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
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
		"192.0.2.1:3:10.0.0.1/32 100 [target:64512:8000003 target:64512:100] [mplsogre]",
		"192.0.2.1:3:fd00::1/128 100 [target:64512:8000003 target:64512:100] [mplsogre]",
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
	if len(ann) != 2 || fmt.Sprint(ann[0].Encaps) != "[mplsoudp mplsogre]" {
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
	tb.Flush()
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
	if d := tb.Deltas(); len(d["a"].Put) != 1 || len(d["b"].Put) != 1 || d["a"].Full || d["b"].Full {
		t.Fatalf("deltas %+v: want each network's imported route put", d)
	}
	ev := mk("10.50.0.0/24")
	ev.Withdraw = true
	tb.Received([]bgp.RouteEvent{ev})
	if len(tb.Routes("a")) != 0 {
		t.Fatal("withdrawn route still imported")
	}
	// A route sent, changed and withdrawn between two flushes is no change;
	// one whose route targets change moves from b to a.
	tb.Received([]bgp.RouteEvent{mk("10.80.0.0/24", bgp.AutoRouteTarget(64512, 2)), mk("10.80.0.0/24", bgp.AutoRouteTarget(64512, 1))})
	w := mk("10.80.0.0/24")
	w.Withdraw = true
	tb.Received([]bgp.RouteEvent{w, mk("10.60.0.0/24", bgp.RouteTarget{ASN: 65000, Value: 5})})
	_, _, nets = tb.Flush()
	d := tb.Deltas()
	if fmt.Sprint(nets) != "[a b]" || len(d["a"].Put) != 1 || len(d["a"].Del) != 1 || len(d["b"].Del) != 1 || len(d["b"].Put) != 0 ||
		d["a"].Put[0].Prefix.String() != "10.60.0.0/24" || d["b"].Del[0].Prefix.String() != "10.60.0.0/24" || d["b"].Del[0].Origin != Imported {
		t.Fatalf("nets %v deltas %+v", nets, d)
	}
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
	sp := bgptest.NewFakeSpeaker()
	r := NewRunner(st, sp, 64512, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-r.Ready()
	if len(sp.Started()) != 1 {
		t.Fatalf("the speaker started with %d routes, want the one existing endpoint's", len(sp.Started()))
	}
	cur, ch := r.watchAll(ctx, "n")
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
			t.Fatalf("route watch saw %d of 101 routes; speaker holds %d", seen, len(sp.Announced()))
		}
	}
	waitAnnounced(t, sp, 101)
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
	waitAnnounced(t, sp, 100)
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

// waitAnnounced waits until the speaker holds n routes.
func waitAnnounced(t *testing.T, sp *bgptest.FakeSpeaker, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sp.WaitFor(ctx, func(m map[bgp.RouteKey]bgp.Route) bool { return len(m) == n }); err != nil {
		t.Fatalf("speaker holds %d routes, want %d: %v", len(sp.Announced()), n, err)
	}
}
