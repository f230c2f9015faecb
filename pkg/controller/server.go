package controller

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/store"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Server adapts a Controller to the iotfabric.v1 gRPC services.
type Server struct {
	c *Controller
	v1.UnimplementedNetworkServiceServer
	v1.UnimplementedGatewayServiceServer
	v1.UnimplementedEndpointServiceServer
	v1.UnimplementedIpamServiceServer
}

// NewServer returns the gRPC services of c.
func NewServer(c *Controller) *Server { return &Server{c: c} }

// Register registers every service on g.
func (s *Server) Register(g *grpc.Server) {
	v1.RegisterNetworkServiceServer(g, s)
	v1.RegisterGatewayServiceServer(g, s)
	v1.RegisterEndpointServiceServer(g, s)
	v1.RegisterIpamServiceServer(g, s)
}

// ---- networks ----

func (s *Server) CreateNetwork(ctx context.Context, r *v1.CreateNetworkRequest) (*v1.VirtualNetwork, error) {
	return s.c.CreateNetwork(ctx, r.GetNetwork())
}

func (s *Server) GetNetwork(ctx context.Context, r *v1.NameRequest) (*v1.VirtualNetwork, error) {
	return s.c.GetNetwork(ctx, r.GetName())
}

func (s *Server) ListNetworks(ctx context.Context, _ *v1.ListNetworksRequest) (*v1.ListNetworksResponse, error) {
	ns, rev, err := s.c.ListNetworks(ctx)
	if err != nil {
		return nil, err
	}
	return &v1.ListNetworksResponse{Networks: ns, Revision: rev}, nil
}

func (s *Server) UpdateNetwork(ctx context.Context, r *v1.UpdateNetworkRequest) (*v1.VirtualNetwork, error) {
	return s.c.UpdateNetwork(ctx, r.GetNetwork())
}

func (s *Server) DeleteNetwork(ctx context.Context, r *v1.NameRequest) (*v1.DeleteResponse, error) {
	rev, err := s.c.DeleteNetwork(ctx, r.GetName())
	if err != nil {
		return nil, err
	}
	return &v1.DeleteResponse{Revision: rev}, nil
}

func (s *Server) WatchNetworks(r *v1.WatchRequest, stream grpc.ServerStreamingServer[v1.NetworkEvent]) error {
	return watch(stream.Context(), s.c.st, pfxNetwork, r.GetFromRevision(),
		func(kv store.KV, t v1.EventType, rev int64) error {
			n := &v1.VirtualNetwork{Name: strings.TrimPrefix(kv.Key, pfxNetwork)}
			if kv.Value != nil {
				if err := proto.Unmarshal(kv.Value, n); err != nil {
					return errf(codes.Internal, "corrupt record %s: %v", kv.Key, err)
				}
				n.Revision = kv.ModRev
			}
			return stream.Send(&v1.NetworkEvent{Type: t, Network: n, Revision: rev})
		})
}

// ---- gateways ----

func (s *Server) CreateGateway(ctx context.Context, r *v1.CreateGatewayRequest) (*v1.Gateway, error) {
	return s.c.CreateGateway(ctx, r.GetGateway())
}

func (s *Server) GetGateway(ctx context.Context, r *v1.NameRequest) (*v1.Gateway, error) {
	return s.c.GetGateway(ctx, r.GetName())
}

func (s *Server) ListGateways(ctx context.Context, _ *v1.ListGatewaysRequest) (*v1.ListGatewaysResponse, error) {
	gs, rev, err := s.c.ListGateways(ctx)
	if err != nil {
		return nil, err
	}
	return &v1.ListGatewaysResponse{Gateways: gs, Revision: rev}, nil
}

func (s *Server) UpdateGateway(ctx context.Context, r *v1.UpdateGatewayRequest) (*v1.Gateway, error) {
	return s.c.UpdateGateway(ctx, r.GetGateway())
}

func (s *Server) DeleteGateway(ctx context.Context, r *v1.NameRequest) (*v1.DeleteResponse, error) {
	rev, err := s.c.DeleteGateway(ctx, r.GetName())
	if err != nil {
		return nil, err
	}
	return &v1.DeleteResponse{Revision: rev}, nil
}

func (s *Server) WatchGateways(r *v1.WatchRequest, stream grpc.ServerStreamingServer[v1.GatewayEvent]) error {
	return watch(stream.Context(), s.c.st, pfxGateway, r.GetFromRevision(),
		func(kv store.KV, t v1.EventType, rev int64) error {
			g := &v1.Gateway{Name: strings.TrimPrefix(kv.Key, pfxGateway)}
			if kv.Value != nil {
				if err := proto.Unmarshal(kv.Value, g); err != nil {
					return errf(codes.Internal, "corrupt record %s: %v", kv.Key, err)
				}
				g.Revision = kv.ModRev
			}
			return stream.Send(&v1.GatewayEvent{Type: t, Gateway: g, Revision: rev})
		})
}

// ---- endpoints ----

func (s *Server) CreateEndpoint(ctx context.Context, r *v1.CreateEndpointRequest) (*v1.Endpoint, error) {
	if r.GetEndpoint() == nil {
		return nil, errf(codes.InvalidArgument, "endpoint is missing from the request")
	}
	return s.c.CreateEndpoint(ctx, r.GetEndpoint())
}

func (s *Server) CreateEndpoints(ctx context.Context, r *v1.CreateEndpointsRequest) (*v1.CreateEndpointsResponse, error) {
	for i, e := range r.GetEndpoints() {
		if e == nil {
			return nil, errf(codes.InvalidArgument, "endpoint %d is empty", i)
		}
	}
	eps, errs := s.c.CreateEndpoints(ctx, r.GetEndpoints())
	resp := &v1.CreateEndpointsResponse{Endpoints: make([]*v1.Endpoint, len(eps)), Errors: make([]string, len(eps))}
	for i := range eps {
		if errs[i] != nil {
			resp.Endpoints[i] = &v1.Endpoint{}
			resp.Errors[i] = errs[i].Error()
		} else {
			resp.Endpoints[i] = eps[i]
		}
	}
	return resp, nil
}

func (s *Server) GetEndpoint(ctx context.Context, r *v1.GetEndpointRequest) (*v1.Endpoint, error) {
	return s.c.GetEndpoint(ctx, r.GetId())
}

func (s *Server) ListEndpoints(ctx context.Context, r *v1.ListEndpointsRequest) (*v1.ListEndpointsResponse, error) {
	eps, rev, err := s.c.ListEndpoints(ctx, r.GetNetwork(), r.GetGateway())
	if err != nil {
		return nil, err
	}
	return &v1.ListEndpointsResponse{Endpoints: eps, Revision: rev}, nil
}

func (s *Server) UpdateEndpoint(ctx context.Context, r *v1.UpdateEndpointRequest) (*v1.Endpoint, error) {
	return s.c.UpdateEndpoint(ctx, r.GetEndpoint())
}

func (s *Server) DeleteEndpoint(ctx context.Context, r *v1.GetEndpointRequest) (*v1.DeleteResponse, error) {
	rev, err := s.c.DeleteEndpoint(ctx, r.GetId())
	if err != nil {
		return nil, err
	}
	return &v1.DeleteResponse{Revision: rev}, nil
}

func (s *Server) WatchEndpoints(r *v1.WatchRequest, stream grpc.ServerStreamingServer[v1.EndpointEvent]) error {
	return watch(stream.Context(), s.c.st, pfxEndpoint, r.GetFromRevision(),
		func(kv store.KV, t v1.EventType, rev int64) error {
			e := &v1.Endpoint{Id: strings.TrimPrefix(kv.Key, pfxEndpoint)}
			if kv.Value != nil {
				if err := proto.Unmarshal(kv.Value, e); err != nil {
					return errf(codes.Internal, "corrupt record %s: %v", kv.Key, err)
				}
				e.Revision = kv.ModRev
			}
			return stream.Send(&v1.EndpointEvent{Type: t, Endpoint: e, Revision: rev})
		})
}

// ---- IPAM ----

func (s *Server) GetIpam(ctx context.Context, r *v1.NameRequest) (*v1.IpamStatus, error) {
	return s.c.IpamStatus(ctx, r.GetName())
}

// watch streams a prefix: with from == 0 a snapshot, a SYNCED marker, then
// changes; with from > 0 the changes after that revision. send gets kv.Value
// nil for deletes.
func watch(ctx context.Context, st store.Store, prefix string, from int64, send func(store.KV, v1.EventType, int64) error) error {
	if from < 0 {
		return errf(codes.InvalidArgument, "from_revision %d is negative", from)
	}
	if from == 0 {
		kvs, rev, err := st.List(ctx, prefix)
		if err != nil {
			return storeErr(err)
		}
		for _, kv := range kvs {
			if err := send(kv, v1.EventType_EVENT_TYPE_PUT, kv.ModRev); err != nil {
				return err
			}
		}
		if err := send(store.KV{Key: prefix}, v1.EventType_EVENT_TYPE_SYNCED, rev); err != nil {
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
				return errf(codes.Unavailable, "the store's change stream ended; reconnect with from_revision %d", from)
			}
			if b.Err != nil {
				if errors.Is(b.Err, store.ErrCompacted) {
					return errf(codes.OutOfRange, "%v; restart the watch with from_revision 0", b.Err)
				}
				return storeErr(b.Err)
			}
			for _, ev := range b.Events {
				t := v1.EventType_EVENT_TYPE_PUT
				kv := store.KV{Key: ev.Key, Value: ev.Value, ModRev: ev.Rev}
				if ev.Type == store.EventDelete {
					t, kv.Value = v1.EventType_EVENT_TYPE_DELETE, nil
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
