package controller

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/iotfabric/iotfabric/pkg/ipam"
	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/vpn"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// AgentServer implements AgentService: the vrouter agents' side of the controller.
type AgentServer struct {
	c *Controller
	r *vpn.Runner
	v1.UnimplementedAgentServiceServer
}

// NewAgentServer returns the AgentService of c, with routes from r.
func NewAgentServer(c *Controller, r *vpn.Runner) *AgentServer { return &AgentServer{c: c, r: r} }

// Attach registers the service on g.
func (a *AgentServer) Attach(g *grpc.Server) { v1.RegisterAgentServiceServer(g, a) }

// Register creates or updates the gateway and marks it up.
func (a *AgentServer) Register(ctx context.Context, req *v1.RegisterRequest) (*v1.RegisterResponse, error) {
	g := proto.Clone(req.GetGateway()).(*v1.Gateway)
	if g == nil || g.Name == "" {
		return nil, errf(codes.InvalidArgument, "the gateway and its name are required")
	}
	g.State, g.LastSeen = v1.GatewayState_GATEWAY_STATE_UP, timestamppb.Now()
	out, err := a.c.UpdateGateway(ctx, g)
	if status.Code(err) == codes.NotFound {
		out, err = a.c.CreateGateway(ctx, g)
		if status.Code(err) == codes.AlreadyExists { // created meanwhile by another agent stream or controller
			out, err = a.c.UpdateGateway(ctx, g)
		}
	}
	if err != nil {
		return nil, err
	}
	a.c.log.Info("gateway registered", "gateway", g.Name, "underlay", g.UnderlayAddress, "arch", req.GetArchitecture(),
		"version", req.GetAgentVersion(), "features", req.GetKernelFeatures())
	blocks, err := a.gatewayBlocks(ctx, g.Name)
	if err != nil {
		return nil, err
	}
	return &v1.RegisterResponse{Gateway: out, Blocks: blocks}, nil
}

func (a *AgentServer) gatewayBlocks(ctx context.Context, gw string) ([]*v1.GatewayBlock, error) {
	kvs, _, err := a.c.st.List(ctx, "ipam/")
	if err != nil {
		return nil, storeErr(err)
	}
	var out []*v1.GatewayBlock
	for _, kv := range kvs {
		net, rest, ok := strings.Cut(strings.TrimPrefix(kv.Key, "ipam/"), "/blocks/")
		if ok && string(kv.Value) == gw {
			out = append(out, &v1.GatewayBlock{Network: net, Prefix: rest})
		}
	}
	return out, nil
}

// ReportEndpoints records the endpoints a gateway hosts.
func (a *AgentServer) ReportEndpoints(ctx context.Context, req *v1.ReportEndpointsRequest) (*v1.ReportEndpointsResponse, error) {
	gw := req.GetGateway()
	if _, err := a.c.GetGateway(ctx, gw); err != nil {
		return nil, err
	}
	for _, l := range req.GetOfflineLog() {
		a.c.log.Info("gateway offline record", "gateway", gw, "event", l)
	}
	resp := &v1.ReportEndpointsResponse{}
	listed := map[string]bool{}
	for _, e := range req.GetEndpoints() {
		listed[e.GetId()] = true
		ep, err := a.reportOne(ctx, gw, e)
		res := &v1.EndpointResult{Id: e.GetId(), Endpoint: ep}
		if err != nil {
			res.Error = status.Convert(err).Message()
		}
		resp.Results = append(resp.Results, res)
	}
	if req.GetFullSync() {
		eps, _, err := a.c.ListEndpoints(ctx, "", gw)
		if err != nil {
			return nil, err
		}
		for _, e := range eps {
			if listed[e.Id] {
				continue
			}
			if _, err := a.c.DeleteEndpoint(ctx, e.Id); err != nil && status.Code(err) != codes.NotFound {
				return nil, err
			}
			resp.Deleted++
		}
	}
	return resp, nil
}

func (a *AgentServer) reportOne(ctx context.Context, gw string, e *v1.AgentEndpoint) (*v1.Endpoint, error) {
	cur, err := a.c.GetEndpoint(ctx, e.GetId())
	switch {
	case err == nil:
		if cur.Gateway != gw || cur.Network != e.GetNetwork() {
			return nil, errf(codes.AlreadyExists, "endpoint %s exists in network %s on gateway %s", e.GetId(), cur.Network, cur.Gateway)
		}
		if len(e.GetAddresses()) > 0 && !sameAddrs(cur.Addresses, e.GetAddresses()) {
			return cur, errf(codes.FailedPrecondition, "endpoint %s has addresses %v at the controller, the gateway reports %v", e.GetId(), cur.Addresses, e.GetAddresses())
		}
		if cur.Label == e.GetLabel() && cur.Mac == e.GetMac() {
			return cur, nil
		}
		upd := proto.Clone(cur).(*v1.Endpoint)
		upd.Label, upd.Mac = e.GetLabel(), e.GetMac()
		return a.c.UpdateEndpoint(ctx, upd)
	case status.Code(err) == codes.NotFound:
		return a.c.CreateEndpoint(ctx, &v1.Endpoint{Id: e.GetId(), Network: e.GetNetwork(), Gateway: gw,
			Addresses: e.GetAddresses(), Mac: e.GetMac(), Label: e.GetLabel()})
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

// LeaseBlock leases an address block of a network to the gateway.
func (a *AgentServer) LeaseBlock(ctx context.Context, req *v1.LeaseBlockRequest) (*v1.LeaseBlockResponse, error) {
	if _, err := a.c.GetGateway(ctx, req.GetGateway()); err != nil {
		return nil, err
	}
	_, n, err := a.c.getNetworkKV(ctx, req.GetNetwork())
	if err != nil {
		return nil, err
	}
	f := ipam.IPv4
	switch req.GetFamily() {
	case 4, 0:
	case 6:
		f = ipam.IPv6
	default:
		return nil, errf(codes.InvalidArgument, "family %d: use 4 or 6", req.GetFamily())
	}
	if err := a.c.ensurePool(n); err != nil {
		return nil, err
	}
	p, err := a.c.ipam.LeaseBlock(ctx, n.Name, req.GetGateway(), f)
	if errors.Is(err, ipam.ErrExhausted) {
		return nil, errf(codes.ResourceExhausted, "network %s has no free IPv%d block left", n.Name, f)
	}
	if err != nil {
		return nil, storeErr(err)
	}
	return &v1.LeaseBlockResponse{Block: &v1.GatewayBlock{Network: n.Name, Prefix: p.String()}}, nil
}

// WatchGatewayRoutes streams the routes of the gateway's networks.
func (a *AgentServer) WatchGatewayRoutes(req *v1.WatchGatewayRoutesRequest, stream grpc.ServerStreamingServer[v1.GatewayRoutes]) error {
	ctx := stream.Context()
	gw := req.GetGateway()
	if err := model.ValidateName("gateway", gw); err != nil {
		return errf(codes.InvalidArgument, "%v", err)
	}
	if _, err := a.c.GetGateway(ctx, gw); err != nil {
		return err
	}
	ch := a.r.WatchGateway(ctx, gw, req.GetFromRevision(), req.GetControllerId())
	defer a.markDown(gw)
	for u := range ch {
		msg := &v1.GatewayRoutes{Kind: v1.GatewayRoutes_KIND_CHANGES, Revision: u.Revision, ControllerId: a.r.ID()}
		if u.Snapshot {
			msg.Kind = v1.GatewayRoutes_KIND_SNAPSHOT
		}
		for _, rt := range u.Put {
			msg.Put = append(msg.Put, vpn.RouteToAPI(rt.Network, rt.NetRoute))
		}
		for _, rt := range u.Delete {
			msg.Delete = append(msg.Delete, &v1.Route{Network: rt.Network, Prefix: rt.Prefix.String(), RouteDistinguisher: rt.RD.String()})
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return errf(codes.Unavailable, "route stream closed (replaced by a newer stream, reader behind, or controller stopping); reconnect with from_revision")
}

// markDown records that the gateway's route stream ended.
func (a *AgentServer) markDown(gw string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	g, err := a.c.GetGateway(ctx, gw)
	if err != nil {
		return
	}
	g.State, g.LastSeen = v1.GatewayState_GATEWAY_STATE_DOWN, timestamppb.Now()
	if _, err := a.c.UpdateGateway(ctx, g); err != nil && !errors.Is(err, store.ErrClosed) {
		a.c.log.Debug("mark gateway down", "gateway", gw, "err", err)
	}
}
