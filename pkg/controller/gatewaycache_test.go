package controller

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/internal/syncbuf"
	"github.com/iotfabric/iotfabric/pkg/ipam"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	"github.com/iotfabric/iotfabric/pkg/store/etcd"
	"github.com/iotfabric/iotfabric/pkg/store/etcd/etcdtest"
	"github.com/iotfabric/iotfabric/pkg/store/storetest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// runGatewayCache runs c's gateway cache until the test ends and waits
// until it has listed the store.
func runGatewayCache(t testing.TB, c *Controller) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.RunGatewayCache(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "the gateway cache to list the store", func() bool { return c.gwCache.isLive() })
}

func (gc *gatewayCache) isLive() bool {
	gc.mu.RLock()
	defer gc.mu.RUnlock()
	return gc.live
}

// waitFor polls cond until it holds, for at most 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// registerFrom registers g through c and says whether the registration was
// answered from memory.
func registerFrom(t testing.TB, c *Controller, g *v1.Gateway, a Agent) (Registration, bool) {
	t.Helper()
	mem, _ := c.RegisterCounts()
	r, err := c.Register(context.Background(), g, a)
	if err != nil {
		t.Fatalf("register %s: %v", g.Name, err)
	}
	now, _ := c.RegisterCounts()
	return r, now > mem
}

// waitRegister registers g through c until the registration satisfies ok
// (the watch's lag), and returns it.
func waitRegister(t testing.TB, c *Controller, what string, g *v1.Gateway, a Agent, ok func(Registration, bool) bool) Registration {
	t.Helper()
	var r Registration
	waitFor(t, what, func() bool {
		var mem bool
		r, mem = registerFrom(t, c, g, a)
		return ok(r, mem)
	})
	return r
}

func fromMemory(_ Registration, mem bool) bool { return mem }

func blockSet(bs []ipam.GatewayBlock) string {
	var out []string
	for _, b := range bs {
		out = append(out, fmt.Sprintf("%s %s@%d", b.Network, b.Prefix, b.KV.ModRev))
	}
	return strings.Join(out, ", ")
}

// With the gateway cache live, the registration of an unchanged gateway
// costs no store call and answers what the store path answers; this
// controller's own writes (an underlay change through the API, a block
// lease, a deletion) are seen by the registration that follows at once.
func TestRegisterFromMemory(t *testing.T) {
	st := openBolt(t)
	gated := &gatedStore{Store: st}
	cs := storetest.NewCounting(gated)
	c := New(cs, Config{})
	ref := New(st, Config{}) // the store path, over the same store
	newReconnectNet(t, c)
	ctx := context.Background()
	eps := must[[]*v1.AgentEndpoint](t)(connectGateway(ctx, c, 1, 2))
	runGatewayCache(t, c)
	g := reconnectGateway(1)
	waitRegister(t, c, "a registration from memory", g, reconnectAgent, fromMemory)

	cs.Reset()
	r, mem := registerFrom(t, c, g, reconnectAgent)
	if ops, trace := cs.Reset(); !mem || ops != (storetest.Ops{}) {
		t.Errorf("unchanged registration with the cache live (from memory: %v) cost %v, want nothing:\n\t%s", mem, ops, strings.Join(trace, "\n\t"))
	}
	want := must[Registration](t)(ref.Register(ctx, g, reconnectAgent))
	if !proto.Equal(r.Gateway, want.Gateway) || !proto.Equal(r.Prev, want.Prev) || blockSet(r.Blocks) != blockSet(want.Blocks) || len(r.Blocks) != 1 {
		t.Errorf("from memory: %v (prev %v), blocks %s\nfrom the store: %v (prev %v), blocks %s", r.Gateway, r.Prev, blockSet(r.Blocks), want.Gateway, want.Prev, blockSet(want.Blocks))
	}
	// The rest of the reconnection is as without the cache.
	checkReconnectCostFrom(t, c, cs, 1, eps, "self-1", 1)

	// This controller's own writes, with the cache's watch held back (as
	// on a busy etcd): the registration right after each sees it.
	//
	// An underlay changed through the API: the registration sees the
	// change (and writes the agent's back).
	u := proto.Clone(g).(*v1.Gateway)
	u.UnderlayAddress, u.State = "198.51.100.1", v1.GatewayState_GATEWAY_STATE_UP
	gated.hold(&gated.watches)
	must[*v1.Gateway](t)(c.UpdateGateway(ctx, u))
	cs.Reset()
	r, mem = registerFrom(t, c, g, reconnectAgent)
	if ops, _ := cs.Reset(); mem || ops.Txns != 1 || r.Prev.UnderlayAddress != u.UnderlayAddress || r.Gateway.UnderlayAddress != g.UnderlayAddress {
		t.Errorf("registration right after an underlay change to %s: from memory %v, %v, prev underlay %s, now %s", u.UnderlayAddress, mem, ops, r.Prev.UnderlayAddress, r.Gateway.UnderlayAddress)
	}
	gated.let(&gated.watches)

	// A block leased: the registration returns it.
	const n = "lease"
	must[*v1.VirtualNetwork](t)(c.CreateNetwork(ctx, &v1.VirtualNetwork{Name: n, Subnets: []string{"10.200.0.0/16"}}))
	waitRegister(t, c, "a registration from memory", g, reconnectAgent, fromMemory)
	gated.hold(&gated.watches)
	p := must[netip.Prefix](t)(c.LeaseBlock(ctx, g.Name, n, 4))
	inLease := func(r Registration) bool {
		return slices.ContainsFunc(r.Blocks, func(b ipam.GatewayBlock) bool { return b.Network == n && b.Prefix == p })
	}
	if r, mem := registerFrom(t, c, g, reconnectAgent); mem || !inLease(r) {
		t.Errorf("registration right after the lease of %s in %s: from memory %v, blocks %s", p, n, mem, blockSet(r.Blocks))
	}
	gated.let(&gated.watches)
	waitRegister(t, c, "a registration from memory with the block", g, reconnectAgent, func(r Registration, mem bool) bool { return mem && inLease(r) })

	// The block released (its network deleted): gone from the registration.
	gated.hold(&gated.watches)
	must[int64](t)(c.DeleteNetwork(ctx, n))
	if r, mem := registerFrom(t, c, g, reconnectAgent); mem || inLease(r) {
		t.Errorf("registration right after network %s was deleted: from memory %v, blocks %s", n, mem, blockSet(r.Blocks))
	}
	gated.let(&gated.watches)

	// A gateway deleted: the registration creates it again.
	g2 := reconnectGateway(2)
	must[Registration](t)(c.Register(ctx, g2, reconnectAgent))
	waitRegister(t, c, "a registration of gw-2 from memory", g2, reconnectAgent, fromMemory)
	gated.hold(&gated.watches)
	must[int64](t)(c.DeleteGateway(ctx, g2.Name))
	if r, mem := registerFrom(t, c, g2, reconnectAgent); mem || r.Prev != nil {
		t.Errorf("registration right after the gateway's deletion: from memory %v, prev %v; want it created", mem, r.Prev)
	}
	gated.let(&gated.watches)
	// A registration that changes the gateway writes it, and the one after
	// it answers the change.
	newer := reconnectAgent
	newer.Version = "9.9.9"
	cs.Reset()
	if r, mem := registerFrom(t, c, g, newer); mem || r.Gateway.AgentVersion != "9.9.9" {
		t.Errorf("registration with a new agent: from memory %v, version %q", mem, r.Gateway.AgentVersion)
	}
	if ops, _ := cs.Reset(); ops.Txns != 1 {
		t.Errorf("registration with a new agent cost %v, want one write", ops)
	}
	r = waitRegister(t, c, "a registration from memory", g, newer, fromMemory)
	if r.Gateway.AgentVersion != "9.9.9" {
		t.Errorf("registration from memory after the change: version %q", r.Gateway.AgentVersion)
	}
}

// checkReconnectCostFrom checks the costs of a reconnection's report and
// stream opening (the registration's is checked by the caller).
func checkReconnectCostFrom(t *testing.T, c *Controller, cs *storetest.Counting, i int, eps []*v1.AgentEndpoint, stream string, from int) {
	t.Helper()
	ctx := context.Background()
	g := reconnectGateway(i)
	steps := []func() error{
		func() error {
			_, _, err := c.ReportEndpoints(ctx, g.Name, eps, true, nil)
			return err
		},
		func() error { return c.OpenGatewayStream(ctx, g.Name, stream) },
	}
	cs.Reset()
	for k, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
		if got, trace := cs.Reset(); got != reconnectCost[from+k].want {
			t.Errorf("%s cost %v, want %v:\n\t%s", reconnectCost[from+k].step, got, reconnectCost[from+k].want, strings.Join(trace, "\n\t"))
		}
	}
}

// Two controllers on one etcd, each with its gateway cache: what one does
// (a block leased, its network deleted and the block leased to another
// gateway, an underlay changed through the API, the gateway deleted) is
// reflected by the other's registrations once its watch delivers it; a
// registration that changes something still writes.
func TestGatewayCacheTwoControllersEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	open := func() (*Controller, *storetest.Counting) {
		st, err := etcd.Open(context.Background(), etcd.Options{Endpoints: []string{srv.Endpoint}, Namespace: "/gwcache/"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		cs := storetest.NewCounting(st)
		c := New(cs, Config{})
		return c, cs
	}
	a, _ := open()
	b, bs := open()
	runGatewayCache(t, a)
	runGatewayCache(t, b)
	ctx := context.Background()
	g, other := reconnectGateway(1), reconnectGateway(2)
	for _, gw := range []*v1.Gateway{g, other} {
		must[Registration](t)(a.Register(ctx, gw, reconnectAgent))
	}
	const n = "shared"
	must[*v1.VirtualNetwork](t)(a.CreateNetwork(ctx, &v1.VirtualNetwork{Name: n, Subnets: []string{"10.9.0.0/24"}}))
	has := func(r Registration, p netip.Prefix) bool {
		return slices.ContainsFunc(r.Blocks, func(b ipam.GatewayBlock) bool { return b.Network == n && b.Prefix == p })
	}

	// A block leased through a.
	p := must[netip.Prefix](t)(a.LeaseBlock(ctx, g.Name, n, 4))
	waitRegister(t, b, "b's registration from memory with the block a leased", g, reconnectAgent, func(r Registration, mem bool) bool { return mem && has(r, p) })
	bs.Reset()
	if _, mem := registerFrom(t, b, g, reconnectAgent); !mem {
		t.Error("unchanged registration at b not answered from memory")
	}
	if ops, trace := bs.Reset(); ops != (storetest.Ops{}) {
		t.Errorf("unchanged registration at b cost %v:\n\t%s", ops, strings.Join(trace, "\n\t"))
	}

	// Released: the network deleted through a, created again, and the same
	// block leased to another gateway (g's index entry is left behind).
	must[int64](t)(a.DeleteNetwork(ctx, n))
	must[*v1.VirtualNetwork](t)(a.CreateNetwork(ctx, &v1.VirtualNetwork{Name: n, Subnets: []string{"10.9.0.0/24"}}))
	if q := must[netip.Prefix](t)(a.LeaseBlock(ctx, other.Name, n, 4)); q != p {
		t.Fatalf("the block leased to %s is %s, not %s", other.Name, q, p)
	}
	waitRegister(t, b, "b's registration of the other gateway with the block", other, reconnectAgent, func(r Registration, mem bool) bool { return mem && has(r, p) })
	if r, _ := registerFrom(t, b, g, reconnectAgent); has(r, p) {
		t.Errorf("b returns %s to %s after it was released and leased to %s: %s", p, g.Name, other.Name, blockSet(r.Blocks))
	}

	// An underlay changed through a's API: b's registration with the
	// agent's underlay sees it (once its watch delivers it), and writes the
	// agent's back.
	u := proto.Clone(g).(*v1.Gateway)
	u.UnderlayAddress, u.State = "198.51.100.9", v1.GatewayState_GATEWAY_STATE_UP
	must[*v1.Gateway](t)(a.UpdateGateway(ctx, u))
	var ops storetest.Ops
	bs.Reset()
	waitRegister(t, b, "b's registration to see the underlay changed at a", g, reconnectAgent, func(r Registration, mem bool) bool {
		ops, _ = bs.Reset()
		return r.Prev.UnderlayAddress == u.UnderlayAddress
	})
	if ops.Txns != 1 {
		t.Errorf("registration restoring the agent's underlay cost %v, want one write", ops)
	}
	if cur := must[*v1.Gateway](t)(a.GetGateway(ctx, g.Name)); cur.UnderlayAddress != g.UnderlayAddress {
		t.Errorf("the store holds underlay %s, want the agent's %s", cur.UnderlayAddress, g.UnderlayAddress)
	}

	// Deleted through a: b's registration creates it again.
	waitRegister(t, b, "b's registration from memory", other, reconnectAgent, fromMemory)
	must[int64](t)(a.DeleteGateway(ctx, other.Name))
	waitRegister(t, b, "b's registration to create the gateway deleted at a", other, reconnectAgent, func(r Registration, _ bool) bool { return r.Prev == nil })
	if r, _ := registerFrom(t, a, other, reconnectAgent); r.Prev == nil || len(r.Blocks) != 0 {
		t.Errorf("after its deletion at a and registration at b, a finds prev %v, blocks %s; want the gateway, no block", r.Prev, blockSet(r.Blocks))
	}

	// A registration that changes something writes, from memory or not.
	newer := reconnectAgent
	newer.Version = "9.9.9"
	waitRegister(t, b, "b's registration from memory", g, reconnectAgent, fromMemory)
	bs.Reset()
	if r, mem := registerFrom(t, b, g, newer); mem || r.Gateway.AgentVersion != "9.9.9" {
		t.Errorf("registration with a new agent at b: from memory %v, version %q", mem, r.Gateway.AgentVersion)
	}
	if ops, _ := bs.Reset(); ops.Txns != 1 {
		t.Errorf("registration with a new agent at b cost %v, want one write", ops)
	}
	if mem, st := b.RegisterCounts(); mem == 0 || st == 0 {
		t.Errorf("b answered %d registrations from memory and %d from the store", mem, st)
	}
}

// gatedStore holds listings (ListPage) while its lists gate is closed, and
// the changes its watches deliver while its watches gate is closed.
type gatedStore struct {
	store.Store
	mu             sync.Mutex
	lists, watches chan struct{} // nil: open
}

func (s *gatedStore) hold(gate *chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	*gate = make(chan struct{})
}

func (s *gatedStore) let(gate *chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(*gate)
	*gate = nil
}

func (s *gatedStore) pass(ctx context.Context, gate *chan struct{}) error {
	s.mu.Lock()
	g := *gate
	s.mu.Unlock()
	if g == nil {
		return nil
	}
	select {
	case <-g:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *gatedStore) ListPage(ctx context.Context, prefix, after string, limit int) ([]store.KV, int64, bool, error) {
	if err := s.pass(ctx, &s.lists); err != nil {
		return nil, 0, false, err
	}
	return s.Store.ListPage(ctx, prefix, after, limit)
}

func (s *gatedStore) Watch(ctx context.Context, prefix string, after int64) <-chan store.WatchBatch {
	in := s.Store.Watch(ctx, prefix, after)
	out := make(chan store.WatchBatch)
	go func() {
		defer close(out)
		for b := range in {
			if s.pass(ctx, &s.watches) != nil {
				return
			}
			select {
			case out <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// When the watch fails (its revision compacted: the cache fell behind a
// bbolt log that keeps 16 revisions), the gateway cache stops answering:
// registrations read the store until it has listed again, and are then
// answered from memory again.
func TestGatewayCacheRelistsAfterCompaction(t *testing.T) {
	raw, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{NoSync: true, LogRetention: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	gated := &gatedStore{Store: raw}
	cs := storetest.NewCounting(gated)
	var logs syncbuf.Buffer
	c := New(cs, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx := context.Background()
	g := reconnectGateway(1)
	must[Registration](t)(c.Register(ctx, g, reconnectAgent))
	runGatewayCache(t, c)
	waitRegister(t, c, "a registration from memory", g, reconnectAgent, fromMemory)

	// The cache's watch is held back while the store moves on by far more
	// than its log keeps; the next listing is held back too.
	gated.hold(&gated.lists)
	gated.hold(&gated.watches)
	for i := range 40 {
		for j := range 20 {
			if _, err := raw.Txn(ctx, nil, []store.Op{store.Put(fmt.Sprintf("filler/%d", j), []byte(fmt.Sprint(i)))}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(5 * time.Millisecond) // the watch reads and queues what it can
	}
	gated.let(&gated.watches)
	waitFor(t, "the cache to stop answering", func() bool { return !c.gwCache.isLive() })
	if !strings.Contains(logs.String(), store.ErrCompacted.Error()) {
		t.Errorf("the cache's log does not tell of a compacted watch:\n%s", logs.String())
	}
	cs.Reset()
	if _, mem := registerFrom(t, c, g, reconnectAgent); mem {
		t.Error("registration answered from memory while the cache was not listed again")
	}
	if ops, _ := cs.Reset(); ops.Gets == 0 {
		t.Errorf("registration with the cache down cost %v, want the store path's reads", ops)
	}

	gated.let(&gated.lists)
	waitRegister(t, c, "a registration from memory after the cache listed again", g, reconnectAgent, fromMemory)
	cs.Reset()
	if _, mem := registerFrom(t, c, g, reconnectAgent); !mem {
		t.Error("registration not answered from memory after the cache listed again")
	}
	if ops, trace := cs.Reset(); ops != (storetest.Ops{}) {
		t.Errorf("registration from memory cost %v:\n\t%s", ops, strings.Join(trace, "\n\t"))
	}
}
