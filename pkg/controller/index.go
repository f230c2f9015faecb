package controller

import (
	"context"
	"errors"
	"fmt"

	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/store"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// indexVersion is the layout of the endpoint indexes (keys.EndpointIndex,
// keys.Pending) this version writes with every endpoint.
const indexVersion = "2" // 2: keys.GatewayBlockIndex

// indexBatch bounds the endpoints indexed by one transaction.
const indexBatch = 256

// buildIndexes writes the index key of every endpoint of a store written
// by a version without them, then records that the store has them.
func (c *Controller) buildIndexes(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		if kv, err := c.st.Get(ctx, keys.IndexVersion); err == nil && string(kv.Value) == indexVersion {
			return nil
		} else if err != nil && !errors.Is(err, store.ErrNotFound) {
			return storeErr(err)
		}
		err := c.indexAll(ctx)
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
		if attempt >= maxRetries {
			return model.Errorf(model.ErrAborted, "endpoint indexes: too much concurrent change; start again")
		}
	}
}

func (c *Controller) indexAll(ctx context.Context) error {
	kvs, _, err := c.st.List(ctx, keys.Endpoints)
	if err != nil {
		return storeErr(err)
	}
	for len(kvs) > 0 {
		n := min(len(kvs), indexBatch)
		var conds []store.Cond
		var ops []store.Op
		for _, kv := range kvs[:n] {
			e, err := decode(kv, &v1.Endpoint{})
			if err != nil {
				return model.Errorf(model.ErrCorrupt, "%w", err)
			}
			conds = append(conds, store.Unchanged(kv))
			ops = append(ops, store.Put(keys.EndpointIndexKey(e.Network, e.Id), []byte(e.Gateway)))
			if e.Label == 0 {
				ops = append(ops, store.Put(keys.PendingEndpoint(e.Gateway, e.Id), nil))
			}
		}
		if _, err := c.st.Txn(ctx, conds, ops); err != nil {
			return err
		}
		kvs = kvs[n:]
	}
	// The gateways' block indexes (entries are idempotent: no condition).
	blocks, _, err := c.st.List(ctx, keys.IPAM)
	if err != nil {
		return storeErr(err)
	}
	var ops []store.Op
	for _, kv := range blocks {
		if n, p, ok := keys.BlockOf(kv.Key); ok {
			ops = append(ops, store.Put(keys.GatewayBlock(string(kv.Value), n, p), nil))
		}
		if len(ops) == indexBatch {
			if _, err := c.st.Txn(ctx, nil, ops); err != nil {
				return storeErr(err)
			}
			ops = nil
		}
	}
	ops = append(ops, store.Put(keys.IndexVersion, []byte(indexVersion)))
	if _, err := c.st.Txn(ctx, nil, ops); err != nil {
		return fmt.Errorf("record the index version: %w", storeErr(err))
	}
	c.log.Info("endpoint index written")
	return nil
}
