// Package store defines the controller's persistent key-value store: revisioned keys,
// conditional multi-key transactions and ordered watches. Two backends implement it:
// pkg/store/bolt (one bbolt file, the default) and pkg/store/etcd (several controllers
// sharing state). Both pass the same conformance suite in pkg/store/storetest.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrNotFound is returned by Get for a key that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict is returned by Txn when one of its conditions does not hold;
	// nothing was written.
	ErrConflict = errors.New("transaction condition failed")
	// ErrCompacted is sent on a watch whose start revision is older than the
	// oldest change the store still remembers; restart from a fresh List.
	ErrCompacted = errors.New("revision compacted")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("store closed")
)

// MaxKeyLen bounds keys so that a write can never fail half-way on a key the
// backend would refuse.
const MaxKeyLen = 1024

// KV is one key with its value and the revision that last modified it.
type KV struct {
	Key    string
	Value  []byte
	ModRev int64
}

// Op is one write inside a transaction.
type Op struct {
	Key    string
	Value  []byte
	Delete bool
}

// Put returns an Op that sets key to value.
func Put(key string, value []byte) Op { return Op{Key: key, Value: value} }

// Delete returns an Op that removes key (no error if it is absent).
func Delete(key string) Op { return Op{Key: key, Delete: true} }

// Cond is a precondition of a transaction: key's ModRev must equal ModRev;
// ModRev 0 means the key must not exist.
type Cond struct {
	Key    string
	ModRev int64
}

// Absent is a Cond that holds while key does not exist.
func Absent(key string) Cond { return Cond{Key: key} }

// Unchanged is a Cond that holds while kv has not been modified since it was read.
func Unchanged(kv KV) Cond { return Cond{Key: kv.Key, ModRev: kv.ModRev} }

// EventType tells a put from a delete.
type EventType uint8

const (
	EventPut EventType = iota + 1
	EventDelete
)

func (t EventType) String() string {
	switch t {
	case EventPut:
		return "put"
	case EventDelete:
		return "delete"
	}
	return fmt.Sprintf("EventType(%d)", uint8(t))
}

// Event is one change seen by a watch. All events of one transaction share Rev.
type Event struct {
	Type  EventType
	Key   string
	Value []byte // nil for deletes
	Rev   int64
}

// WatchBatch carries the events of one or more consecutive revisions, in order,
// or a terminal error (after which the channel is closed).
type WatchBatch struct {
	Events []Event
	Err    error
}

// Store is implemented by every backend. All methods are safe for concurrent use.
type Store interface {
	// Get returns the key's value, or ErrNotFound.
	Get(ctx context.Context, key string) (KV, error)
	// List returns every key with the prefix, in key order, and the store
	// revision the listing is consistent with.
	List(ctx context.Context, prefix string) ([]KV, int64, error)
	// ListPage is a bounded range scan: at most limit keys with the prefix
	// that sort strictly after the key after ("" starts at the prefix), in key
	// order, the store revision the page is consistent with, and whether more
	// keys with the prefix follow. It reads only what it returns (plus one key
	// to tell whether more follow), whatever the prefix holds. limit must be
	// positive.
	ListPage(ctx context.Context, prefix, after string, limit int) (kvs []KV, rev int64, more bool, err error)
	// Txn applies ops atomically if every cond holds, and returns the new
	// revision. When a condition fails it returns ErrConflict and writes nothing.
	Txn(ctx context.Context, conds []Cond, ops []Op) (int64, error)
	// Watch streams the changes to keys with the prefix made after revision
	// after, in revision order, until ctx ends (the channel is then closed).
	Watch(ctx context.Context, prefix string, after int64) <-chan WatchBatch
	// Close releases the store. Watches end.
	Close() error
}

// ValidatePage checks the arguments of ListPage.
func ValidatePage(prefix, after string, limit int) error {
	if limit <= 0 {
		return fmt.Errorf("page limit %d is not positive", limit)
	}
	if after != "" && !strings.HasPrefix(after, prefix) {
		return fmt.Errorf("page start %.64q is outside the prefix %.64q", after, prefix)
	}
	return nil
}

// ValidateOps checks keys before anything is written.
func ValidateOps(conds []Cond, ops []Op) error {
	if len(ops) == 0 {
		return errors.New("transaction has no operations")
	}
	for _, c := range conds {
		if err := validKey(c.Key); err != nil {
			return err
		}
	}
	for _, o := range ops {
		if err := validKey(o.Key); err != nil {
			return err
		}
	}
	return nil
}

func validKey(k string) error {
	if k == "" {
		return errors.New("empty key")
	}
	if len(k) > MaxKeyLen {
		return fmt.Errorf("key of %d bytes is longer than %d", len(k), MaxKeyLen)
	}
	return nil
}
