package api

import (
	"context"
	"slices"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/vpn"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// links serves GatewayLinkService: a gateway's tunnels (from the route
// table) and its link history (the controller's, in memory).
type links struct {
	c *controller.Controller
	r *vpn.Runner
	v1.UnimplementedGatewayLinkServiceServer
}

func (s *links) GetGatewayLinks(ctx context.Context, req *v1.GetGatewayLinksRequest) (*v1.GatewayLinks, error) {
	g, err := s.c.GetGateway(ctx, req.GetName())
	if err != nil {
		return nil, Status(err)
	}
	tunnels, _, err := s.r.GatewayTunnels(ctx, g.Name)
	if err != nil {
		return nil, Status(err)
	}
	out := &v1.GatewayLinks{Gateway: g.Name, Controller: s.r.ID()}
	for _, t := range tunnels {
		gt := &v1.GatewayTunnel{Remote: t.Remote.String(), RemoteGateway: t.RemoteGateway, Encapsulation: t.Encap.API(),
			Routes: int32(t.Routes), Labels: int32(t.Labels), Networks: slices.Clone(t.Networks)}
		if t.Peer.IsValid() {
			gt.Peer = t.Peer.String()
		}
		for _, e := range t.Offered {
			gt.Offered = append(gt.Offered, e.API())
		}
		out.Tunnels = append(out.Tunnels, gt)
	}
	events, total := s.c.GatewayLinks(g.Name)
	out.HistoryTotal = total
	for _, e := range events {
		ev := &v1.GatewayLinkEvent{Time: timestamppb.New(e.Time), State: e.State, Reason: e.Reason}
		if e.Stream != 0 {
			ev.Detail = "route stream " + keys.StreamID(s.r.ID(), e.Stream)
		}
		out.History = append(out.History, ev)
	}
	return out, nil
}
