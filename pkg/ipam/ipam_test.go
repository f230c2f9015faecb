package ipam

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"

	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
)

func mustPrefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "at least one subnet"},
		{Config{Subnets: mustPrefixes("10.0.0.1/24")}, "host bits"},
		{Config{Subnets: mustPrefixes("10.0.0.0/16", "10.0.128.0/24")}, "overlap"},
		{Config{Subnets: mustPrefixes("10.0.0.0/30")}, "smaller than one /28 block"},
		{Config{Subnets: mustPrefixes("10.0.0.0/24"), BlockV4: 31}, "between /8 and /30"},
		{Config{Subnets: mustPrefixes("fd00::/64"), BlockV6: 127}, "between /104 and /126"},
		{Config{Subnets: mustPrefixes("fd00::/48"), BlockV6: 64}, "between /104 and /126"}, // a /64 block: its size overflows the count
	} {
		err := tc.cfg.Validate()
		if err == nil || !contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want it to mention %q", tc.cfg, err, tc.want)
		}
	}
	if err := (Config{Subnets: mustPrefixes("10.0.0.0/24", "fd00::/64")}).Validate(); err != nil {
		t.Fatal(err)
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && (s == sub || indexOf(s, sub) >= 0))
}
func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func TestPoolBlocksPerGateway(t *testing.T) {
	p, err := NewPool(Config{Subnets: mustPrefixes("10.1.0.0/24", "fd00:1::/120")})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := p.Reserve("ep1", "gw1", IPv4)
	// While the block's lease is not committed, a second reservation from it
	// must persist the block too.
	inFlight, _ := p.Reserve("ep0", "gw1", IPv4)
	if inFlight.NewBlock != a.NewBlock {
		t.Fatalf("reservation from an uncommitted block: %+v, want NewBlock %s", inFlight, a.NewBlock)
	}
	p.Abort(inFlight)
	p.Commit(a)
	b, _ := p.Reserve("ep2", "gw2", IPv4)
	p.Commit(b)
	c, _ := p.Reserve("ep3", "gw1", IPv4)
	v6, _ := p.Reserve("ep1", "gw1", IPv6)
	for _, l := range []Lease{c, v6} {
		p.Commit(l)
	}
	if a.Addr.String() != "10.1.0.1" || a.NewBlock.String() != "10.1.0.0/28" {
		t.Fatalf("first lease %+v: want 10.1.0.1 in new block 10.1.0.0/28 (network address skipped)", a)
	}
	if b.NewBlock.String() != "10.1.0.16/28" || b.Addr.String() != "10.1.0.16" {
		t.Fatalf("second gateway got %+v, want its own block 10.1.0.16/28", b)
	}
	if c.NewBlock.IsValid() || c.Addr.String() != "10.1.0.2" {
		t.Fatalf("gw1's second endpoint got %+v, want 10.1.0.2 from its existing block", c)
	}
	if v6.Addr.String() != "fd00:1::1" || v6.NewBlock.String() != "fd00:1::/124" {
		t.Fatalf("IPv6 lease %+v", v6)
	}
	again, _ := p.Reserve("ep1", "gw1", IPv4)
	if !again.Existing || again.Addr != a.Addr {
		t.Fatalf("second reserve for the same owner returned %+v, want the same address", again)
	}
	// The last block of the IPv4 subnet never gives out the broadcast address.
	q, _ := NewPool(Config{Subnets: mustPrefixes("10.2.0.0/28")})
	var got []string
	for i := 0; ; i++ {
		l, err := q.Reserve(fmt.Sprint("e", i), "gw", IPv4)
		if err != nil {
			if !errors.Is(err, ErrExhausted) {
				t.Fatal(err)
			}
			break
		}
		q.Commit(l)
		got = append(got, l.Addr.String())
	}
	if len(got) != 14 || got[0] != "10.2.0.1" || got[13] != "10.2.0.14" {
		t.Fatalf("a /28 gave out %d addresses %v, want .1 to .14", len(got), got)
	}
}

func TestReserveAddr(t *testing.T) {
	p, _ := NewPool(Config{Subnets: mustPrefixes("10.1.0.0/24")})
	l, err := p.ReserveAddr("vm1", "gw1", netip.MustParseAddr("10.1.0.50"))
	if err != nil || l.NewBlock.String() != "10.1.0.48/28" {
		t.Fatalf("%+v %v", l, err)
	}
	p.Commit(l)
	if _, err := p.ReserveAddr("vm2", "gw1", netip.MustParseAddr("10.1.0.50")); !errors.Is(err, ErrInUse) {
		t.Fatalf("taken address: %v", err)
	}
	if _, err := p.ReserveAddr("vm2", "gw2", netip.MustParseAddr("10.1.0.51")); !errors.Is(err, ErrBlockTaken) {
		t.Fatalf("address in another gateway's block: %v", err)
	}
	if _, err := p.ReserveAddr("vm2", "gw2", netip.MustParseAddr("10.9.0.1")); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("address outside the subnets: %v", err)
	}
	if _, err := p.ReserveAddr("vm2", "gw2", netip.MustParseAddr("10.1.0.0")); err == nil {
		t.Fatal("network address accepted")
	}
	if got := p.Status()[0].Blocks; len(got) != 1 {
		t.Fatalf("failed reservation left a block behind: %+v", got)
	}
	// Dynamic allocation on gw1 continues in the block the explicit address leased.
	d, _ := p.Reserve("pod", "gw1", IPv4)
	if d.Addr.String() != "10.1.0.48" {
		t.Fatalf("dynamic after explicit: %v", d.Addr)
	}
}

// model is the naive reference: a map of owner to addresses.
type model struct {
	owner map[netip.Addr]string
	addrs map[string][]netip.Addr
	gw    map[string]string
}

func openStore(t testing.TB, path string) store.Store {
	s, err := bolt.Open(path, bolt.Options{NoSync: os.Getenv("NOSYNC") != ""})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestManagerAgainstModel(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ipam.db")
	st := openStore(t, path)
	cfg := Config{Subnets: mustPrefixes("10.5.0.0/24", "fd00:5::/120"), BlockV4: 28, BlockV6: 124}
	m := NewManager(st)
	if err := m.Configure("net", cfg); err != nil {
		t.Fatal(err)
	}
	ref := model{owner: map[netip.Addr]string{}, addrs: map[string][]netip.Addr{}, gw: map[string]string{}}
	rng := rand.New(rand.NewPCG(1, 2))
	gws := []string{"gw-a", "gw-b", "gw-c"}
	exhausted := 0
	for step := 0; step < 4000; step++ {
		owner := fmt.Sprintf("ep%d", rng.IntN(300))
		switch op := rng.IntN(10); {
		case op < 6:
			gw := gws[rng.IntN(len(gws))]
			if g, ok := ref.gw[owner]; ok {
				gw = g
			}
			got, err := m.Allocate(ctx, "net", owner, gw)
			if errors.Is(err, ErrExhausted) {
				exhausted++
				continue
			}
			if err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			if prev, ok := ref.addrs[owner]; ok {
				if fmt.Sprint(prev) != fmt.Sprint(got) {
					t.Fatalf("step %d: %s asked again, got %v, had %v", step, owner, got, prev)
				}
				continue
			}
			if len(got) != 2 || !got[0].Is4() || !got[1].Is6() {
				t.Fatalf("step %d: got %v, want one IPv4 and one IPv6 address", step, got)
			}
			for _, a := range got {
				if o, dup := ref.owner[a]; dup {
					t.Fatalf("step %d: %s given to %s while %s holds it", step, a, owner, o)
				}
				if !cfg.Subnets[0].Contains(a) && !cfg.Subnets[1].Contains(a) {
					t.Fatalf("step %d: %s outside the subnets", step, a)
				}
				ref.owner[a] = owner
			}
			ref.addrs[owner] = got
			ref.gw[owner] = gw
		case op < 9:
			rel, err := m.ReleaseOwner(ctx, "net", owner)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(rel) != fmt.Sprint(ref.addrs[owner]) && !(len(rel) == 0 && len(ref.addrs[owner]) == 0) {
				t.Fatalf("step %d: release of %s freed %v, model says %v", step, owner, rel, ref.addrs[owner])
			}
			for _, a := range ref.addrs[owner] {
				delete(ref.owner, a)
			}
			delete(ref.addrs, owner)
			delete(ref.gw, owner)
		default:
			// Restart: a new manager reading the same store must see the same state.
			m = NewManager(st)
			m.Configure("net", cfg)
		}
	}
	checkBlocksPerGateway(t, m, ref)
	// And after closing and reopening the file.
	st.Close()
	st = openStore(t, path)
	defer st.Close()
	m = NewManager(st)
	m.Configure("net", cfg)
	for owner, want := range ref.addrs {
		got, _ := m.Addrs(ctx, "net", owner)
		sort.Slice(got, func(i, j int) bool { return got[i].Less(got[j]) })
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("after reopen %s holds %v, want %v", owner, got, want)
		}
	}
	t.Logf("%d owners hold addresses; %d allocations found the pool exhausted", len(ref.addrs), exhausted)
}

func checkBlocksPerGateway(t *testing.T, m *Manager, ref model) {
	t.Helper()
	st, err := m.Status(context.Background(), "net")
	if err != nil {
		t.Fatal(err)
	}
	blockGw := map[netip.Prefix]string{}
	var used uint64
	for _, s := range st {
		used += s.Used
		for _, b := range s.Blocks {
			blockGw[b.Prefix] = b.Gateway
		}
	}
	if used != uint64(len(ref.owner)) {
		t.Fatalf("status counts %d used addresses, model %d", used, len(ref.owner))
	}
	for a, owner := range ref.owner {
		found := false
		for p, gw := range blockGw {
			if p.Contains(a) {
				found = true
				if gw != ref.gw[owner] {
					t.Fatalf("%s of %s (on %s) is in block %s of %s", a, owner, ref.gw[owner], p, gw)
				}
			}
		}
		if !found {
			t.Fatalf("%s is in no leased block", a)
		}
	}
}

func TestManagerConcurrent(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, filepath.Join(t.TempDir(), "ipam.db"))
	defer st.Close()
	cfg := Config{Subnets: mustPrefixes("10.6.0.0/22")}
	// Two managers on one store stand for two controllers: the store's
	// conditions, not the in-memory cache, keep addresses unique.
	m1, m2 := NewManager(st), NewManager(st)
	m1.Configure("net", cfg)
	m2.Configure("net", cfg)
	var mu sync.Mutex
	seen := map[netip.Addr]string{}
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			m := m1
			if w%2 == 1 {
				m = m2
			}
			for i := 0; i < 40; i++ {
				owner := fmt.Sprintf("w%d-%d", w, i)
				addrs, err := m.Allocate(ctx, "net", owner, fmt.Sprint("gw", w%4))
				if err != nil {
					t.Error(err)
					return
				}
				// The same owner asked again, concurrently with others, gets the same answer.
				again, err := m.Allocate(ctx, "net", owner, fmt.Sprint("gw", w%4))
				if err != nil || again[0] != addrs[0] {
					t.Errorf("%s: second allocation %v %v, first %v", owner, again, err, addrs)
				}
				mu.Lock()
				if o, dup := seen[addrs[0]]; dup {
					t.Errorf("%s given to %s and %s", addrs[0], o, owner)
				}
				seen[addrs[0]] = owner
				mu.Unlock()
				if i%3 == 0 {
					// Forget it before the store frees it: another worker may get it next.
					mu.Lock()
					delete(seen, addrs[0])
					mu.Unlock()
					if _, err := m.ReleaseOwner(ctx, "net", owner); err != nil {
						t.Error(err)
					}
				}
			}
		}(w)
	}
	wg.Wait()
	kvs, _, _ := st.List(ctx, "ipam/net/addrs/")
	if len(kvs) != len(seen) {
		t.Fatalf("store holds %d addresses, %d are allocated", len(kvs), len(seen))
	}
	// Every stored address lies in a stored block: a fresh manager can load it.
	m3 := NewManager(st)
	m3.Configure("net", cfg)
	if _, err := m3.Status(ctx, "net"); err != nil {
		t.Fatalf("the stored state does not load: %v", err)
	}
}

func TestCrashBetweenReserveAndCommitLeaksNothing(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, filepath.Join(t.TempDir(), "ipam.db"))
	defer st.Close()
	cfg := Config{Subnets: mustPrefixes("10.7.0.0/24")}
	m := NewManager(st)
	m.Configure("net", cfg)
	r, err := m.Reserve(ctx, "net", "ep", "gw", nil)
	if err != nil || len(r.Ops) != 1 {
		t.Fatalf("%+v %v", r, err)
	}
	// The process dies here: the reservation was never written (the block
	// was leased to the gateway on its own, before the reservation).
	m2 := NewManager(st)
	m2.Configure("net", cfg)
	s, _ := m2.Status(ctx, "net")
	if s[0].Used != 0 || len(s[0].Blocks) != 1 || s[0].Blocks[0].Gateway != "gw" || s[0].Blocks[0].Used != 0 {
		t.Fatalf("after a crash before commit: %+v", s[0])
	}
	got, _ := m2.Allocate(ctx, "net", "ep", "gw")
	if got[0] != r.Addrs()[0] {
		t.Fatalf("the address reserved before the crash should be free again: got %v", got)
	}
}

func TestLeaseBlock(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, filepath.Join(t.TempDir(), "ipam.db"))
	defer st.Close()
	m := NewManager(st)
	m.Configure("net", Config{Subnets: mustPrefixes("10.9.0.0/26", "fd00:9::/120")})
	b1, err := m.LeaseBlock(ctx, "net", "gw1", IPv4)
	if err != nil || b1.String() != "10.9.0.0/28" {
		t.Fatalf("%v %v", b1, err)
	}
	again, _ := m.LeaseBlock(ctx, "net", "gw1", IPv4)
	if again != b1 {
		t.Fatalf("a gateway with a free block got another: %v", again)
	}
	b6, _ := m.LeaseBlock(ctx, "net", "gw1", IPv6)
	if b6.String() != "fd00:9::/124" {
		t.Fatal(b6)
	}
	b2, _ := m.LeaseBlock(ctx, "net", "gw2", IPv4)
	if b2.String() != "10.9.0.16/28" {
		t.Fatal(b2)
	}
	// The lease is stored: a new manager sees it, and allocations for gw1 use it.
	m2 := NewManager(st)
	m2.Configure("net", Config{Subnets: mustPrefixes("10.9.0.0/26", "fd00:9::/120")})
	if bs, _ := m2.Blocks(ctx, "net", "gw1"); len(bs) != 2 {
		t.Fatalf("gw1 holds %v after reload", bs)
	}
	a, _ := m2.Allocate(ctx, "net", "pod", "gw2")
	if !b2.Contains(a[0]) {
		t.Fatalf("gw2's pod got %v outside its block %v", a, b2)
	}
	for i := 0; i < 2; i++ {
		m2.LeaseBlock(ctx, "net", fmt.Sprint("gw-x", i), IPv4)
	}
	if _, err := m2.LeaseBlock(ctx, "net", "gw-late", IPv4); !errors.Is(err, ErrExhausted) {
		t.Fatalf("leasing past the last block: %v", err)
	}
}

// TestBlockIndexFollowsEveryLease: blocks leased one at a time and several
// at once (many concurrent requests of one gateway) are all in the
// gateway's block index, which Register reads instead of every block.
func TestBlockIndexFollowsEveryLease(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, filepath.Join(t.TempDir(), "ipam.db"))
	defer st.Close()
	m := NewManager(st)
	if err := m.Configure("net", Config{Subnets: mustPrefixes("10.9.0.0/20"), BlockV4: 29}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 8 {
				if _, err := m.Allocate(ctx, "net", fmt.Sprintf("w%d-%d", w, i), "gw"); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	all, err := GatewayBlocks(ctx, st, []string{"net"}, "gw")
	if err != nil {
		t.Fatal(err)
	}
	idx, err := IndexedGatewayBlocks(ctx, st, "gw")
	if err != nil {
		t.Fatal(err)
	}
	set := func(bs []GatewayBlock) map[string]bool {
		out := map[string]bool{}
		for _, b := range bs {
			out[b.Network+" "+b.Prefix.String()] = true
		}
		return out
	}
	if a, i := set(all), set(idx); len(a) < 64 || fmt.Sprint(a) != fmt.Sprint(i) {
		t.Fatalf("blocks %d %v, index %d %v", len(a), a, len(i), i)
	}
}

// Subnet sizes and block counts are exact for IPv6 subnets of any size.
func TestStatusCountsDoNotSaturate(t *testing.T) {
	cfg := Config{Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("fd00:1::/64"), netip.MustParsePrefix("fd00:2::/48")}}
	p, err := NewPool(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ size, blocks string }{
		{"254", "16"}, // /24 in /28 blocks; network and broadcast never given out
		{"18446744073709551615", "1152921504606846976"},          // 2^64-1, 2^60 blocks of /124
		{"1208925819614629174706175", "75557863725914323419136"}, // 2^80-1, 2^76
	}
	st := p.Status()
	for i, w := range want {
		if got := st[i].Size.String(); got != w.size {
			t.Errorf("%s: size %s, want %s", st[i].Prefix, got, w.size)
		}
		if got := st[i].BlocksTotal.String(); got != w.blocks {
			t.Errorf("%s: blocks %s, want %s", st[i].Prefix, got, w.blocks)
		}
	}
	if st[2].SizeUint64() != ^uint64(0) || st[0].SizeUint64() != 254 || st[1].BlocksTotalUint64() != 1<<60 {
		t.Errorf("saturated values: %d %d %d", st[2].SizeUint64(), st[0].SizeUint64(), st[1].BlocksTotalUint64())
	}
}
