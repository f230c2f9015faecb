package controller

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/store"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// afterTxn runs a function (once) right after the first transaction that
// writes a key with the given prefix was stored, before Txn returns: what
// another request does between a write and the caller's next step.
type afterTxn struct {
	store.Store
	prefix string
	done   atomic.Bool
	f      func()
}

func (s *afterTxn) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, error) {
	rev, err := s.Store.Txn(ctx, conds, ops)
	if err == nil && s.f != nil && slices.ContainsFunc(ops, func(o store.Op) bool { return strings.HasPrefix(o.Key, s.prefix) }) && s.done.CompareAndSwap(false, true) {
		s.f() // its own transactions do not run it again
	}
	return rev, err
}

// crashTxn stands for a controller killed at a transaction that writes a key
// with the given prefix: with stored false the process died before the
// store had it, with stored true after the store had it and before the
// caller learned it. Every later transaction fails (the process is gone).
type crashTxn struct {
	store.Store
	prefix string
	stored bool
	dead   bool
}

var errKilled = errors.New("controller killed")

func (s *crashTxn) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, error) {
	if s.dead {
		return 0, errKilled
	}
	if !slices.ContainsFunc(ops, func(o store.Op) bool { return strings.HasPrefix(o.Key, s.prefix) }) {
		return s.Store.Txn(ctx, conds, ops)
	}
	s.dead = true
	if s.stored {
		s.Store.Txn(ctx, conds, ops)
	}
	return 0, errKilled
}

// checkIPAM fails unless network n's IPAM counts as many addresses in use
// as its endpoints hold, and no address is held by two endpoints.
func checkIPAM(t *testing.T, c *Controller, n string) {
	t.Helper()
	ctx := context.Background()
	eps, _, err := c.ListEndpoints(ctx, n, "")
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]string{}
	for _, e := range eps {
		for _, a := range e.Addresses {
			if o, dup := held[a]; dup {
				t.Errorf("address %s held by %s and %s", a, o, e.Id)
			}
			held[a] = e.Id
		}
	}
	st, err := c.IpamStatus(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	var used uint64
	for _, s := range st.GetSubnets() {
		used += s.GetUsed()
	}
	if used != uint64(len(held)) {
		t.Errorf("network %s: IPAM counts %d addresses in use, its endpoints hold %d", n, used, len(held))
	}
	kvs, _, err := c.st.List(ctx, keys.IPAMAddrs(n))
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != len(held) {
		t.Errorf("network %s: the store holds %d address keys, its endpoints %d addresses", n, len(kvs), len(held))
	}
}

func setupRed(t *testing.T, c *Controller) {
	t.Helper()
	ctx := context.Background()
	must[*v1.VirtualNetwork](t)(c.CreateNetwork(ctx, &v1.VirtualNetwork{Name: "red", Subnets: []string{"10.1.0.0/16"}}))
	must[*v1.Gateway](t)(c.CreateGateway(ctx, &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.1"}))
	for _, id := range []string{"a", "b", "c"} {
		must[*v1.Endpoint](t)(c.CreateEndpoint(ctx, &v1.Endpoint{Id: id, Network: "red", Gateway: "gw"}))
	}
}

// A controller killed at the write that stores an endpoint, before or after
// the store took it: the address and the endpoint are one transaction, so
// after the restart the IPAM counts what the endpoints hold.
func TestKilledAtEndpointWrite(t *testing.T) {
	for _, stored := range []bool{false, true} {
		name := map[bool]string{false: "before the write", true: "after the write"}[stored]
		t.Run(name, func(t *testing.T) {
			st := openBolt(t)
			setupRed(t, New(st, Config{}))
			// Restarted, then killed while creating an endpoint with an
			// address the store already leased a block for, and one that
			// needs a new block's lease first.
			for _, req := range []*v1.Endpoint{
				{Id: "d", Network: "red", Gateway: "gw"},
				{Id: "e", Network: "red", Gateway: "gw", Addresses: []string{"10.1.200.9"}},
			} {
				crash := &crashTxn{Store: st, prefix: keys.Endpoint(req.Id), stored: stored}
				if _, err := New(crash, Config{}).CreateEndpoint(context.Background(), req); err == nil {
					t.Fatalf("create %s: the crash did not happen", req.Id)
				}
				c := New(st, Config{}) // the restart
				checkIPAM(t, c, "red")
				if _, err := c.GetEndpoint(context.Background(), req.Id); (err == nil) != stored {
					t.Fatalf("endpoint %s after the restart: %v", req.Id, err)
				}
			}
		})
	}
}

// An endpoint deleted between the write that created it and the moment its
// creator records the write in the IPAM (the delete read the new endpoint:
// an agent's full sync, an API delete): the address stays free. It used to
// be recorded again, counting an address no endpoint holds until the
// controller restarted.
func TestDeleteBetweenCreateAndCommit(t *testing.T) {
	ctx := context.Background()
	st := &afterTxn{Store: openBolt(t), prefix: keys.Endpoint("x")}
	c := New(st, Config{})
	setupRed(t, c)
	st.f = func() {
		if _, err := c.DeleteEndpoint(ctx, "x"); err != nil {
			t.Errorf("delete: %v", err)
		}
	}
	must[*v1.Endpoint](t)(c.CreateEndpoint(ctx, &v1.Endpoint{Id: "x", Network: "red", Gateway: "gw"}))
	if _, err := c.GetEndpoint(ctx, "x"); err == nil {
		t.Fatal("the delete did not happen")
	}
	checkIPAM(t, c, "red")
	// The address is handed out again.
	e := must[*v1.Endpoint](t)(c.CreateEndpoint(ctx, &v1.Endpoint{Id: "y", Network: "red", Gateway: "gw"}))
	checkIPAM(t, c, "red")
	checkIPAM(t, New(st, Config{}), "red")
	t.Logf("address handed out again: %v", e.Addresses)
}

// An endpoint created again (an agent reports it with its address) between
// the write that deleted it and the moment the IPAM records the release:
// the new endpoint's address is written to the store again, so it is not
// handed to another endpoint after a restart.
func TestCreateBetweenDeleteAndRelease(t *testing.T) {
	ctx := context.Background()
	st := &afterTxn{Store: openBolt(t)}
	c := New(st, Config{})
	setupRed(t, c)
	x := must[*v1.Endpoint](t)(c.CreateEndpoint(ctx, &v1.Endpoint{Id: "x", Network: "red", Gateway: "gw"}))
	st.prefix = keys.IPAMAddrs("red") // the delete's write frees the address
	st.f = func() {
		if _, err := c.CreateEndpoint(ctx, &v1.Endpoint{Id: "x", Network: "red", Gateway: "gw", Addresses: x.Addresses}); err != nil {
			t.Errorf("create again: %v", err)
		}
	}
	if _, err := c.DeleteEndpoint(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetEndpoint(ctx, "x"); err != nil || !slices.Equal(got.Addresses, x.Addresses) {
		t.Fatalf("endpoint x after it was created again: %v, %v", got, err)
	}
	checkIPAM(t, c, "red")
	// After a restart the address is still x's: another endpoint gets another.
	c2 := New(st, Config{})
	checkIPAM(t, c2, "red")
	y := must[*v1.Endpoint](t)(c2.CreateEndpoint(ctx, &v1.Endpoint{Id: "y", Network: "red", Gateway: "gw"}))
	if slices.Equal(y.Addresses, x.Addresses) {
		t.Fatalf("x and y both hold %v", x.Addresses)
	}
	checkIPAM(t, c2, "red")
}

// A subnet removed by a network update while an endpoint takes an address
// in it: the endpoint's write lands first, the update runs before the
// creator records it in the IPAM. The update must be refused; before, it
// dropped the subnet's block and left the address key with no leased block,
// so the network's IPAM could not be loaded any more.
func TestSubnetRemovedWhileAddressTaken(t *testing.T) {
	st := openBolt(t)
	ctx := context.Background()
	c0 := New(st, Config{})
	must[*v1.VirtualNetwork](t)(c0.CreateNetwork(ctx, &v1.VirtualNetwork{Name: "red", Subnets: []string{"10.1.0.0/16", "10.2.0.0/16"}}))
	must[*v1.Gateway](t)(c0.CreateGateway(ctx, &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.1"}))
	hook := &afterTxn{Store: st, prefix: keys.Endpoint("x")}
	c := New(hook, Config{})
	var updErr error
	hook.f = func() {
		_, updErr = c.UpdateNetwork(ctx, &v1.VirtualNetwork{Name: "red", Subnets: []string{"10.1.0.0/16"}})
	}
	if _, err := c.CreateEndpoint(ctx, &v1.Endpoint{Id: "x", Network: "red", Gateway: "gw", Addresses: []string{"10.2.0.5"}}); err != nil {
		t.Fatal(err)
	}
	if !hook.done.Load() {
		t.Fatal("the update did not run between the write and the IPAM's record of it")
	}
	if updErr == nil {
		t.Fatal("the subnet holding 10.2.0.5 was removed")
	}
	restarted := New(st, Config{})
	if _, err := restarted.IpamStatus(ctx, "red"); err != nil {
		t.Fatalf("network red's IPAM after a restart: %v", err)
	}
	checkIPAM(t, restarted, "red")
}

// beforeTxn runs a function (once) right before the first transaction that
// writes a key with the given prefix: what another request does between a
// writer's reads and its write.
type beforeTxn struct {
	store.Store
	prefix string
	done   atomic.Bool
	f      func()
}

func (s *beforeTxn) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, error) {
	if s.f != nil && slices.ContainsFunc(ops, func(o store.Op) bool { return strings.HasPrefix(o.Key, s.prefix) }) && s.done.CompareAndSwap(false, true) {
		s.f() // its own transactions do not run it again
	}
	return s.Store.Txn(ctx, conds, ops)
}

// afterGet runs a function (once) right after the first Get of a key.
type afterGet struct {
	store.Store
	key  string
	done atomic.Bool
	f    func()
}

func (s *afterGet) Get(ctx context.Context, key string) (store.KV, error) {
	kv, err := s.Store.Get(ctx, key)
	if key == s.key && s.done.CompareAndSwap(false, true) {
		s.f()
	}
	return kv, err
}

// checkBlocks fails unless every block lease of network n in the store lies
// in one of its subnets, is leased to a gateway that exists, and a
// controller started on the store loads the network's IPAM.
func checkBlocks(t *testing.T, st store.Store, n string) {
	t.Helper()
	ctx := context.Background()
	c := New(st, Config{})
	net, err := c.GetNetwork(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	kvs, _, err := st.List(ctx, keys.IPAMBlocks(n))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range kvs {
		_, p, ok := keys.BlockOf(kv.Key)
		if !ok {
			t.Fatalf("corrupt block key %s", kv.Key)
		}
		if !slices.ContainsFunc(net.Subnets, func(s string) bool { return netip.MustParsePrefix(s).Contains(p.Addr()) }) {
			t.Errorf("block %s of gateway %s is in none of the subnets %v of network %s", p, kv.Value, net.Subnets, n)
		}
		if _, err := c.GetGateway(ctx, string(kv.Value)); err != nil {
			t.Errorf("block %s is leased to gateway %s: %v", p, kv.Value, err)
		}
	}
	if _, err := c.IpamStatus(ctx, n); err != nil {
		t.Errorf("network %s's IPAM after a restart: %v", n, err)
	}
	checkIPAM(t, c, n)
}

// setupTwoSubnets creates network red with subnets 10.1.0.0/16 (the first
// one blocks are leased in) and 10.2.0.0/16, and gateway gw.
func setupTwoSubnets(t *testing.T, st store.Store) {
	t.Helper()
	ctx := context.Background()
	c := New(st, Config{})
	must[*v1.VirtualNetwork](t)(c.CreateNetwork(ctx, &v1.VirtualNetwork{Name: "red", Subnets: []string{"10.1.0.0/16", "10.2.0.0/16"}}))
	must[*v1.Gateway](t)(c.CreateGateway(ctx, &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.1"}))
}

var keepSecond = &v1.VirtualNetwork{Name: "red", Subnets: []string{"10.2.0.0/16"}}

// A block leased to a gateway (an agent's LeaseBlock, or before an endpoint
// takes an address) in a subnet that a network update removes at the same
// moment. Before, the lease's write was conditioned on the block's key
// alone: stored after the update, or by a lease the update did not see
// (its pool records a lease only after the write), the block lay outside
// every subnet of the network, whose IPAM could then not be loaded.
func TestSubnetRemovedWhileBlockLeased(t *testing.T) {
	ctx := context.Background()
	in10_2 := func(p netip.Prefix) bool { return netip.MustParsePrefix("10.2.0.0/16").Contains(p.Addr()) }

	t.Run("update between the lease's choice and its write", func(t *testing.T) {
		base := openBolt(t)
		setupTwoSubnets(t, base)
		hook := &beforeTxn{Store: base, prefix: keys.IPAMBlocks("red")}
		c := New(hook, Config{})
		hook.f = func() {
			if _, err := c.UpdateNetwork(ctx, keepSecond); err != nil {
				t.Errorf("update: %v", err)
			}
		}
		p, err := c.LeaseBlock(ctx, "gw", "red", 4)
		if !hook.done.Load() {
			t.Fatal("the update did not run before the lease's write")
		}
		if err != nil {
			t.Fatal(err)
		}
		if !in10_2(p) {
			t.Errorf("leased block %s is not in the remaining subnet", p)
		}
		checkBlocks(t, base, "red")
	})

	t.Run("lease between the update's reads and its write", func(t *testing.T) {
		base := openBolt(t)
		setupTwoSubnets(t, base)
		hook := &beforeTxn{Store: base, prefix: keys.Network("red")}
		c := New(hook, Config{})
		var leased netip.Prefix
		hook.f = func() {
			var err error
			if leased, err = c.LeaseBlock(ctx, "gw", "red", 4); err != nil {
				t.Errorf("lease: %v", err)
			}
		}
		if _, err := c.UpdateNetwork(ctx, keepSecond); err != nil {
			t.Fatal(err)
		}
		if !hook.done.Load() {
			t.Fatal("the lease did not run before the update's write")
		}
		t.Logf("leased %s meanwhile", leased)
		checkBlocks(t, base, "red")
		// The gateway is told the blocks it still holds.
		_, blocks, err := New(base, Config{}).RegisterGateway(ctx, &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.1"}, Agent{})
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range blocks {
			if !in10_2(b.Prefix) {
				t.Errorf("gateway gw is given block %s of a removed subnet", b.Prefix)
			}
		}
	})

	t.Run("update while an endpoint's block is leased", func(t *testing.T) {
		base := openBolt(t)
		setupTwoSubnets(t, base)
		hook := &beforeTxn{Store: base, prefix: keys.IPAMBlocks("red")}
		c := New(hook, Config{})
		hook.f = func() {
			if _, err := c.UpdateNetwork(ctx, keepSecond); err != nil {
				t.Errorf("update: %v", err)
			}
		}
		e, err := c.CreateEndpoint(ctx, &v1.Endpoint{Id: "x", Network: "red", Gateway: "gw"})
		if !hook.done.Load() {
			t.Fatal("the update did not run before the block's write")
		}
		if err != nil {
			t.Fatal(err)
		}
		if a := netip.MustParseAddr(e.Addresses[0]); !in10_2(netip.PrefixFrom(a, 32)) {
			t.Errorf("endpoint x got %s, outside the remaining subnet", a)
		}
		checkBlocks(t, base, "red")
	})
}

// A block leased to a gateway that is being deleted: the lease's write
// after the delete, or the delete's write after a lease it did not read,
// left a block leased to a gateway that no longer exists (never given back).
func TestGatewayDeletedWhileBlockLeased(t *testing.T) {
	ctx := context.Background()

	t.Run("delete between the lease's choice and its write", func(t *testing.T) {
		base := openBolt(t)
		setupTwoSubnets(t, base)
		hook := &beforeTxn{Store: base, prefix: keys.IPAMBlocks("red")}
		c := New(hook, Config{})
		hook.f = func() {
			if _, err := c.DeleteGateway(ctx, "gw"); err != nil {
				t.Errorf("delete: %v", err)
			}
		}
		p, err := c.LeaseBlock(ctx, "gw", "red", 4)
		if !hook.done.Load() {
			t.Fatal("the delete did not run before the lease's write")
		}
		if err == nil {
			t.Errorf("block %s leased to a deleted gateway", p)
		}
		checkBlocks(t, base, "red")
	})

	t.Run("lease between the delete's reads and its write", func(t *testing.T) {
		base := openBolt(t)
		setupTwoSubnets(t, base)
		hook := &beforeTxn{Store: base, prefix: keys.Gateway("gw")}
		c := New(hook, Config{})
		hook.f = func() {
			if _, err := c.LeaseBlock(ctx, "gw", "red", 4); err != nil {
				t.Errorf("lease: %v", err)
			}
		}
		if _, err := c.DeleteGateway(ctx, "gw"); err != nil {
			t.Fatal(err)
		}
		if !hook.done.Load() {
			t.Fatal("the lease did not run before the delete's write")
		}
		checkBlocks(t, base, "red")
	})
}

// A request that read the network before an update removed a subnet
// declares the old subnets to IPAM after the update did (ensurePool with
// the record it read): the pool picks from the removed subnet until the
// next request declares the stored ones. An address or block it picks
// there must not be stored: the writes check it against the network record
// they are conditioned on.
func TestStaleSubnetsInPool(t *testing.T) {
	ctx := context.Background()
	st := openBolt(t)
	setupTwoSubnets(t, st)
	c := New(st, Config{})
	old, err := c.GetNetwork(ctx, "red")
	if err != nil {
		t.Fatal(err)
	}
	must[*v1.VirtualNetwork](t)(c.UpdateNetwork(ctx, keepSecond))

	// The stale reader declares the old subnets right after a bulk create
	// declared the stored ones (it reads the gateway next).
	hook := &afterGet{Store: st, key: keys.Gateway("gw"), f: func() {
		if err := c.ensurePool(old); err != nil {
			t.Error(err)
		}
	}}
	cb := New(hook, Config{})
	cb.ipam = c.ipam // the same controller's pool
	eps, errs := cb.CreateEndpoints(ctx, []*v1.Endpoint{{Id: "x", Network: "red", Gateway: "gw", Addresses: []string{"10.1.0.5"}}})
	if !hook.done.Load() {
		t.Fatal("the stale declaration did not happen")
	}
	if errs[0] == nil {
		t.Errorf("endpoint x created with %v, in a removed subnet", eps[0].Addresses)
	}
	checkBlocks(t, st, "red")

	if err := c.ensurePool(old); err != nil {
		t.Fatal(err)
	}
	p, err := c.ipam.LeaseBlock(ctx, "red", "gw", 4) // what the controller's LeaseBlock does after its own ensurePool
	if err != nil {
		t.Fatal(err)
	}
	if !netip.MustParsePrefix("10.2.0.0/16").Contains(p.Addr()) {
		t.Errorf("block %s leased in a removed subnet", p)
	}
	checkBlocks(t, st, "red")
}
