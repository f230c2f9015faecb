package api

import (
	"context"
	"crypto/tls"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// The table fails closed: a method it does not know is denied to an admin,
// a connection without TLS gets Anonymous, and TLS without a verified client
// certificate gets no role.
func TestAuthorizerFailsClosed(t *testing.T) {
	ran := false
	handler := func(ctx context.Context, req any) (any, error) { ran = true; return nil, nil }
	plain := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{}})
	unverified := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{}, AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{}}})
	for _, c := range []struct {
		name   string
		a      Authorizer
		ctx    context.Context
		method string
		want   codes.Code
	}{
		{"unknown method", Authorizer{Anonymous: tlsconfig.Admin}, plain, "/iotfabric.v1.NetworkService/Nope", codes.PermissionDenied},
		{"anonymous admin", Authorizer{Anonymous: tlsconfig.Admin}, plain, v1.NetworkService_ListNetworks_FullMethodName, codes.OK},
		{"anonymous nobody", Authorizer{}, plain, v1.NetworkService_ListNetworks_FullMethodName, codes.PermissionDenied},
		{"no peer", Authorizer{}, context.Background(), v1.NetworkService_ListNetworks_FullMethodName, codes.PermissionDenied},
		{"TLS unverified", Authorizer{Anonymous: tlsconfig.Admin}, unverified, v1.NetworkService_ListNetworks_FullMethodName, codes.PermissionDenied},
	} {
		ran = false
		_, err := c.a.Unary(c.ctx, &v1.ListNetworksRequest{}, &grpc.UnaryServerInfo{FullMethod: c.method}, handler)
		if status.Code(err) != c.want || ran != (c.want == codes.OK) {
			t.Errorf("%s: %v (handler ran: %t), want %v", c.name, err, ran, c.want)
		}
		// Authorize decides as Unary does.
		if aerr := c.a.Authorize(c.ctx, c.method, &v1.ListNetworksRequest{}); status.Code(aerr) != c.want || status.Convert(aerr).Message() != status.Convert(err).Message() {
			t.Errorf("%s: Authorize %v, Unary %v", c.name, aerr, err)
		}
	}
}
