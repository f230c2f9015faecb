// Package storetest is the conformance suite every store.Store backend passes.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/store"
)

// Opener returns a fresh, empty store; the suite closes it.
type Opener func(t *testing.T) store.Store

// Run runs every conformance test against stores made by open.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"GetPutDelete", testGetPutDelete},
		{"ListPrefix", testListPrefix},
		{"ListPage", testListPage},
		{"Conditions", testConditions},
		{"ConcurrentCreateOneWins", testConcurrentCreate},
		{"InvalidOpsWriteNothing", testInvalidOps},
		{"WatchOrderAndResume", testWatch},
		{"WatchFromListRevision", testWatchFromList},
		{"WatchEndsWithContext", testWatchCancel},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { s.Close() })
			tc.fn(t, s)
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func testGetPutDelete(t *testing.T, s store.Store) {
	c := ctx(t)
	if _, err := s.Get(c, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get of missing key: %v, want ErrNotFound", err)
	}
	r1, err := s.Txn(c, nil, []store.Op{store.Put("a", []byte("1"))})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := s.Get(c, "a")
	if err != nil || string(kv.Value) != "1" || kv.ModRev != r1 {
		t.Fatalf("Get = %+v, %v; want value 1 at rev %d", kv, err, r1)
	}
	r2, err := s.Txn(c, nil, []store.Op{store.Put("a", []byte("2")), store.Put("b", []byte("x"))})
	if err != nil || r2 <= r1 {
		t.Fatalf("second txn rev %d err %v, want > %d", r2, err, r1)
	}
	kb, _ := s.Get(c, "b")
	ka, _ := s.Get(c, "a")
	if ka.ModRev != r2 || kb.ModRev != r2 {
		t.Fatalf("both keys of one txn must share its revision: a=%d b=%d txn=%d", ka.ModRev, kb.ModRev, r2)
	}
	if _, err := s.Txn(c, nil, []store.Op{store.Delete("a"), store.Delete("never-existed")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(c, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted key still there: %v", err)
	}
}

func testListPrefix(t *testing.T, s store.Store) {
	c := ctx(t)
	for _, k := range []string{"net/b", "net/a", "netx", "gw/a", "net/c"} {
		if _, err := s.Txn(c, nil, []store.Op{store.Put(k, []byte(k))}); err != nil {
			t.Fatal(err)
		}
	}
	kvs, rev, err := s.List(c, "net/")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range kvs {
		keys = append(keys, kv.Key)
		if string(kv.Value) != kv.Key {
			t.Errorf("value of %s = %q", kv.Key, kv.Value)
		}
	}
	if fmt.Sprint(keys) != "[net/a net/b net/c]" {
		t.Fatalf("List(net/) = %v", keys)
	}
	if rev < kvs[2].ModRev {
		t.Fatalf("list revision %d older than a key it returned (%d)", rev, kvs[2].ModRev)
	}
	empty, _, err := s.List(c, "nothing/")
	if err != nil || len(empty) != 0 {
		t.Fatalf("List of empty prefix = %v, %v", empty, err)
	}
}

func testListPage(t *testing.T, s store.Store) {
	c := ctx(t)
	var want []string
	for i := 0; i < 25; i++ {
		want = append(want, fmt.Sprintf("p/%02d", i))
	}
	for _, k := range append([]string{"o", "p", "p0", "q/00"}, want...) {
		if _, err := s.Txn(c, nil, []store.Op{store.Put(k, []byte(k))}); err != nil {
			t.Fatal(err)
		}
	}
	for _, limit := range []int{1, 7, 25, 100} {
		var got []string
		after, pages := "", 0
		for {
			kvs, rev, more, err := s.ListPage(c, "p/", after, limit)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			if len(kvs) > limit {
				t.Fatalf("limit %d: page of %d keys", limit, len(kvs))
			}
			for _, kv := range kvs {
				if string(kv.Value) != kv.Key || kv.ModRev == 0 || kv.ModRev > rev {
					t.Fatalf("limit %d: %+v at list revision %d", limit, kv, rev)
				}
				got = append(got, kv.Key)
			}
			if !more {
				break
			}
			if len(kvs) == 0 {
				t.Fatalf("limit %d: empty page with more set", limit)
			}
			after = kvs[len(kvs)-1].Key
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("limit %d: paged listing %v, want %v", limit, got, want)
		}
		if wantPages := (len(want) + limit - 1) / limit; pages != wantPages && pages != wantPages+1 {
			t.Fatalf("limit %d: %d pages for %d keys", limit, pages, len(want))
		}
	}
	// A start key that no longer exists still resumes after it.
	kvs, _, more, err := s.ListPage(c, "p/", "p/10x", 2)
	if err != nil || len(kvs) != 2 || kvs[0].Key != "p/11" || !more {
		t.Fatalf("ListPage after a missing key = %v, more %v, %v", kvs, more, err)
	}
	if kvs, _, more, err := s.ListPage(c, "p/", "p/24", 5); err != nil || len(kvs) != 0 || more {
		t.Fatalf("ListPage after the last key = %v, more %v, %v", kvs, more, err)
	}
	if _, _, _, err := s.ListPage(c, "p/", "q/00", 5); err == nil {
		t.Fatal("ListPage accepted a start outside the prefix")
	}
	if _, _, _, err := s.ListPage(c, "p/", "", 0); err == nil {
		t.Fatal("ListPage accepted a zero limit")
	}
}

func testConditions(t *testing.T, s store.Store) {
	c := ctx(t)
	if _, err := s.Txn(c, []store.Cond{store.Absent("k")}, []store.Op{store.Put("k", []byte("v1"))}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Txn(c, []store.Cond{store.Absent("k")}, []store.Op{store.Put("k", []byte("v2")), store.Put("other", nil)}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("create of existing key: %v, want ErrConflict", err)
	}
	if _, err := s.Get(c, "other"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("a failed transaction wrote one of its keys")
	}
	kv, _ := s.Get(c, "k")
	if _, err := s.Txn(c, []store.Cond{store.Unchanged(kv)}, []store.Op{store.Put("k", []byte("v3"))}); err != nil {
		t.Fatalf("update with current revision: %v", err)
	}
	if _, err := s.Txn(c, []store.Cond{store.Unchanged(kv)}, []store.Op{store.Put("k", []byte("v4"))}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("update with stale revision: %v, want ErrConflict", err)
	}
	got, _ := s.Get(c, "k")
	if string(got.Value) != "v3" {
		t.Fatalf("value %q, want v3", got.Value)
	}
}

func testConcurrentCreate(t *testing.T, s store.Store) {
	c := ctx(t)
	const n = 32
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, conflicts := 0, 0
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := s.Txn(c, []store.Cond{store.Absent("addr/10.0.0.5")},
				[]store.Op{store.Put("addr/10.0.0.5", []byte(fmt.Sprint(i))), store.Put(fmt.Sprintf("owner/%d", i), nil)})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, store.ErrConflict):
				conflicts++
			default:
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	if wins != 1 || conflicts != n-1 {
		t.Fatalf("%d creates won and %d conflicted, want 1 and %d", wins, conflicts, n-1)
	}
	owners, _, _ := s.List(c, "owner/")
	if len(owners) != 1 {
		t.Fatalf("%d owner keys written, want 1", len(owners))
	}
}

func testInvalidOps(t *testing.T, s store.Store) {
	c := ctx(t)
	long := make([]byte, store.MaxKeyLen+1)
	for i := range long {
		long[i] = 'x'
	}
	for _, ops := range [][]store.Op{
		nil,
		{store.Put("", []byte("x"))},
		{store.Put("ok", nil), store.Put(string(long), nil)},
	} {
		if _, err := s.Txn(c, nil, ops); err == nil {
			t.Errorf("Txn(%d ops) accepted invalid input", len(ops))
		}
	}
	if _, err := s.Get(c, "ok"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("invalid transaction wrote a key")
	}
}

func collect(t *testing.T, ch <-chan store.WatchBatch, n int) []store.Event {
	t.Helper()
	var out []store.Event
	timeout := time.After(20 * time.Second)
	for len(out) < n {
		select {
		case b, ok := <-ch:
			if !ok {
				t.Fatalf("watch closed after %d of %d events", len(out), n)
			}
			if b.Err != nil {
				t.Fatalf("watch error: %v", b.Err)
			}
			out = append(out, b.Events...)
		case <-timeout:
			t.Fatalf("got %d of %d events", len(out), n)
		}
	}
	return out
}

func testWatch(t *testing.T, s store.Store) {
	c := ctx(t)
	r0, _ := s.Txn(c, nil, []store.Op{store.Put("x/start", nil)})
	wctx, cancel := context.WithCancel(c)
	defer cancel()
	ch := s.Watch(wctx, "w/", r0)
	var revs []int64
	for i := 0; i < 50; i++ {
		r, err := s.Txn(c, nil, []store.Op{store.Put(fmt.Sprintf("w/%02d", i), []byte{byte(i)}), store.Put("x/ignored", nil)})
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, r)
	}
	rd, _ := s.Txn(c, nil, []store.Op{store.Delete("w/07")})
	evs := collect(t, ch, 51)
	for i := 0; i < 50; i++ {
		e := evs[i]
		if e.Type != store.EventPut || e.Key != fmt.Sprintf("w/%02d", i) || e.Rev != revs[i] || len(e.Value) != 1 || e.Value[0] != byte(i) {
			t.Fatalf("event %d = %+v", i, e)
		}
	}
	if e := evs[50]; e.Type != store.EventDelete || e.Key != "w/07" || e.Rev != rd {
		t.Fatalf("delete event = %+v, want delete w/07 at %d", e, rd)
	}
	// Resume from the middle: a reconnecting watcher gets exactly what it missed.
	ch2 := s.Watch(wctx, "w/", revs[39])
	evs2 := collect(t, ch2, 11)
	if evs2[0].Key != "w/40" || evs2[10].Type != store.EventDelete {
		t.Fatalf("resumed watch starts at %+v, ends at %+v", evs2[0], evs2[10])
	}
}

func testWatchFromList(t *testing.T, s store.Store) {
	c := ctx(t)
	for i := 0; i < 5; i++ {
		s.Txn(c, nil, []store.Op{store.Put(fmt.Sprintf("l/%d", i), nil)})
	}
	kvs, rev, err := s.List(c, "l/")
	if err != nil || len(kvs) != 5 {
		t.Fatal(kvs, err)
	}
	wctx, cancel := context.WithCancel(c)
	defer cancel()
	ch := s.Watch(wctx, "l/", rev)
	s.Txn(c, nil, []store.Op{store.Put("l/new", nil)})
	evs := collect(t, ch, 1)
	if len(evs) != 1 || evs[0].Key != "l/new" {
		t.Fatalf("watch after list got %+v, want only l/new", evs)
	}
}

func testWatchCancel(t *testing.T, s store.Store) {
	c := ctx(t)
	wctx, cancel := context.WithCancel(c)
	ch := s.Watch(wctx, "z/", 0)
	cancel()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("watch channel not closed after its context ended")
		}
	}
}
