package server

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/iotfabric/iotfabric/internal/syncbuf"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig/tlstest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// tlsController is a controller serving its API with mutual TLS, and its store.
type tlsController struct {
	ca  *tlstest.CA
	c   *Controller
	st  store.Store
	log *syncbuf.Buffer
}

func startTLS(t *testing.T) *tlsController {
	t.Helper()
	ca := tlstest.NewCA(t, "iotfabric-ca")
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.API.Listen, cfg.Metrics.Listen, cfg.API.TLS = "127.0.0.1:0", MetricsOff, ca.Issue("controller")
	cfg.Liveness.Interval = time.Hour // no heartbeat rewrites while the store is compared
	lb := &syncbuf.Buffer{}
	c, err := Start(context.Background(), cfg, Options{Logger: slog.New(slog.NewTextHandler(lb, nil)), ExclusiveStore: true,
		OpenStore: func(context.Context) (store.Store, error) { return st, nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return &tlsController{ca: ca, c: c, st: st, log: lb}
}

// dial connects with the certificate files f.
func (tc *tlsController) dial(t *testing.T, f tlsconfig.Files) *grpc.ClientConn {
	t.Helper()
	cc, err := tlsconfig.Client(f)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(tc.c.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(cc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// dump is every key of the store and its value.
func (tc *tlsController) dump(t *testing.T) map[string]string {
	t.Helper()
	kvs, _, err := tc.st.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, kv := range kvs {
		m[kv.Key] = string(kv.Value)
	}
	return m
}

// allowedRoles is the role table as documented (docs/security.md), written
// out independently of pkg/api's: service/method -> the roles that may call it.
var allowedRoles = map[string]string{
	"NetworkService/CreateNetwork":    "admin",
	"NetworkService/GetNetwork":       "admin viewer gateway",
	"NetworkService/ListNetworks":     "admin viewer",
	"NetworkService/UpdateNetwork":    "admin",
	"NetworkService/DeleteNetwork":    "admin",
	"NetworkService/WatchNetworks":    "admin viewer",
	"GatewayService/CreateGateway":    "admin",
	"GatewayService/GetGateway":       "admin viewer",
	"GatewayService/ListGateways":     "admin viewer",
	"GatewayService/UpdateGateway":    "admin",
	"GatewayService/DeleteGateway":    "admin",
	"GatewayService/WatchGateways":    "admin viewer",
	"EndpointService/CreateEndpoint":  "admin",
	"EndpointService/CreateEndpoints": "admin",
	"EndpointService/GetEndpoint":     "admin viewer",
	"EndpointService/ListEndpoints":   "admin viewer",
	"EndpointService/UpdateEndpoint":  "admin",
	"EndpointService/DeleteEndpoint":  "admin",
	"EndpointService/WatchEndpoints":  "admin viewer",
	"IpamService/GetIpam":             "admin viewer",
	"AgentService/Register":           "admin gateway",
	"AgentService/ReportEndpoints":    "admin gateway",
	"AgentService/LeaseBlock":         "admin gateway",
	"AgentService/WatchGatewayRoutes": "admin gateway",
	"PeerService/AddPeer":             "admin",
	"PeerService/DeletePeer":          "admin",
	"PeerService/ListPeers":           "admin viewer",
	"RouteService/ListRoutes":         "admin viewer",
	"RouteService/WatchRoutes":        "admin viewer",

	"GatewayLinkService/GetGatewayLinks": "admin viewer",

	"EnrollmentService/Join":          "admin viewer gateway none",
	"EnrollmentService/Renew":         "admin viewer gateway",
	"EnrollmentService/CreateToken":   "admin",
	"EnrollmentService/ListTokens":    "admin",
	"EnrollmentService/DeleteToken":   "admin",
	"EnrollmentService/RevokeGateway": "admin",
	"EnrollmentService/ListRevoked":   "admin",
}

// request is an empty request of md's input type, acting for gateway gw
// where it names a gateway (so that the gateway's calls pass its own check).
func request(t *testing.T, md protoreflect.MethodDescriptor, gw string) proto.Message {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
	if err != nil {
		t.Fatal(err)
	}
	m := mt.New()
	if f := md.Input().Fields().ByName("gateway"); f != nil {
		switch f.Kind() {
		case protoreflect.StringKind:
			m.Set(f, protoreflect.ValueOfString(gw))
		case protoreflect.MessageKind:
			g := m.NewField(f)
			g.Message().Set(f.Message().Fields().ByName("name"), protoreflect.ValueOfString(gw))
			m.Set(f, g)
		}
	}
	return m.Interface()
}

// call calls method with req and returns the code of the answer; a stream
// that stays open (a watch) is OK.
func call(conn *grpc.ClientConn, md protoreflect.MethodDescriptor, method string, req proto.Message) codes.Code {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	out := func() proto.Message {
		mt, _ := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
		return mt.New().Interface()
	}
	if !md.IsStreamingServer() && !md.IsStreamingClient() {
		return status.Code(conn.Invoke(ctx, method, req, out()))
	}
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: md.IsStreamingServer(), ClientStreams: md.IsStreamingClient()}, method)
	if err != nil {
		return status.Code(err)
	}
	if err := s.SendMsg(req); err != nil {
		return status.Code(err)
	}
	s.CloseSend()
	err = s.RecvMsg(out())
	if status.Code(err) == codes.DeadlineExceeded {
		return codes.OK // open, waiting for changes
	}
	return status.Code(err)
}

// TestRoleTable calls every method of every iotfabric.v1 service, as the
// generated descriptors list them, with each role over mutual TLS, and
// compares PermissionDenied or not with the documented table. A method
// without a row in the table fails the test.
func TestRoleTable(t *testing.T) {
	tc := startTLS(t)
	checkRoleTable(t, map[string]*grpc.ClientConn{
		"admin":   tc.dial(t, tc.ca.Admin("alice")),
		"viewer":  tc.dial(t, tc.ca.Viewer("victor")),
		"gateway": tc.dial(t, tc.ca.Gateway("gw-1")),
		"none":    tc.dial(t, tc.ca.Issue("nobody")),
	})
}

// checkRoleTable calls every method of every iotfabric.v1 service with the
// connection of each role and compares with allowedRoles.
func checkRoleTable(t *testing.T, conns map[string]*grpc.ClientConn) {
	t.Helper()
	n := 0
	protoregistry.GlobalFiles.RangeFilesByPackage("iotfabric.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				md := sd.Methods().Get(j)
				key := string(sd.Name()) + "/" + string(md.Name())
				method := "/" + string(sd.FullName()) + "/" + string(md.Name())
				want, ok := allowedRoles[key]
				if !ok {
					t.Errorf("%s has no row in the role table", key)
					continue
				}
				n++
				for _, role := range []string{"none", "viewer", "gateway", "admin"} {
					gw := "gw-1"
					if md.Name() == "RevokeGateway" {
						gw = "gw-elsewhere" // the walk goes on with gw-1's certificate
					}
					code := call(conns[role], md, method, request(t, md, gw))
					allowed := slices.Contains(strings.Fields(want), role)
					if denied := code == codes.PermissionDenied; denied == allowed {
						t.Errorf("%s as %s: %v, want allowed=%t", key, role, code, allowed)
					}
				}
			}
		}
		return true
	})
	if n != len(allowedRoles) {
		t.Errorf("the services have %d methods, the table %d rows", n, len(allowedRoles))
	}
	// The health check is open to every verified certificate.
	for role, conn := range conns {
		if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Errorf("health check as %s: %v", role, err)
		}
	}
}

// TestGatewayNodeRestriction replays what a stolen or misbehaving gateway
// certificate could do before roles: gw-1's certificate tries to take over
// gw-2, delete a network, add a BGP peer, create endpoints on gw-2 and delete
// gw-2's endpoints by a full sync. Each is refused and the store is unchanged.
func TestGatewayNodeRestriction(t *testing.T) {
	t.Run("certificates from files", func(t *testing.T) {
		tc := startTLS(t)
		gatewayNodeRestriction(t, tc, func(name string) *grpc.ClientConn { return tc.dial(t, tc.ca.Gateway(name)) })
	})
	t.Run("certificates from enrollment", func(t *testing.T) {
		ec := startEnroll(t, nil, Config{}, nil)
		// The gateways' certificates come from tokens; the store's
		// enrollment records are then part of what must not change.
		rs := map[string]*grpc.ClientConn{}
		for _, name := range []string{"gw-1", "gw-2"} {
			id := join(t, ec.c.Addr(), ec.token(t, v1.TokenKind_TOKEN_KIND_GATEWAY, name, "", time.Hour), ec.fp)
			rs[name] = dialAs(t, ec.c.Addr(), renewer(t, id, ec.c.Addr()))
		}
		gatewayNodeRestriction(t, ec.tlsController, func(name string) *grpc.ClientConn { return rs[name] })
	})
}

// gatewayNodeRestriction is TestGatewayNodeRestriction on tc, with dialGW
// connecting as a gateway.
func gatewayNodeRestriction(t *testing.T, tc *tlsController, dialGW func(name string) *grpc.ClientConn) {
	ctx := context.Background()
	adm := tc.dial(t, tc.ca.Admin("alice"))
	if _, err := v1.NewNetworkServiceClient(adm).CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "red", Subnets: []string{"10.9.0.0/16"}}}); err != nil {
		t.Fatal(err)
	}
	gw1, gw2 := v1.NewAgentServiceClient(dialGW("gw-1")), v1.NewAgentServiceClient(dialGW("gw-2"))
	for name, a := range map[string]v1.AgentServiceClient{"gw-1": gw1, "gw-2": gw2} {
		if _, err := a.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: name, UnderlayAddress: "192.0.2." + name[3:]}}); err != nil {
			t.Fatalf("%s registers itself: %v", name, err)
		}
	}
	r, err := gw2.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: "gw-2", Endpoints: []*v1.AgentEndpoint{{Id: "ep-2", Network: "red"}}})
	if err != nil || r.Results[0].Error != "" {
		t.Fatalf("gw-2 reports its endpoint: %v %v", r, err)
	}
	if _, err := gw1.LeaseBlock(ctx, &v1.LeaseBlockRequest{Gateway: "gw-1", Network: "red", Family: 4}); err != nil {
		t.Fatalf("gw-1 leases a block for itself: %v", err)
	}
	before := tc.dump(t)

	conn1 := dialGW("gw-1")
	attacks := map[string]func() error{
		"register as gw-2": func() error {
			_, err := gw1.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw-2", UnderlayAddress: "198.51.100.66"}})
			return err
		},
		"delete a network": func() error {
			_, err := v1.NewNetworkServiceClient(conn1).DeleteNetwork(ctx, &v1.NameRequest{Name: "red"})
			return err
		},
		"add a BGP peer": func() error {
			_, err := v1.NewPeerServiceClient(conn1).AddPeer(ctx, &v1.AddPeerRequest{Peer: &v1.Peer{Address: "198.51.100.1", Asn: 65099}})
			return err
		},
		"create an endpoint on gw-2": func() error {
			_, err := v1.NewEndpointServiceClient(conn1).CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: "evil", Network: "red", Gateway: "gw-2"}})
			return err
		},
		"report an endpoint for gw-2": func() error {
			_, err := gw1.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: "gw-2", Endpoints: []*v1.AgentEndpoint{{Id: "evil", Network: "red"}}})
			return err
		},
		"full sync of gw-2": func() error {
			_, err := gw1.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: "gw-2", FullSync: true})
			return err
		},
		"lease a block for gw-2": func() error {
			_, err := gw1.LeaseBlock(ctx, &v1.LeaseBlockRequest{Gateway: "gw-2", Network: "red", Family: 4})
			return err
		},
		"update gw-2": func() error {
			_, err := v1.NewGatewayServiceClient(conn1).UpdateGateway(ctx, &v1.UpdateGatewayRequest{Gateway: &v1.Gateway{Name: "gw-2", UnderlayAddress: "198.51.100.66"}})
			return err
		},
		"watch gw-2's routes": func() error {
			s, err := gw1.WatchGatewayRoutes(ctx, &v1.WatchGatewayRoutesRequest{Gateway: "gw-2"})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		},
	}
	for name, attack := range attacks {
		err := attack()
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "gateway:gw-1") {
			t.Errorf("%s: %v, want PermissionDenied naming gateway:gw-1", name, err)
		}
	}
	// gw-1's own full sync listing gw-2's endpoint: refused for that
	// endpoint, and nothing of gw-2's is deleted.
	r, err = gw1.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: "gw-1", FullSync: true, Endpoints: []*v1.AgentEndpoint{{Id: "ep-2", Network: "red"}}})
	if err != nil || r.Deleted != 0 || len(r.Results) != 1 || r.Results[0].Error == "" {
		t.Errorf("gw-1's full sync with gw-2's endpoint: %v %v", r, err)
	}
	after := tc.dump(t)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("key %s changed: %q -> %q", k, v, after[k])
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("key %s appeared", k)
		}
	}

	// An underlay change of its own is allowed, and logged.
	if _, err := gw1.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw-1", UnderlayAddress: "192.0.2.11"}}); err != nil {
		t.Fatal(err)
	}
	log := tc.log.String()
	for _, want := range []string{
		`msg="gateway underlay changed" gateway=gw-1 from=192.0.2.1 to=192.0.2.11 identity=gateway:gw-1`,
		`msg=call component=audit identity=gateway:gw-1 method=/iotfabric.v1.AgentService/Register object=gw-1 code=OK`,
		`msg=call component=audit identity=admin:alice method=/iotfabric.v1.NetworkService/CreateNetwork object=red code=OK`,
		// Endpoint reports are routine (the bounded log limits them per caller).
		`msg="endpoint report" component=audit identity=gateway:gw-1 method=/iotfabric.v1.AgentService/ReportEndpoints object="gw-1: 1 endpoints, full sync true" code=OK`,
		`msg="endpoint report" component=audit identity=gateway:gw-2 method=/iotfabric.v1.AgentService/ReportEndpoints object="gw-2: 1 endpoints, full sync false" code=OK`,
		`msg=denied component=audit identity=gateway:gw-1 method=/iotfabric.v1.AgentService/Register object=gw-2 code=PermissionDenied`,
		`msg=denied component=audit identity=gateway:gw-1 method=/iotfabric.v1.NetworkService/DeleteNetwork object=red code=PermissionDenied`,
		`msg=denied component=audit identity=gateway:gw-1 method=/iotfabric.v1.AgentService/WatchGatewayRoutes object=gw-2 code=PermissionDenied`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s", want)
		}
	}
	if t.Failed() {
		t.Log(log)
	}
}

// Without TLS the API listens on loopback only, unless api.insecure is set;
// then the controller warns.
func TestInsecureListen(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DataDir, cfg.Metrics.Listen = t.TempDir(), MetricsOff
	for addr, ok := range map[string]bool{"127.0.0.1:0": true, "[::1]:0": true, "localhost:0": true, "0.0.0.0:0": false, ":0": false, "192.0.2.1:0": false} {
		cfg.API.Listen = addr
		if err := cfg.Validate(); (err == nil) != ok || !ok && !strings.Contains(err.Error(), "api.insecure") {
			t.Errorf("Validate with api.listen %s: %v", addr, err)
		}
	}
	cfg.API.Listen = "0.0.0.0:0"
	if c, err := Start(context.Background(), cfg, Options{}); err == nil || !strings.Contains(err.Error(), "api.insecure") {
		if c != nil {
			c.Stop()
		}
		t.Fatalf("a non-loopback API without TLS started: %v", err)
	}
	path := filepath.Join(t.TempDir(), "controller.yaml")
	if err := os.WriteFile(path, []byte("data_dir: "+cfg.DataDir+"\napi:\n  listen: 0.0.0.0:0\n  insecure: true\nmetrics:\n  listen: \"off\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	lb := &syncbuf.Buffer{}
	c, err := Start(context.Background(), cfg, Options{Logger: slog.New(slog.NewTextHandler(lb, nil))})
	if err != nil {
		t.Fatal(err)
	}
	c.Stop()
	if !strings.Contains(lb.String(), "level=WARN msg=\"API serves without TLS on a non-loopback address") {
		t.Errorf("no warning:\n%s", lb)
	}
}
