package server

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"

	"google.golang.org/grpc"

	"github.com/iotfabric/iotfabric/pkg/api"
	"github.com/iotfabric/iotfabric/pkg/console"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/rest"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// newConsole builds the web console (pkg/console) over the API's services,
// authorized by the API's Authorizer for the REST caller.
func newConsole(cfg Config, services api.Services, authz *api.Authorizer, log *slog.Logger) (*console.Handler, error) {
	impls := capture{}
	services.Register(impls)
	lister, ok := impls["iotfabric.v1.NetworkService"].(console.Lister)
	if !ok {
		return nil, fmt.Errorf("console: the API's network service lists no gateways or endpoints")
	}
	peers, _ := impls["iotfabric.v1.PeerService"].(console.PeerLister)
	az := *authz
	az.Identify = func(ctx context.Context) (tlsconfig.Identity, *x509.Certificate) {
		c, _ := rest.CallerFrom(ctx) // none: the zero identity, refused
		return c.Identity, c.Cert
	}
	authorize := func(r *http.Request, method string) (context.Context, error) {
		req, ok := consoleRequests[method]
		if !ok {
			return nil, fmt.Errorf("console: no request for %s", method)
		}
		return r.Context(), az.Authorize(r.Context(), method, req)
	}
	return console.New(cfg.Console, console.Options{Lister: lister, Peers: peers, Authorize: authorize,
		Logger: log.With(logkey.Component, logkey.ComponentConsole)})
}

// consoleRequests are the requests of the methods the console stands for.
var consoleRequests = map[string]any{
	v1.NetworkService_ListNetworks_FullMethodName:   &v1.ListNetworksRequest{},
	v1.GatewayService_ListGateways_FullMethodName:   &v1.ListGatewaysRequest{},
	v1.EndpointService_ListEndpoints_FullMethodName: &v1.ListEndpointsRequest{},
	v1.PeerService_ListPeers_FullMethodName:         &v1.ListPeersRequest{},
}

// capture is a grpc.ServiceRegistrar that keeps the implementations.
type capture map[string]any

func (c capture) RegisterService(d *grpc.ServiceDesc, impl any) { c[d.ServiceName] = impl }
