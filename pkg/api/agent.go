package api

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/vpn"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// agents serves AgentService: the vrouter agents' side of the controller.
type agents struct {
	c    *controller.Controller
	r    *vpn.Runner
	log  *slog.Logger
	seq  atomic.Uint64 // numbers this controller's route streams
	full *admission    // full syncs served at once
	reg  *admission    // registrations served at once
	// small is the most endpoints or routes a call may carry without
	// counting as a full sync.
	small int
	// onSent is Services.OnRouteChangeSent.
	onSent func(time.Duration)
	v1.UnimplementedAgentServiceServer
}

func newAgents(c *controller.Controller, r *vpn.Runner, log *slog.Logger, maxFull, small int) *agents {
	if maxFull <= 0 {
		maxFull = DefaultMaxFullSyncs
	}
	switch {
	case small == 0:
		small = DefaultFullSyncItems
	case small < 0:
		small = 0
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &agents{c: c, r: r, log: log, full: newAdmission(maxFull, "gateway full syncs"),
		reg: newAdmission(DefaultMaxRegisters, "gateway registrations"), small: small}
}

func (a *agents) Register(ctx context.Context, req *v1.RegisterRequest) (*v1.RegisterResponse, error) {
	release, err := a.reg.acquire(ctx)
	if err != nil {
		return nil, Status(err)
	}
	defer release()
	r, err := a.c.Register(ctx, req.GetGateway(), controller.Agent{
		Architecture: req.GetArchitecture(), Version: req.GetAgentVersion(), KernelFeatures: req.GetKernelFeatures()})
	if err != nil {
		return nil, Status(err)
	}
	g := r.Gateway
	// A registration may move the gateway to another underlay address (a
	// gateway's routes follow it): say so, and who did it.
	if r.Prev != nil && r.Prev.GetUnderlayAddress() != g.GetUnderlayAddress() {
		who := "unknown"
		if id, ok := identityFrom(ctx); ok {
			who = id.String()
		}
		a.log.Warn("gateway underlay changed", logkey.Gateway, g.GetName(), logkey.From, r.Prev.GetUnderlayAddress(), logkey.To, g.GetUnderlayAddress(), logkey.Identity, who)
	}
	resp := &v1.RegisterResponse{Gateway: g}
	for _, b := range r.Blocks {
		resp.Blocks = append(resp.Blocks, &v1.GatewayBlock{Network: b.Network, Prefix: b.Prefix.String()})
	}
	return resp, nil
}

func (a *agents) ReportEndpoints(ctx context.Context, req *v1.ReportEndpointsRequest) (*v1.ReportEndpointsResponse, error) {
	pr := req.GetPrune()
	// A full report is a full sync by its size: a gateway's few endpoints
	// cost about what an incremental report does.
	if pr != nil || req.GetFullSync() && len(req.GetEndpoints()) > a.small {
		release, err := a.full.acquire(ctx)
		if err != nil {
			return nil, Status(err)
		}
		defer release()
	}
	pruned := 0
	if pr != nil && !req.GetFullSync() {
		var err error
		if pruned, err = a.c.PruneEndpoints(ctx, req.GetGateway(), pr.GetAfter(), pr.GetThrough(), pr.GetKeep()); err != nil {
			return nil, Status(err)
		}
	}
	results, deleted, err := a.c.ReportEndpoints(ctx, req.GetGateway(), req.GetEndpoints(), req.GetFullSync(), req.GetOfflineLog())
	if err != nil {
		return nil, Status(err)
	}
	resp := &v1.ReportEndpointsResponse{Deleted: int64(deleted + pruned)}
	for _, r := range results {
		res := &v1.EndpointResult{Id: r.ID, Endpoint: r.Endpoint, AddressesInUse: r.InUse}
		if r.Err != nil {
			res.Error, res.Code = r.Err.Error(), int32(Code(r.Err))
		}
		resp.Results = append(resp.Results, res)
	}
	return resp, nil
}

func (a *agents) LeaseBlock(ctx context.Context, req *v1.LeaseBlockRequest) (*v1.LeaseBlockResponse, error) {
	p, err := a.c.LeaseBlock(ctx, req.GetGateway(), req.GetNetwork(), req.GetFamily())
	if err != nil {
		return nil, Status(err)
	}
	return &v1.LeaseBlockResponse{Block: &v1.GatewayBlock{Network: req.GetNetwork(), Prefix: p.String()}}, nil
}

// WatchGatewayRoutes streams the routes of the gateway's networks. While it
// runs the gateway is up; when the last stream to it ends, at whichever
// controller sharing the store, it is down.
//
// A stream whose first update carries more than the small number of routes
// (a snapshot, a resume from digests after many changes) is a full sync: it
// is admitted only while fewer than MaxFullSyncs are served, until that
// update is sent. A resume from the log or from digests that match sends
// next to nothing and is served at once, whichever controller issued its
// revision.
func (a *agents) WatchGatewayRoutes(req *v1.WatchGatewayRoutesRequest, out grpc.ServerStreamingServer[v1.GatewayRoutes]) error {
	ctx := out.Context()
	gw := req.GetGateway()
	limit := int(req.GetMaxMessageBytes())
	from := vpn.Resume{Revision: req.GetFromRevision(), RunnerID: req.GetControllerId(), Digests: req.GetDigests()}
	if limit == 0 {
		// An agent that takes no chunks and no scopes: one message per update,
		// and a resume that is not plain changes is a whole snapshot.
		from.Digests, from.NoScopes = nil, true
	}
	limit = min(max(limit, minRouteMessage), MaxRouteMessage)
	// What the first update would carry (a comparison of logs or digests)
	// says what the stream costs; a refused stream is not attached.
	size, err := a.r.FirstUpdateSize(ctx, gw, from)
	if err != nil {
		return Status(err)
	}
	release := func() {}
	if size > a.small {
		if release, err = a.full.acquire(ctx); err != nil {
			return Status(err)
		}
	}
	defer func() { release() }()
	stream := keys.StreamID(a.r.ID(), a.seq.Add(1))
	if err := a.c.OpenGatewayStream(ctx, gw, stream); err != nil {
		return Status(err)
	}
	ch := a.r.WatchGateway(ctx, gw, from)
	why := v1.GatewayLinkReason_GATEWAY_LINK_REASON_STREAM_CLOSED // the runner closed ch
	defer func() {
		// A stopping controller removes all its markers once its streams
		// have ended (controller.Sweeper.Stop): the agents learn at once
		// that their streams ended, not after one store write each.
		if !a.r.GatewayStreamsEnded() {
			a.closeStream(gw, stream, why)
		}
	}()
	for u := range ch {
		if err := sendChunks(out, *u, a.r.ID(), limit, req.GetMaxMessageBytes() != 0); err != nil {
			why = v1.GatewayLinkReason_GATEWAY_LINK_REASON_SEND_FAILED
			if ctx.Err() != nil {
				why = v1.GatewayLinkReason_GATEWAY_LINK_REASON_STREAM_ENDED
			}
			return err
		}
		if a.onSent != nil && !u.Since.IsZero() {
			a.onSent(time.Since(u.Since))
		}
		release()
		release = func() {}
	}
	if ctx.Err() != nil {
		// The agent ended the stream, or its connection broke: grpc-go
		// tells neither apart from a keepalive timeout.
		why = v1.GatewayLinkReason_GATEWAY_LINK_REASON_STREAM_ENDED
		return nil
	}
	return Status(model.Errorf(model.ErrUnavailable, "route stream closed (replaced by a newer stream, reader behind, or controller stopping); reconnect with from_revision"))
}

// closeStream records that the gateway's route stream ended (the request's
// context is over by then).
func (a *agents) closeStream(gw, stream string, why v1.GatewayLinkReason) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.c.CloseGatewayStream(ctx, gw, stream, why); err != nil && !errors.Is(err, store.ErrClosed) {
		a.log.Debug("close gateway stream", logkey.Gateway, gw, logkey.Err, err)
	}
}
