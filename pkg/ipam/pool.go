// Package ipam allocates endpoint addresses for one virtual network.
//
// A network's subnets are cut into blocks (default /28 for IPv4, /124 for IPv6)
// that are leased to gateways; a gateway's endpoints get addresses from its own
// blocks, so a gateway can keep admitting endpoints from them while the
// controller is unreachable.
//
// Pool is the pure core: no I/O, no locking. Allocation is two-phase: Reserve
// picks an address (and, when the gateway has no free block, a new block) and
// holds it in memory; the caller persists it and then Commits, or Aborts. A crash
// between the two leaves nothing behind, since only committed state is stored.
// Manager (manager.go) is the store-backed, concurrency-safe layer.
//
// It owns the keys of IPAM state (built by pkg/keys) and is the only package
// that parses them (GatewayBlocks reads a gateway's leases for others); it may
// not know about endpoints beyond an owner id, nor about the API.
package ipam

import (
	"errors"
	"fmt"
	"math/big"
	"math/bits"
	"net/netip"
	"slices"
)

// Default block sizes (prefix lengths).
const (
	DefaultBlockV4 = 28
	DefaultBlockV6 = 124
)

var (
	// ErrExhausted means no free address (or block) is left for the request.
	ErrExhausted = errors.New("address pool exhausted")
	// ErrInUse means a requested address is held by another owner.
	ErrInUse = errors.New("address already in use")
	// ErrOutOfRange means a requested address is in none of the subnets.
	ErrOutOfRange = errors.New("address is not in any subnet of the network")
	// ErrBlockTaken means the requested address lies in a block leased to another gateway.
	ErrBlockTaken = errors.New("address is in a block leased to another gateway")
	// ErrNeedBlock means the gateway's leased blocks are full (ReserveLeased).
	ErrNeedBlock = errors.New("no free address in the blocks leased to the gateway")
)

// Family selects IPv4 or IPv6.
type Family uint8

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func familyOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}

// Config describes a network's address space.
type Config struct {
	Subnets []netip.Prefix
	BlockV4 int // prefix length of IPv4 blocks; 0 = DefaultBlockV4
	BlockV6 int // prefix length of IPv6 blocks; 0 = DefaultBlockV6
}

// Validate checks subnets (canonical, no overlap) and block sizes.
func (c Config) Validate() error {
	if len(c.Subnets) == 0 {
		return errors.New("at least one subnet is required")
	}
	b4, b6 := c.blockLen(IPv4), c.blockLen(IPv6)
	if b4 < 8 || b4 > 30 {
		return fmt.Errorf("IPv4 block size /%d: must be between /8 and /30", b4)
	}
	// A block's addresses are a bitmap: /104 (2^24 addresses, 2 MiB) is the
	// largest IPv6 block, as /8 is for IPv4; /64 would not even fit the
	// 64-bit address count.
	if b6 < 104 || b6 > 126 {
		return fmt.Errorf("IPv6 block size /%d: must be between /104 and /126", b6)
	}
	for i, s := range c.Subnets {
		if !s.IsValid() {
			return fmt.Errorf("subnet %d is not a valid prefix", i)
		}
		if s != s.Masked() {
			return fmt.Errorf("subnet %s has host bits set (did you mean %s?)", s, s.Masked())
		}
		if bl := c.blockLen(familyOf(s.Addr())); s.Bits() > bl {
			return fmt.Errorf("subnet %s is smaller than one /%d block", s, bl)
		}
		for _, o := range c.Subnets[:i] {
			if s.Overlaps(o) {
				return fmt.Errorf("subnets %s and %s overlap", o, s)
			}
		}
	}
	return nil
}

func (c Config) blockLen(f Family) int {
	if f == IPv4 {
		if c.BlockV4 == 0 {
			return DefaultBlockV4
		}
		return c.BlockV4
	}
	if c.BlockV6 == 0 {
		return DefaultBlockV6
	}
	return c.BlockV6
}

// maxBlocks bounds how many blocks of a very large (IPv6) subnet are addressable.
const maxBlocks = 1 << 40

type subnet struct {
	prefix    netip.Prefix
	blockLen  int
	blockSize uint64 // addresses per block
	nblocks   uint64
	leased    map[uint64]*block // by block index
	nextFree  uint64            // no unleased block below this index
}

type block struct {
	sub      *subnet
	index    uint64
	prefix   netip.Prefix
	gateway  string
	pending  bool     // reserved, not yet committed
	used     []uint64 // bitmap of offsets in use (committed or pending)
	nused    int
	reserved int // offsets never given out (network/broadcast addresses)
}

// Lease is the result of Reserve: the address, and the block newly leased to the
// gateway for it, if any. Existing is set when the owner already held an address
// of that family (nothing to persist).
type Lease struct {
	Owner    string
	Gateway  string
	Addr     netip.Addr
	NewBlock netip.Prefix
	Existing bool
}

// Pool is one network's allocation state.
type Pool struct {
	cfg     Config
	subnets []*subnet
	owners  map[netip.Addr]string // committed and pending
	pending map[netip.Addr]Lease  // reserved, not yet committed
	byOwner map[string][]netip.Addr
	gwBlks  map[string][]*block // per gateway, in lease order
	gwHint  map[string]int      // no free address in gwBlks[gw][:gwHint[gw]]
}

// NewPool returns an empty pool for cfg.
func NewPool(cfg Config) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Pool{cfg: cfg, owners: map[netip.Addr]string{}, pending: map[netip.Addr]Lease{},
		byOwner: map[string][]netip.Addr{}, gwBlks: map[string][]*block{}, gwHint: map[string]int{}}
	for _, s := range cfg.Subnets {
		bl := cfg.blockLen(familyOf(s.Addr()))
		n := uint64(maxBlocks)
		if d := bl - s.Bits(); d < 40 {
			n = 1 << d
		}
		p.subnets = append(p.subnets, &subnet{prefix: s, blockLen: bl, blockSize: 1 << (s.Addr().BitLen() - bl), nblocks: n, leased: map[uint64]*block{}})
	}
	return p, nil
}

// Config returns the pool's configuration.
func (p *Pool) Config() Config { return p.cfg }

// Families returns the address families the pool has subnets for.
func (p *Pool) Families() []Family {
	var fs []Family
	for _, s := range p.subnets {
		if f := familyOf(s.prefix.Addr()); !slices.Contains(fs, f) {
			fs = append(fs, f)
		}
	}
	return fs
}

// addrAt returns base + off.
func addrAt(base netip.Addr, off uint64) netip.Addr {
	if base.Is4() {
		b := base.As4()
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		v += uint32(off)
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	b := base.As16()
	hi := uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 | uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
	lo := uint64(b[8])<<56 | uint64(b[9])<<48 | uint64(b[10])<<40 | uint64(b[11])<<32 | uint64(b[12])<<24 | uint64(b[13])<<16 | uint64(b[14])<<8 | uint64(b[15])
	lo2, carry := bits.Add64(lo, off, 0)
	hi += carry
	var o [16]byte
	for i := 0; i < 8; i++ {
		o[i] = byte(hi >> (56 - 8*i))
		o[8+i] = byte(lo2 >> (56 - 8*i))
	}
	return netip.AddrFrom16(o)
}

// offsetOf returns a - base (a must be in a prefix starting at base, within 2^64).
func offsetOf(base, a netip.Addr) uint64 {
	if base.Is4() {
		x, y := base.As4(), a.As4()
		return uint64((uint32(y[0])<<24 | uint32(y[1])<<16 | uint32(y[2])<<8 | uint32(y[3])) - (uint32(x[0])<<24 | uint32(x[1])<<16 | uint32(x[2])<<8 | uint32(x[3])))
	}
	x, y := base.As16(), a.As16()
	var lx, ly uint64
	for i := 8; i < 16; i++ {
		lx, ly = lx<<8|uint64(x[i]), ly<<8|uint64(y[i])
	}
	d, _ := bits.Sub64(ly, lx, 0) // offsets within a subnet are below 2^64 by construction
	return d
}

func (s *subnet) blockPrefix(i uint64) netip.Prefix {
	return netip.PrefixFrom(addrAt(s.prefix.Addr(), i*s.blockSize), s.blockLen)
}

func (s *subnet) newBlock(i uint64, gw string) *block {
	b := &block{sub: s, index: i, prefix: s.blockPrefix(i), gateway: gw, used: make([]uint64, (s.blockSize+63)/64)}
	// The IPv4 network and broadcast addresses, and IPv6's subnet-router anycast
	// address, are never given out.
	last := s.nblocks - 1
	if i == 0 {
		b.mark(0)
		b.reserved++
	}
	if i == last && s.prefix.Addr().Is4() && s.blockSize*s.nblocks == 1<<(32-s.prefix.Bits()) {
		b.mark(s.blockSize - 1)
		b.reserved++
	}
	return b
}

func (b *block) isSet(off uint64) bool { return b.used[off/64]&(1<<(off%64)) != 0 }
func (b *block) mark(off uint64)       { b.used[off/64] |= 1 << (off % 64); b.nused++ }
func (b *block) clear(off uint64)      { b.used[off/64] &^= 1 << (off % 64); b.nused-- }
func (b *block) full() bool            { return uint64(b.nused) >= b.sub.blockSize }

func (b *block) firstFree() (uint64, bool) {
	for w, word := range b.used {
		if word != ^uint64(0) {
			off := uint64(w*64 + bits.TrailingZeros64(^word))
			if off < b.sub.blockSize {
				return off, true
			}
		}
	}
	return 0, false
}

// find locates the subnet and, if leased, the block holding a.
func (p *Pool) find(a netip.Addr) (*subnet, *block, uint64) {
	for _, s := range p.subnets {
		if s.prefix.Contains(a) {
			off := offsetOf(s.prefix.Addr(), a)
			i := off / s.blockSize
			return s, s.leased[i], off % s.blockSize
		}
	}
	return nil, nil, 0
}

// Reserve picks an address of family f for owner on gateway. If owner already
// holds one of that family, it is returned with Existing set.
func (p *Pool) Reserve(owner, gateway string, f Family) (Lease, error) {
	return p.reserve(owner, gateway, f, true)
}

// ReserveLeased is Reserve limited to the blocks whose lease to gateway is
// committed: when they are full it returns ErrNeedBlock (and leases nothing),
// so that the caller leases a block on its own first (Manager.Reserve).
// Reservations made this way never write a block lease, so concurrent ones
// never conflict with each other over a block.
func (p *Pool) ReserveLeased(owner, gateway string, f Family) (Lease, error) {
	return p.reserve(owner, gateway, f, false)
}

func (p *Pool) reserve(owner, gateway string, f Family, newBlock bool) (Lease, error) {
	for _, a := range p.byOwner[owner] {
		if familyOf(a) == f {
			return Lease{Owner: owner, Gateway: gateway, Addr: a, Existing: true}, nil
		}
	}
	blks := p.gwBlks[gateway]
	allFull := true
	for i := p.gwHint[gateway]; i < len(blks); i++ {
		b := blks[i]
		if b.full() {
			if allFull {
				p.gwHint[gateway] = i + 1
			}
			continue
		}
		allFull = false
		if familyOf(b.prefix.Addr()) != f || (b.pending && !newBlock) {
			continue
		}
		if off, ok := b.firstFree(); ok {
			return p.take(owner, gateway, b, off, pendingPrefix(b)), nil
		}
	}
	if !newBlock {
		return Lease{}, fmt.Errorf("IPv%d: %w", f, ErrNeedBlock)
	}
	b := p.leaseNewBlock(gateway, f)
	if b == nil {
		return Lease{}, fmt.Errorf("IPv%d: %w", f, ErrExhausted)
	}
	off, _ := b.firstFree()
	return p.take(owner, gateway, b, off, b.prefix), nil
}

// leaseNewBlock reserves (pending) the first unleased block of family f with
// an assignable address for gateway, or returns nil.
func (p *Pool) leaseNewBlock(gateway string, f Family) *block {
	for _, s := range p.subnets {
		if familyOf(s.prefix.Addr()) != f {
			continue
		}
		for i := s.nextFree; i < s.nblocks; i++ {
			if s.leased[i] != nil {
				continue
			}
			s.nextFree = i + 1
			b := s.newBlock(i, gateway)
			if b.full() {
				continue // a /31-like block with nothing usable
			}
			b.pending = true
			s.leased[i] = b
			p.gwBlks[gateway] = append(p.gwBlks[gateway], b)
			return b
		}
	}
	return nil
}

// ReserveAddr reserves a specific address for owner on gateway.
func (p *Pool) ReserveAddr(owner, gateway string, a netip.Addr) (Lease, error) {
	a = a.Unmap()
	if cur, ok := p.owners[a]; ok {
		if cur == owner {
			return Lease{Owner: owner, Gateway: gateway, Addr: a, Existing: true}, nil
		}
		return Lease{}, fmt.Errorf("%s: %w", a, ErrInUse)
	}
	for _, held := range p.byOwner[owner] {
		if familyOf(held) == familyOf(a) {
			return Lease{}, fmt.Errorf("%s already holds %s", owner, held)
		}
	}
	s, b, off := p.find(a)
	if s == nil {
		return Lease{}, fmt.Errorf("%s: %w", a, ErrOutOfRange)
	}
	var nb netip.Prefix
	created := b == nil
	if created {
		i := offsetOf(s.prefix.Addr(), a) / s.blockSize
		b = s.newBlock(i, gateway)
		b.pending = true
		s.leased[i] = b
		p.gwBlks[gateway] = append(p.gwBlks[gateway], b)
		nb = b.prefix
	} else if b.gateway != gateway {
		return Lease{}, fmt.Errorf("%s: %w (%s, gateway %s)", a, ErrBlockTaken, b.prefix, b.gateway)
	} else {
		nb = pendingPrefix(b)
	}
	if b.isSet(off) {
		if created {
			p.dropBlock(b)
		}
		return Lease{}, fmt.Errorf("%s is a network, broadcast or anycast address and cannot be assigned", a)
	}
	return p.take(owner, gateway, b, off, nb), nil
}

// pendingPrefix returns the prefix of a block whose lease is not committed yet:
// a lease taken from it must persist the block too (with the same "absent"
// condition), or it could be stored without its block if the reservation
// that created the block fails.
func pendingPrefix(b *block) netip.Prefix {
	if b.pending {
		return b.prefix
	}
	return netip.Prefix{}
}

func (p *Pool) take(owner, gateway string, b *block, off uint64, nb netip.Prefix) Lease {
	a := addrAt(b.prefix.Addr(), off)
	b.mark(off)
	l := Lease{Owner: owner, Gateway: gateway, Addr: a, NewBlock: nb}
	p.owners[a] = owner
	p.pending[a] = l
	p.byOwner[owner] = append(p.byOwner[owner], a)
	return l
}

// ReserveBlock returns a block of family f leased to gateway that still has a
// free address, or reserves a new one (NewBlock set; Commit or Abort it like
// an address lease; Addr is not set).
func (p *Pool) ReserveBlock(gateway string, f Family) (Lease, error) {
	for _, b := range p.gwBlks[gateway] {
		if familyOf(b.prefix.Addr()) == f && !b.full() && !b.pending {
			return Lease{Gateway: gateway, NewBlock: b.prefix, Existing: true}, nil
		}
	}
	if b := p.leaseNewBlock(gateway, f); b != nil {
		return Lease{Gateway: gateway, NewBlock: b.prefix}, nil
	}
	return Lease{}, fmt.Errorf("IPv%d block: %w", f, ErrExhausted)
}

// CommitBlock and AbortBlock finish a ReserveBlock.
func (p *Pool) CommitBlock(l Lease) {
	if l.Existing {
		return
	}
	if _, b, _ := p.find(l.NewBlock.Addr()); b != nil && b.gateway == l.Gateway {
		b.pending = false
		return
	}
	p.LoadBlock(l.NewBlock, l.Gateway)
}

func (p *Pool) AbortBlock(l Lease) {
	if l.Existing {
		return
	}
	if _, b, _ := p.find(l.NewBlock.Addr()); b != nil && b.pending && b.gateway == l.Gateway && b.nused == b.reserved {
		p.dropBlock(b)
	}
}

// Blocks returns the prefixes of the blocks leased to gateway (committed).
func (p *Pool) Blocks(gateway string) []netip.Prefix {
	var out []netip.Prefix
	for _, b := range p.gwBlks[gateway] {
		if !b.pending {
			out = append(out, b.prefix)
		}
	}
	return out
}

// Pending returns the reservations not yet committed or aborted.
func (p *Pool) Pending() []Lease {
	out := make([]Lease, 0, len(p.pending))
	for _, l := range p.pending {
		out = append(out, l)
	}
	return out
}

// Readopt carries a reservation still in flight over into a pool rebuilt from
// the store, so that it is not handed out twice meanwhile. It reports false if
// the rebuilt state already gives the address (or its block) to someone else;
// the in-flight write will then fail its store condition.
func (p *Pool) Readopt(l Lease) bool {
	nl, err := p.ReserveAddr(l.Owner, l.Gateway, l.Addr)
	if err != nil || nl.Existing {
		return false
	}
	p.pending[l.Addr] = l
	return true
}

// Commit makes a reservation permanent (after it was persisted).
func (p *Pool) Commit(l Lease) {
	if l.Existing {
		return
	}
	if _, ok := p.pending[l.Addr]; !ok || p.owners[l.Addr] != l.Owner {
		// The pool was rebuilt from the store while the write was in flight
		// (and may even have handed the address to a reservation that will
		// now fail): record the persisted lease as the truth.
		p.unassign(l.Addr)
		if l.NewBlock.IsValid() {
			p.LoadBlock(l.NewBlock, l.Gateway)
		}
		p.LoadAddr(l.Addr, l.Owner)
		return
	}
	delete(p.pending, l.Addr)
	if l.NewBlock.IsValid() {
		if _, b, _ := p.find(l.Addr); b != nil {
			b.pending = false
		}
	}
}

// Abort undoes a reservation that was not persisted.
func (p *Pool) Abort(l Lease) {
	if _, ok := p.pending[l.Addr]; l.Existing || !ok || p.owners[l.Addr] != l.Owner {
		return
	}
	p.unassign(l.Addr)
	if l.NewBlock.IsValid() {
		if _, b, _ := p.find(l.Addr); b != nil && b.pending && b.nused == b.reserved {
			p.dropBlock(b)
		}
	}
}

func (p *Pool) unassign(a netip.Addr) {
	owner, ok := p.owners[a]
	if !ok {
		return
	}
	delete(p.owners, a)
	delete(p.pending, a)
	held := p.byOwner[owner]
	held = slices.DeleteFunc(held, func(x netip.Addr) bool { return x == a })
	if len(held) == 0 {
		delete(p.byOwner, owner)
	} else {
		p.byOwner[owner] = held
	}
	if _, b, off := p.find(a); b != nil && b.isSet(off) {
		b.clear(off)
		delete(p.gwHint, b.gateway)
	}
}

func (p *Pool) dropBlock(b *block) {
	delete(b.sub.leased, b.index)
	if b.index < b.sub.nextFree {
		b.sub.nextFree = b.index
	}
	p.gwBlks[b.gateway] = slices.DeleteFunc(p.gwBlks[b.gateway], func(x *block) bool { return x == b })
	delete(p.gwHint, b.gateway)
	if len(p.gwBlks[b.gateway]) == 0 {
		delete(p.gwBlks, b.gateway)
	}
}

// Release frees an address. Blocks stay leased to their gateway.
func (p *Pool) Release(a netip.Addr) { p.unassign(a.Unmap()) }

// ReleaseOwner frees every address of owner and returns them.
func (p *Pool) ReleaseOwner(owner string) []netip.Addr {
	held := slices.Clone(p.byOwner[owner])
	for _, a := range held {
		p.unassign(a)
	}
	return held
}

// Owner returns who holds a.
func (p *Pool) Owner(a netip.Addr) (string, bool) { o, ok := p.owners[a.Unmap()]; return o, ok }

// Addrs returns the addresses held by owner.
func (p *Pool) Addrs(owner string) []netip.Addr { return slices.Clone(p.byOwner[owner]) }

// LoadBlock records a committed block lease (when rebuilding from the store).
func (p *Pool) LoadBlock(prefix netip.Prefix, gateway string) error {
	s, b, _ := p.find(prefix.Addr())
	if s == nil || prefix.Bits() != s.blockLen || prefix.Masked() != prefix {
		return fmt.Errorf("block %s does not fit the network's subnets", prefix)
	}
	if b != nil {
		if b.gateway != gateway {
			return fmt.Errorf("block %s leased to both %s and %s", prefix, b.gateway, gateway)
		}
		return nil
	}
	i := offsetOf(s.prefix.Addr(), prefix.Addr()) / s.blockSize
	b = s.newBlock(i, gateway)
	s.leased[i] = b
	p.gwBlks[gateway] = append(p.gwBlks[gateway], b)
	for s.leased[s.nextFree] != nil && s.nextFree < s.nblocks {
		s.nextFree++
	}
	return nil
}

// LoadAddr records a committed address (when rebuilding from the store); its
// block must have been loaded.
func (p *Pool) LoadAddr(a netip.Addr, owner string) error {
	a = a.Unmap()
	_, b, off := p.find(a)
	if b == nil {
		return fmt.Errorf("address %s is in no leased block", a)
	}
	if cur, ok := p.owners[a]; ok {
		if cur == owner {
			return nil
		}
		return fmt.Errorf("address %s held by both %s and %s", a, cur, owner)
	}
	b.mark(off)
	p.owners[a] = owner
	p.byOwner[owner] = append(p.byOwner[owner], a)
	return nil
}

// ReleaseGatewayBlocks drops every block of gateway that holds no address and
// returns them.
func (p *Pool) ReleaseGatewayBlocks(gateway string) []netip.Prefix {
	var out []netip.Prefix
	for _, b := range slices.Clone(p.gwBlks[gateway]) {
		if b.nused == b.reserved && !b.pending {
			out = append(out, b.prefix)
			p.dropBlock(b)
		}
	}
	return out
}

// BlockInfo describes a leased block.
type BlockInfo struct {
	Prefix  netip.Prefix
	Gateway string
	Used    int
	Size    int // assignable addresses
}

// SubnetInfo describes a subnet's use.
type SubnetInfo struct {
	Prefix netip.Prefix
	// Size is the number of assignable addresses, exact for any subnet (an
	// IPv6 /48 has 2^80-1); SizeUint64 is it saturated at 2^64-1.
	Size        *big.Int
	Used        uint64
	BlockLen    int
	BlocksTotal *big.Int // exact: 2^(block length - prefix length)
	Blocks      []BlockInfo
}

// SizeUint64 is Size, saturated at 2^64-1.
func (si SubnetInfo) SizeUint64() uint64 { return saturate(si.Size) }

// BlocksTotalUint64 is BlocksTotal, saturated at 2^64-1.
func (si SubnetInfo) BlocksTotalUint64() uint64 { return saturate(si.BlocksTotal) }

func saturate(x *big.Int) uint64 {
	if x == nil {
		return 0
	}
	if !x.IsUint64() {
		return ^uint64(0)
	}
	return x.Uint64()
}

// subnetSize is the number of assignable addresses of p: all but the first
// (never given out) and, for IPv4, the broadcast address.
func subnetSize(p netip.Prefix) *big.Int {
	n := new(big.Int).Lsh(big.NewInt(1), uint(p.Addr().BitLen()-p.Bits()))
	n.Sub(n, big.NewInt(1))
	if p.Addr().Is4() && n.Sign() > 0 {
		n.Sub(n, big.NewInt(1))
	}
	return n
}

// Status summarises the pool, committed state only.
func (p *Pool) Status() []SubnetInfo {
	var out []SubnetInfo
	for _, s := range p.subnets {
		si := SubnetInfo{Prefix: s.prefix, BlockLen: s.blockLen, Size: subnetSize(s.prefix),
			BlocksTotal: new(big.Int).Lsh(big.NewInt(1), uint(s.blockLen-s.prefix.Bits()))}
		idx := make([]uint64, 0, len(s.leased))
		for i, b := range s.leased {
			if !b.pending {
				idx = append(idx, i)
			}
		}
		slices.Sort(idx)
		for _, i := range idx {
			b := s.leased[i]
			used := 0
			for w := range b.used {
				used += bits.OnesCount64(b.used[w])
			}
			used -= b.reserved
			for o := uint64(0); o < s.blockSize; o++ {
				if _, ok := p.pending[addrAt(b.prefix.Addr(), o)]; b.isSet(o) && ok {
					used--
				}
			}
			si.Used += uint64(used)
			si.Blocks = append(si.Blocks, BlockInfo{Prefix: b.prefix, Gateway: b.gateway, Used: used, Size: int(s.blockSize) - b.reserved})
		}
		out = append(out, si)
	}
	return out
}
