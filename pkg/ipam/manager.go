package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/store"
)

// Store keys of a network's IPAM state (pkg/keys):
//
//	ipam/<network>/blocks/<prefix>  -> gateway name
//	ipam/<network>/addrs/<address>  -> owner (endpoint id)
func netPrefix(network string) string { return keys.IPAMNetwork(network) }

// BlockKey is the store key of a block lease.
func BlockKey(network string, p netip.Prefix) string { return keys.IPAMBlock(network, p) }

func addrKey(network string, a netip.Addr) string { return keys.IPAMAddr(network, a) }

// GatewayBlock is a block leased to a gateway.
type GatewayBlock struct {
	Network string
	Prefix  netip.Prefix
	KV      store.KV // the lease as stored, for transaction conditions
}

// GatewayBlocks reads the blocks leased to gateway in the given networks
// from the store (not from the pools: it sees other controllers' leases). It
// reads the networks' block leases only, never their addresses.
func GatewayBlocks(ctx context.Context, st store.Store, networks []string, gateway string) ([]GatewayBlock, error) {
	var out []GatewayBlock
	for _, n := range networks {
		kvs, _, err := st.List(ctx, keys.IPAMBlocks(n))
		if err != nil {
			return nil, fmt.Errorf("list blocks of %s: %w", n, err)
		}
		for _, kv := range kvs {
			if string(kv.Value) != gateway {
				continue
			}
			p, err := netip.ParsePrefix(strings.TrimPrefix(kv.Key, keys.IPAMBlocks(n)))
			if err != nil {
				return nil, fmt.Errorf("corrupt key %s: %w", kv.Key, err)
			}
			out = append(out, GatewayBlock{Network: n, Prefix: p, KV: kv})
		}
	}
	return out, nil
}

// IndexedGatewayBlocks returns the blocks leased to gateway, from its block
// index (keys.GatewayBlocks): it reads the gateway's own keys only. Index
// entries whose block is gone or leased to another are skipped.
func IndexedGatewayBlocks(ctx context.Context, st store.Store, gateway string) ([]GatewayBlock, error) {
	idx, _, err := st.List(ctx, keys.GatewayBlocks(gateway))
	if err != nil {
		return nil, fmt.Errorf("list the blocks of %s: %w", gateway, err)
	}
	var out []GatewayBlock
	for _, kv := range idx {
		n, p, ok := keys.GatewayBlockOf(gateway, kv.Key)
		if !ok {
			return nil, fmt.Errorf("corrupt key %s", kv.Key)
		}
		b, err := st.Get(ctx, BlockKey(n, p))
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if string(b.Value) == gateway {
			out = append(out, GatewayBlock{Network: n, Prefix: p, KV: b})
		}
	}
	return out, nil
}

// ErrBusy means another request for the same owner is being persisted; retry.
var ErrBusy = errors.New("an allocation for this owner is in progress")

// Manager keeps one Pool per network, loaded from and persisted to a store.
// Reservations are made under a short lock; the store write happens outside it,
// so concurrent allocations share the store's group commits.
type Manager struct {
	st store.Store

	mu    sync.Mutex // guards pools and every Pool in it
	pools map[string]*poolEntry

	leaseMu sync.Mutex // guards leasing
	leasing map[string]*leaseLock
}

type poolEntry struct {
	cfg   Config
	pool  *Pool // nil until loaded
	stale bool  // reload from the store on next use
	rev   int64 // the store revision pool was loaded at
}

// NewManager returns a Manager over st.
func NewManager(st store.Store) *Manager {
	return &Manager{st: st, pools: map[string]*poolEntry{}, leasing: map[string]*leaseLock{}}
}

// Configure declares (or re-declares) a network's address space. State is
// loaded from the store on first use.
func (m *Manager) Configure(network string, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pools[network] = &poolEntry{cfg: cfg}
	return nil
}

// Ensure declares a network's address space unless it is already declared
// with the same configuration; a changed configuration is reloaded from the
// store on next use, keeping reservations in flight.
func (m *Manager) Ensure(network string, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.pools[network]
	if !ok {
		m.pools[network] = &poolEntry{cfg: cfg}
		return nil
	}
	if !slices.Equal(e.cfg.Subnets, cfg.Subnets) || e.cfg.blockLen(IPv4) != cfg.blockLen(IPv4) || e.cfg.blockLen(IPv6) != cfg.blockLen(IPv6) {
		e.cfg, e.stale = cfg, true
	}
	return nil
}

// Forget drops a network's in-memory state (after the network was deleted).
func (m *Manager) Forget(network string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.pools, network)
}

// DeleteOps returns the ops that remove every IPAM key of a network.
func (m *Manager) DeleteOps(ctx context.Context, network string) ([]store.Op, error) {
	kvs, _, err := m.st.List(ctx, netPrefix(network))
	if err != nil {
		return nil, err
	}
	ops := make([]store.Op, 0, len(kvs))
	for _, kv := range kvs {
		ops = append(ops, store.Delete(kv.Key))
	}
	return ops, nil
}

// Invalidate makes the next use reload the network's state from the store
// (after a conflict: another controller wrote it).
func (m *Manager) Invalidate(network string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.pools[network]; ok {
		e.stale = true
	}
}

// withPool runs fn on the loaded pool under the lock. Loading also happens under
// the lock, so a Commit can never fall between a reload's read of the store
// and its installation (reloads are rare: first use, and after a conflict).
func (m *Manager) withPool(ctx context.Context, network string, fn func(*Pool) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.pools[network]
	if !ok {
		return fmt.Errorf("network %q has no address space configured", network)
	}
	if e.pool == nil || e.stale {
		p, rev, err := m.load(ctx, network, e.cfg)
		if err != nil {
			return err
		}
		e.rev = rev
		if e.pool != nil {
			for _, l := range e.pool.Pending() {
				p.Readopt(l)
			}
		}
		e.pool, e.stale = p, false
	}
	return fn(e.pool)
}

func (m *Manager) load(ctx context.Context, network string, cfg Config) (*Pool, int64, error) {
	p, err := NewPool(cfg)
	if err != nil {
		return nil, 0, err
	}
	kvs, rev, err := m.st.List(ctx, netPrefix(network))
	if err != nil {
		return nil, 0, fmt.Errorf("load IPAM state of %s: %w", network, err)
	}
	var addrs []store.KV
	for _, kv := range kvs {
		switch {
		case strings.HasPrefix(kv.Key, keys.IPAMBlocks(network)):
			pfx, err := netip.ParsePrefix(strings.TrimPrefix(kv.Key, keys.IPAMBlocks(network)))
			if err != nil {
				return nil, 0, fmt.Errorf("corrupt key %s: %w", kv.Key, err)
			}
			if err := p.LoadBlock(pfx, string(kv.Value)); err != nil {
				return nil, 0, fmt.Errorf("network %s: %w", network, err)
			}
		case strings.HasPrefix(kv.Key, keys.IPAMAddrs(network)):
			addrs = append(addrs, kv)
		}
	}
	for _, kv := range addrs {
		a, err := netip.ParseAddr(strings.TrimPrefix(kv.Key, keys.IPAMAddrs(network)))
		if err != nil {
			return nil, 0, fmt.Errorf("corrupt key %s: %w", kv.Key, err)
		}
		if err := p.LoadAddr(a, string(kv.Value)); err != nil {
			return nil, 0, fmt.Errorf("network %s: %w", network, err)
		}
	}
	return p, rev, nil
}

// Refresh brings the pool up to date after the store refused r's writes
// (call Abort first): it reads only the keys r wrote and records what another
// writer stored there, so that a retry does not pick the same address or
// block. If the store holds something the pool cannot take in, the whole
// network is reloaded on next use.
func (m *Manager) Refresh(ctx context.Context, r *Reservation) {
	type found struct {
		key   string
		val   string
		lease Lease
	}
	var got []found
	for _, l := range r.Leases {
		if l.Existing {
			continue
		}
		if l.NewBlock.IsValid() {
			if kv, err := m.st.Get(ctx, BlockKey(r.Network, l.NewBlock)); err == nil {
				got = append(got, found{key: "block", val: string(kv.Value), lease: l})
			}
		}
		if kv, err := m.st.Get(ctx, addrKey(r.Network, l.Addr)); err == nil {
			got = append(got, found{key: "addr", val: string(kv.Value), lease: l})
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.pools[r.Network]
	if !ok || e.pool == nil {
		return
	}
	for _, f := range got {
		var err error
		if f.key == "block" {
			err = e.pool.LoadBlock(f.lease.NewBlock, f.val)
		} else {
			err = e.pool.LoadAddr(f.lease.Addr, f.val)
		}
		if err != nil {
			e.stale = true // e.g. a block we still hold pending, stored for another gateway
		}
	}
}

// Reservation is a set of reserved addresses with the store conditions and
// writes that persist them; include them in a transaction, then Commit or Abort.
type Reservation struct {
	Network string
	Leases  []Lease
	Conds   []store.Cond
	Ops     []store.Op
	pool    *Pool // the pool the leases were taken from
}

// Addrs returns the reserved addresses.
func (r *Reservation) Addrs() []netip.Addr {
	out := make([]netip.Addr, 0, len(r.Leases))
	for _, l := range r.Leases {
		out = append(out, l.Addr)
	}
	return out
}

// Reserve reserves addresses for owner on gateway: the requested ones, or else
// one of every family the network has.
//
// Without requested addresses, the addresses come from blocks whose lease is
// already stored: when the gateway's blocks are full, Reserve first leases a
// block on its own (LeaseBlock, one lease at a time per network, gateway and
// family), then reserves again. So concurrent reservations never share the
// write of a new block, and one writer's transactions never conflict with
// each other.
func (m *Manager) Reserve(ctx context.Context, network, owner, gateway string, requested []netip.Addr) (*Reservation, error) {
	for attempt := 0; ; attempt++ {
		r, err := m.reserve(ctx, network, owner, gateway, requested)
		var nb *needBlockError
		if !errors.As(err, &nb) {
			return r, err
		}
		if attempt >= maxBlockLeases {
			return nil, fmt.Errorf("IPv%d: %w", nb.family, ErrBusy)
		}
		if _, err := m.leaseBlockOnce(ctx, network, gateway, nb.family); err != nil {
			return nil, err
		}
	}
}

// maxBlockLeases bounds the blocks one Reserve leases (each is taken by
// concurrent reservations of the same gateway before this one retries).
const maxBlockLeases = 64

type needBlockError struct{ family Family }

func (e *needBlockError) Error() string { return fmt.Sprintf("IPv%d: %v", e.family, ErrNeedBlock) }
func (e *needBlockError) Unwrap() error { return ErrNeedBlock }

// leaseBlockOnce is LeaseBlock, one at a time per network, gateway and
// family: callers that wait find the block the first one leased.
func (m *Manager) leaseBlockOnce(ctx context.Context, network, gateway string, f Family) (netip.Prefix, error) {
	key := fmt.Sprintf("%s\x00%s\x00%d", network, gateway, f)
	m.leaseMu.Lock()
	mu, ok := m.leasing[key]
	if !ok {
		mu = &leaseLock{c: make(chan struct{}, 1)}
		m.leasing[key] = mu
	}
	mu.users++
	m.leaseMu.Unlock()
	defer func() {
		m.leaseMu.Lock()
		if mu.users--; mu.users == 0 {
			delete(m.leasing, key)
		}
		m.leaseMu.Unlock()
	}()
	select {
	case mu.c <- struct{}{}:
	case <-ctx.Done():
		return netip.Prefix{}, ctx.Err()
	}
	defer func() { <-mu.c }()
	m.leaseMu.Lock()
	waiting := mu.users
	m.leaseMu.Unlock()
	// Those waiting need addresses too: lease for them in the same write.
	return m.leaseBlocks(ctx, network, gateway, f, min(1+waiting/8, maxBlocksPerLease))
}

// maxBlocksPerLease bounds the blocks leased in one write for waiting reservations.
const maxBlocksPerLease = 16

// leaseLock is a mutex that a waiter can give up on (a channel of one).
type leaseLock struct {
	c     chan struct{}
	users int // guarded by Manager.leaseMu
}

func (m *Manager) reserve(ctx context.Context, network, owner, gateway string, requested []netip.Addr) (*Reservation, error) {
	r := &Reservation{Network: network}
	err := m.withPool(ctx, network, func(p *Pool) error {
		r.pool = p
		var err error
		if len(requested) > 0 {
			for _, a := range requested {
				var l Lease
				if l, err = p.ReserveAddr(owner, gateway, a); err != nil {
					break
				}
				r.Leases = append(r.Leases, l)
			}
		} else {
			for _, f := range p.Families() {
				var l Lease
				if l, err = p.ReserveLeased(owner, gateway, f); err != nil {
					if errors.Is(err, ErrNeedBlock) {
						err = &needBlockError{family: f}
					}
					break
				}
				r.Leases = append(r.Leases, l)
			}
		}
		for _, l := range r.Leases {
			if _, pending := p.pending[l.Addr]; l.Existing && pending {
				err = ErrBusy
			}
		}
		if err != nil {
			for _, l := range r.Leases {
				p.Abort(l)
			}
			r.Leases = nil
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, l := range r.Leases {
		if l.Existing {
			// The pool says owner holds the address already: the write
			// must find it so in the store. It may not, for a moment: a
			// delete of owner's endpoint was stored and has not reached
			// the pool yet (Released); without this condition the
			// endpoint would be stored with an address no key records.
			// The pool is loaded again on next use (the retry), in case it
			// is wrong for another reason.
			k := addrKey(network, l.Addr)
			kv, err := m.st.Get(ctx, k)
			if err != nil || string(kv.Value) != owner {
				m.Abort(r)
				if err != nil && !errors.Is(err, store.ErrNotFound) {
					return nil, fmt.Errorf("read %s: %w", k, err)
				}
				m.Invalidate(network)
				return nil, fmt.Errorf("%s of %s is not in the store: %w", l.Addr, owner, ErrBusy)
			}
			r.Conds = append(r.Conds, store.Unchanged(kv))
			continue
		}
		k := addrKey(network, l.Addr)
		r.Conds = append(r.Conds, store.Absent(k))
		r.Ops = append(r.Ops, store.Put(k, []byte(owner)))
		if l.NewBlock.IsValid() {
			bk := BlockKey(network, l.NewBlock)
			r.Conds = append(r.Conds, store.Absent(bk))
			r.Ops = append(r.Ops, store.Put(bk, []byte(gateway)), store.Put(keys.GatewayBlock(gateway, network, l.NewBlock), nil))
		}
	}
	return r, nil
}

// Commit records that the reservation's writes were persisted.
//
// A lease the same pool no longer holds as pending was released meanwhile:
// a delete that read the persisted write ran between the write and this
// Commit (Released). It stays released; recording it again would count an
// address no endpoint holds until the pool is next loaded. (A pool rebuilt
// from the store while the write was in flight is another pool: there the
// persisted lease is recorded as the truth, Pool.Commit.)
func (m *Manager) Commit(r *Reservation) {
	m.apply(r.Network, func(p *Pool) {
		for _, l := range r.Leases {
			if pl, ok := p.pending[l.Addr]; p == r.pool && !l.Existing && (!ok || pl.Owner != l.Owner) {
				continue
			}
			p.Commit(l)
		}
	})
}

// Abort undoes a reservation whose writes were not persisted.
func (m *Manager) Abort(r *Reservation) {
	m.apply(r.Network, func(p *Pool) {
		for _, l := range r.Leases {
			p.Abort(l)
		}
	})
}

func (m *Manager) apply(network string, fn func(*Pool)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.pools[network]; ok && e.pool != nil {
		fn(e.pool)
	}
}

// ReleaseOps returns the writes that free addrs.
func ReleaseOps(network string, addrs []netip.Addr) []store.Op {
	ops := make([]store.Op, 0, len(addrs))
	for _, a := range addrs {
		ops = append(ops, store.Delete(addrKey(network, a)))
	}
	return ops
}

// Released records that addrs were freed in the store by the write of
// revision rev. A pool loaded at rev or later already knows (and may have
// handed the addresses out again since): it is left as it is.
func (m *Manager) Released(network string, rev int64, addrs []netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.pools[network]
	if !ok || e.pool == nil || e.rev >= rev {
		return
	}
	for _, a := range addrs {
		e.pool.Release(a)
	}
}

// Allocate reserves and persists addresses for owner on its own (idempotent:
// an owner that already holds addresses gets them back).
func (m *Manager) Allocate(ctx context.Context, network, owner, gateway string) ([]netip.Addr, error) {
	for attempt := 0; ; attempt++ {
		r, err := m.Reserve(ctx, network, owner, gateway, nil)
		if errors.Is(err, ErrBusy) && attempt < 100 {
			continue
		}
		if err != nil {
			return nil, err
		}
		if len(r.Ops) == 0 {
			return r.Addrs(), nil
		}
		_, err = m.st.Txn(ctx, r.Conds, r.Ops)
		if err == nil {
			m.Commit(r)
			return r.Addrs(), nil
		}
		m.Abort(r)
		if !errors.Is(err, store.ErrConflict) || attempt >= 20 {
			return nil, fmt.Errorf("allocate for %s: %w", owner, err)
		}
		m.Refresh(ctx, r) // another writer changed the state: learn what
	}
}

// ReleaseOwner frees every address owner holds in network.
func (m *Manager) ReleaseOwner(ctx context.Context, network, owner string) ([]netip.Addr, error) {
	var addrs []netip.Addr
	if err := m.withPool(ctx, network, func(p *Pool) error { addrs = p.Addrs(owner); return nil }); err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, nil
	}
	rev, err := m.st.Txn(ctx, nil, ReleaseOps(network, addrs))
	if err != nil {
		return nil, fmt.Errorf("release %s: %w", owner, err)
	}
	m.Released(network, rev, addrs)
	return addrs, nil
}

// Release frees one address.
func (m *Manager) Release(ctx context.Context, network string, a netip.Addr) error {
	rev, err := m.st.Txn(ctx, nil, ReleaseOps(network, []netip.Addr{a}))
	if err != nil {
		return fmt.Errorf("release %s: %w", a, err)
	}
	m.Released(network, rev, []netip.Addr{a})
	return nil
}

// leaseBlocks is LeaseBlock leasing up to n new blocks in one write (when
// the gateway holds none with a free address); it returns the first.
func (m *Manager) leaseBlocks(ctx context.Context, network, gateway string, f Family, n int) (netip.Prefix, error) {
	if n <= 1 {
		return m.LeaseBlock(ctx, network, gateway, f)
	}
	for attempt := 0; ; attempt++ {
		var ls []Lease
		err := m.withPool(ctx, network, func(p *Pool) error {
			for range n {
				l, err := p.ReserveBlock(gateway, f)
				if err != nil {
					if len(ls) > 0 && errors.Is(err, ErrExhausted) {
						return nil // fewer blocks left than asked for
					}
					return err
				}
				if l.Existing {
					if len(ls) == 0 {
						ls = append(ls, l)
					}
					return nil
				}
				ls = append(ls, l)
			}
			return nil
		})
		if err != nil {
			return netip.Prefix{}, err
		}
		if ls[0].Existing {
			return ls[0].NewBlock, nil
		}
		var conds []store.Cond
		var ops []store.Op
		for _, l := range ls {
			k := BlockKey(network, l.NewBlock)
			conds = append(conds, store.Absent(k))
			ops = append(ops, store.Put(k, []byte(gateway)), store.Put(keys.GatewayBlock(gateway, network, l.NewBlock), nil))
		}
		_, err = m.st.Txn(ctx, conds, ops)
		m.apply(network, func(p *Pool) {
			for _, l := range ls {
				if err == nil {
					p.CommitBlock(l)
				} else {
					p.AbortBlock(l)
				}
			}
		})
		if err == nil {
			return ls[0].NewBlock, nil
		}
		if !errors.Is(err, store.ErrConflict) || attempt >= 20 {
			return netip.Prefix{}, fmt.Errorf("lease blocks of %s to %s: %w", network, gateway, err)
		}
		m.Invalidate(network)
	}
}

// LeaseBlock leases a block of family f to gateway in network (or returns a
// block it holds that still has free addresses).
func (m *Manager) LeaseBlock(ctx context.Context, network, gateway string, f Family) (netip.Prefix, error) {
	for attempt := 0; ; attempt++ {
		var l Lease
		err := m.withPool(ctx, network, func(p *Pool) error {
			var err error
			l, err = p.ReserveBlock(gateway, f)
			return err
		})
		if err != nil {
			return netip.Prefix{}, err
		}
		if l.Existing {
			return l.NewBlock, nil
		}
		k := BlockKey(network, l.NewBlock)
		_, err = m.st.Txn(ctx, []store.Cond{store.Absent(k)}, []store.Op{store.Put(k, []byte(gateway)), store.Put(keys.GatewayBlock(gateway, network, l.NewBlock), nil)})
		if err == nil {
			m.apply(network, func(p *Pool) { p.CommitBlock(l) })
			return l.NewBlock, nil
		}
		m.apply(network, func(p *Pool) { p.AbortBlock(l) })
		if !errors.Is(err, store.ErrConflict) || attempt >= 20 {
			return netip.Prefix{}, fmt.Errorf("lease a block of %s to %s: %w", network, gateway, err)
		}
		m.Invalidate(network)
	}
}

// Blocks returns the blocks leased to gateway in network.
func (m *Manager) Blocks(ctx context.Context, network, gateway string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	err := m.withPool(ctx, network, func(p *Pool) error { out = p.Blocks(gateway); return nil })
	return out, err
}

// Status summarises a network's committed allocation state.
func (m *Manager) Status(ctx context.Context, network string) ([]SubnetInfo, error) {
	var out []SubnetInfo
	err := m.withPool(ctx, network, func(p *Pool) error { out = p.Status(); return nil })
	return out, err
}

// Addrs returns the addresses owner holds.
func (m *Manager) Addrs(ctx context.Context, network, owner string) ([]netip.Addr, error) {
	var out []netip.Addr
	err := m.withPool(ctx, network, func(p *Pool) error { out = p.Addrs(owner); return nil })
	return out, err
}
