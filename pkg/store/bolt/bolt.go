// Package bolt implements store.Store on one bbolt file.
//
// Writes go through a single writer goroutine that commits every transaction
// waiting at that moment in one bbolt transaction (group commit): each keeps its
// own conditions and revision, but they share the two fsyncs of the commit.
// Every change is also appended to a change log inside the same bbolt
// transaction, which is what watches read, so a watch can resume from any
// revision still in the log.
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"sync"
	"time"

	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/iotfabric/iotfabric/pkg/store"
)

var (
	bucketKV   = []byte("kv")
	bucketLog  = []byte("log")
	bucketMeta = []byte("meta")
	keyRev     = []byte("rev")
	keyOldest  = []byte("oldest") // oldest revision still in the log
)

// DefaultLogRetention is how many revisions of changes watches can resume from.
const DefaultLogRetention = 200000

// maxGroup bounds how many transactions share one commit.
const maxGroup = 512

// Options tune a Store.
type Options struct {
	// LogRetention is the number of revisions kept in the change log.
	LogRetention int64
	// NoSync skips fsync (tests only: a crash loses data).
	NoSync bool
	// OnCommit, if set, is called after every commit with its duration and the
	// number of transactions it carried (for metrics).
	OnCommit func(d time.Duration, txns int)
}

// Store is a bbolt-backed store.Store.
type Store struct {
	db        *bbolt.DB
	retention int64
	reqs      chan *txnReq
	done      chan struct{}
	onCommit  func(time.Duration, int)
	wg        sync.WaitGroup

	mu       sync.Mutex // guards the fields below
	closed   bool
	notifyCh chan struct{} // closed and replaced after every commit

	// enqueueMu is held for reading while a Txn queues its request and for
	// writing by Close, so nothing is queued after Close drains the queue.
	enqueueMu sync.RWMutex
}

type txnReq struct {
	conds []store.Cond
	ops   []store.Op
	rev   int64
	err   error
	done  chan struct{}
}

// initialMmapSize is address space only: it avoids remapping (which stalls
// every reader and writer) as the file grows. 1 GiB on 64-bit platforms; 64
// MiB on 32-bit ones (linux/arm), whose processes have 2-3 GiB of address
// space in all, so that 1 GiB per store ran out with the third open store.
const initialMmapSize = 64 << 20 << (bits.UintSize / 64 * 4)

// Open opens (or creates) the bbolt file at path.
func Open(path string, opts Options) (*Store, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout: 2 * time.Second, NoSync: opts.NoSync, NoFreelistSync: true,
		FreelistType:    bbolt.FreelistMapType,
		InitialMmapSize: initialMmapSize,
	})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open %s: the file is locked by another process (is another controller running on this data directory?)", path)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketKV, bucketLog, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise %s: %w", path, err)
	}
	s := &Store{
		db:        db,
		retention: opts.LogRetention,
		onCommit:  opts.OnCommit,
		reqs:      make(chan *txnReq, maxGroup),
		done:      make(chan struct{}),
		notifyCh:  make(chan struct{}),
	}
	if s.retention <= 0 {
		s.retention = DefaultLogRetention
	}
	s.wg.Add(1)
	go s.writer()
	return s, nil
}

// Path returns the file's path.
func (s *Store) Path() string { return s.db.Path() }

func encRev(r int64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(r))
	return b[:]
}

func decRev(b []byte) int64 {
	if len(b) < 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(b))
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	if err := ctx.Err(); err != nil {
		return store.KV{}, err
	}
	var kv store.KV
	err := s.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketKV).Get([]byte(key))
		if v == nil {
			return store.ErrNotFound
		}
		kv = store.KV{Key: key, ModRev: decRev(v), Value: bytes.Clone(v[8:])}
		return nil
	})
	return kv, err
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	var out []store.KV
	var rev int64
	err := s.db.View(func(tx *bbolt.Tx) error {
		rev = decRev(tx.Bucket(bucketMeta).Get(keyRev))
		c := tx.Bucket(bucketKV).Cursor()
		p := []byte(prefix)
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			out = append(out, store.KV{Key: string(k), ModRev: decRev(v), Value: bytes.Clone(v[8:])})
		}
		return nil
	})
	return out, rev, err
}

// ListPage implements store.Store.
func (s *Store) ListPage(ctx context.Context, prefix, after string, limit int) ([]store.KV, int64, bool, error) {
	if err := store.ValidatePage(prefix, after, limit); err != nil {
		return nil, 0, false, err
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, false, err
	}
	var out []store.KV
	var rev int64
	var more bool
	err := s.db.View(func(tx *bbolt.Tx) error {
		rev = decRev(tx.Bucket(bucketMeta).Get(keyRev))
		c := tx.Bucket(bucketKV).Cursor()
		p := []byte(prefix)
		k, v := c.Seek(p)
		if after != "" {
			k, v = c.Seek([]byte(after))
			if k != nil && string(k) == after {
				k, v = c.Next()
			}
		}
		for ; k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			if len(out) == limit {
				more = true
				break
			}
			out = append(out, store.KV{Key: string(k), ModRev: decRev(v), Value: bytes.Clone(v[8:])})
		}
		return nil
	})
	return out, rev, more, err
}

// Txn implements store.Store.
func (s *Store) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, error) {
	if err := store.ValidateOps(conds, ops); err != nil {
		return 0, err
	}
	r := &txnReq{conds: conds, ops: ops, done: make(chan struct{})}
	s.enqueueMu.RLock()
	if s.isClosed() {
		s.enqueueMu.RUnlock()
		return 0, store.ErrClosed
	}
	select {
	case s.reqs <- r:
		s.enqueueMu.RUnlock()
	case <-ctx.Done():
		s.enqueueMu.RUnlock()
		return 0, ctx.Err()
	}
	// Once queued the transaction is committed or refused as a whole; wait for
	// the outcome even if ctx ends, so the caller never guesses.
	<-r.done
	return r.rev, r.err
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Store) writer() {
	defer s.wg.Done()
	batch := make([]*txnReq, 0, maxGroup)
	for {
		select {
		case r := <-s.reqs:
			batch = append(batch[:0], r)
		case <-s.done:
			return
		}
	drain:
		for len(batch) < maxGroup {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		s.commit(batch)
	}
}

func (s *Store) commit(batch []*txnReq) {
	t0 := time.Now()
	err := s.db.Update(func(tx *bbolt.Tx) error {
		kvb, logb, meta := tx.Bucket(bucketKV), tx.Bucket(bucketLog), tx.Bucket(bucketMeta)
		rev := decRev(meta.Get(keyRev))
		for _, r := range batch {
			r.err, r.rev = nil, 0
			if !condsHold(kvb, r.conds) {
				r.err = store.ErrConflict
				continue
			}
			rev++
			for i, o := range r.ops {
				lk := make([]byte, 12)
				binary.BigEndian.PutUint64(lk, uint64(rev))
				binary.BigEndian.PutUint32(lk[8:], uint32(i))
				if o.Delete {
					if err := kvb.Delete([]byte(o.Key)); err != nil {
						return err
					}
				} else {
					v := make([]byte, 8+len(o.Value))
					copy(v, encRev(rev))
					copy(v[8:], o.Value)
					if err := kvb.Put([]byte(o.Key), v); err != nil {
						return err
					}
				}
				if err := logb.Put(lk, encodeLog(o)); err != nil {
					return err
				}
			}
			r.rev = rev
		}
		if err := meta.Put(keyRev, encRev(rev)); err != nil {
			return err
		}
		return trimLog(logb, meta, rev-s.retention)
	})
	if s.onCommit != nil {
		s.onCommit(time.Since(t0), len(batch))
	}
	for _, r := range batch {
		if err != nil {
			r.rev, r.err = 0, fmt.Errorf("commit: %w", err)
		}
		close(r.done)
	}
	s.mu.Lock()
	close(s.notifyCh)
	s.notifyCh = make(chan struct{})
	s.mu.Unlock()
}

func condsHold(kvb *bbolt.Bucket, conds []store.Cond) bool {
	for _, c := range conds {
		v := kvb.Get([]byte(c.Key))
		if c.ModRev == 0 {
			if v != nil {
				return false
			}
		} else if v == nil || decRev(v) != c.ModRev {
			return false
		}
	}
	return true
}

// trimLog removes log entries of revisions below keep.
func trimLog(logb, meta *bbolt.Bucket, keep int64) error {
	oldest := decRev(meta.Get(keyOldest))
	if keep <= oldest {
		return nil
	}
	c := logb.Cursor()
	n := 0
	for k, _ := c.First(); k != nil && decRev(k) < keep && n < 4*maxGroup; k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return err
		}
		n++
	}
	k, _ := c.First()
	next := keep
	if k != nil && decRev(k) < keep {
		next = decRev(k)
	}
	return meta.Put(keyOldest, encRev(next))
}

// Log entry: type(1) keylen(4) key value.
func encodeLog(o store.Op) []byte {
	b := make([]byte, 5+len(o.Key)+len(o.Value))
	b[0] = byte(store.EventPut)
	if o.Delete {
		b[0] = byte(store.EventDelete)
	}
	binary.BigEndian.PutUint32(b[1:], uint32(len(o.Key)))
	copy(b[5:], o.Key)
	copy(b[5+len(o.Key):], o.Value)
	return b
}

func decodeLog(lk, b []byte) (store.Event, error) {
	if len(lk) != 12 || len(b) < 5 {
		return store.Event{}, errors.New("corrupt change log entry")
	}
	// uint64: on 32-bit platforms int(uint32) can be negative.
	kl := uint64(binary.BigEndian.Uint32(b[1:]))
	if 5+kl > uint64(len(b)) {
		return store.Event{}, errors.New("corrupt change log entry")
	}
	ev := store.Event{Type: store.EventType(b[0]), Key: string(b[5 : 5+kl]), Rev: decRev(lk)}
	if ev.Type == store.EventPut {
		ev.Value = bytes.Clone(b[5+kl:])
	}
	return ev, nil
}

// Watch implements store.Store.
func (s *Store) Watch(ctx context.Context, prefix string, after int64) <-chan store.WatchBatch {
	ch := make(chan store.WatchBatch, 16)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(ch)
		next := after + 1
		for {
			s.mu.Lock()
			notify, closed := s.notifyCh, s.closed
			s.mu.Unlock()
			if closed {
				return
			}
			evs, last, err := s.readLog(prefix, next)
			if err != nil {
				select {
				case ch <- store.WatchBatch{Err: err}:
				case <-ctx.Done():
				}
				return
			}
			if len(evs) > 0 {
				select {
				case ch <- store.WatchBatch{Events: evs}:
				case <-ctx.Done():
					return
				case <-s.done:
					return
				}
			}
			if last >= next {
				next = last + 1
				continue // there may be more than one read's worth
			}
			select {
			case <-notify:
			case <-ctx.Done():
				return
			case <-s.done:
				return
			}
		}
	}()
	return ch
}

const maxWatchRead = 4096

// readLog returns the events with the prefix from revision from on (at most
// about maxWatchRead log entries) and the last revision it looked at.
func (s *Store) readLog(prefix string, from int64) ([]store.Event, int64, error) {
	var evs []store.Event
	last := from - 1
	err := s.db.View(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		cur := decRev(meta.Get(keyRev))
		if from > cur {
			return nil
		}
		if oldest := decRev(meta.Get(keyOldest)); from < oldest {
			return fmt.Errorf("watch from revision %d: %w (oldest kept is %d)", from, store.ErrCompacted, oldest)
		}
		c := tx.Bucket(bucketLog).Cursor()
		n := 0
		for k, v := c.Seek(encRev(from)); k != nil; k, v = c.Next() {
			r := decRev(k)
			if n >= maxWatchRead && r != last {
				break
			}
			n++
			last = r
			ev, err := decodeLog(k, v)
			if err != nil {
				return err
			}
			if strings.HasPrefix(ev.Key, prefix) {
				evs = append(evs, ev)
			}
		}
		if last < cur && n < maxWatchRead {
			last = cur // revisions with no log entries (none today) are skipped
		}
		return nil
	})
	return evs, last, err
}

// Close implements store.Store: pending transactions finish, watches end.
func (s *Store) Close() error {
	s.enqueueMu.Lock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.enqueueMu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.enqueueMu.Unlock()
	close(s.done)
	s.wg.Wait()
	// Refuse anything that was queued but not taken by the writer.
	for {
		select {
		case r := <-s.reqs:
			r.err = store.ErrClosed
			close(r.done)
		default:
			return s.db.Close()
		}
	}
}
