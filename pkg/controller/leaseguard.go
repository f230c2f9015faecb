package controller

import (
	"context"
	"net/netip"
	"slices"

	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/store"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// leaseGuard is the store the controller's IPAM manager writes through. The
// manager leases blocks in transactions of its own (an agent's LeaseBlock,
// and the lease an endpoint create makes first when its gateway's blocks are
// full), conditioned on the block's key alone; the network and the gateway
// may change meanwhile. leaseGuard conditions each transaction that puts a
// block lease on what the lease depends on, read right before it:
//
//   - the network's record unchanged, with the block in one of its subnets:
//     a lease picked from a subnet that an update removed (or from subnets
//     a stale request declared to IPAM) fails as a conflict, after the
//     stored subnets are declared again, and the manager picks again;
//     a deleted network gets no block;
//   - the gateway's record unchanged: a deleted gateway gets no block;
//
// and it puts the network's and the gateway's reference keys, which the
// writers that drop leases require unchanged from before they read them (a
// network update that removes a subnet, DeleteNetwork, DeleteGateway), so
// that a lease stored after their reads makes them read again.
type leaseGuard struct {
	store.Store
	c *Controller
}

func (g leaseGuard) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, error) {
	nets := map[string]*v1.VirtualNetwork{}
	gws := map[string]bool{}
	conds, ops = slices.Clip(conds), slices.Clip(ops) // appended to below: the caller's slices stay as they are
	for _, o := range ops {
		if o.Delete {
			continue
		}
		network, p, ok := keys.BlockOf(o.Key)
		if !ok {
			continue
		}
		n := nets[network]
		if n == nil {
			kv, rec, err := g.c.getNetworkKV(ctx, network)
			if err != nil {
				return 0, err
			}
			n, nets[network] = rec, rec
			conds = append(conds, store.Unchanged(kv))
			ops = append(ops, store.Put(keys.RefNetwork(network), nil))
		}
		if !inSubnets(n, p) {
			// Picked from subnets the network no longer has: declare the
			// stored ones, so that the manager's retry picks from them.
			if err := g.c.ensurePool(n); err != nil {
				return 0, err
			}
			return 0, store.ErrConflict
		}
		if gw := string(o.Value); !gws[gw] {
			kv, _, err := g.c.getGatewayKV(ctx, gw)
			if err != nil {
				return 0, err
			}
			gws[gw] = true
			conds = append(conds, store.Unchanged(kv))
			ops = append(ops, store.Put(keys.RefGateway(gw), nil))
		}
	}
	return g.Store.Txn(ctx, conds, ops)
}

// inSubnets reports whether p (an address or a block) lies in one of the
// subnets of the network record n.
func inSubnets(n *v1.VirtualNetwork, p netip.Prefix) bool {
	for _, s := range n.Subnets {
		sp, err := netip.ParsePrefix(s)
		if err == nil && sp.Bits() <= p.Bits() && sp.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// checkAddrsInSubnets returns store.ErrConflict, after declaring n's subnets
// to IPAM again, if an address reserved for a write conditioned on the
// record n lies in none of its subnets: the pool picked it under subnets a
// stale request declared (see leaseGuard).
func (c *Controller) checkAddrsInSubnets(n *v1.VirtualNetwork, addrs []netip.Addr) error {
	for _, a := range addrs {
		if !inSubnets(n, netip.PrefixFrom(a, a.BitLen())) {
			if err := c.ensurePool(n); err != nil {
				return err
			}
			return store.ErrConflict
		}
	}
	return nil
}
