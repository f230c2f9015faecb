package bolt

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestReopenKeepsDataAndRevision(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	ctx := context.Background()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := s.Txn(ctx, nil, []store.Op{store.Put("k", []byte("v"))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{}); err == nil {
		t.Fatal("a second open of a file in use succeeded")
	}
	s.Close()
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	kv, err := s.Get(ctx, "k")
	if err != nil || string(kv.Value) != "v" || kv.ModRev != rev {
		t.Fatalf("after reopen: %+v %v", kv, err)
	}
	rev2, _ := s.Txn(ctx, nil, []store.Op{store.Put("k2", nil)})
	if rev2 != rev+1 {
		t.Fatalf("revision after reopen %d, want %d", rev2, rev+1)
	}
}

func TestWatchCompacted(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{LogRetention: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for i := 0; i < 30; i++ {
		if _, err := s.Txn(ctx, nil, []store.Op{store.Put(fmt.Sprint("k", i), nil)}); err != nil {
			t.Fatal(err)
		}
	}
	b := <-s.Watch(ctx, "", 1)
	if !errors.Is(b.Err, store.ErrCompacted) {
		t.Fatalf("watch from a trimmed revision: %+v, want ErrCompacted", b)
	}
}

func TestClosedStoreRefusesWrites(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.Txn(context.Background(), nil, []store.Op{store.Put("k", nil)}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Txn after Close: %v", err)
	}
}

// TestSeveralOpenAtOnce: tests and tools hold several stores open in one
// process; on 32-bit platforms (make test-arm) the address space each one
// reserves must leave room for that.
func TestSeveralOpenAtOnce(t *testing.T) {
	for i := range 8 {
		s, err := Open(filepath.Join(t.TempDir(), fmt.Sprintf("s%d.db", i)), Options{NoSync: true})
		if err != nil {
			t.Fatalf("store %d: %v", i, err)
		}
		defer s.Close()
	}
}
