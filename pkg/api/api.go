// Package api is the controller's transport: the nine iotfabric.v1 gRPC
// services (Network, Gateway, Endpoint, IPAM, Agent, Peer, Route,
// Enrollment, GatewayLink) over the domain (pkg/controller for resources and agents,
// pkg/vpn for routes and peers, pkg/enroll for certificates). It translates
// requests and responses between protobuf and the domain's calls, and the
// domain's errors into gRPC status codes, in one table (errors.go). It authorizes every call in one place, Authorizer
// (authz.go): the caller's identity from its client certificate, one table
// of role x service x method, gateways restricted to their own gateway, and
// the audit log (docs/security.md).
//
// It owns no state and no store key: it may not read or write the store, nor
// decide anything the domain decides; the domain packages may not import it.
package api

import (
	"log/slog"
	"time"

	"google.golang.org/grpc"

	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/enroll"
	"github.com/iotfabric/iotfabric/pkg/vpn"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Services are the domain objects the services serve.
type Services struct {
	Controller *controller.Controller
	// Routes is the route table; nil registers the resource services only
	// (Network, Gateway, Endpoint, IPAM).
	Routes *vpn.Runner
	// Peers are the BGP peers (nil: those of Routes, none from a configuration file).
	Peers *vpn.Peers
	// Enroller is the enrollment authority (nil: no EnrollmentService).
	Enroller *enroll.Enroller
	Logger   *slog.Logger
	// MaxFullSyncs bounds the gateways' full syncs served at once (full
	// endpoint reports and route streams whose first update carry more than
	// FullSyncItems endpoints or routes); past it they queue for up to a few
	// seconds, then are refused with RESOURCE_EXHAUSTED and a retry delay
	// (0: DefaultMaxFullSyncs).
	MaxFullSyncs int
	// FullSyncItems is the most endpoints a full report, or routes a route
	// stream's first update, may carry without counting as a full sync (0:
	// DefaultFullSyncItems; negative: none).
	FullSyncItems int
	// MaxRegisters bounds the gateways' registrations served at once; past
	// it they queue and are refused like full syncs (0: DefaultMaxRegisters).
	// Each costs store reads and a write: when thousands of gateways return
	// at once, a bound keeps each one short enough to finish within the
	// agent's deadline instead of all of them timing out and retrying.
	MaxRegisters int
	// OnRouteChangeSent, if set, is called each time a gateway route stream
	// has handed gRPC a change of routes, with the time since the route
	// table took in that change: how long a change takes to reach the
	// gateways' streams (snapshots and resumes are not changes).
	OnRouteChangeSent func(time.Duration)
}

// Register registers the services on g.
func (s Services) Register(g grpc.ServiceRegistrar) {
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	res := &resources{c: s.Controller, r: s.Routes}
	v1.RegisterNetworkServiceServer(g, res)
	v1.RegisterGatewayServiceServer(g, res)
	v1.RegisterEndpointServiceServer(g, res)
	v1.RegisterIpamServiceServer(g, res)
	if s.Enroller != nil {
		v1.RegisterEnrollmentServiceServer(g, &enrollment{e: s.Enroller, c: s.Controller})
	}
	if s.Routes == nil {
		return
	}
	if s.Peers == nil {
		s.Peers = vpn.NewPeers(s.Controller.Store(), s.Routes, nil)
	}
	ag := newAgents(s.Controller, s.Routes, s.Logger, s.MaxFullSyncs, s.FullSyncItems)
	ag.onSent = s.OnRouteChangeSent
	if s.MaxRegisters > 0 {
		ag.reg = newAdmission(s.MaxRegisters, "gateway registrations")
	}
	v1.RegisterAgentServiceServer(g, ag)
	rs := &routes{r: s.Routes, peers: s.Peers}
	v1.RegisterPeerServiceServer(g, rs)
	v1.RegisterRouteServiceServer(g, rs)
	v1.RegisterGatewayLinkServiceServer(g, &links{c: s.Controller, r: s.Routes})
}
