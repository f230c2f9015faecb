package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// txnCounter counts the transactions and writes made through it.
type txnCounter struct {
	store.Store
	txns, writes atomic.Int64
}

func (s *txnCounter) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, error) {
	s.txns.Add(1)
	s.writes.Add(int64(len(ops)))
	return s.Store.Txn(ctx, conds, ops)
}

// putHeartbeat writes instance's liveness key as of at.
func putHeartbeat(t *testing.T, st store.Store, instance string, at time.Time, interval time.Duration) {
	t.Helper()
	v, _ := json.Marshal(heartbeat{Time: at, IntervalMS: interval.Milliseconds()})
	if _, err := st.Txn(context.Background(), nil, []store.Op{store.Put(keys.Controller(instance), v)}); err != nil {
		t.Fatal(err)
	}
}

func gatewayState(t *testing.T, c *Controller, gw string) v1.GatewayState {
	t.Helper()
	g, err := c.GetGateway(context.Background(), gw)
	if err != nil {
		t.Fatal(err)
	}
	return g.State
}

// While every controller is alive, a sweep is one heartbeat write and one
// listing of the liveness keys, whatever the number of gateways; the stream
// markers are listed only when a dead controller shows up.
func TestSweepWorkBounded(t *testing.T) {
	c, cs := newCounting(t)
	tc := &txnCounter{Store: cs}
	c.st = tc
	ctx := context.Background()
	for i := range 50 {
		gw := fmt.Sprint("gw-", i)
		must[*v1.Gateway](t)(c.CreateGateway(ctx, &v1.Gateway{Name: gw, UnderlayAddress: "192.0.2.1"}))
		if err := c.OpenGatewayStream(ctx, gw, "other-1"); err != nil {
			t.Fatal(err)
		}
	}
	putHeartbeat(t, tc, "other", time.Now(), time.Hour)
	s := c.NewSweeper(LivenessConfig{Instance: "self", Interval: time.Hour})
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cs.reset()
	tc.txns.Store(0)
	tc.writes.Store(0)
	const rounds = 5
	for range rounds {
		if err := s.beat(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.sweep(ctx, false); err != nil {
			t.Fatal(err)
		}
	}
	_, _, lists := cs.reset()
	if len(lists) != rounds || tc.txns.Load() != rounds || tc.writes.Load() != rounds {
		t.Errorf("%d sweeps with every controller alive: lists %v, %d transactions writing %d keys; want %d listings of %s and %d single writes",
			rounds, lists, tc.txns.Load(), tc.writes.Load(), rounds, keys.Controllers, rounds)
	}
	for _, p := range lists {
		if p != keys.Controllers {
			t.Errorf("sweep listed %s with every controller alive", p)
		}
	}

	// other dies: the next sweep lists the markers and marks its gateways down.
	putHeartbeat(t, tc, "other", time.Now().Add(-4*time.Hour), time.Hour)
	if err := s.sweep(ctx, false); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if st := gatewayState(t, c, fmt.Sprint("gw-", i)); st != v1.GatewayState_GATEWAY_STATE_DOWN {
			t.Fatalf("gw-%d %v after its controller died", i, st)
		}
	}
	for _, p := range []string{keys.Streams, keys.Controller("other")} {
		if kvs, _, _ := tc.List(ctx, p); len(kvs) != 0 {
			t.Errorf("%s left after the sweep: %v", p, kvs)
		}
	}
}

// Several controllers sweeping the same dead controller at once: each
// marker is deleted once, every gateway without a live stream is down, and
// the gateways a live controller streams to stay up.
func TestConcurrentSweepers(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	var ctls []*Controller
	var sweepers []*Sweeper
	var swept atomic.Int64
	for i := range 4 {
		c := New(st, Config{})
		ctls = append(ctls, c)
		sweepers = append(sweepers, c.NewSweeper(LivenessConfig{Instance: fmt.Sprint("live", i), Interval: time.Hour,
			OnSwept: func(n int) { swept.Add(int64(n)) }}))
		if err := sweepers[i].beat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	const n = 40
	c := ctls[0]
	for i := range n {
		gw := fmt.Sprint("gw-", i)
		must[*v1.Gateway](t)(c.CreateGateway(ctx, &v1.Gateway{Name: gw, UnderlayAddress: "192.0.2.1"}))
		for _, dead := range []string{"dead1-1", "dead1-2", "dead2-1"} {
			if err := c.OpenGatewayStream(ctx, gw, dead); err != nil {
				t.Fatal(err)
			}
		}
		if i%2 == 0 { // a live controller streams to the even gateways
			if err := ctls[1].OpenGatewayStream(ctx, gw, "live1-7"); err != nil {
				t.Fatal(err)
			}
		}
	}
	putHeartbeat(t, st, "dead1", time.Now().Add(-time.Minute), time.Second)
	// dead2 has no liveness key at all; the sweeps that list every marker
	// (at start) remove its markers too.
	var wg sync.WaitGroup
	errs := make(chan error, len(sweepers))
	for _, s := range sweepers {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- s.sweep(ctx, true) }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := swept.Load(); got != 3*n {
		t.Errorf("sweepers deleted %d markers in all; want %d (each once)", got, 3*n)
	}
	for i := range n {
		gw := fmt.Sprint("gw-", i)
		want := v1.GatewayState_GATEWAY_STATE_DOWN
		if i%2 == 0 {
			want = v1.GatewayState_GATEWAY_STATE_UP
		}
		if s := gatewayState(t, c, gw); s != want {
			t.Errorf("%s %v, want %v", gw, s, want)
		}
		markers, _, _ := st.List(ctx, keys.GatewayStreams(gw))
		if want := 1 - i%2; len(markers) != want {
			t.Errorf("%s markers %v, want %d", gw, markers, want)
		}
	}
	if kvs, _, _ := st.List(ctx, keys.Controller("dead1")); len(kvs) != 0 {
		t.Errorf("dead controller's liveness key left: %v", kvs)
	}
}

// A controller found dead by another one (its heartbeat late, its markers
// swept) writes its markers again at its next heartbeat.
func TestFoundDeadMarksAgain(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	a, b := New(st, Config{}), New(st, Config{})
	sa := a.NewSweeper(LivenessConfig{Instance: "a", Interval: time.Hour})
	sb := b.NewSweeper(LivenessConfig{Instance: "b", Interval: time.Hour})
	for _, s := range []*Sweeper{sa, sb} {
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	must[*v1.Gateway](t)(a.CreateGateway(ctx, &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.1"}))
	if err := a.OpenGatewayStream(ctx, "gw", "a-1"); err != nil {
		t.Fatal(err)
	}
	// a's heartbeat is late: b sweeps it.
	putHeartbeat(t, st, "a", time.Now().Add(-4*time.Hour), time.Hour)
	if err := sb.sweep(ctx, false); err != nil {
		t.Fatal(err)
	}
	if s := gatewayState(t, b, "gw"); s != v1.GatewayState_GATEWAY_STATE_DOWN {
		t.Fatalf("gateway %v after its controller was found dead", s)
	}
	if err := sa.beat(ctx); err != nil {
		t.Fatal(err)
	}
	if s := gatewayState(t, b, "gw"); s != v1.GatewayState_GATEWAY_STATE_UP {
		t.Fatalf("gateway %v after its controller's next heartbeat", s)
	}
	if _, err := st.Get(ctx, keys.GatewayStream("gw", "a-1")); err != nil {
		t.Fatalf("marker not written again: %v", err)
	}
	// A clean stop removes a's marker and liveness key.
	if err := sa.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if s := gatewayState(t, b, "gw"); s != v1.GatewayState_GATEWAY_STATE_DOWN {
		t.Fatalf("gateway %v after its controller stopped", s)
	}
	for _, p := range []string{keys.Streams, keys.Controller("a")} {
		if kvs, _, _ := st.List(ctx, p); len(kvs) != 0 {
			t.Errorf("%s left after a clean stop: %v", p, kvs)
		}
	}
}

// A starting sweeper does not make its caller wait for the markers of a
// dead instance: Start only beats, Run sweeps them at once (not after an
// interval).
func TestFirstSweepInRun(t *testing.T) {
	st := openBolt(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := New(st, Config{})
	const n = 20
	deadInstanceStreams(ctx, t, c, n)
	s := c.NewSweeper(LivenessConfig{Instance: "self", Interval: time.Hour})
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if kvs, _, _ := st.List(ctx, keys.Streams); len(kvs) != n {
		t.Fatalf("Start swept: %d markers left of %d", len(kvs), n)
	}
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		kvs, _, _ := st.List(ctx, keys.Streams)
		if len(kvs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d markers of a dead instance left 10 s after Run started (interval 1 h)", len(kvs))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := gatewayState(t, c, "gw-0"); s != v1.GatewayState_GATEWAY_STATE_DOWN {
		t.Errorf("gw-0 %v after its only controller was swept", s)
	}
	cancel()
	<-done
}

// slowTxns delays every transaction, as a loaded etcd does.
type slowTxns struct {
	store.Store
	delay time.Duration
}

func (s slowTxns) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, error) {
	time.Sleep(s.delay)
	return s.Store.Txn(ctx, conds, ops)
}

// A sweep longer than the heartbeat interval (a dead controller's many
// gateways on a slow store) keeps this instance's heartbeat current: before,
// the sweeping controller's own key went stale and the others found it dead
// too, swept its markers and made it write them all again.
func TestLongSweepKeepsHeartbeat(t *testing.T) {
	st := openBolt(t)
	ctx := context.Background()
	const n, interval = 60, 100 * time.Millisecond
	deadInstanceStreams(ctx, t, New(st, Config{}), n)
	c := New(slowTxns{Store: st, delay: 10 * time.Millisecond}, Config{})
	s := c.NewSweeper(LivenessConfig{Instance: "self", Interval: interval})
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.sweep(ctx, true); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if took < 3*interval {
		t.Fatalf("the sweep took %v, not several intervals: the test proves nothing", took)
	}
	kv, err := st.Get(ctx, keys.Controller("self"))
	if err != nil {
		t.Fatal(err)
	}
	var hb heartbeat
	if err := json.Unmarshal(kv.Value, &hb); err != nil {
		t.Fatal(err)
	}
	if age := time.Since(hb.Time); age > 2*interval {
		t.Errorf("after a sweep of %v the heartbeat is %v old (interval %v): the others would find this controller dead", took, age.Round(time.Millisecond), interval)
	}
}

// deadInstanceStreams creates n gateways (gw-0...) each with a stream
// marker of instance "dead", whose heartbeat is an hour old.
func deadInstanceStreams(ctx context.Context, t *testing.T, c *Controller, n int) {
	t.Helper()
	for i := range n {
		gw := fmt.Sprint("gw-", i)
		must[*v1.Gateway](t)(c.CreateGateway(ctx, &v1.Gateway{Name: gw, UnderlayAddress: "192.0.2.1"}))
		if err := c.OpenGatewayStream(ctx, gw, "dead-1"); err != nil {
			t.Fatal(err)
		}
	}
	putHeartbeat(t, c.st, "dead", time.Now().Add(-time.Hour), time.Second)
}
