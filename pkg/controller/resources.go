package controller

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/ipam"
	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/store"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// ---- gateways ----

func normaliseGateway(g *v1.Gateway) error {
	if g == nil {
		return errf(codes.InvalidArgument, "gateway is missing from the request")
	}
	if err := model.ValidateName("gateway", g.Name); err != nil {
		return errf(codes.InvalidArgument, "%v", err)
	}
	a, err := netip.ParseAddr(strings.TrimSpace(g.UnderlayAddress))
	if err != nil || !a.Is4() {
		return errf(codes.InvalidArgument, "gateway %s: underlay address %q must be an IPv4 address (it is the tunnel endpoint and the route distinguisher's administrator)", g.Name, g.UnderlayAddress)
	}
	g.UnderlayAddress = a.String()
	if len(g.Encapsulations) == 0 {
		g.Encapsulations = slices.Clone(model.DefaultEncapsulations)
	}
	if err := model.ValidateEncaps(g.Encapsulations); err != nil {
		return errf(codes.InvalidArgument, "gateway %s: %v", g.Name, err)
	}
	if _, ok := v1.GatewayState_name[int32(g.State)]; !ok {
		return errf(codes.InvalidArgument, "gateway %s: unknown state %d", g.Name, g.State)
	}
	if g.State == v1.GatewayState_GATEWAY_STATE_UNSPECIFIED {
		g.State = v1.GatewayState_GATEWAY_STATE_REGISTERED
	}
	return nil
}

func (c *Controller) getGatewayKV(ctx context.Context, name string) (store.KV, *v1.Gateway, error) {
	return getRecord(ctx, c.st, pfxGateway+name, "gateway", name, func(m *v1.Gateway, r int64) { m.Revision = r })
}

// CreateGateway registers a gateway.
func (c *Controller) CreateGateway(ctx context.Context, req *v1.Gateway) (*v1.Gateway, error) {
	g := proto.Clone(req).(*v1.Gateway)
	if err := normaliseGateway(g); err != nil {
		return nil, err
	}
	g.Revision = 0
	rev, err := c.st.Txn(ctx, []store.Cond{store.Absent(pfxGateway + g.Name)}, []store.Op{store.Put(pfxGateway+g.Name, encode(g))})
	if errors.Is(err, store.ErrConflict) {
		return nil, errf(codes.AlreadyExists, "gateway %q already exists", g.Name)
	}
	if err != nil {
		return nil, storeErr(err)
	}
	g.Revision = rev
	c.log.Info("gateway created", "gateway", g.Name, "underlay", g.UnderlayAddress)
	return g, nil
}

// GetGateway returns one gateway.
func (c *Controller) GetGateway(ctx context.Context, name string) (*v1.Gateway, error) {
	_, g, err := c.getGatewayKV(ctx, name)
	return g, err
}

// ListGateways returns every gateway.
func (c *Controller) ListGateways(ctx context.Context) ([]*v1.Gateway, int64, error) {
	return listDecoded(ctx, c.st, pfxGateway, func() *v1.Gateway { return &v1.Gateway{} }, func(g *v1.Gateway, r int64) { g.Revision = r })
}

// UpdateGateway replaces underlay address, encapsulations, state and last-seen time.
func (c *Controller) UpdateGateway(ctx context.Context, req *v1.Gateway) (*v1.Gateway, error) {
	upd := proto.Clone(req).(*v1.Gateway)
	if err := normaliseGateway(upd); err != nil {
		return nil, err
	}
	var out *v1.Gateway
	err := retry(ctx, func() error {
		kv, cur, err := c.getGatewayKV(ctx, upd.Name)
		if err != nil {
			return err
		}
		g := proto.Clone(cur).(*v1.Gateway)
		g.UnderlayAddress, g.Encapsulations, g.State = upd.UnderlayAddress, upd.Encapsulations, upd.State
		if upd.LastSeen != nil {
			g.LastSeen = upd.LastSeen
		}
		g.Revision = 0
		rev, err := c.st.Txn(ctx, []store.Cond{store.Unchanged(kv)}, []store.Op{store.Put(kv.Key, encode(g))})
		if err != nil {
			return err
		}
		g.Revision = rev
		out = g
		return nil
	})
	return out, storeErr(err)
}

// DeleteGateway deletes a gateway with no endpoints and returns its address blocks.
func (c *Controller) DeleteGateway(ctx context.Context, name string) (int64, error) {
	var rev int64
	err := retry(ctx, func() error {
		kv, _, err := c.getGatewayKV(ctx, name)
		if err != nil {
			return err
		}
		ref, err := c.getRef(ctx, pfxRefGw+name)
		if err != nil {
			return err
		}
		eps, _, err := c.ListEndpoints(ctx, "", name)
		if err != nil {
			return err
		}
		if len(eps) > 0 {
			return errf(codes.FailedPrecondition, "gateway %s still has %d endpoints (e.g. %s); delete them first", name, len(eps), eps[0].Id)
		}
		blocks, _, err := c.st.List(ctx, "ipam/")
		if err != nil {
			return storeErr(err)
		}
		ops := []store.Op{store.Delete(kv.Key), store.Delete(pfxRefGw + name)}
		var conds []store.Cond
		for _, b := range blocks {
			if strings.Contains(b.Key, "/blocks/") && string(b.Value) == name {
				ops = append(ops, store.Delete(b.Key))
				conds = append(conds, store.Unchanged(b))
			}
		}
		rev, err = c.st.Txn(ctx, append(conds, store.Unchanged(kv), ref), ops)
		return err
	})
	if err != nil {
		return 0, storeErr(err)
	}
	nets, _, err := c.ListNetworks(ctx)
	if err == nil {
		for _, n := range nets {
			c.ipam.Invalidate(n.Name) // its blocks are gone
		}
	}
	c.log.Info("gateway deleted", "gateway", name)
	return rev, nil
}

// ---- endpoints ----

func labelKey(gw string, label uint32) string {
	return pfxLabel + gw + "/" + strconv.FormatUint(uint64(label), 10)
}

func endpointState(e *v1.Endpoint) v1.EndpointState {
	if e.Label != 0 {
		return v1.EndpointState_ENDPOINT_STATE_ACTIVE
	}
	return v1.EndpointState_ENDPOINT_STATE_PENDING
}

func (c *Controller) getEndpointKV(ctx context.Context, id string) (store.KV, *v1.Endpoint, error) {
	return getRecord(ctx, c.st, pfxEndpoint+id, "endpoint", id, func(m *v1.Endpoint, r int64) { m.Revision = r })
}

func ipamErr(err error, e *v1.Endpoint) error {
	switch {
	case errors.Is(err, ipam.ErrExhausted):
		return errf(codes.ResourceExhausted, "network %s has no free address left for endpoint %s (%v); add a subnet with `iotfabricctl network update`", e.Network, e.Id, err)
	case errors.Is(err, ipam.ErrInUse):
		return errf(codes.AlreadyExists, "endpoint %s: %v", e.Id, err)
	case errors.Is(err, ipam.ErrOutOfRange):
		return errf(codes.InvalidArgument, "endpoint %s: %v", e.Id, err)
	case errors.Is(err, ipam.ErrBlockTaken):
		return errf(codes.FailedPrecondition, "endpoint %s: %v", e.Id, err)
	case errors.Is(err, ipam.ErrBusy), errors.Is(err, store.ErrConflict):
		return store.ErrConflict
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return errf(codes.InvalidArgument, "endpoint %s: %v", e.Id, err)
}

// CreateEndpoint creates an endpoint, allocating its addresses in the same
// transaction. Creating an existing endpoint with the same network and gateway
// returns it unchanged.
func (c *Controller) CreateEndpoint(ctx context.Context, req *v1.Endpoint) (*v1.Endpoint, error) {
	e := proto.Clone(req).(*v1.Endpoint)
	if err := model.ValidateEndpointID(e.Id); err != nil {
		return nil, errf(codes.InvalidArgument, "%v", err)
	}
	if e.Network == "" || e.Gateway == "" {
		return nil, errf(codes.InvalidArgument, "endpoint %s: network and gateway are required", e.Id)
	}
	if err := model.ValidateLabel(e.Label); err != nil {
		return nil, errf(codes.InvalidArgument, "endpoint %s: %v", e.Id, err)
	}
	if err := model.ValidateMAC(e.Mac); err != nil {
		return nil, errf(codes.InvalidArgument, "endpoint %s: %v", e.Id, err)
	}
	var requested []netip.Addr
	for _, s := range e.Addresses {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			return nil, errf(codes.InvalidArgument, "endpoint %s: address %q is not an IP address", e.Id, s)
		}
		for _, r := range requested {
			if r.Is4() == a.Is4() {
				return nil, errf(codes.InvalidArgument, "endpoint %s: at most one address per family", e.Id)
			}
		}
		requested = append(requested, a.Unmap())
	}
	var out *v1.Endpoint
	err := retry(ctx, func() error {
		if _, cur, err := c.getEndpointKV(ctx, e.Id); err == nil {
			if cur.Network == e.Network && cur.Gateway == e.Gateway {
				out = cur
				return nil
			}
			return errf(codes.AlreadyExists, "endpoint %q already exists in network %s on gateway %s", e.Id, cur.Network, cur.Gateway)
		} else if status.Code(err) != codes.NotFound {
			return err
		}
		nkv, n, err := c.getNetworkKV(ctx, e.Network)
		if err != nil {
			return err
		}
		gkv, _, err := c.getGatewayKV(ctx, e.Gateway)
		if err != nil {
			return err
		}
		if err := c.ensurePool(n); err != nil {
			return err
		}
		res, err := c.ipam.Reserve(ctx, e.Network, e.Id, e.Gateway, requested)
		if err != nil {
			return ipamErr(err, e)
		}
		ep := proto.Clone(e).(*v1.Endpoint)
		ep.Addresses = ep.Addresses[:0]
		for _, a := range res.Addrs() {
			ep.Addresses = append(ep.Addresses, a.String())
		}
		ep.State, ep.Revision = endpointState(ep), 0
		conds := append(res.Conds, store.Absent(pfxEndpoint+ep.Id), store.Cond{Key: nkv.Key, ModRev: nkv.ModRev}, store.Cond{Key: gkv.Key, ModRev: gkv.ModRev})
		ops := append(res.Ops, store.Put(pfxEndpoint+ep.Id, encode(ep)), store.Put(pfxRefNet+ep.Network, nil), store.Put(pfxRefGw+ep.Gateway, nil))
		if ep.Label != 0 {
			conds = append(conds, store.Absent(labelKey(ep.Gateway, ep.Label)))
			ops = append(ops, store.Put(labelKey(ep.Gateway, ep.Label), []byte(ep.Id)))
		}
		rev, err := c.st.Txn(ctx, conds, ops)
		if err != nil {
			c.ipam.Abort(res)
			if errors.Is(err, store.ErrConflict) {
				if ep.Label != 0 {
					if owner, gerr := c.st.Get(ctx, labelKey(ep.Gateway, ep.Label)); gerr == nil && string(owner.Value) != ep.Id {
						return errf(codes.AlreadyExists, "endpoint %s: label %d is already used by endpoint %s on gateway %s", ep.Id, ep.Label, owner.Value, ep.Gateway)
					}
				}
				c.ipam.Refresh(ctx, res)
			}
			return err
		}
		c.ipam.Commit(res)
		ep.Revision = rev
		out = ep
		return nil
	})
	if err != nil {
		return nil, storeErr(err)
	}
	c.log.Debug("endpoint created", "endpoint", out.Id, "network", out.Network, "gateway", out.Gateway, "addresses", out.Addresses)
	return out, nil
}

// CreateEndpoints creates many endpoints concurrently (they share the store's
// commits); each succeeds or fails on its own.
func (c *Controller) CreateEndpoints(ctx context.Context, reqs []*v1.Endpoint) ([]*v1.Endpoint, []error) {
	out := make([]*v1.Endpoint, len(reqs))
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i, r := range reqs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i], errs[i] = c.CreateEndpoint(ctx, r)
		}()
	}
	wg.Wait()
	return out, errs
}

// GetEndpoint returns one endpoint.
func (c *Controller) GetEndpoint(ctx context.Context, id string) (*v1.Endpoint, error) {
	_, e, err := c.getEndpointKV(ctx, id)
	return e, err
}

// ListEndpoints returns endpoints, optionally only those of a network and/or gateway.
func (c *Controller) ListEndpoints(ctx context.Context, network, gateway string) ([]*v1.Endpoint, int64, error) {
	all, rev, err := listDecoded(ctx, c.st, pfxEndpoint, func() *v1.Endpoint { return &v1.Endpoint{} }, func(e *v1.Endpoint, r int64) { e.Revision = r })
	if err != nil {
		return nil, 0, err
	}
	out := all[:0]
	for _, e := range all {
		if (network == "" || e.Network == network) && (gateway == "" || e.Gateway == gateway) {
			out = append(out, e)
		}
	}
	return out, rev, nil
}

// UpdateEndpoint replaces the MAC address and the label.
func (c *Controller) UpdateEndpoint(ctx context.Context, req *v1.Endpoint) (*v1.Endpoint, error) {
	if req == nil {
		return nil, errf(codes.InvalidArgument, "endpoint is missing from the request")
	}
	if err := model.ValidateLabel(req.Label); err != nil {
		return nil, errf(codes.InvalidArgument, "endpoint %s: %v", req.Id, err)
	}
	if err := model.ValidateMAC(req.Mac); err != nil {
		return nil, errf(codes.InvalidArgument, "endpoint %s: %v", req.Id, err)
	}
	var out *v1.Endpoint
	err := retry(ctx, func() error {
		kv, cur, err := c.getEndpointKV(ctx, req.Id)
		if err != nil {
			return err
		}
		if (req.Network != "" && req.Network != cur.Network) || (req.Gateway != "" && req.Gateway != cur.Gateway) {
			return errf(codes.InvalidArgument, "endpoint %s: network and gateway cannot change; delete and create it again", req.Id)
		}
		if len(req.Addresses) > 0 && !slices.Equal(req.Addresses, cur.Addresses) {
			return errf(codes.InvalidArgument, "endpoint %s: addresses cannot change; delete and create it again", req.Id)
		}
		e := proto.Clone(cur).(*v1.Endpoint)
		e.Mac, e.Label = req.Mac, req.Label
		e.State, e.Revision = endpointState(e), 0
		conds := []store.Cond{store.Unchanged(kv)}
		ops := []store.Op{store.Put(kv.Key, encode(e))}
		if e.Label != cur.Label {
			if cur.Label != 0 {
				ops = append(ops, store.Delete(labelKey(e.Gateway, cur.Label)))
			}
			if e.Label != 0 {
				lk := labelKey(e.Gateway, e.Label)
				if owner, err := c.st.Get(ctx, lk); err == nil {
					return errf(codes.AlreadyExists, "endpoint %s: label %d is already used by endpoint %s on gateway %s", e.Id, e.Label, owner.Value, e.Gateway)
				}
				conds = append(conds, store.Absent(lk))
				ops = append(ops, store.Put(lk, []byte(e.Id)))
			}
		}
		rev, err := c.st.Txn(ctx, conds, ops)
		if err != nil {
			return err
		}
		e.Revision = rev
		out = e
		return nil
	})
	return out, storeErr(err)
}

// DeleteEndpoint deletes an endpoint and frees its addresses and label in one transaction.
func (c *Controller) DeleteEndpoint(ctx context.Context, id string) (int64, error) {
	var rev int64
	var freed []netip.Addr
	var network string
	err := retry(ctx, func() error {
		kv, e, err := c.getEndpointKV(ctx, id)
		if err != nil {
			return err
		}
		freed = freed[:0]
		for _, s := range e.Addresses {
			if a, err := netip.ParseAddr(s); err == nil {
				freed = append(freed, a)
			}
		}
		network = e.Network
		ops := append(ipam.ReleaseOps(e.Network, freed), store.Delete(kv.Key), store.Put(pfxRefNet+e.Network, nil), store.Put(pfxRefGw+e.Gateway, nil))
		if e.Label != 0 {
			ops = append(ops, store.Delete(labelKey(e.Gateway, e.Label)))
		}
		rev, err = c.st.Txn(ctx, []store.Cond{store.Unchanged(kv)}, ops)
		return err
	})
	if err != nil {
		return 0, storeErr(err)
	}
	c.ipam.Released(network, freed)
	c.log.Debug("endpoint deleted", "endpoint", id)
	return rev, nil
}
