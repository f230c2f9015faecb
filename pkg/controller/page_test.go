package controller

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
)

func openBolt(t testing.TB) store.Store {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// A watch's snapshot is read in pages; changes made while it is sent reach
// the watcher once each, in order, and the watcher ends with the store's state.
func TestWatchSnapshotInPages(t *testing.T) {
	st := openBolt(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 3*snapshotPage + 17
	var ops []store.Op
	for i := 0; i < n; i++ {
		ops = append(ops, store.Put(fmt.Sprintf("t/%05d", i), []byte("v0")))
	}
	if _, err := st.Txn(ctx, nil, ops); err != nil {
		t.Fatal(err)
	}
	// While the first page is being sent: change a key of the first page, of
	// a later page (twice), delete one of a later page, add one at the end.
	write := func(ops ...store.Op) {
		if _, err := st.Txn(ctx, nil, ops); err != nil {
			t.Fatal(err)
		}
	}
	state := map[string]string{}
	puts := map[string]int{}
	var lastRev int64
	synced := false
	done := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- watch(ctx, st, "t/", 0, func(kv store.KV, et EventType, rev int64) error {
			switch et {
			case EventSynced:
				synced = true
				return nil
			case EventPut:
				if !synced && len(state) == 0 {
					write(store.Put("t/00001", []byte("v1")))
					write(store.Put("t/02500", []byte("v1")))
					write(store.Put("t/02500", []byte("v2")), store.Delete("t/03000"))
					write(store.Put("t/99999", []byte("v1")))
				}
				state[kv.Key] = string(kv.Value)
				puts[kv.Key]++
			case EventDelete:
				delete(state, kv.Key)
			}
			if synced {
				if rev <= lastRev {
					return fmt.Errorf("change at revision %d after %d", rev, lastRev)
				}
				lastRev = rev
			}
			if synced && state["t/99999"] == "v1" && state["t/02500"] == "v2" && state["t/00001"] == "v1" && state["t/03000"] == "" {
				close(done)
				return context.Canceled
			}
			return nil
		})
	}()
	select {
	case <-done:
	case err := <-errc:
		t.Fatalf("watch ended: %v", err)
	}
	if err := <-errc; err != context.Canceled {
		t.Fatalf("watch: %v", err)
	}
	kvs, _, err := st.List(ctx, "t/")
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != len(state) {
		t.Fatalf("watcher holds %d keys, the store %d", len(state), len(kvs))
	}
	for _, kv := range kvs {
		if state[kv.Key] != string(kv.Value) {
			t.Fatalf("%s: watcher has %q, store %q", kv.Key, state[kv.Key], kv.Value)
		}
	}
	// t/02500's page was read after its two changes: it was sent once, not replayed.
	if puts["t/02500"] != 1 || puts["t/00001"] != 2 {
		t.Fatalf("t/02500 sent %d times (want 1), t/00001 %d times (want 2: in the snapshot, then its change)", puts["t/02500"], puts["t/00001"])
	}
}

// Paging through endpoints, filtered or not, lists each once, in pages no
// larger than asked, and reads what the pages hold, not the whole store.
func TestListEndpointsPaged(t *testing.T) {
	c, cs := newCounting(t)
	fill(t, c, 300)
	ctx := context.Background()
	// small-gw: small-1 has label 100; small-0 and small-2 are pending.
	for _, q := range []struct {
		network, gateway string
		want             int
	}{
		{"", "", 303}, {"big", "", 300}, {"", "big-gw", 300}, {"small", "", 3}, {"", "small-gw", 3}, {"big", "small-gw", 0}, {"small", "small-gw", 3},
	} {
		for _, size := range []int{1, 2, 7, 1000} {
			seen := map[string]bool{}
			p := Page{Size: size}
			pages := 0
			for {
				cs.reset()
				eps, res, err := c.ListEndpointsPage(ctx, q.network, q.gateway, p)
				if err != nil {
					t.Fatalf("%+v size %d: %v", q, size, err)
				}
				pages++
				if read, _, _ := cs.reset(); read > (scanBudget+1)*size+2 {
					t.Errorf("%+v size %d: a page read %d records", q, size, read)
				}
				if len(eps) > size {
					t.Fatalf("%+v: page of %d, size %d", q, len(eps), size)
				}
				for _, e := range eps {
					if seen[e.Id] {
						t.Fatalf("%+v size %d: %s listed twice", q, size, e.Id)
					}
					seen[e.Id] = true
				}
				if res.Next == "" {
					break
				}
				if pages > 1000 {
					t.Fatalf("%+v size %d: no end", q, size)
				}
				p.After = res.Next
			}
			if len(seen) != q.want {
				t.Fatalf("%+v size %d: %d endpoints listed, want %d", q, size, len(seen), q.want)
			}
		}
	}
	// A token of another listing is refused.
	if _, _, err := c.ListEndpointsPage(ctx, "small", "", Page{Size: 5, After: keys.Endpoint("big-1")}); err == nil {
		t.Fatal("a page token of another listing was accepted")
	}
	if _, _, err := c.ListNetworksPage(ctx, Page{Size: 0}); err == nil {
		t.Fatal("page size 0 accepted")
	}
	ns, res, err := c.ListNetworksPage(ctx, Page{Size: 2})
	if err != nil || len(ns) != 2 || res.Next != keys.Network(ns[1].Name) {
		t.Fatalf("networks page: %v, %+v, %v", ns, res, err)
	}
	gs, res, err := c.ListGatewaysPage(ctx, Page{Size: 5})
	if err != nil || len(gs) != 3 || res.Next != "" {
		t.Fatalf("gateways page: %v, %+v, %v", gs, res, err)
	}
}
