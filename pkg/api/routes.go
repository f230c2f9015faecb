package api

import (
	"context"
	"net/netip"
	"slices"

	"google.golang.org/grpc"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/vpn"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// routes serves PeerService and RouteService.
type routes struct {
	r     *vpn.Runner
	peers *vpn.Peers
	v1.UnimplementedPeerServiceServer
	v1.UnimplementedRouteServiceServer
}

func peerSource(fromConfig bool) string {
	if fromConfig {
		return "config"
	}
	return "api"
}

func (s *routes) AddPeer(ctx context.Context, req *v1.AddPeerRequest) (*v1.PeerStatus, error) {
	if err := s.peers.Available(); err != nil {
		return nil, Status(err)
	}
	p := req.GetPeer()
	if p == nil {
		return nil, Status(model.Errorf(model.ErrInvalid, "peer is missing from the request"))
	}
	addr, err := netip.ParseAddr(p.Address)
	if err != nil {
		return nil, Status(model.Errorf(model.ErrInvalid, "peer address %q is not an IP address", p.Address))
	}
	if p.Port > 65535 {
		return nil, Status(model.Errorf(model.ErrInvalid, "peer port %d out of range", p.Port))
	}
	pc, err := s.peers.Add(ctx, bgp.PeerConfig{Address: addr, ASN: p.Asn, Password: p.Password, Port: uint16(p.Port), MaxPrefixes: p.MaxPrefixes})
	if err != nil {
		return nil, Status(err)
	}
	return &v1.PeerStatus{Peer: &v1.Peer{Address: pc.Address.String(), Asn: pc.ASN, Port: uint32(pc.Port), MaxPrefixes: pc.MaxPrefixes}, State: string(bgp.PeerIdle), Source: peerSource(false)}, nil
}

func (s *routes) DeletePeer(ctx context.Context, req *v1.DeletePeerRequest) (*v1.DeleteResponse, error) {
	if err := s.peers.Available(); err != nil {
		return nil, Status(err)
	}
	addr, err := netip.ParseAddr(req.GetAddress())
	if err != nil {
		return nil, Status(model.Errorf(model.ErrInvalid, "peer address %q is not an IP address", req.GetAddress()))
	}
	return deleted(s.peers.Delete(ctx, addr))
}

// ListPeers pages through the peers in address order. The peers are few (a
// controller has a handful of BGP neighbours), so a page is cut from the
// speaker's list rather than scanned from the store.
func (s *routes) ListPeers(ctx context.Context, req *v1.ListPeersRequest) (*v1.ListPeersResponse, error) {
	sc := scope("peers")
	pg, err := page(sc, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, Status(err)
	}
	var after netip.Addr
	if pg.After != "" {
		if after, err = netip.ParseAddr(pg.After); err != nil {
			return nil, Status(model.Errorf(model.ErrInvalid, "page_token is not one this listing returned"))
		}
	}
	ps, err := s.peers.List(ctx)
	if err != nil {
		return nil, Status(err)
	}
	slices.SortFunc(ps, func(a, b vpn.PeerInfo) int { return a.Address.Compare(b.Address) })
	if after.IsValid() {
		i, _ := slices.BinarySearchFunc(ps, after, func(p vpn.PeerInfo, a netip.Addr) int { return p.Address.Compare(a) })
		for i < len(ps) && ps[i].Address == after {
			i++
		}
		ps = ps[i:]
	}
	out := &v1.ListPeersResponse{}
	if len(ps) > pg.Size {
		ps = ps[:pg.Size]
		out.NextPageToken = pageToken(sc, ps[len(ps)-1].Address.String())
	}
	for _, p := range ps {
		out.Peers = append(out.Peers, &v1.PeerStatus{
			Peer:  &v1.Peer{Address: p.Address.String(), Asn: p.ASN, Port: uint32(p.Port), MaxPrefixes: p.PeerConfig.MaxPrefixes},
			State: string(p.State), UptimeSeconds: int64(p.Uptime.Seconds()),
			PrefixesSent: p.PrefixesSent, PrefixesReceived: p.PrefixesReceived, Source: peerSource(p.FromConfig),
			MaxPrefixes: p.PeerStatus.MaxPrefixes, Reason: p.Reason, PrefixLimitHits: p.PrefixLimitHits,
		})
	}
	return out, nil
}

func networkNotFound(n string) error {
	return Status(model.Errorf(model.ErrNotFound, "network %q not found", n))
}

// ListRoutes pages through a network's routes in the order of
// vpn.RouteCursor; a page token holds the cursor of the page's last route.
func (s *routes) ListRoutes(ctx context.Context, req *v1.ListRoutesRequest) (*v1.ListRoutesResponse, error) {
	sc := scope("routes", req.GetNetwork())
	pg, err := page(sc, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, Status(err)
	}
	var after *vpn.RouteCursor
	if pg.After != "" {
		c, err := vpn.ParseRouteCursor(pg.After)
		if err != nil {
			return nil, Status(model.Errorf(model.ErrInvalid, "page_token is not one this listing returned"))
		}
		after = &c
	}
	rs, more, ok := s.r.RoutesPage(req.GetNetwork(), after, pg.Size)
	if !ok {
		return nil, networkNotFound(req.GetNetwork())
	}
	out := &v1.ListRoutesResponse{Routes: make([]*v1.Route, 0, len(rs))}
	for _, r := range rs {
		out.Routes = append(out.Routes, vpn.APIRoute(req.GetNetwork(), r))
	}
	if more && len(rs) > 0 {
		out.NextPageToken = pageToken(sc, rs[len(rs)-1].Cursor().String())
	}
	return out, nil
}

// snapshotPage is how many routes a route watch reads from the table at a
// time for its snapshot.
const snapshotPage = 1024

// WatchRoutes streams the network's routes (read from the table a page at a
// time: a watch holds no copy of the table), SYNCED once the routes sent are
// the table's, then the changes.
func (s *routes) WatchRoutes(req *v1.WatchRoutesRequest, stream grpc.ServerStreamingServer[v1.RouteEvent]) error {
	ctx := stream.Context()
	n := req.GetNetwork()
	wt, known := s.r.WatchRoutes(ctx, n)
	if !known {
		return networkNotFound(n)
	}
	for more := true; more; {
		var page []vpn.NetRoute
		var err error
		if page, more, err = wt.Next(ctx, snapshotPage); err != nil {
			return watchEnded(ctx)
		}
		for _, r := range page {
			if err := stream.Send(&v1.RouteEvent{Type: v1.EventType_EVENT_TYPE_PUT, Route: vpn.APIRoute(n, r)}); err != nil {
				return err
			}
		}
	}
	send := func(changes []vpn.RouteChange) error {
		for _, c := range changes {
			t := v1.EventType_EVENT_TYPE_PUT
			if c.Delete {
				t = v1.EventType_EVENT_TYPE_DELETE
			}
			if err := stream.Send(&v1.RouteEvent{Type: t, Route: vpn.APIRoute(n, c.Route)}); err != nil {
				return err
			}
		}
		return nil
	}
	ch := wt.Changes()
	for range wt.CatchUp() {
		changes, ok := <-ch
		if !ok {
			return watchEnded(ctx)
		}
		if err := send(changes); err != nil {
			return err
		}
	}
	if err := stream.Send(&v1.RouteEvent{Type: v1.EventType_EVENT_TYPE_SYNCED}); err != nil {
		return err
	}
	for changes := range ch {
		if err := send(changes); err != nil {
			return err
		}
	}
	return watchEnded(ctx)
}

func watchEnded(ctx context.Context) error {
	if ctx.Err() != nil {
		return nil
	}
	return Status(model.Errorf(model.ErrUnavailable, "route stream ended (the reader fell behind or the controller is stopping); watch again"))
}
