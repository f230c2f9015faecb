package controller

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// countingStore counts the records read through it.
type countingStore struct {
	store.Store
	mu    sync.Mutex
	read  int            // records returned by Get and List
	gets  map[string]int // Get calls by key
	lists []string       // List prefixes
}

func (s *countingStore) Get(ctx context.Context, key string) (store.KV, error) {
	kv, err := s.Store.Get(ctx, key)
	s.mu.Lock()
	s.gets[key]++
	if err == nil {
		s.read++
	}
	s.mu.Unlock()
	return kv, err
}

func (s *countingStore) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	kvs, rev, err := s.Store.List(ctx, prefix)
	s.mu.Lock()
	s.read += len(kvs)
	s.lists = append(s.lists, prefix)
	s.mu.Unlock()
	return kvs, rev, err
}

func (s *countingStore) ListPage(ctx context.Context, prefix, after string, limit int) ([]store.KV, int64, bool, error) {
	kvs, rev, more, err := s.Store.ListPage(ctx, prefix, after, limit)
	s.mu.Lock()
	s.read += len(kvs)
	s.lists = append(s.lists, prefix)
	s.mu.Unlock()
	return kvs, rev, more, err
}

func (s *countingStore) reset() (read int, gets map[string]int, lists []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	read, gets, lists = s.read, s.gets, s.lists
	s.read, s.gets, s.lists = 0, map[string]int{}, nil
	return read, gets, lists
}

func newCounting(t testing.TB) (*Controller, *countingStore) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cs := &countingStore{Store: st, gets: map[string]int{}}
	return New(cs, Config{}), cs
}

func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// fill creates networks big and small, gateways big-gw and small-gw, n
// endpoints of big on big-gw and 3 of small on small-gw.
func fill(t testing.TB, c *Controller, n int) {
	ctx := context.Background()
	for _, name := range []string{"big", "small", "spare"} {
		must[*v1.VirtualNetwork](t)(c.CreateNetwork(ctx, &v1.VirtualNetwork{Name: name, Subnets: []string{"10.0.0.0/8"}}))
	}
	for i, name := range []string{"big-gw", "small-gw", "spare-gw"} {
		must[*v1.Gateway](t)(c.CreateGateway(ctx, &v1.Gateway{Name: name, UnderlayAddress: fmt.Sprintf("192.0.2.%d", i+1)}))
	}
	var reqs []*v1.Endpoint
	for i := 0; i < n; i++ {
		reqs = append(reqs, &v1.Endpoint{Id: fmt.Sprint("big-", i), Network: "big", Gateway: "big-gw"})
	}
	for i := 0; i < 3; i++ { // one with a label, two pending
		reqs = append(reqs, &v1.Endpoint{Id: fmt.Sprint("small-", i), Network: "small", Gateway: "small-gw", Label: uint32(100 * (i % 2))})
	}
	for _, r := range reqs {
		must[*v1.Endpoint](t)(c.CreateEndpoint(ctx, r))
	}
	// spare-gw holds a block of spare (and no endpoint).
	must[any](t)(c.LeaseBlock(ctx, "spare-gw", "spare", 4))
}

// Listing a network's or a gateway's endpoints, and deleting a network or a
// gateway, read what they concern, not every endpoint.
func TestIndexedReads(t *testing.T) {
	c, cs := newCounting(t)
	const big = 300
	fill(t, c, big)
	ctx := context.Background()
	limit := 30 // well below the big network's 300 endpoints and their addresses
	check := func(what string, want int, got int) {
		t.Helper()
		read, _, lists := cs.reset()
		if got != want {
			t.Errorf("%s: %d endpoints, want %d", what, got, want)
		}
		if read > limit {
			t.Errorf("%s read %d records (lists %v); want at most %d", what, read, lists, limit)
		}
	}
	cs.reset()
	for _, q := range []struct{ what, network, gateway string }{
		{"list by network", "small", ""},
		{"list by gateway", "", "small-gw"},
		{"list by network and gateway", "small", "small-gw"},
	} {
		eps, _, err := c.ListEndpoints(ctx, q.network, q.gateway)
		if err != nil {
			t.Fatalf("%s: %v", q.what, err)
		}
		check(q.what, 3, len(eps))
	}
	if _, err := c.DeleteGateway(ctx, "spare-gw"); err != nil {
		t.Fatal(err)
	}
	check("delete gateway", 0, 0)
	if _, err := c.DeleteNetwork(ctx, "spare"); err != nil {
		t.Fatal(err)
	}
	check("delete network", 0, 0)
	// The full listing still has everything, and the blocks went with spare-gw.
	all, _, err := c.ListEndpoints(ctx, "", "")
	if err != nil || len(all) != big+3 {
		t.Fatalf("full listing: %d endpoints, %v", len(all), err)
	}
	// Label changes keep the gateway's listing: labelled, unlabelled, relabelled.
	for _, l := range []uint32{200, 0, 300} {
		e := must[*v1.Endpoint](t)(c.GetEndpoint(ctx, "small-0"))
		e.Label = l
		must[*v1.Endpoint](t)(c.UpdateEndpoint(ctx, e))
		if eps, _, _ := c.ListEndpoints(ctx, "", "small-gw"); len(eps) != 3 {
			t.Fatalf("after label %d the gateway lists %d endpoints", l, len(eps))
		}
	}
	// Deletes keep the indexes: the small network empties, then goes.
	for i := 0; i < 3; i++ {
		must[int64](t)(c.DeleteEndpoint(ctx, fmt.Sprint("small-", i)))
	}
	if eps, _, _ := c.ListEndpoints(ctx, "", "small-gw"); len(eps) != 0 {
		t.Fatalf("deleted endpoints still listed: %v", eps)
	}
	must[int64](t)(c.DeleteNetwork(ctx, "small"))
	must[int64](t)(c.DeleteGateway(ctx, "small-gw"))
}

// A bulk call reads each network and gateway it names once.
func TestBulkReadsParentsOnce(t *testing.T) {
	c, cs := newCounting(t)
	ctx := context.Background()
	must[*v1.VirtualNetwork](t)(c.CreateNetwork(ctx, &v1.VirtualNetwork{Name: "n", Subnets: []string{"10.0.0.0/16"}, Ipv4BlockSize: 24}))
	must[*v1.Gateway](t)(c.CreateGateway(ctx, &v1.Gateway{Name: "g", UnderlayAddress: "192.0.2.1"}))
	// The gateway's block is leased beforehand, so that no two creations
	// compete for a new block (which would make them read again).
	if p := must[netip.Prefix](t)(c.LeaseBlock(ctx, "g", "n", 4)); p.String() != "10.0.0.0/24" {
		t.Fatalf("leased %s", p)
	}
	var reqs []*v1.Endpoint
	for i := 0; i < 100; i++ {
		reqs = append(reqs, &v1.Endpoint{Id: fmt.Sprint("e", i), Network: "n", Gateway: "g", Addresses: []string{fmt.Sprint("10.0.0.", i+1)}})
	}
	cs.reset()
	_, errs := c.CreateEndpoints(ctx, reqs)
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	_, gets, _ := cs.reset()
	if gets[keys.Network("n")] != 1 || gets[keys.Gateway("g")] != 1 {
		t.Fatalf("bulk call of 100 read the network %d times and the gateway %d times, want once each",
			gets[keys.Network("n")], gets[keys.Gateway("g")])
	}
}

// A store from a version without indexes is indexed at start.
func TestIndexesBuiltAtStart(t *testing.T) {
	c, cs := newCounting(t)
	fill(t, c, 20)
	ctx := context.Background()
	// Remove the indexes as an earlier version would not have written them.
	for _, p := range []string{keys.EndpointIndex, keys.Pending} {
		kvs, _, err := cs.Store.List(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		var ops []store.Op
		for _, kv := range kvs {
			ops = append(ops, store.Delete(kv.Key))
		}
		must[int64](t)(cs.Store.Txn(ctx, nil, ops))
	}
	if eps, _, _ := c.ListEndpoints(ctx, "big", ""); len(eps) != 0 {
		t.Fatalf("indexes not removed: %d", len(eps))
	}
	c2 := New(cs.Store, Config{})
	must[int](t)(c2.LoadNetworks(ctx))
	eps, _, err := c2.ListEndpoints(ctx, "big", "")
	if err != nil || len(eps) != 20 {
		t.Fatalf("after start: %d endpoints of big, %v", len(eps), err)
	}
	if eps, _, _ := c2.ListEndpoints(ctx, "", "small-gw"); len(eps) != 3 || !strings.HasPrefix(eps[0].Id, "small-") {
		t.Fatalf("after start: %v", eps)
	}
}

// BenchmarkListEndpointsOfGateway lists the 20 endpoints of one gateway among
// 10,000 endpoints on 500 gateways.
func BenchmarkListEndpointsOfGateway(b *testing.B) {
	st, err := bolt.Open(filepath.Join(b.TempDir(), "state.db"), bolt.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	c := New(st, Config{})
	ctx := context.Background()
	must[*v1.VirtualNetwork](b)(c.CreateNetwork(ctx, &v1.VirtualNetwork{Name: "n", Subnets: []string{"10.64.0.0/10"}}))
	const gws, eps = 500, 10000
	for g := 0; g < gws; g++ {
		must[*v1.Gateway](b)(c.CreateGateway(ctx, &v1.Gateway{Name: fmt.Sprint("gw", g), UnderlayAddress: fmt.Sprintf("192.0.%d.%d", 2+g/250, 1+g%250)}))
	}
	reqs := make([]*v1.Endpoint, eps)
	for i := range reqs {
		reqs[i] = &v1.Endpoint{Id: fmt.Sprint("ep", i), Network: "n", Gateway: fmt.Sprint("gw", i%gws)}
	}
	if _, errs := c.CreateEndpoints(ctx, reqs); errs[0] != nil {
		b.Fatal(errs[0])
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		got, _, err := c.ListEndpoints(ctx, "", fmt.Sprint("gw", i%gws))
		if err != nil || len(got) != eps/gws {
			b.Fatalf("%d endpoints, %v", len(got), err)
		}
	}
}
