// Package controller is iotfabric's resource manager: virtual networks,
// gateways and endpoints with their IPAM state, kept in a store.Store with
// transactional writes and optimistic concurrency (so several controllers can
// share an etcd store), and what the gateways' agents ask of it (agent.go).
//
// It owns the records under the network, gateway, endpoint, label, reference,
// index, stream and controller liveness keys of pkg/keys, and IPAM through
// pkg/ipam. Each controller instance keeps a heartbeat and sweeps the stream
// markers of dead instances (liveness.go), keeps in memory the last link
// transitions of each gateway it saw (links.go), and, when RunGatewayCache
// runs, what the registration of an unchanged gateway needs, kept current by
// the store's watch (gatewaycache.go). It is the
// domain: plain Go methods that return errors of the kinds of pkg/model
// (model.ErrNotFound...). It may not import gRPC or pkg/api (the transport
// that serves it), nor write the keys of pkg/vpn (BGP peers).
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/ipam"
	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/validate"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// maxRetries bounds optimistic-concurrency retries of one request.
const maxRetries = 50

// MaxNetworkID is the largest network id (RD and route-target number space).
const MaxNetworkID = 65535

// DefaultASN is the AS number when none is configured; it forms the automatic
// route targets.
const DefaultASN = 64512

// Config configures a Controller.
type Config struct {
	ASN    uint32 // for automatic route targets (0: DefaultASN)
	Logger *slog.Logger
	// ExclusiveStore says that no other controller instance uses the store
	// (bbolt, locked by one process): every other instance's stream markers
	// are then stale (liveness.go).
	ExclusiveStore bool
}

// Controller implements the resource operations on a store.
type Controller struct {
	st   store.Store
	ipam *ipam.Manager
	asn  uint32
	log  *slog.Logger

	exclusive bool
	streams   liveStreams   // the route streams open at this instance
	links     linkHistory   // the gateways' link transitions seen here (links.go)
	gwCache   *gatewayCache // registrations of unchanged gateways (gatewaycache.go)
}

// New returns a Controller over st.
func New(st store.Store, cfg Config) *Controller {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ASN == 0 {
		cfg.ASN = DefaultASN
	}
	c := &Controller{asn: cfg.ASN, log: cfg.Logger, exclusive: cfg.ExclusiveStore}
	c.gwCache = newGatewayCache(st, cfg.Logger)
	// Every write goes through the gateway cache, which notes the gateways
	// it touched (it answers nothing unless RunGatewayCache runs).
	c.st = cacheWrites{Store: st, gc: c.gwCache}
	c.ipam = ipam.NewManager(leaseGuard{Store: c.st, c: c})
	return c
}

// Store returns the controller's store (writes through it are the
// controller's own for its gateway cache).
func (c *Controller) Store() store.Store { return c.st }

// storeErr marks a store failure as ErrUnavailable; typed errors and
// context errors pass unchanged.
func storeErr(err error) error {
	switch {
	case err == nil, model.HasKind(err), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, store.ErrClosed):
		return model.Errorf(model.ErrUnavailable, "the controller is shutting down (%w)", err)
	}
	return model.Errorf(model.ErrUnavailable, "store: %w", err)
}

func decode[T proto.Message](kv store.KV, msg T) (T, error) {
	if err := proto.Unmarshal(kv.Value, msg); err != nil {
		return msg, fmt.Errorf("corrupt record %s: %w", kv.Key, err)
	}
	return msg, nil
}

func encode(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err) // only for messages we built ourselves
	}
	return b
}

// retry runs fn until it does not return store.ErrConflict. A conflict
// means another writer (another request, or another controller sharing
// etcd) changed what fn read: fn runs again after a jittered backoff that
// doubles from retryBackoffMin up to retryBackoffMax, at most maxRetries
// times; only then does the caller see ErrAborted. (Requests of one
// controller do not conflict with each other over IPAM: see
// ipam.Manager.Reserve.)
func retry(ctx context.Context, fn func() error) error {
	wait := retryBackoffMin
	for i := 0; ; i++ {
		err := fn()
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
		if i >= maxRetries {
			return model.Errorf(model.ErrAborted, "too much concurrent change (%d attempts); try again", i+1)
		}
		t := time.NewTimer(wait/2 + rand.N(wait/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, retryBackoffMax)
	}
}

// Backoff between retries of a conflicting transaction.
const (
	retryBackoffMin = time.Millisecond
	retryBackoffMax = 100 * time.Millisecond
)

// ---- networks ----

func (c *Controller) ipamConfig(n *v1.VirtualNetwork) (ipam.Config, error) {
	cfg := ipam.Config{BlockV4: int(n.Ipv4BlockSize), BlockV6: int(n.Ipv6BlockSize)}
	for _, s := range n.Subnets {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return cfg, fmt.Errorf("subnet %q is not a CIDR prefix such as 10.1.0.0/24 or fd00:1::/64", s)
		}
		cfg.Subnets = append(cfg.Subnets, p)
	}
	return cfg, cfg.Validate()
}

// normaliseNetwork validates a network from a request and fills defaults.
func (c *Controller) normaliseNetwork(n *v1.VirtualNetwork) error {
	if n == nil {
		return model.Errorf(model.ErrInvalid, "network is missing from the request")
	}
	if err := validate.Name("network", n.Name); err != nil {
		return model.Invalid(err)
	}
	if _, err := validate.Subnets(n.Subnets); err != nil {
		return model.Errorf(model.ErrInvalid, "network %s: %w", n.Name, err)
	}
	if n.Ipv4BlockSize == 0 {
		n.Ipv4BlockSize = ipam.DefaultBlockV4
	}
	if n.Ipv6BlockSize == 0 {
		n.Ipv6BlockSize = ipam.DefaultBlockV6
	}
	cfg, err := c.ipamConfig(n)
	if err != nil {
		return model.Errorf(model.ErrInvalid, "network %s: %w", n.Name, err)
	}
	n.Subnets = n.Subnets[:0]
	for _, p := range cfg.Subnets {
		n.Subnets = append(n.Subnets, p.String())
	}
	for _, list := range []struct {
		kind string
		l    *[]string
	}{{"import", &n.ImportRouteTargets}, {"export", &n.ExportRouteTargets}} {
		out, err := validate.RouteTargets(list.kind, *list.l)
		if err != nil {
			return model.Errorf(model.ErrInvalid, "network %s: %w", n.Name, err)
		}
		if len(out) == 0 {
			out = nil
		}
		*list.l = out
	}
	if len(n.Encapsulations) > validate.MaxEncapsulations {
		return model.Errorf(model.ErrInvalid, "network %s: %d encapsulations: the limit is %d", n.Name, len(n.Encapsulations), validate.MaxEncapsulations)
	}
	if len(n.Encapsulations) == 0 {
		n.Encapsulations = slices.Clone(model.DefaultEncapsulations)
	}
	if err := model.ValidateEncaps(n.Encapsulations); err != nil {
		return model.Errorf(model.ErrInvalid, "network %s: %w", n.Name, err)
	}
	return nil
}

// getRecord reads and decodes one resource, with its revision set.
func getRecord[T interface {
	proto.Message
	*M
}, M any](ctx context.Context, st store.Store, key, what, name string, setRev func(T, int64)) (store.KV, T, error) {
	kv, err := st.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return kv, nil, model.Errorf(model.ErrNotFound, "%s %q not found", what, name)
	}
	if err != nil {
		return kv, nil, storeErr(err)
	}
	m, err := decode(kv, T(new(M)))
	if err != nil {
		return kv, nil, model.Errorf(model.ErrCorrupt, "%w", err)
	}
	setRev(m, kv.ModRev)
	return kv, m, nil
}

func (c *Controller) getNetworkKV(ctx context.Context, name string) (store.KV, *v1.VirtualNetwork, error) {
	return getRecord(ctx, c.st, keys.Network(name), "network", name, func(n *v1.VirtualNetwork, r int64) { n.Revision = r })
}

// ensurePool makes sure IPAM knows the network's current address space.
func (c *Controller) ensurePool(n *v1.VirtualNetwork) error {
	cfg, err := c.ipamConfig(n)
	if err != nil {
		return model.Errorf(model.ErrCorrupt, "stored network %s: %w", n.Name, err)
	}
	return c.ipam.Ensure(n.Name, cfg)
}

// CreateNetwork creates a network and allocates its id.
func (c *Controller) CreateNetwork(ctx context.Context, req *v1.VirtualNetwork) (*v1.VirtualNetwork, error) {
	n := proto.Clone(req).(*v1.VirtualNetwork)
	if err := c.normaliseNetwork(n); err != nil {
		return nil, err
	}
	err := retry(ctx, func() error {
		if _, err := c.st.Get(ctx, keys.Network(n.Name)); err == nil {
			return model.Errorf(model.ErrExists, "network %q already exists", n.Name)
		} else if !errors.Is(err, store.ErrNotFound) {
			return storeErr(err)
		}
		ids, _, err := c.st.List(ctx, keys.NetworkIDs)
		if err != nil {
			return storeErr(err)
		}
		used := map[uint32]bool{}
		for _, kv := range ids {
			id, _ := strconv.ParseUint(strings.TrimPrefix(kv.Key, keys.NetworkIDs), 10, 32)
			used[uint32(id)] = true
		}
		id := uint32(1)
		for used[id] {
			id++
		}
		if id > MaxNetworkID {
			return model.Errorf(model.ErrExhausted, "all %d network ids are in use", MaxNetworkID)
		}
		n.Id = id
		n.AutoRouteTarget = model.AutoRouteTarget(c.asn, id).String()
		n.Revision = 0
		idKey := keys.NetworkID(id)
		rev, err := c.st.Txn(ctx, []store.Cond{store.Absent(keys.Network(n.Name)), store.Absent(idKey)},
			[]store.Op{store.Put(keys.Network(n.Name), encode(n)), store.Put(idKey, []byte(n.Name))})
		if err != nil {
			return err
		}
		n.Revision = rev
		return nil
	})
	if err != nil {
		return nil, storeErr(err)
	}
	if err := c.ensurePool(n); err != nil {
		return nil, err
	}
	c.log.Info("network created", logkey.Network, n.Name, logkey.ID, n.Id, logkey.Subnets, n.Subnets)
	return n, nil
}

// GetNetwork returns one network.
func (c *Controller) GetNetwork(ctx context.Context, name string) (*v1.VirtualNetwork, error) {
	_, n, err := c.getNetworkKV(ctx, name)
	return n, err
}

// ListNetworks returns every network.
func (c *Controller) ListNetworks(ctx context.Context) ([]*v1.VirtualNetwork, int64, error) {
	return listDecoded(ctx, c.st, keys.Networks, func() *v1.VirtualNetwork { return &v1.VirtualNetwork{} },
		func(n *v1.VirtualNetwork, rev int64) { n.Revision = rev })
}

func listDecoded[T proto.Message](ctx context.Context, st store.Store, prefix string, mk func() T, setRev func(T, int64)) ([]T, int64, error) {
	kvs, rev, err := st.List(ctx, prefix)
	if err != nil {
		return nil, 0, storeErr(err)
	}
	out := make([]T, 0, len(kvs))
	for _, kv := range kvs {
		m, err := decode(kv, mk())
		if err != nil {
			return nil, 0, model.Errorf(model.ErrCorrupt, "%w", err)
		}
		setRev(m, kv.ModRev)
		out = append(out, m)
	}
	return out, rev, nil
}

// UpdateNetwork replaces route targets and encapsulations, and adds or removes
// subnets (a subnet in use cannot be removed).
func (c *Controller) UpdateNetwork(ctx context.Context, req *v1.VirtualNetwork) (*v1.VirtualNetwork, error) {
	upd := proto.Clone(req).(*v1.VirtualNetwork)
	if err := c.normaliseNetwork(upd); err != nil {
		return nil, err
	}
	var out *v1.VirtualNetwork
	err := retry(ctx, func() error {
		kv, cur, err := c.getNetworkKV(ctx, upd.Name)
		if err != nil {
			return err
		}
		if upd.Ipv4BlockSize != cur.Ipv4BlockSize || upd.Ipv6BlockSize != cur.Ipv6BlockSize {
			return model.Errorf(model.ErrInvalid, "network %s: block sizes cannot change after creation (now /%d and /%d)", cur.Name, cur.Ipv4BlockSize, cur.Ipv6BlockSize)
		}
		if err := c.ensurePool(cur); err != nil {
			return err
		}
		// Every endpoint write and every block lease puts the network's
		// reference key: with it unchanged from before the addresses and the
		// blocks were read, no address was taken and no block leased in a
		// subnet being removed between that read and this write (the
		// network key alone does not change when one is).
		ref, err := c.getRef(ctx, keys.RefNetwork(cur.Name))
		if err != nil {
			return err
		}
		var removed []netip.Prefix
		for _, s := range cur.Subnets {
			if !slices.Contains(upd.Subnets, s) {
				p, err := netip.ParsePrefix(s)
				if err != nil {
					return model.Errorf(model.ErrCorrupt, "stored network %s: subnet %q: %w", cur.Name, s, err)
				}
				removed = append(removed, p)
			}
		}
		stat, err := c.ipam.Status(ctx, cur.Name)
		if err != nil {
			return storeErr(err)
		}
		for _, s := range stat {
			if s.Used > 0 && slices.Contains(removed, s.Prefix) {
				return model.Errorf(model.ErrConflict, "network %s: subnet %s still has %d addresses in use; delete those endpoints first", cur.Name, s.Prefix, s.Used)
			}
		}
		// The pool may lag the store (a create's write, or a lease, lands
		// before the pool records it; another controller's pool holds its
		// own): the store decides. The blocks of removed subnets (with no
		// address, checked here) are dropped.
		var ops []store.Op
		if len(removed) > 0 {
			addrs, _, err := c.st.List(ctx, keys.IPAMAddrs(cur.Name))
			if err != nil {
				return storeErr(err)
			}
			for _, kv := range addrs {
				a, err := netip.ParseAddr(strings.TrimPrefix(kv.Key, keys.IPAMAddrs(cur.Name)))
				if err != nil {
					continue
				}
				for _, p := range removed {
					if p.Contains(a) {
						return model.Errorf(model.ErrConflict, "network %s: subnet %s still has address %s in use (endpoint %s); delete those endpoints first", cur.Name, p, a, kv.Value)
					}
				}
			}
			blocks, _, err := c.st.List(ctx, keys.IPAMBlocks(cur.Name))
			if err != nil {
				return storeErr(err)
			}
			for _, kv := range blocks {
				_, b, ok := keys.BlockOf(kv.Key)
				if ok && slices.ContainsFunc(removed, func(p netip.Prefix) bool { return p.Contains(b.Addr()) }) {
					ops = append(ops, store.Delete(kv.Key))
				}
			}
		}
		n := proto.Clone(cur).(*v1.VirtualNetwork)
		n.Subnets, n.ImportRouteTargets, n.ExportRouteTargets, n.Encapsulations = upd.Subnets, upd.ImportRouteTargets, upd.ExportRouteTargets, upd.Encapsulations
		n.Revision = 0
		ops = append(ops, store.Put(kv.Key, encode(n)))
		conds := []store.Cond{store.Unchanged(kv)}
		if len(removed) > 0 {
			conds = append(conds, ref)
		}
		rev, err := c.st.Txn(ctx, conds, ops)
		if err != nil {
			return err
		}
		n.Revision = rev
		out = n
		return nil
	})
	if err != nil {
		return nil, storeErr(err)
	}
	if err := c.ensurePool(out); err != nil {
		return nil, err
	}
	c.log.Info("network updated", logkey.Network, out.Name, logkey.Subnets, out.Subnets)
	return out, nil
}

// DeleteNetwork deletes a network with no endpoints, and its IPAM state.
func (c *Controller) DeleteNetwork(ctx context.Context, name string) (int64, error) {
	var rev int64
	err := retry(ctx, func() error {
		kv, n, err := c.getNetworkKV(ctx, name)
		if err != nil {
			return err
		}
		ref, err := c.getRef(ctx, keys.RefNetwork(name))
		if err != nil {
			return err
		}
		eps, _, err := c.ListEndpoints(ctx, name, "")
		if err != nil {
			return err
		}
		if len(eps) > 0 {
			return model.Errorf(model.ErrConflict, "network %s still has %d endpoints (e.g. %s); delete them first", name, len(eps), eps[0].Id)
		}
		ops, err := c.ipam.DeleteOps(ctx, name)
		if err != nil {
			return storeErr(err)
		}
		ops = append(ops, store.Delete(kv.Key), store.Delete(keys.NetworkID(n.Id)), store.Delete(keys.RefNetwork(name)))
		rev, err = c.st.Txn(ctx, []store.Cond{store.Unchanged(kv), ref}, ops)
		return err
	})
	if err != nil {
		return 0, storeErr(err)
	}
	c.ipam.Forget(name)
	c.log.Info("network deleted", logkey.Network, name)
	return rev, nil
}

// getRef returns a condition that holds while the reference key is unchanged.
func (c *Controller) getRef(ctx context.Context, key string) (store.Cond, error) {
	kv, err := c.st.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return store.Absent(key), nil
	}
	if err != nil {
		return store.Cond{}, storeErr(err)
	}
	return store.Unchanged(kv), nil
}

// IpamStatus summarises a network's address use.
func (c *Controller) IpamStatus(ctx context.Context, name string) (*v1.IpamStatus, error) {
	_, n, err := c.getNetworkKV(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := c.ensurePool(n); err != nil {
		return nil, err
	}
	stat, err := c.ipam.Status(ctx, name)
	if err != nil {
		return nil, storeErr(err)
	}
	out := &v1.IpamStatus{Network: name, Revision: n.Revision}
	for _, s := range stat {
		is := &v1.IpamSubnet{Subnet: s.Prefix.String(), Size: s.SizeUint64(), Used: s.Used, BlockSize: uint32(s.BlockLen), BlocksTotal: s.BlocksTotalUint64(),
			SizeDecimal: s.Size.String(), BlocksTotalDecimal: s.BlocksTotal.String()}
		for _, b := range s.Blocks {
			is.Blocks = append(is.Blocks, &v1.IpamBlock{Prefix: b.Prefix.String(), Gateway: b.Gateway, Used: uint32(b.Used), Size: uint32(b.Size)})
		}
		out.Subnets = append(out.Subnets, is)
	}
	return out, nil
}

// LoadNetworks declares every stored network's address space to IPAM, and
// writes the endpoint indexes of a store from an earlier version (at start).
func (c *Controller) LoadNetworks(ctx context.Context) (int, error) {
	if err := c.buildIndexes(ctx); err != nil {
		return 0, err
	}
	nets, _, err := c.ListNetworks(ctx)
	if err != nil {
		return 0, err
	}
	for _, n := range nets {
		if err := c.ensurePool(n); err != nil {
			return 0, err
		}
	}
	return len(nets), nil
}
