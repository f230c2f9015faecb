package vpn

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
	"github.com/iotfabric/iotfabric/pkg/routedigest"
	"github.com/iotfabric/iotfabric/pkg/store"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// digestsOf is what an agent holding routes sends: per network, the digest
// with pkg/routedigest's bucket count.
func digestsOf(have map[string]*v1.Route) []*v1.RouteDigest {
	byNet := map[string][]*v1.Route{}
	for _, r := range have {
		byNet[r.Network] = append(byNet[r.Network], r)
	}
	var out []*v1.RouteDigest
	for n, rs := range byNet {
		d := routedigest.Of(rs)
		out = append(out, &v1.RouteDigest{Network: n, Count: uint64(d.Count), Buckets: d.Buckets})
	}
	return out
}

// TestResumeByDigests: a gateway that followed one runner resumes at
// another runner over the same store (a restart, another controller): with
// its digests it gets nothing when nothing changed, and only the routes of
// the buckets that differ after changes; what it then holds equals the
// table. Without digests it gets a snapshot.
func TestResumeByDigests(t *testing.T) {
	r1, st, ctx := startRunner(t, nil)
	const n = 500
	for i := range n {
		put(t, st, fmt.Sprint("endpoints/e", i), &v1.Endpoint{Id: fmt.Sprint("e", i), Network: "n1", Gateway: fmt.Sprint("g", 1+i%2),
			Addresses: []string{fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)}, Label: uint32(100 + i)})
	}
	put(t, st, "endpoints/own", &v1.Endpoint{Id: "own", Network: "n1", Gateway: "g0", Addresses: []string{"10.1.9.1"}, Label: 16})
	barrier(t, r1, st, nil, 0)
	have := map[string]*v1.Route{}
	c1, cancel1 := context.WithCancel(ctx)
	applyUpdate(have, <-r1.WatchGateway(c1, "g0", Resume{}))
	cancel1()
	if len(have) != n+2 {
		t.Fatalf("first snapshot: %d routes, want %d", len(have), n+2)
	}

	// Another runner over the same store.
	r2 := NewRunner(st, nil, 64512, nil)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r2.Run(rctx) }()
	defer func() { cancel(); <-done }()
	<-r2.Ready()
	c2, cancel2 := context.WithCancel(ctx)
	u := <-r2.WatchGateway(c2, "g0", Resume{Revision: 1, RunnerID: r1.ID(), Digests: digestsOf(have)})
	cancel2()
	if !u.Snapshot || len(u.Put)+len(u.Delete) != 0 || len(u.Keep) != 1 || u.Keep[0].BucketCount != 0 {
		t.Fatalf("nothing changed: snapshot=%v keep=%+v, %d puts %d deletes; want the whole network kept and nothing sent", u.Snapshot, u.Keep, len(u.Put), len(u.Delete))
	}
	applyUpdate(have, u)

	// Three changes while the gateway was away: a new route, a relabelled
	// one, a deleted one.
	put(t, st, "endpoints/new", &v1.Endpoint{Id: "new", Network: "n1", Gateway: "g1", Addresses: []string{"10.1.8.1"}, Label: 9000})
	put(t, st, "endpoints/e7", &v1.Endpoint{Id: "e7", Network: "n1", Gateway: "g2", Addresses: []string{"10.1.0.8"}, Label: 9001})
	if _, err := st.Txn(ctx, nil, []store.Op{store.Delete("endpoints/e9")}); err != nil {
		t.Fatal(err)
	}
	barrier(t, r2, st, nil, 1)
	c3, cancel3 := context.WithCancel(ctx)
	defer cancel3()
	u = <-r2.WatchGateway(c3, "g0", Resume{Revision: 1, RunnerID: r1.ID(), Digests: digestsOf(have)})
	buckets := routedigest.BucketsFor(len(have))
	if len(u.Keep) != 1 || u.Keep[0].BucketCount != buckets || len(u.Put) > 4*(len(have)/buckets+8) {
		t.Fatalf("after 4 changes (with the barrier's): keep %d of %d buckets, %d routes sent of %d", len(u.Keep[0].Buckets), buckets, len(u.Put), len(have))
	}
	applyUpdate(have, u)
	want := map[string]*v1.Route{}
	rs, _ := r2.Routes("n1")
	for _, rt := range rs {
		a := APIRoute("n1", rt)
		want[gwKey(a)] = a
	}
	if len(have) != len(want) {
		t.Fatalf("after the digest resume the gateway holds %d routes, the table has %d", len(have), len(want))
	}
	for k, w := range want {
		if h := have[k]; h == nil || h.Label != w.Label {
			t.Fatalf("route %s: have %v, want %v", k, h, w)
		}
	}
	t.Logf("%d routes, %d buckets: a resume after 4 changes sent %d routes", len(have), buckets, len(u.Put))

	// Without digests: a snapshot.
	c4, cancel4 := context.WithCancel(ctx)
	defer cancel4()
	if u := <-r2.WatchGateway(c4, "g0", Resume{Revision: 1, RunnerID: r1.ID()}); !u.Snapshot || len(u.Keep) != 0 || len(u.Put) != len(want) {
		t.Fatalf("without digests: snapshot=%v keep=%v %d routes", u.Snapshot, u.Keep, len(u.Put))
	}
}

// EndGatewayStreams closes the open gateway streams and every one opened
// after it (a stopping controller).
func TestEndGatewayStreams(t *testing.T) {
	r, _, ctx := startRunner(t, bgptest.NewFakeSpeaker())
	ch := r.WatchGateway(ctx, "g0", Resume{})
	if u, ok := <-ch; !ok || !u.Snapshot {
		t.Fatalf("first update: %v %v", u, ok)
	}
	if err := r.EndGatewayStreams(ctx); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]<-chan *GatewayUpdate{"open": ch, "opened after": r.WatchGateway(ctx, "g1", Resume{})} {
		select {
		case u, ok := <-c:
			if ok {
				t.Errorf("%s stream: got %+v, want it closed", name, u)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s stream still open", name)
		}
	}
}
