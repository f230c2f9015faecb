package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/iotfabric/iotfabric/pkg/store"
)

// Ops counts the calls made to a store.
type Ops struct {
	Gets   int // Get calls (found or not)
	Ranges int // List and ListPage calls
	Txns   int // Txn calls, committed or not
	Writes int // operations in those transactions
	// Conflicts counts the Txn calls that returned store.ErrConflict
	// (nothing written).
	Conflicts int
}

// Add returns the sum of o and p.
func (o Ops) Add(p Ops) Ops {
	return Ops{Gets: o.Gets + p.Gets, Ranges: o.Ranges + p.Ranges, Txns: o.Txns + p.Txns, Writes: o.Writes + p.Writes, Conflicts: o.Conflicts + p.Conflicts}
}

func (o Ops) String() string {
	return fmt.Sprintf("%d gets, %d ranges, %d txns (%d writes, %d conflicts)", o.Gets, o.Ranges, o.Txns, o.Writes, o.Conflicts)
}

// Counting wraps a store and counts the calls made through it, with a trace
// of them (for the message of a test that fails on their number).
type Counting struct {
	store.Store

	mu    sync.Mutex
	ops   Ops      // guarded by mu
	trace []string // guarded by mu
}

// NewCounting wraps st.
func NewCounting(st store.Store) *Counting { return &Counting{Store: st} }

func (s *Counting) note(f func(*Ops), what string) {
	s.mu.Lock()
	f(&s.ops)
	s.trace = append(s.trace, what)
	s.mu.Unlock()
}

// Get counts one get.
func (s *Counting) Get(ctx context.Context, key string) (store.KV, error) {
	s.note(func(o *Ops) { o.Gets++ }, "get "+key)
	return s.Store.Get(ctx, key)
}

// List counts one range.
func (s *Counting) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	s.note(func(o *Ops) { o.Ranges++ }, "range "+prefix)
	return s.Store.List(ctx, prefix)
}

// ListPage counts one range.
func (s *Counting) ListPage(ctx context.Context, prefix, after string, limit int) ([]store.KV, int64, bool, error) {
	s.note(func(o *Ops) { o.Ranges++ }, "range "+prefix)
	return s.Store.ListPage(ctx, prefix, after, limit)
}

// Txn counts one transaction and its operations.
func (s *Counting) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, error) {
	var keys []string
	for _, op := range ops {
		keys = append(keys, op.Key)
	}
	rev, err := s.Store.Txn(ctx, conds, ops)
	what := "txn " + strings.Join(keys, " ")
	if errors.Is(err, store.ErrConflict) {
		what += " (conflict)"
	}
	s.note(func(o *Ops) {
		o.Txns++
		o.Writes += len(ops)
		if errors.Is(err, store.ErrConflict) {
			o.Conflicts++
		}
	}, what)
	return rev, err
}

// Reset returns the counts and the trace since the last Reset, and starts
// again from zero.
func (s *Counting) Reset() (Ops, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, tr := s.ops, s.trace
	s.ops, s.trace = Ops{}, nil
	return o, tr
}
