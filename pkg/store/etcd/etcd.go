// Package etcd implements store.Store on an etcd v3 cluster, so that several
// controllers can share one state. Every key lives under a namespace prefix.
package etcd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/iotfabric/iotfabric/pkg/store"
)

// DefaultNamespace prefixes every key iotfabric writes to etcd.
const DefaultNamespace = "/iotfabric/"

// Options configure the connection.
type Options struct {
	Endpoints   []string
	Namespace   string        // default DefaultNamespace
	DialTimeout time.Duration // default 5s
}

// Store is an etcd-backed store.Store.
type Store struct {
	cli *clientv3.Client
	ns  string
}

// Open connects to etcd and checks that it answers.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints given")
	}
	if opts.Namespace == "" {
		opts.Namespace = DefaultNamespace
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 5 * time.Second
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   opts.Endpoints,
		DialTimeout: opts.DialTimeout,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd %v: %w", opts.Endpoints, err)
	}
	cctx, cancel := context.WithTimeout(ctx, opts.DialTimeout)
	defer cancel()
	if _, err := cli.Get(cctx, opts.Namespace+"\x00probe"); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd %v does not answer: %w", opts.Endpoints, err)
	}
	return &Store{cli: cli, ns: opts.Namespace}, nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	resp, err := s.cli.Get(ctx, s.ns+key)
	if err != nil {
		return store.KV{}, fmt.Errorf("etcd get: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return store.KV{}, store.ErrNotFound
	}
	kv := resp.Kvs[0]
	return store.KV{Key: key, Value: kv.Value, ModRev: kv.ModRevision}, nil
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	resp, err := s.cli.Get(ctx, s.ns+prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, fmt.Errorf("etcd list: %w", err)
	}
	out := make([]store.KV, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, store.KV{Key: strings.TrimPrefix(string(kv.Key), s.ns), Value: kv.Value, ModRev: kv.ModRevision})
	}
	return out, resp.Header.Revision, nil
}

// ListPage implements store.Store: one range request from just after the key
// after to the end of the prefix, limited to limit keys.
func (s *Store) ListPage(ctx context.Context, prefix, after string, limit int) ([]store.KV, int64, bool, error) {
	if err := store.ValidatePage(prefix, after, limit); err != nil {
		return nil, 0, false, err
	}
	start := s.ns + prefix
	if after != "" {
		start = s.ns + after + "\x00" // the first key after it
	}
	resp, err := s.cli.Get(ctx, start, clientv3.WithRange(clientv3.GetPrefixRangeEnd(s.ns+prefix)),
		clientv3.WithLimit(int64(limit)), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, false, fmt.Errorf("etcd list: %w", err)
	}
	out := make([]store.KV, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, store.KV{Key: strings.TrimPrefix(string(kv.Key), s.ns), Value: kv.Value, ModRev: kv.ModRevision})
	}
	return out, resp.Header.Revision, resp.More, nil
}

// Txn implements store.Store.
func (s *Store) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, error) {
	if err := store.ValidateOps(conds, ops); err != nil {
		return 0, err
	}
	cmps := make([]clientv3.Cmp, 0, len(conds))
	for _, c := range conds {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.ns+c.Key), "=", c.ModRev))
	}
	eops := make([]clientv3.Op, 0, len(ops))
	for _, o := range ops {
		if o.Delete {
			eops = append(eops, clientv3.OpDelete(s.ns+o.Key))
		} else {
			eops = append(eops, clientv3.OpPut(s.ns+o.Key, string(o.Value)))
		}
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(eops...).Commit()
	if err != nil {
		return 0, fmt.Errorf("etcd txn: %w", err)
	}
	if !resp.Succeeded {
		return 0, store.ErrConflict
	}
	return resp.Header.Revision, nil
}

// Watch implements store.Store.
func (s *Store) Watch(ctx context.Context, prefix string, after int64) <-chan store.WatchBatch {
	ch := make(chan store.WatchBatch, 16)
	go func() {
		defer close(ch)
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		defer cancel()
		wch := s.cli.Watch(wctx, s.ns+prefix, clientv3.WithPrefix(), clientv3.WithRev(after+1))
		for resp := range wch {
			var b store.WatchBatch
			if err := resp.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) || resp.CompactRevision != 0 {
					err = fmt.Errorf("watch from revision %d: %w (oldest kept is %d)", after+1, store.ErrCompacted, resp.CompactRevision)
				} else {
					err = fmt.Errorf("etcd watch: %w", err)
				}
				b.Err = err
			} else {
				for _, e := range resp.Events {
					ev := store.Event{Key: strings.TrimPrefix(string(e.Kv.Key), s.ns), Rev: e.Kv.ModRevision}
					if e.Type == mvccpb.DELETE {
						ev.Type = store.EventDelete
					} else {
						ev.Type, ev.Value = store.EventPut, e.Kv.Value
					}
					b.Events = append(b.Events, ev)
				}
				if len(b.Events) == 0 {
					continue
				}
			}
			select {
			case ch <- b:
			case <-ctx.Done():
				return
			}
			if b.Err != nil {
				return
			}
		}
		if ctx.Err() == nil {
			select {
			case ch <- store.WatchBatch{Err: errors.New("etcd watch ended: connection to etcd lost")}:
			case <-ctx.Done():
			}
		}
	}()
	return ch
}

// Close implements store.Store.
func (s *Store) Close() error { return s.cli.Close() }
