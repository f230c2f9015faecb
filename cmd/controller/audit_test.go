package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/iotfabric/iotfabric/internal/logbound"
	"github.com/iotfabric/iotfabric/pkg/api"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// TestAuditLogBound: in the controller's log, every successful call is
// audited, also a gateway's registrations; a gateway's endpoint reports
// (one per pod added or deleted, a deletion as a full sync) are limited per
// caller like refusals: ten lines, then a count.
func TestAuditLogBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	log := newLogger(defaultConfig(), f)
	a := &api.Authorizer{Audit: log.With(logkey.Component, logkey.ComponentAudit), Anonymous: tlsconfig.Admin}
	call := func(method string, req any) {
		_, err := a.Unary(context.Background(), req, &grpc.UnaryServerInfo{FullMethod: method}, func(context.Context, any) (any, error) { return nil, nil })
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 50; i++ {
		call(v1.AgentService_ReportEndpoints_FullMethodName, &v1.ReportEndpointsRequest{Gateway: "gw-1", Endpoints: []*v1.AgentEndpoint{{Id: "p"}}})
		call(v1.NetworkService_CreateNetwork_FullMethodName, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "red"}})
	}
	for i := 0; i < 15; i++ {
		call(v1.AgentService_Register_FullMethodName, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw-1"}})
		call(v1.AgentService_ReportEndpoints_FullMethodName, &v1.ReportEndpointsRequest{Gateway: "gw-1", FullSync: true})
	}
	log.Handler().(*logbound.Handler).Flush()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := string(b)
	count := func(s string) int { return strings.Count(out, s) }
	if n := count(`msg=call component=audit identity=admin:local method=/iotfabric.v1.NetworkService/CreateNetwork object=red code=OK`); n != 50 {
		t.Errorf("%d of 50 successful calls audited", n)
	}
	if n := count(`msg=call component=audit identity=admin:local method=/iotfabric.v1.AgentService/Register object=gw-1 code=OK`); n != 15 {
		t.Errorf("%d of 15 registrations audited", n)
	}
	if n := count(`msg="endpoint report" component=audit identity=admin:local method=/iotfabric.v1.AgentService/ReportEndpoints object=`); n != logbound.DefaultBurst {
		t.Errorf("%d endpoint reports audited, want %d", n, logbound.DefaultBurst)
	}
	if n := count(`msg=call component=audit identity=admin:local method=/iotfabric.v1.AgentService/ReportEndpoints`); n != 0 {
		t.Errorf("%d endpoint reports audited as calls", n)
	}
	if n := count(`msg="endpoint report" component=audit identity=admin:local code=OK suppressed=55 `); n != 1 {
		t.Errorf("no count of the 55 reports left out:\n%s", out)
	}
}
