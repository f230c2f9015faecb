package controller

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/ipam"
	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/validate"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// ---- gateways ----

func normaliseGateway(g *v1.Gateway) error {
	if g == nil {
		return model.Errorf(model.ErrInvalid, "gateway is missing from the request")
	}
	if err := validate.Name("gateway", g.Name); err != nil {
		return model.Invalid(err)
	}
	a, err := validate.Underlay(g.UnderlayAddress)
	if err != nil {
		return model.Errorf(model.ErrInvalid, "gateway %s: %w", g.Name, err)
	}
	g.UnderlayAddress = a.String()
	if len(g.Encapsulations) > validate.MaxEncapsulations {
		return model.Errorf(model.ErrInvalid, "gateway %s: %d encapsulations: the limit is %d", g.Name, len(g.Encapsulations), validate.MaxEncapsulations)
	}
	if len(g.Encapsulations) == 0 {
		g.Encapsulations = slices.Clone(model.DefaultEncapsulations)
	}
	if err := model.ValidateEncaps(g.Encapsulations); err != nil {
		return model.Errorf(model.ErrInvalid, "gateway %s: %w", g.Name, err)
	}
	if _, ok := v1.GatewayState_name[int32(g.State)]; !ok {
		return model.Errorf(model.ErrInvalid, "gateway %s: unknown state %d", g.Name, g.State)
	}
	if g.State == v1.GatewayState_GATEWAY_STATE_UNSPECIFIED {
		g.State = v1.GatewayState_GATEWAY_STATE_REGISTERED
	}
	// Output only: what the agent said at registration (setAgent).
	setAgent(g, Agent{})
	return nil
}

// setAgent records on g what its agent said at registration.
func setAgent(g *v1.Gateway, a Agent) {
	g.KernelFeatures, g.Architecture, g.AgentVersion = slices.Clone(a.KernelFeatures), a.Architecture, a.Version
}

func (c *Controller) getGatewayKV(ctx context.Context, name string) (store.KV, *v1.Gateway, error) {
	return getRecord(ctx, c.st, keys.Gateway(name), "gateway", name, func(m *v1.Gateway, r int64) { m.Revision = r })
}

// CreateGateway registers a gateway. What its agent says of itself (kernel
// features, architecture, agent version) is left empty: only a registration
// sets it.
func (c *Controller) CreateGateway(ctx context.Context, req *v1.Gateway) (*v1.Gateway, error) {
	return c.createGateway(ctx, req, nil)
}

// createGateway creates the gateway; agent, when set, is what its agent said
// at registration.
func (c *Controller) createGateway(ctx context.Context, req *v1.Gateway, agent *Agent) (*v1.Gateway, error) {
	g := proto.Clone(req).(*v1.Gateway)
	if err := normaliseGateway(g); err != nil {
		return nil, err
	}
	if agent != nil {
		setAgent(g, *agent)
	}
	g.Revision = 0
	rev, err := c.st.Txn(ctx, []store.Cond{store.Absent(keys.Gateway(g.Name))}, []store.Op{store.Put(keys.Gateway(g.Name), encode(g))})
	if errors.Is(err, store.ErrConflict) {
		return nil, model.Errorf(model.ErrExists, "gateway %q already exists", g.Name)
	}
	if err != nil {
		return nil, storeErr(err)
	}
	g.Revision = rev
	c.log.Info("gateway created", logkey.Gateway, g.Name, logkey.Underlay, g.UnderlayAddress)
	return g, nil
}

// GetGateway returns one gateway.
func (c *Controller) GetGateway(ctx context.Context, name string) (*v1.Gateway, error) {
	_, g, err := c.getGatewayKV(ctx, name)
	return g, err
}

// ListGateways returns every gateway.
func (c *Controller) ListGateways(ctx context.Context) ([]*v1.Gateway, int64, error) {
	return listDecoded(ctx, c.st, keys.Gateways, func() *v1.Gateway { return &v1.Gateway{} }, func(g *v1.Gateway, r int64) { g.Revision = r })
}

// UpdateGateway replaces underlay address, encapsulations, state and last-seen
// time. What the agent said at its last registration is kept: the request's
// kernel features, architecture and agent version are ignored.
func (c *Controller) UpdateGateway(ctx context.Context, req *v1.Gateway) (*v1.Gateway, error) {
	return c.updateGateway(ctx, req, nil)
}

// updateGateway updates the gateway; agent, when set, replaces what its agent
// said at registration.
func (c *Controller) updateGateway(ctx context.Context, req *v1.Gateway, agent *Agent) (*v1.Gateway, error) {
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
		if agent != nil {
			setAgent(g, *agent)
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
	var nets []string
	err := retry(ctx, func() error {
		kv, _, err := c.getGatewayKV(ctx, name)
		if err != nil {
			return err
		}
		ref, err := c.getRef(ctx, keys.RefGateway(name))
		if err != nil {
			return err
		}
		eps, _, err := c.ListEndpoints(ctx, "", name)
		if err != nil {
			return err
		}
		if len(eps) > 0 {
			return model.Errorf(model.ErrConflict, "gateway %s still has %d endpoints (e.g. %s); delete them first", name, len(eps), eps[0].Id)
		}
		if nets, err = c.networkNames(ctx); err != nil {
			return err
		}
		blocks, err := ipam.GatewayBlocks(ctx, c.st, nets, name)
		if err != nil {
			return storeErr(err)
		}
		streams, _, err := c.st.List(ctx, keys.GatewayStreams(name))
		if err != nil {
			return storeErr(err)
		}
		ops := []store.Op{store.Delete(kv.Key), store.Delete(keys.RefGateway(name))}
		for _, m := range streams {
			ops = append(ops, store.Delete(m.Key)) // markers left by stopped controllers
		}
		idx, _, err := c.st.List(ctx, keys.GatewayBlocks(name))
		if err != nil {
			return storeErr(err)
		}
		for _, b := range idx {
			ops = append(ops, store.Delete(b.Key))
		}
		conds := []store.Cond{store.Unchanged(kv), ref}
		for _, b := range blocks {
			ops = append(ops, store.Delete(b.KV.Key))
			conds = append(conds, store.Unchanged(b.KV))
		}
		rev, err = c.st.Txn(ctx, conds, ops)
		return err
	})
	if err != nil {
		return 0, storeErr(err)
	}
	for _, n := range nets {
		c.ipam.Invalidate(n) // its blocks are gone
	}
	c.links.forget(name)
	c.log.Info("gateway deleted", logkey.Gateway, name)
	return rev, nil
}

// networkNames lists the networks' names (their keys only are used).
func (c *Controller) networkNames(ctx context.Context) ([]string, error) {
	kvs, _, err := c.st.List(ctx, keys.Networks)
	if err != nil {
		return nil, storeErr(err)
	}
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = strings.TrimPrefix(kv.Key, keys.Networks)
	}
	return out, nil
}

// ---- endpoints ----

func endpointState(e *v1.Endpoint) v1.EndpointState {
	if e.Label != 0 {
		return v1.EndpointState_ENDPOINT_STATE_ACTIVE
	}
	return v1.EndpointState_ENDPOINT_STATE_PENDING
}

func (c *Controller) getEndpointKV(ctx context.Context, id string) (store.KV, *v1.Endpoint, error) {
	return getRecord(ctx, c.st, keys.Endpoint(id), "endpoint", id, func(m *v1.Endpoint, r int64) { m.Revision = r })
}

func ipamErr(err error, e *v1.Endpoint) error {
	switch {
	case errors.Is(err, ipam.ErrExhausted):
		return model.Errorf(model.ErrExhausted, "network %s has no free address left for endpoint %s (%v); add a subnet with `iotfabricctl network update`", e.Network, e.Id, err)
	case errors.Is(err, ipam.ErrInUse):
		return model.Errorf(model.ErrExists, "endpoint %s: %w", e.Id, err)
	case errors.Is(err, ipam.ErrOutOfRange):
		return model.Errorf(model.ErrInvalid, "endpoint %s: %w", e.Id, err)
	case errors.Is(err, ipam.ErrBlockTaken):
		return model.Errorf(model.ErrConflict, "endpoint %s: %w", e.Id, err)
	case errors.Is(err, ipam.ErrBusy), errors.Is(err, store.ErrConflict):
		return store.ErrConflict
	}
	if model.HasKind(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return model.Errorf(model.ErrInvalid, "endpoint %s: %w", e.Id, err)
}

// CreateEndpoint creates an endpoint, allocating its addresses in the same
// transaction. Creating an existing endpoint with the same network and gateway
// returns it unchanged.
func (c *Controller) CreateEndpoint(ctx context.Context, req *v1.Endpoint) (*v1.Endpoint, error) {
	return c.createEndpoint(ctx, req, nil)
}

// CreateEndpoints creates many endpoints concurrently (they share the store's
// commits); each succeeds or fails on its own. The networks and gateways they
// name are read, and the networks' subnets parsed, once for the whole call.
func (c *Controller) CreateEndpoints(ctx context.Context, reqs []*v1.Endpoint) ([]*v1.Endpoint, []error) {
	out := make([]*v1.Endpoint, len(reqs))
	errs := make([]error, len(reqs))
	pa := c.readParents(ctx, reqs)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i, r := range reqs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i], errs[i] = c.createEndpoint(ctx, r, pa)
		}()
	}
	wg.Wait()
	return out, errs
}

// parents are the network and gateway records a bulk call's endpoints name,
// read once; each record is a transaction condition of every endpoint
// created with it, so a change meanwhile makes that endpoint read again.
type parents struct {
	nets map[string]parent[*v1.VirtualNetwork] // with their address space declared to IPAM
	gws  map[string]parent[*v1.Gateway]
}

type parent[T any] struct {
	kv  store.KV
	rec T
	err error
}

func (c *Controller) readParents(ctx context.Context, reqs []*v1.Endpoint) *parents {
	pa := &parents{nets: map[string]parent[*v1.VirtualNetwork]{}, gws: map[string]parent[*v1.Gateway]{}}
	for _, r := range reqs {
		if r == nil {
			continue
		}
		if _, ok := pa.nets[r.Network]; !ok && r.Network != "" {
			kv, n, err := c.getNetworkKV(ctx, r.Network)
			if err == nil {
				err = c.ensurePool(n)
			}
			pa.nets[r.Network] = parent[*v1.VirtualNetwork]{kv, n, err}
		}
		if _, ok := pa.gws[r.Gateway]; !ok && r.Gateway != "" {
			kv, g, err := c.getGatewayKV(ctx, r.Gateway)
			pa.gws[r.Gateway] = parent[*v1.Gateway]{kv, g, err}
		}
	}
	return pa
}

// endpointParents returns the records e names: from pa when it has them (the
// first attempt of a bulk call), else read from the store.
func (c *Controller) endpointParents(ctx context.Context, e *v1.Endpoint, pa *parents) (n *v1.VirtualNetwork, nkv, gkv store.KV, err error) {
	if pa != nil {
		pn, okn := pa.nets[e.Network]
		g, okg := pa.gws[e.Gateway]
		if okn && okg {
			if pn.err != nil {
				return nil, nkv, gkv, pn.err
			}
			return pn.rec, pn.kv, g.kv, g.err
		}
	}
	nkv, n, err = c.getNetworkKV(ctx, e.Network)
	if err != nil {
		return nil, nkv, gkv, err
	}
	if gkv, _, err = c.getGatewayKV(ctx, e.Gateway); err != nil {
		return nil, nkv, gkv, err
	}
	return n, nkv, gkv, c.ensurePool(n)
}

func validateNewEndpoint(e *v1.Endpoint) ([]netip.Addr, error) {
	if err := validate.EndpointID(e.Id); err != nil {
		return nil, model.Invalid(err)
	}
	if e.Network == "" || e.Gateway == "" {
		return nil, model.Errorf(model.ErrInvalid, "endpoint %s: network and gateway are required", e.Id)
	}
	if err := validate.Name("network", e.Network); err != nil {
		return nil, model.Errorf(model.ErrInvalid, "endpoint %s: %w", e.Id, err)
	}
	if err := validate.Name("gateway", e.Gateway); err != nil {
		return nil, model.Errorf(model.ErrInvalid, "endpoint %s: %w", e.Id, err)
	}
	if err := validate.Label(e.Label); err != nil {
		return nil, model.Errorf(model.ErrInvalid, "endpoint %s: %w", e.Id, err)
	}
	if err := validate.MAC(e.Mac); err != nil {
		return nil, model.Errorf(model.ErrInvalid, "endpoint %s: %w", e.Id, err)
	}
	if len(e.Addresses) > 2 {
		return nil, model.Errorf(model.ErrInvalid, "endpoint %s: %d addresses: at most one per family", e.Id, len(e.Addresses))
	}
	var requested []netip.Addr
	for _, s := range e.Addresses {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			return nil, model.Errorf(model.ErrInvalid, "endpoint %s: address %s is not an IP address", e.Id, validate.Quote(s))
		}
		for _, r := range requested {
			if r.Is4() == a.Is4() {
				return nil, model.Errorf(model.ErrInvalid, "endpoint %s: at most one address per family", e.Id)
			}
		}
		requested = append(requested, a.Unmap())
	}
	return requested, nil
}

// endpointOps are the writes that store a new endpoint e: its record, its
// network's index key and, without a label, its gateway's pending key (with
// one, its label key is the gateway's index).
func endpointOps(e *v1.Endpoint) []store.Op {
	ops := []store.Op{store.Put(keys.Endpoint(e.Id), encode(e)), store.Put(keys.EndpointIndexKey(e.Network, e.Id), []byte(e.Gateway))}
	if e.Label == 0 {
		ops = append(ops, store.Put(keys.PendingEndpoint(e.Gateway, e.Id), nil))
	}
	return ops
}

func (c *Controller) createEndpoint(ctx context.Context, req *v1.Endpoint, pa *parents) (*v1.Endpoint, error) {
	if req == nil {
		return nil, model.Errorf(model.ErrInvalid, "endpoint is missing from the request")
	}
	e := proto.Clone(req).(*v1.Endpoint)
	requested, err := validateNewEndpoint(e)
	if err != nil {
		return nil, err
	}
	var out *v1.Endpoint
	err = retry(ctx, func() error {
		if _, cur, err := c.getEndpointKV(ctx, e.Id); err == nil {
			if cur.Network == e.Network && cur.Gateway == e.Gateway {
				out = cur
				return nil
			}
			return model.Errorf(model.ErrExists, "endpoint %q already exists in network %s on gateway %s", e.Id, cur.Network, cur.Gateway)
		} else if !errors.Is(err, model.ErrNotFound) {
			return err
		}
		n, nkv, gkv, err := c.endpointParents(ctx, e, pa)
		pa = nil // a retry reads them again
		if err != nil {
			return err
		}
		res, err := c.ipam.Reserve(ctx, e.Network, e.Id, e.Gateway, requested)
		if err != nil {
			return ipamErr(err, e)
		}
		// The write is conditioned on n: its addresses (and a block leased
		// with them) must lie in n's subnets.
		if err := c.checkAddrsInSubnets(n, res.Addrs()); err != nil {
			c.ipam.Abort(res)
			return err
		}
		ep := proto.Clone(e).(*v1.Endpoint)
		ep.Addresses = ep.Addresses[:0]
		for _, a := range res.Addrs() {
			ep.Addresses = append(ep.Addresses, a.String())
		}
		ep.State, ep.Revision = endpointState(ep), 0
		conds := append(res.Conds, store.Absent(keys.Endpoint(ep.Id)), store.Unchanged(nkv), store.Unchanged(gkv))
		ops := append(res.Ops, endpointOps(ep)...)
		ops = append(ops, store.Put(keys.RefNetwork(ep.Network), nil), store.Put(keys.RefGateway(ep.Gateway), nil))
		if ep.Label != 0 {
			conds = append(conds, store.Absent(keys.Label(ep.Gateway, ep.Label)))
			ops = append(ops, store.Put(keys.Label(ep.Gateway, ep.Label), []byte(ep.Id)))
		}
		rev, err := c.st.Txn(ctx, conds, ops)
		if err != nil {
			c.ipam.Abort(res)
			if errors.Is(err, store.ErrConflict) {
				if ep.Label != 0 {
					if owner, gerr := c.st.Get(ctx, keys.Label(ep.Gateway, ep.Label)); gerr == nil && string(owner.Value) != ep.Id {
						return model.Errorf(model.ErrExists, "endpoint %s: label %d is already used by endpoint %s on gateway %s", ep.Id, ep.Label, owner.Value, ep.Gateway)
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
	c.log.Debug("endpoint created", logkey.Endpoint, out.Id, logkey.Network, out.Network, logkey.Gateway, out.Gateway, logkey.Addresses, out.Addresses)
	return out, nil
}

// GetEndpoint returns one endpoint.
func (c *Controller) GetEndpoint(ctx context.Context, id string) (*v1.Endpoint, error) {
	_, e, err := c.getEndpointKV(ctx, id)
	return e, err
}

// ListEndpoints returns endpoints, optionally only those of a network and/or
// gateway. With a network or a gateway it reads that one's index (for a
// gateway, network by network) and the endpoints it lists, so it costs what
// it returns, not what the store holds.
func (c *Controller) ListEndpoints(ctx context.Context, network, gateway string) ([]*v1.Endpoint, int64, error) {
	if network == "" && gateway == "" {
		return listDecoded(ctx, c.st, keys.Endpoints, func() *v1.Endpoint { return &v1.Endpoint{} }, func(e *v1.Endpoint, r int64) { e.Revision = r })
	}
	var ids []string
	var rev int64
	add := func(prefix string, id func(store.KV) string) error {
		kvs, r, err := c.st.List(ctx, prefix)
		if err != nil {
			return storeErr(err)
		}
		if rev == 0 { // the first read's: a watch from it brings what changed between the reads
			rev = r
		}
		for _, kv := range kvs {
			if id := id(kv); id != "" {
				ids = append(ids, id)
			}
		}
		return nil
	}
	keyID := func(kv store.KV) string { return kv.Key[strings.LastIndexByte(kv.Key, '/')+1:] }
	var err error
	switch {
	case network != "" && gateway != "":
		// The index's values are the gateways: read only the matching endpoints.
		err = add(keys.NetworkEndpoints(network), func(kv store.KV) string {
			if string(kv.Value) != gateway {
				return ""
			}
			return keyID(kv)
		})
	case network != "":
		err = add(keys.NetworkEndpoints(network), keyID)
	default:
		// Its label and pending keys, both ranges at once (a reconnecting
		// gateway's full report waits for them).
		var pending []store.KV
		var prev int64
		var perr error
		done := make(chan struct{})
		go func() {
			defer close(done)
			pending, prev, perr = c.st.List(ctx, keys.GatewayPending(gateway))
		}()
		err = add(keys.GatewayLabels(gateway), func(kv store.KV) string { return string(kv.Value) })
		<-done
		if err == nil && perr != nil {
			err = storeErr(perr)
		}
		if err == nil {
			rev = min(rev, prev) // a watch from the older brings what changed after either
			for _, kv := range pending {
				ids = append(ids, keyID(kv))
			}
		}
	}
	if err != nil {
		return nil, 0, err
	}
	slices.Sort(ids)
	eps, err := c.getEndpoints(ctx, slices.Compact(ids)) // an endpoint relabelled meanwhile may be listed twice
	if err != nil {
		return nil, 0, err
	}
	out := eps[:0]
	for _, e := range eps {
		if (network == "" || e.Network == network) && (gateway == "" || e.Gateway == gateway) {
			out = append(out, e)
		}
	}
	return out, rev, nil
}

// getEndpoints reads endpoints by id, a few at a time; those deleted
// meanwhile are left out.
func (c *Controller) getEndpoints(ctx context.Context, ids []string) ([]*v1.Endpoint, error) {
	got := make([]*v1.Endpoint, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			_, got[i], errs[i] = c.getEndpointKV(ctx, id)
		}()
	}
	wg.Wait()
	out := make([]*v1.Endpoint, 0, len(ids))
	for i, e := range got {
		switch {
		case errs[i] == nil:
			out = append(out, e)
		case !errors.Is(errs[i], model.ErrNotFound):
			return nil, errs[i]
		}
	}
	return out, nil
}

// UpdateEndpoint replaces the MAC address and the label.
func (c *Controller) UpdateEndpoint(ctx context.Context, req *v1.Endpoint) (*v1.Endpoint, error) {
	if req == nil {
		return nil, model.Errorf(model.ErrInvalid, "endpoint is missing from the request")
	}
	if err := validate.EndpointID(req.Id); err != nil {
		return nil, model.Invalid(err)
	}
	if err := validate.Label(req.Label); err != nil {
		return nil, model.Errorf(model.ErrInvalid, "endpoint %s: %w", req.Id, err)
	}
	if err := validate.MAC(req.Mac); err != nil {
		return nil, model.Errorf(model.ErrInvalid, "endpoint %s: %w", req.Id, err)
	}
	var out *v1.Endpoint
	err := retry(ctx, func() error {
		kv, cur, err := c.getEndpointKV(ctx, req.Id)
		if err != nil {
			return err
		}
		if (req.Network != "" && req.Network != cur.Network) || (req.Gateway != "" && req.Gateway != cur.Gateway) {
			return model.Errorf(model.ErrInvalid, "endpoint %s: network and gateway cannot change; delete and create it again", req.Id)
		}
		if len(req.Addresses) > 0 && !slices.Equal(req.Addresses, cur.Addresses) {
			return model.Errorf(model.ErrInvalid, "endpoint %s: addresses cannot change; delete and create it again", req.Id)
		}
		e := proto.Clone(cur).(*v1.Endpoint)
		e.Mac, e.Label = req.Mac, req.Label
		if req.Pod != nil {
			e.Pod = proto.Clone(req.Pod).(*v1.PodRef)
		}
		e.State, e.Revision = endpointState(e), 0
		conds := []store.Cond{store.Unchanged(kv)}
		ops := []store.Op{store.Put(kv.Key, encode(e))}
		if e.Label != cur.Label {
			// The gateway's listing moves between its label and pending keys:
			// touch its reference so that a concurrent DeleteGateway conflicts.
			ops = append(ops, store.Put(keys.RefGateway(e.Gateway), nil))
			switch {
			case cur.Label == 0:
				ops = append(ops, store.Delete(keys.PendingEndpoint(e.Gateway, e.Id)))
			case e.Label == 0:
				ops = append(ops, store.Put(keys.PendingEndpoint(e.Gateway, e.Id), nil))
			}
			if cur.Label != 0 {
				ops = append(ops, store.Delete(keys.Label(e.Gateway, cur.Label)))
			}
			if e.Label != 0 {
				lk := keys.Label(e.Gateway, e.Label)
				// Taken by this endpoint: another controller set the same
				// label meanwhile; the transaction conflicts and is retried.
				if owner, err := c.st.Get(ctx, lk); err == nil && string(owner.Value) != e.Id {
					return model.Errorf(model.ErrExists, "endpoint %s: label %d is already used by endpoint %s on gateway %s", e.Id, e.Label, owner.Value, e.Gateway)
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
		ops := append(ipam.ReleaseOps(e.Network, freed), store.Delete(kv.Key),
			store.Delete(keys.EndpointIndexKey(e.Network, e.Id)), store.Delete(keys.PendingEndpoint(e.Gateway, e.Id)),
			store.Put(keys.RefNetwork(e.Network), nil), store.Put(keys.RefGateway(e.Gateway), nil))
		if e.Label != 0 {
			ops = append(ops, store.Delete(keys.Label(e.Gateway, e.Label)))
		}
		rev, err = c.st.Txn(ctx, []store.Cond{store.Unchanged(kv)}, ops)
		return err
	})
	if err != nil {
		return 0, storeErr(err)
	}
	c.ipam.Released(network, rev, freed)
	c.log.Debug("endpoint deleted", logkey.Endpoint, id)
	return rev, nil
}
