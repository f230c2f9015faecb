package vpn

import (
	"context"
	"errors"
	"net/netip"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/store"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Server implements PeerService and RouteService on a Runner.
type Server struct {
	r           *Runner
	configPeers []bgp.PeerConfig
	v1.UnimplementedPeerServiceServer
	v1.UnimplementedRouteServiceServer
}

// NewServer returns the services; configPeers are the peers of the
// configuration file (they cannot be deleted through the API).
func NewServer(r *Runner, configPeers []bgp.PeerConfig) *Server {
	return &Server{r: r, configPeers: configPeers}
}

// Register registers both services on g.
func (s *Server) Register(g *grpc.Server) {
	v1.RegisterPeerServiceServer(g, s)
	v1.RegisterRouteServiceServer(g, s)
}

func (s *Server) isConfigPeer(a netip.Addr) bool {
	return slices.ContainsFunc(s.configPeers, func(p bgp.PeerConfig) bool { return p.Address == a })
}

func storeStatus(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return status.Errorf(codes.Unavailable, "store: %v", err)
}

var errDisabled = status.Error(codes.FailedPrecondition, "the BGP speaker is disabled on this controller: set bgp.router_id in its configuration")

// AddPeer implements PeerService.
func (s *Server) AddPeer(ctx context.Context, req *v1.AddPeerRequest) (*v1.PeerStatus, error) {
	if !s.r.HasSpeaker() {
		return nil, errDisabled
	}
	p := req.GetPeer()
	if p == nil {
		return nil, status.Error(codes.InvalidArgument, "peer is missing from the request")
	}
	addr, err := netip.ParseAddr(p.Address)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "peer address %q is not an IP address", p.Address)
	}
	if p.Port > 65535 {
		return nil, status.Errorf(codes.InvalidArgument, "peer port %d out of range", p.Port)
	}
	pc := bgp.PeerConfig{Address: addr.Unmap(), ASN: p.Asn, Password: p.Password, Port: uint16(p.Port)}
	if err := pc.Validate(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "peer %s: %v", p.Address, err)
	}
	if s.isConfigPeer(pc.Address) {
		return nil, status.Errorf(codes.FailedPrecondition, "peer %s is configured in the controller's configuration file; change it there", pc.Address)
	}
	if _, err := s.r.st.Txn(ctx, nil, []store.Op{store.Put(PeerPrefix+pc.Address.String(), EncodePeer(pc))}); err != nil {
		return nil, storeStatus(err)
	}
	return &v1.PeerStatus{Peer: &v1.Peer{Address: pc.Address.String(), Asn: pc.ASN, Port: uint32(pc.Port)}, State: string(bgp.PeerIdle), Source: "api"}, nil
}

// DeletePeer implements PeerService.
func (s *Server) DeletePeer(ctx context.Context, req *v1.DeletePeerRequest) (*v1.DeleteResponse, error) {
	if !s.r.HasSpeaker() {
		return nil, errDisabled
	}
	addr, err := netip.ParseAddr(req.GetAddress())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "peer address %q is not an IP address", req.GetAddress())
	}
	if s.isConfigPeer(addr) {
		return nil, status.Errorf(codes.FailedPrecondition, "peer %s is configured in the controller's configuration file; remove it there", addr)
	}
	key := PeerPrefix + addr.Unmap().String()
	kv, err := s.r.st.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "peer %s not found", addr)
	}
	if err != nil {
		return nil, storeStatus(err)
	}
	rev, err := s.r.st.Txn(ctx, []store.Cond{store.Unchanged(kv)}, []store.Op{store.Delete(key)})
	if errors.Is(err, store.ErrConflict) {
		return nil, status.Errorf(codes.Aborted, "peer %s changed meanwhile; try again", addr)
	}
	if err != nil {
		return nil, storeStatus(err)
	}
	return &v1.DeleteResponse{Revision: rev}, nil
}

// ListPeers implements PeerService.
func (s *Server) ListPeers(ctx context.Context, _ *v1.ListPeersRequest) (*v1.ListPeersResponse, error) {
	if !s.r.HasSpeaker() {
		return nil, errDisabled
	}
	ps, err := s.r.Peers(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "BGP speaker: %v", err)
	}
	out := &v1.ListPeersResponse{}
	for _, p := range ps {
		src := "api"
		if s.isConfigPeer(p.Address) {
			src = "config"
		}
		out.Peers = append(out.Peers, &v1.PeerStatus{
			Peer:  &v1.Peer{Address: p.Address.String(), Asn: p.ASN, Port: uint32(p.Port)},
			State: string(p.State), UptimeSeconds: int64(p.Uptime.Seconds()),
			PrefixesSent: p.PrefixesSent, PrefixesReceived: p.PrefixesReceived, Source: src,
		})
	}
	return out, nil
}

// RouteToAPI converts a network route.
func RouteToAPI(network string, r NetRoute) *v1.Route {
	out := &v1.Route{Network: network, Prefix: r.Prefix.String(), RouteDistinguisher: r.RD.String(), Label: r.Label,
		NextHop: r.NextHop.String(), Endpoint: r.Endpoint}
	for _, t := range r.RouteTargets {
		out.RouteTargets = append(out.RouteTargets, t.String())
	}
	for _, e := range r.Encaps {
		out.Encapsulations = append(out.Encapsulations, EncapToAPI(e))
	}
	switch r.Origin {
	case Local:
		out.Origin = v1.RouteOrigin_ROUTE_ORIGIN_LOCAL
	case Imported:
		out.Origin = v1.RouteOrigin_ROUTE_ORIGIN_IMPORTED
		out.Peer = r.Peer.String()
	}
	return out
}

// ListRoutes implements RouteService.
func (s *Server) ListRoutes(ctx context.Context, req *v1.ListRoutesRequest) (*v1.ListRoutesResponse, error) {
	rs, ok := s.r.Routes(req.GetNetwork())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "network %q not found", req.GetNetwork())
	}
	out := &v1.ListRoutesResponse{}
	for _, r := range rs {
		out.Routes = append(out.Routes, RouteToAPI(req.GetNetwork(), r))
	}
	return out, nil
}

// WatchRoutes implements RouteService.
func (s *Server) WatchRoutes(req *v1.WatchRoutesRequest, stream grpc.ServerStreamingServer[v1.RouteEvent]) error {
	ctx := stream.Context()
	n := req.GetNetwork()
	if _, ok := s.r.Routes(n); !ok {
		return status.Errorf(codes.NotFound, "network %q not found", n)
	}
	cur, ch := s.r.WatchRoutes(ctx, n)
	for _, r := range cur {
		if err := stream.Send(&v1.RouteEvent{Type: v1.EventType_EVENT_TYPE_PUT, Route: RouteToAPI(n, r)}); err != nil {
			return err
		}
	}
	if err := stream.Send(&v1.RouteEvent{Type: v1.EventType_EVENT_TYPE_SYNCED}); err != nil {
		return err
	}
	for changes := range ch {
		for _, c := range changes {
			t := v1.EventType_EVENT_TYPE_PUT
			if c.Delete {
				t = v1.EventType_EVENT_TYPE_DELETE
			}
			if err := stream.Send(&v1.RouteEvent{Type: t, Route: RouteToAPI(n, c.Route)}); err != nil {
				return err
			}
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return status.Error(codes.Unavailable, "route stream ended (the reader fell behind or the controller is stopping); watch again")
}
