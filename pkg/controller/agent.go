package controller

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/iotfabric/iotfabric/pkg/ipam"
	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/validate"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// What the gateways' agents ask of the controller: registration, endpoint
// reports, block leases, and the markers of their route streams.

// Agent describes the agent that registers a gateway: logged, and kept on the
// gateway (its kernel_features, architecture and agent_version).
type Agent struct {
	Architecture   string
	Version        string
	KernelFeatures []string
}

// Registration is what a gateway's registration did.
type Registration struct {
	// Gateway is the gateway as stored after the registration.
	Gateway *v1.Gateway
	// Prev is the gateway as the registration found it (nil: it created
	// the gateway).
	Prev *v1.Gateway
	// Blocks are the address blocks leased to the gateway.
	Blocks []ipam.GatewayBlock
}

// RegisterGateway creates or updates the gateway and returns it with the
// address blocks leased to it (Register, without the previous record).
func (c *Controller) RegisterGateway(ctx context.Context, gw *v1.Gateway, agent Agent) (*v1.Gateway, []ipam.GatewayBlock, error) {
	r, err := c.Register(ctx, gw, agent)
	return r.Gateway, r.Blocks, err
}

// Register creates or updates the gateway and returns it with the record it
// replaced and the address blocks leased to it. A gateway it creates starts
// up; it does not change an existing gateway's state: the gateway's route
// streams do (OpenGatewayStream marks it up, the end of its last stream
// down). So after a controller's clean restart, whose shutdown marked its
// gateways down, their registrations write nothing either.
//
// A registration that would not change the gateway in substance (the same
// underlay address, encapsulations and agent) writes nothing: it costs
// one read of the gateway and the listing of its blocks, so a fleet
// reconnecting to a restarted controller does not rewrite its records. Such
// a registration leaves last_seen as it is (its route stream, which follows,
// rewrites the record anyway, see OpenGatewayStream). While the gateway
// cache runs (RunGatewayCache) and holds the gateway, it is answered from
// memory, without a store call (gatewaycache.go says why an answer as old as
// the store watch's lag is safe). Every write is conditional on the record
// read; a conflict reads it again.
func (c *Controller) Register(ctx context.Context, gw *v1.Gateway, agent Agent) (Registration, error) {
	if gw == nil || gw.Name == "" {
		return Registration{}, model.Errorf(model.ErrInvalid, "the gateway and its name are required")
	}
	want := proto.Clone(gw).(*v1.Gateway)
	want.State = v1.GatewayState_GATEWAY_STATE_UP
	if err := normaliseGateway(want); err != nil {
		return Registration{}, err
	}
	if cur, blocks, ok := c.gwCache.lookup(want.Name); ok && proto.Equal(registered(cur, want, agent), cur) {
		c.gwCache.fromMemory.Add(1)
		c.log.Debug("gateway registered", logkey.Gateway, want.Name, logkey.Underlay, want.UnderlayAddress, logkey.Arch, agent.Architecture,
			logkey.Version, agent.Version, logkey.Features, agent.KernelFeatures)
		return Registration{Gateway: cur, Prev: cur, Blocks: blocks}, nil
	}
	var r Registration
	err := retry(ctx, func() error {
		r = Registration{}
		kv, cur, err := c.getGatewayKV(ctx, want.Name)
		if errors.Is(err, model.ErrNotFound) {
			g := proto.Clone(want).(*v1.Gateway)
			g.LastSeen = timestamppb.Now()
			r.Gateway, err = c.createGateway(ctx, g, &agent)
			if errors.Is(err, model.ErrExists) {
				return store.ErrConflict // created meanwhile by another agent stream or controller: read it
			}
			return err
		}
		if err != nil {
			return err
		}
		r.Prev = cur
		g := registered(cur, want, agent)
		if proto.Equal(g, cur) {
			r.Gateway = cur
			return nil
		}
		g.LastSeen, g.Revision = timestamppb.Now(), 0
		rev, err := c.st.Txn(ctx, []store.Cond{store.Unchanged(kv)}, []store.Op{store.Put(kv.Key, encode(g))})
		if err != nil {
			return err
		}
		g.Revision = rev
		r.Gateway = g
		return nil
	})
	if err != nil {
		return Registration{}, storeErr(err)
	}
	if r.Prev == nil { // created, up
		c.links.record(want.Name, v1.GatewayState_GATEWAY_STATE_UP, v1.GatewayLinkReason_GATEWAY_LINK_REASON_REGISTERED, "")
	}
	// Logged at info only when the registration created or changed the
	// gateway: after a controller restart every gateway registers again.
	changed := r.Gateway != r.Prev
	level := slog.LevelDebug
	if changed {
		level = slog.LevelInfo
	}
	c.log.Log(ctx, level, "gateway registered", logkey.Gateway, want.Name, logkey.Underlay, want.UnderlayAddress, logkey.Arch, agent.Architecture,
		logkey.Version, agent.Version, logkey.Features, agent.KernelFeatures)
	if r.Blocks, err = ipam.IndexedGatewayBlocks(ctx, c.st, want.Name); err != nil {
		return Registration{}, storeErr(err)
	}
	c.gwCache.fromStore.Add(1)
	return r, nil
}

// registered returns cur as a registration of want by agent makes it, with
// cur's last-seen time and revision: equal to cur when the registration
// changes nothing.
func registered(cur, want *v1.Gateway, agent Agent) *v1.Gateway {
	g := proto.Clone(cur).(*v1.Gateway)
	g.UnderlayAddress, g.Encapsulations = want.UnderlayAddress, want.Encapsulations
	setAgent(g, agent)
	return g
}

// ReportResult is the outcome of one reported endpoint.
type ReportResult struct {
	ID       string
	Endpoint *v1.Endpoint // may be set with Err (the endpoint as the controller has it)
	Err      error
	// InUse lists, when Err is ErrExists, the reported addresses another
	// endpoint holds.
	InUse []string
}

// ReportEndpoints records the endpoints a gateway hosts; with fullSync, the
// gateway's endpoints it did not list are deleted first (their number is
// returned): for its own pods the agent is the source of truth, so an
// address it admitted while no controller was reachable wins over an
// endpoint created meanwhile on the gateway through the API.
//
// A full report of endpoints the store holds as reported reads the
// gateway's endpoint indexes and its endpoints once each, and writes
// nothing.
func (c *Controller) ReportEndpoints(ctx context.Context, gw string, eps []*v1.AgentEndpoint, fullSync bool, offlineLog []string) ([]ReportResult, int, error) {
	var cur []*v1.Endpoint // with fullSync, the gateway's endpoints
	// (an invalid name, "" above all, would list others': no gateway has
	// one, so it is not found below)
	if fullSync && validate.Name("gateway", gw) == nil {
		var err error
		if cur, _, err = c.ListEndpoints(ctx, "", gw); err != nil {
			return nil, 0, err
		}
	}
	// The gateway must exist. One with endpoints does: DeleteGateway
	// refuses a gateway that has any, under a condition that every
	// endpoint's creation and deletion changes, and an endpoint is created
	// only on a gateway that exists. So the gateway is read only when no
	// endpoint of it was listed.
	if len(cur) == 0 {
		if _, err := c.GetGateway(ctx, gw); err != nil {
			return nil, 0, err
		}
	}
	for _, l := range offlineLog {
		c.log.Info("gateway offline record", logkey.Gateway, gw, logkey.Event, l)
	}
	listed := map[string]bool{}
	for _, e := range eps {
		listed[e.GetId()] = true
	}
	deleted := 0
	// The gateway's endpoints as just listed: a reported one found there is
	// checked against that record, not read again.
	known := map[string]*v1.Endpoint{}
	if fullSync {
		for _, e := range cur {
			if listed[e.Id] {
				known[e.Id] = e
				continue
			}
			if _, err := c.DeleteEndpoint(ctx, e.Id); err != nil && !errors.Is(err, model.ErrNotFound) {
				return nil, 0, err
			}
			deleted++
		}
	}
	var results []ReportResult
	for _, e := range eps {
		ep, err := c.reportOne(ctx, gw, e, known[e.GetId()])
		delete(known, e.GetId()) // reported twice: the second is checked against the store
		res := ReportResult{ID: e.GetId(), Endpoint: ep, Err: err}
		if errors.Is(err, model.ErrExists) {
			res.InUse = c.addrsInUse(ctx, e)
		}
		results = append(results, res)
	}
	return results, deleted, nil
}

// PruneEndpoints deletes the gateway's endpoints whose id is in (after,
// through] ("" through: to the last id) and not in keep, and returns how
// many it deleted: one page of a full sync spread over several messages
// (the agent then reports the endpoints it keeps, without fullSync). keep
// holds at most validate.MaxBulk ids.
func (c *Controller) PruneEndpoints(ctx context.Context, gw, after, through string, keep []string) (int, error) {
	if err := validate.Bulk(len(keep)); err != nil {
		return 0, model.Invalid(err)
	}
	if through != "" && through <= after {
		return 0, model.Errorf(model.ErrInvalid, "prune range (%s, %s] is empty", validate.Quote(after), validate.Quote(through))
	}
	if _, err := c.GetGateway(ctx, gw); err != nil {
		return 0, err
	}
	kept := make(map[string]bool, len(keep))
	for _, id := range keep {
		kept[id] = true
	}
	ids, err := c.gatewayEndpointIDs(ctx, gw)
	if err != nil {
		return 0, err
	}
	deleted := 0
	for _, id := range ids {
		if id <= after || (through != "" && id > through) || kept[id] {
			continue
		}
		if _, err := c.DeleteEndpoint(ctx, id); err != nil && !errors.Is(err, model.ErrNotFound) {
			return deleted, err
		}
		deleted++
	}
	return deleted, nil
}

// gatewayEndpointIDs returns the ids of the gateway's endpoints from its
// indexes (labels and pending), without reading the endpoints.
func (c *Controller) gatewayEndpointIDs(ctx context.Context, gw string) ([]string, error) {
	var ids []string
	for _, pre := range []string{keys.GatewayLabels(gw), keys.GatewayPending(gw)} {
		after := ""
		for {
			kvs, _, more, err := c.st.ListPage(ctx, pre, after, 10000)
			if err != nil {
				return nil, storeErr(err)
			}
			for _, kv := range kvs {
				if pre == keys.GatewayPending(gw) {
					ids = append(ids, kv.Key[len(pre):])
				} else {
					ids = append(ids, string(kv.Value))
				}
			}
			if !more || len(kvs) == 0 {
				break
			}
			after = kvs[len(kvs)-1].Key
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil // an endpoint relabelled meanwhile may be listed twice
}

// addrsInUse returns the addresses of e that another endpoint holds.
func (c *Controller) addrsInUse(ctx context.Context, e *v1.AgentEndpoint) []string {
	var out []string
	for _, s := range e.GetAddresses() {
		a, err := netip.ParseAddr(s)
		if err != nil || validate.Name("network", e.GetNetwork()) != nil {
			continue
		}
		if kv, err := c.st.Get(ctx, keys.IPAMAddr(e.GetNetwork(), a.Unmap())); err == nil && string(kv.Value) != e.GetId() {
			out = append(out, a.Unmap().String())
		}
	}
	return out
}

// reportOne records one endpoint the gateway reports. cur, when not nil, is
// the endpoint as read from the store during this report; nil: it is read
// here. An endpoint the store holds as reported costs no write.
func (c *Controller) reportOne(ctx context.Context, gw string, e *v1.AgentEndpoint, cur *v1.Endpoint) (*v1.Endpoint, error) {
	var err error
	if cur == nil {
		cur, err = c.GetEndpoint(ctx, e.GetId())
	}
	switch {
	case err == nil:
		if cur.Gateway != gw || cur.Network != e.GetNetwork() {
			return nil, model.Errorf(model.ErrExists, "endpoint %s exists in network %s on gateway %s", e.GetId(), cur.Network, cur.Gateway)
		}
		if len(e.GetAddresses()) > 0 && !sameAddrs(cur.Addresses, e.GetAddresses()) {
			return cur, model.Errorf(model.ErrConflict, "endpoint %s has addresses %v at the controller, the gateway reports %v", e.GetId(), cur.Addresses, e.GetAddresses())
		}
		if cur.Label == e.GetLabel() && cur.Mac == e.GetMac() && (e.GetPod() == nil || proto.Equal(cur.Pod, e.GetPod())) {
			return cur, nil
		}
		if e.GetLabel() == 0 && cur.Label != 0 {
			// Reported before its attach (an ADD in flight, or a report
			// overtaken by a later one through another controller): the
			// endpoint keeps the label it was given when attached.
			return cur, nil
		}
		upd := proto.Clone(cur).(*v1.Endpoint)
		upd.Label, upd.Mac, upd.Pod = e.GetLabel(), e.GetMac(), e.GetPod()
		return c.UpdateEndpoint(ctx, upd)
	case errors.Is(err, model.ErrNotFound):
		return c.CreateEndpoint(ctx, &v1.Endpoint{Id: e.GetId(), Network: e.GetNetwork(), Gateway: gw,
			Addresses: e.GetAddresses(), Mac: e.GetMac(), Label: e.GetLabel(), Pod: e.GetPod()})
	default:
		return nil, err
	}
}

func sameAddrs(a, b []string) bool {
	norm := func(xs []string) []string {
		var out []string
		for _, x := range xs {
			if p, err := netip.ParseAddr(x); err == nil {
				out = append(out, p.String())
			}
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(norm(a), norm(b))
}

// LeaseBlock leases an address block of a network (family 4, 6, or 0 for 4)
// to the gateway.
func (c *Controller) LeaseBlock(ctx context.Context, gw, network string, family uint32) (netip.Prefix, error) {
	if _, err := c.GetGateway(ctx, gw); err != nil {
		return netip.Prefix{}, err
	}
	_, n, err := c.getNetworkKV(ctx, network)
	if err != nil {
		return netip.Prefix{}, err
	}
	f := ipam.IPv4
	switch family {
	case 4, 0:
	case 6:
		f = ipam.IPv6
	default:
		return netip.Prefix{}, model.Errorf(model.ErrInvalid, "family %d: use 4 or 6", family)
	}
	if err := c.ensurePool(n); err != nil {
		return netip.Prefix{}, err
	}
	p, err := c.ipam.LeaseBlock(ctx, n.Name, gw, f)
	if errors.Is(err, ipam.ErrExhausted) {
		return netip.Prefix{}, model.Errorf(model.ErrExhausted, "network %s has no free IPv%d block left", n.Name, f)
	}
	if err != nil {
		return netip.Prefix{}, storeErr(err)
	}
	return p, nil
}

// OpenGatewayStream checks that gw exists, records that a stream (id
// <controller instance>-<n>) sends routes to it, and marks it up, in one
// transaction (so that a stream closing at another controller sees either
// this marker or a changed gateway record).
//
// It costs one read of the gateway and that transaction, also for a gateway
// already up: the marker is what tells the sweeper and the other
// controllers that a live controller streams to it, and the record's
// rewrite (last_seen: now) is what makes a CloseGatewayStream that listed
// the markers before this one was written conflict and look again. Being in
// the marker's transaction, the rewrite adds no round trip to the store.
func (c *Controller) OpenGatewayStream(ctx context.Context, gw, id string) error {
	if err := validate.Name("gateway", gw); err != nil {
		return model.Invalid(err)
	}
	err := retry(ctx, func() error {
		kv, g, err := c.getGatewayKV(ctx, gw)
		if err != nil {
			return err
		}
		g.State, g.LastSeen, g.Revision = v1.GatewayState_GATEWAY_STATE_UP, timestamppb.Now(), 0
		_, err = c.st.Txn(ctx, []store.Cond{store.Unchanged(kv)},
			[]store.Op{store.Put(kv.Key, encode(g)), store.Put(keys.GatewayStream(gw, id), nil)})
		return err
	})
	if err != nil {
		return storeErr(err)
	}
	c.streams.add(id, gw)
	c.links.record(gw, v1.GatewayState_GATEWAY_STATE_UP, v1.GatewayLinkReason_GATEWAY_LINK_REASON_STREAM_OPENED, id)
	return nil
}

// CloseGatewayStream removes the marker OpenGatewayStream wrote and, unless
// another live controller instance still streams routes to gw, marks the
// gateway down. The markers of dead instances do not count (the sweeper
// removes them); the transaction requires the markers that counted unchanged,
// so that two last streams closing at once cannot both leave it up. why,
// the reason the stream ended, goes into the link history.
func (c *Controller) CloseGatewayStream(ctx context.Context, gw, id string, why v1.GatewayLinkReason) error {
	marker := keys.GatewayStream(gw, id)
	state, known := v1.GatewayState_GATEWAY_STATE_UP, true
	err := retry(ctx, func() error {
		state, known = v1.GatewayState_GATEWAY_STATE_UP, true
		kv, g, err := c.getGatewayKV(ctx, gw)
		if errors.Is(err, model.ErrNotFound) {
			known = false
			_, err = c.st.Txn(ctx, []store.Cond{store.Absent(keys.Gateway(gw))}, []store.Op{store.Delete(marker)})
			return err
		}
		if err != nil {
			return err
		}
		streams, _, err := c.st.List(ctx, keys.GatewayStreams(gw))
		if err != nil {
			return err
		}
		conds := []store.Cond{store.Unchanged(kv)}
		live := c.newLiveness(time.Now(), keys.StreamInstance(id), "")
		for _, s := range streams {
			if s.Key == marker {
				continue
			}
			_, other, _ := keys.StreamGateway(s.Key)
			k, err := live.check(ctx, keys.StreamInstance(other))
			if err != nil {
				return err
			}
			if k.alive {
				conds = append(conds, store.Unchanged(s))
			}
		}
		ops := []store.Op{store.Delete(marker)}
		if len(conds) == 1 { // no other live stream
			g.State, g.LastSeen, g.Revision = v1.GatewayState_GATEWAY_STATE_DOWN, timestamppb.Now(), 0
			ops = append(ops, store.Put(kv.Key, encode(g)))
			state = v1.GatewayState_GATEWAY_STATE_DOWN
		}
		_, err = c.st.Txn(ctx, conds, ops)
		return err
	})
	if err != nil {
		return storeErr(err) // a clean shutdown sweeps the marker
	}
	c.streams.remove(id)
	if known {
		c.links.record(gw, state, why, id)
	}
	return nil
}
