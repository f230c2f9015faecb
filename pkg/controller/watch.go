package controller

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/store"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// EventType is the kind of a watch event.
type EventType uint8

const (
	EventPut    EventType = iota + 1 // the record was created or changed
	EventDelete                      // the record was deleted (only its name or id is set)
	EventSynced                      // the snapshot is complete; changes follow
)

// Event is one event of a watch.
type Event[T any] struct {
	Type     EventType
	Record   T // nil for EventSynced
	Revision int64
}

// WatchNetworks streams the networks: with from == 0 a snapshot, an
// EventSynced, then changes; with from > 0 the changes after that revision.
// It returns when ctx ends (nil) or send fails.
func (c *Controller) WatchNetworks(ctx context.Context, from int64, send func(Event[*v1.VirtualNetwork]) error) error {
	return watchRecords(ctx, c.st, keys.Networks, from,
		func(name string) *v1.VirtualNetwork { return &v1.VirtualNetwork{Name: name} },
		func(n *v1.VirtualNetwork, rev int64) { n.Revision = rev }, send)
}

// WatchGateways is WatchNetworks for gateways.
func (c *Controller) WatchGateways(ctx context.Context, from int64, send func(Event[*v1.Gateway]) error) error {
	return watchRecords(ctx, c.st, keys.Gateways, from,
		func(name string) *v1.Gateway { return &v1.Gateway{Name: name} },
		func(g *v1.Gateway, rev int64) { g.Revision = rev }, send)
}

// WatchEndpoints is WatchNetworks for endpoints.
func (c *Controller) WatchEndpoints(ctx context.Context, from int64, send func(Event[*v1.Endpoint]) error) error {
	return watchRecords(ctx, c.st, keys.Endpoints, from,
		func(id string) *v1.Endpoint { return &v1.Endpoint{Id: id} },
		func(e *v1.Endpoint, rev int64) { e.Revision = rev }, send)
}

func watchRecords[T proto.Message](ctx context.Context, st store.Store, prefix string, from int64,
	mk func(name string) T, setRev func(T, int64), send func(Event[T]) error) error {
	return watch(ctx, st, prefix, from, func(kv store.KV, t EventType, rev int64) error {
		if t == EventSynced {
			var none T
			return send(Event[T]{Type: t, Record: none, Revision: rev})
		}
		m := mk(strings.TrimPrefix(kv.Key, prefix))
		if kv.Value != nil {
			if err := proto.Unmarshal(kv.Value, m); err != nil {
				return model.Errorf(model.ErrCorrupt, "corrupt record %s: %w", kv.Key, err)
			}
			setRev(m, kv.ModRev)
		}
		return send(Event[T]{Type: t, Record: m, Revision: rev})
	})
}

// watch streams a prefix: with from == 0 a snapshot, a synced marker, then
// changes; with from > 0 the changes after that revision. send gets kv.Value
// nil for deletes.
func watch(ctx context.Context, st store.Store, prefix string, from int64, send func(store.KV, EventType, int64) error) error {
	if from < 0 {
		return model.Errorf(model.ErrInvalid, "from_revision %d is negative", from)
	}
	var snap *snapshot
	if from == 0 {
		var err error
		if snap, err = sendSnapshot(ctx, st, prefix, send); err != nil {
			return err
		}
		if err := send(store.KV{Key: prefix}, EventSynced, snap.rev()); err != nil {
			return err
		}
		from = snap.rev()
	}
	ch := st.Watch(ctx, prefix, from)
	for {
		select {
		case <-ctx.Done():
			return nil
		case b, ok := <-ch:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return model.Errorf(model.ErrUnavailable, "the store's change stream ended; reconnect with from_revision %d", from)
			}
			if b.Err != nil {
				if errors.Is(b.Err, store.ErrCompacted) {
					return fmt.Errorf("%w; restart the watch with from_revision 0", b.Err)
				}
				return storeErr(b.Err)
			}
			for _, ev := range b.Events {
				if snap.seen(ev) {
					from = ev.Rev
					continue
				}
				t := EventPut
				kv := store.KV{Key: ev.Key, Value: ev.Value, ModRev: ev.Rev}
				if ev.Type == store.EventDelete {
					t, kv.Value = EventDelete, nil
				} else if kv.Value == nil {
					kv.Value = []byte{}
				}
				if err := send(kv, t, ev.Rev); err != nil {
					return err
				}
				from = ev.Rev
			}
		}
	}
}

// snapshotPage is how many records one read of a watch's snapshot holds: the
// snapshot is read and sent in pages, so that its size bounds neither the
// controller's memory nor a message (each record is an event of its own).
const snapshotPage = 1000

// snapshot remembers, for a snapshot read in pages, the key range and the
// store revision of each page: page i holds the keys after page i-1's last
// key up to its own last key. The changes are then watched from the first
// page's revision; a change to a key whose page was read at a later revision
// is already in the snapshot, and is skipped. So every record is sent once
// with its latest state, and the changes after the snapshot follow in order.
type snapshot struct {
	last []string // each page's last key (the last page's is unused)
	revs []int64  // each page's store revision
}

// rev is the revision the watch resumes from: the first page's.
func (s *snapshot) rev() int64 { return s.revs[0] }

// seen reports whether the snapshot already holds the change ev.
func (s *snapshot) seen(ev store.Event) bool {
	if s == nil {
		return false
	}
	i := sort.SearchStrings(s.last[:len(s.last)-1], ev.Key)
	return ev.Rev <= s.revs[i]
}

func sendSnapshot(ctx context.Context, st store.Store, prefix string, send func(store.KV, EventType, int64) error) (*snapshot, error) {
	snap := &snapshot{}
	after := ""
	for {
		kvs, rev, more, err := st.ListPage(ctx, prefix, after, snapshotPage)
		if err != nil {
			return nil, storeErr(err)
		}
		for _, kv := range kvs {
			if err := send(kv, EventPut, kv.ModRev); err != nil {
				return nil, err
			}
		}
		if len(kvs) > 0 {
			after = kvs[len(kvs)-1].Key
		}
		snap.last, snap.revs = append(snap.last, after), append(snap.revs, rev)
		if !more || len(kvs) == 0 {
			return snap, nil
		}
	}
}
