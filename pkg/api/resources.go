package api

import (
	"context"

	"google.golang.org/grpc"

	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/validate"
	"github.com/iotfabric/iotfabric/pkg/vpn"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// resources serves NetworkService, GatewayService, EndpointService and
// IpamService.
type resources struct {
	c *controller.Controller
	r *vpn.Runner // for the route table's conditions; may be nil
	v1.UnimplementedNetworkServiceServer
	v1.UnimplementedGatewayServiceServer
	v1.UnimplementedEndpointServiceServer
	v1.UnimplementedIpamServiceServer
}

// reply returns the domain's answer with its error as a gRPC status.
func reply[T any](v T, err error) (T, error) {
	if err != nil {
		var zero T
		return zero, Status(err)
	}
	return v, nil
}

func deleted(rev int64, err error) (*v1.DeleteResponse, error) {
	if err != nil {
		return nil, Status(err)
	}
	return &v1.DeleteResponse{Revision: rev}, nil
}

func eventType(t controller.EventType) v1.EventType {
	switch t {
	case controller.EventPut:
		return v1.EventType_EVENT_TYPE_PUT
	case controller.EventDelete:
		return v1.EventType_EVENT_TYPE_DELETE
	case controller.EventSynced:
		return v1.EventType_EVENT_TYPE_SYNCED
	}
	return v1.EventType_EVENT_TYPE_UNSPECIFIED
}

// ---- networks ----

func (s *resources) CreateNetwork(ctx context.Context, r *v1.CreateNetworkRequest) (*v1.VirtualNetwork, error) {
	return reply(s.c.CreateNetwork(ctx, r.GetNetwork()))
}

func (s *resources) GetNetwork(ctx context.Context, r *v1.NameRequest) (*v1.VirtualNetwork, error) {
	n, err := s.c.GetNetwork(ctx, r.GetName())
	withNetworkConditions(s.r, n)
	return reply(n, err)
}

func (s *resources) ListNetworks(ctx context.Context, r *v1.ListNetworksRequest) (*v1.ListNetworksResponse, error) {
	sc := scope("networks")
	p, err := page(sc, r.GetPageSize(), r.GetPageToken())
	if err != nil {
		return nil, Status(err)
	}
	ns, res, err := s.c.ListNetworksPage(ctx, p)
	if err != nil {
		return nil, Status(err)
	}
	withNetworkConditions(s.r, ns...)
	return &v1.ListNetworksResponse{Networks: ns, Revision: res.Revision, NextPageToken: pageToken(sc, res.Next)}, nil
}

func (s *resources) UpdateNetwork(ctx context.Context, r *v1.UpdateNetworkRequest) (*v1.VirtualNetwork, error) {
	return reply(s.c.UpdateNetwork(ctx, r.GetNetwork()))
}

func (s *resources) DeleteNetwork(ctx context.Context, r *v1.NameRequest) (*v1.DeleteResponse, error) {
	return deleted(s.c.DeleteNetwork(ctx, r.GetName()))
}

func (s *resources) WatchNetworks(r *v1.WatchRequest, stream grpc.ServerStreamingServer[v1.NetworkEvent]) error {
	return Status(s.c.WatchNetworks(stream.Context(), r.GetFromRevision(), func(ev controller.Event[*v1.VirtualNetwork]) error {
		n := ev.Record
		if ev.Type == controller.EventSynced {
			n = &v1.VirtualNetwork{}
		}
		return stream.Send(&v1.NetworkEvent{Type: eventType(ev.Type), Network: n, Revision: ev.Revision})
	}))
}

// ---- gateways ----

func (s *resources) CreateGateway(ctx context.Context, r *v1.CreateGatewayRequest) (*v1.Gateway, error) {
	return reply(s.c.CreateGateway(ctx, r.GetGateway()))
}

func (s *resources) GetGateway(ctx context.Context, r *v1.NameRequest) (*v1.Gateway, error) {
	return reply(s.c.GetGateway(ctx, r.GetName()))
}

func (s *resources) ListGateways(ctx context.Context, r *v1.ListGatewaysRequest) (*v1.ListGatewaysResponse, error) {
	sc := scope("gateways")
	p, err := page(sc, r.GetPageSize(), r.GetPageToken())
	if err != nil {
		return nil, Status(err)
	}
	gs, res, err := s.c.ListGatewaysPage(ctx, p)
	if err != nil {
		return nil, Status(err)
	}
	return &v1.ListGatewaysResponse{Gateways: gs, Revision: res.Revision, NextPageToken: pageToken(sc, res.Next)}, nil
}

func (s *resources) UpdateGateway(ctx context.Context, r *v1.UpdateGatewayRequest) (*v1.Gateway, error) {
	return reply(s.c.UpdateGateway(ctx, r.GetGateway()))
}

func (s *resources) DeleteGateway(ctx context.Context, r *v1.NameRequest) (*v1.DeleteResponse, error) {
	return deleted(s.c.DeleteGateway(ctx, r.GetName()))
}

func (s *resources) WatchGateways(r *v1.WatchRequest, stream grpc.ServerStreamingServer[v1.GatewayEvent]) error {
	return Status(s.c.WatchGateways(stream.Context(), r.GetFromRevision(), func(ev controller.Event[*v1.Gateway]) error {
		g := ev.Record
		if ev.Type == controller.EventSynced {
			g = &v1.Gateway{}
		}
		return stream.Send(&v1.GatewayEvent{Type: eventType(ev.Type), Gateway: g, Revision: ev.Revision})
	}))
}

// ---- endpoints ----

func (s *resources) CreateEndpoint(ctx context.Context, r *v1.CreateEndpointRequest) (*v1.Endpoint, error) {
	if r.GetEndpoint() == nil {
		return nil, Status(model.Errorf(model.ErrInvalid, "endpoint is missing from the request"))
	}
	return reply(s.c.CreateEndpoint(ctx, r.GetEndpoint()))
}

func (s *resources) CreateEndpoints(ctx context.Context, r *v1.CreateEndpointsRequest) (*v1.CreateEndpointsResponse, error) {
	if err := validate.Bulk(len(r.GetEndpoints())); err != nil {
		return nil, Status(model.Invalid(err))
	}
	for i, e := range r.GetEndpoints() {
		if e == nil {
			return nil, Status(model.Errorf(model.ErrInvalid, "endpoint %d is empty", i))
		}
	}
	eps, errs := s.c.CreateEndpoints(ctx, r.GetEndpoints())
	resp := &v1.CreateEndpointsResponse{Endpoints: make([]*v1.Endpoint, len(eps)), Errors: make([]string, len(eps))}
	for i := range eps {
		if errs[i] != nil {
			resp.Endpoints[i] = &v1.Endpoint{}
			resp.Errors[i] = Status(errs[i]).Error()
		} else {
			resp.Endpoints[i] = eps[i]
		}
	}
	return resp, nil
}

func (s *resources) GetEndpoint(ctx context.Context, r *v1.GetEndpointRequest) (*v1.Endpoint, error) {
	e, err := s.c.GetEndpoint(ctx, r.GetId())
	withEndpointConditions(s.r, e)
	return reply(e, err)
}

func (s *resources) ListEndpoints(ctx context.Context, r *v1.ListEndpointsRequest) (*v1.ListEndpointsResponse, error) {
	sc := scope("endpoints", r.GetNetwork(), r.GetGateway())
	p, err := page(sc, r.GetPageSize(), r.GetPageToken())
	if err != nil {
		return nil, Status(err)
	}
	eps, res, err := s.c.ListEndpointsPage(ctx, r.GetNetwork(), r.GetGateway(), p)
	if err != nil {
		return nil, Status(err)
	}
	withEndpointConditions(s.r, eps...)
	return &v1.ListEndpointsResponse{Endpoints: eps, Revision: res.Revision, NextPageToken: pageToken(sc, res.Next)}, nil
}

func (s *resources) UpdateEndpoint(ctx context.Context, r *v1.UpdateEndpointRequest) (*v1.Endpoint, error) {
	return reply(s.c.UpdateEndpoint(ctx, r.GetEndpoint()))
}

func (s *resources) DeleteEndpoint(ctx context.Context, r *v1.GetEndpointRequest) (*v1.DeleteResponse, error) {
	return deleted(s.c.DeleteEndpoint(ctx, r.GetId()))
}

func (s *resources) WatchEndpoints(r *v1.WatchRequest, stream grpc.ServerStreamingServer[v1.EndpointEvent]) error {
	return Status(s.c.WatchEndpoints(stream.Context(), r.GetFromRevision(), func(ev controller.Event[*v1.Endpoint]) error {
		e := ev.Record
		if ev.Type == controller.EventSynced {
			e = &v1.Endpoint{}
		}
		return stream.Send(&v1.EndpointEvent{Type: eventType(ev.Type), Endpoint: e, Revision: ev.Revision})
	}))
}

// ---- IPAM ----

func (s *resources) GetIpam(ctx context.Context, r *v1.NameRequest) (*v1.IpamStatus, error) {
	return reply(s.c.IpamStatus(ctx, r.GetName()))
}
