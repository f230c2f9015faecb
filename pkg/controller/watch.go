package controller

import (
	"context"
	"errors"
	"fmt"
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
	if from == 0 {
		kvs, rev, err := st.List(ctx, prefix)
		if err != nil {
			return storeErr(err)
		}
		for _, kv := range kvs {
			if err := send(kv, EventPut, kv.ModRev); err != nil {
				return err
			}
		}
		if err := send(store.KV{Key: prefix}, EventSynced, rev); err != nil {
			return err
		}
		from = rev
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
