package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/iotfabric/iotfabric/internal/syncbuf"
	"github.com/iotfabric/iotfabric/pkg/rest"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig/tlstest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// restController is a controller with its REST API on, and how to reach it.
type restController struct {
	c    *Controller
	ca   *tlstest.CA // nil without TLS
	base string      // http(s)://addr
	log  *syncbuf.Buffer
}

// startREST starts a controller with api.http_listen on loopback; with ca,
// both APIs use mutual TLS with certificates of ca. tune changes the
// configuration before it starts.
func startRESTController(t testing.TB, ca *tlstest.CA, tune func(*Config)) *restController {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.API.Listen, cfg.Metrics.Listen, cfg.API.HTTPListen = "127.0.0.1:0", MetricsOff, "127.0.0.1:0"
	if ca != nil {
		cfg.API.TLS = ca.Issue("controller")
	}
	if tune != nil {
		tune(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	lb := &syncbuf.Buffer{}
	c, err := Start(context.Background(), cfg, Options{Logger: slog.New(slog.NewTextHandler(lb, nil)), ExclusiveStore: true,
		OpenStore: func(context.Context) (store.Store, error) { return st, nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	base := "http://" + c.RESTAddr()
	if ca != nil {
		base = "https://" + c.RESTAddr()
	}
	return &restController{c: c, ca: ca, base: base, log: lb}
}

// client is an HTTP client presenting the certificate f (zero: none).
func (rc *restController) client(t testing.TB, f tlsconfig.Files) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	if rc.ca != nil {
		var tc *tls.Config
		if f.Cert != "" {
			var err error
			if tc, err = tlsconfig.Client(f); err != nil {
				t.Fatal(err)
			}
		} else {
			pem, err := os.ReadFile(rc.ca.Path)
			if err != nil {
				t.Fatal(err)
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(pem)
			tc = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
		}
		tr.TLSClientConfig = tc
		tr.ForceAttemptHTTP2 = true
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// grpcConn is a gRPC connection to the controller's gRPC API (plain).
func (rc *restController) grpcConn(t testing.TB) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(rc.c.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// do makes a request and returns the status and the body.
func do(t *testing.T, c *http.Client, method, url, body string) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// restError decodes an error body, failing when it is not one.
func restError(t *testing.T, b []byte) rest.Error {
	t.Helper()
	var e rest.Error
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.CodeName == "" || e.Details == nil {
		t.Fatalf("not an error body (%v): %s", err, b)
	}
	return e
}

// restRoutes lists every annotated method: its service/method key, HTTP
// method and path template.
func restRoutes(t *testing.T) []restRoute {
	var routes []restRoute
	protoregistry.GlobalFiles.RangeFilesByPackage("iotfabric.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				md := sd.Methods().Get(j)
				rule, ok := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
				if !ok || rule == nil {
					continue
				}
				r := restRoute{key: string(sd.Name()) + "/" + string(md.Name()), stream: md.IsStreamingServer()}
				switch p := rule.Pattern.(type) {
				case *annotations.HttpRule_Get:
					r.method, r.path = http.MethodGet, p.Get
				case *annotations.HttpRule_Post:
					r.method, r.path = http.MethodPost, p.Post
				case *annotations.HttpRule_Patch:
					r.method, r.path = http.MethodPatch, p.Patch
				case *annotations.HttpRule_Delete:
					r.method, r.path = http.MethodDelete, p.Delete
				default:
					t.Fatalf("%s: unexpected pattern %v", r.key, rule)
				}
				routes = append(routes, r)
			}
		}
		return true
	})
	return routes
}

type restRoute struct {
	key, method, path string
	stream            bool
}

// url fills the route's path variables with "x".
func (r restRoute) url(base string) string {
	p := r.path
	for {
		i, j := strings.Index(p, "{"), strings.Index(p, "}")
		if i < 0 || j < i {
			return base + p
		}
		p = p[:i] + "x" + p[j+1:]
	}
}

// status calls the route with an empty request and returns the HTTP status
// (a watch that opens answers 200 at once).
func (r restRoute) status(t *testing.T, c *http.Client, base string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var body io.Reader
	if r.method == http.MethodPost || r.method == http.MethodPatch {
		body = strings.NewReader("{}")
	}
	req, _ := http.NewRequestWithContext(ctx, r.method, r.url(base), body)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", r.key, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The REST API answers every annotated method for each kind of caller as
// the gRPC API's role table (allowedRoles) says: over HTTPS with an admin, a
// viewer, a gateway and a role-less certificate, and without a certificate
// as api.http_anonymous viewer. Every operator method of the API has a
// route; the agents' calls have none.
func TestRESTRoleTable(t *testing.T) {
	ca := tlstest.NewCA(t, "iotfabric-ca")
	rc := startRESTController(t, ca, func(c *Config) { c.API.HTTPAnonymous = "viewer" })
	clients := map[string]*http.Client{
		"admin":     rc.client(t, ca.Admin("alice")),
		"viewer":    rc.client(t, ca.Viewer("victor")),
		"gateway":   rc.client(t, ca.Gateway("gw-1")),
		"none":      rc.client(t, ca.Issue("nobody")),
		"anonymous": rc.client(t, tlsconfig.Files{}),
	}
	routes := restRoutes(t)
	var keys []string
	for _, r := range routes {
		keys = append(keys, r.key)
		want, ok := allowedRoles[r.key]
		if !ok {
			t.Errorf("%s has no row in the role table", r.key)
			continue
		}
		for role, c := range clients {
			as := role
			if role == "anonymous" {
				as = "viewer"
			}
			code := r.status(t, c, rc.base)
			allowed := slices.Contains(strings.Fields(want), as)
			if denied := code == http.StatusForbidden; denied == allowed || code == http.StatusUnauthorized {
				t.Errorf("%s %s (%s) as %s: HTTP %d, want allowed=%t", r.method, r.url(""), r.key, role, code, allowed)
			}
		}
	}
	for key := range allowedRoles {
		operator := !strings.HasPrefix(key, "AgentService/") && key != "EnrollmentService/Join" && key != "EnrollmentService/Renew"
		if has := slices.Contains(keys, key); has != operator {
			t.Errorf("%s: REST route %t, want %t", key, has, operator)
		}
	}
	// Denials are audited as on gRPC, with the caller's identity.
	if !strings.Contains(rc.log.String(), `msg=denied component=audit identity=viewer:anonymous method=/iotfabric.v1.NetworkService/CreateNetwork`) {
		t.Errorf("no audit line for the anonymous viewer's refused CreateNetwork:\n%s", rc.log.String())
	}
	// A gateway certificate reads its network through REST, nothing else.
	c := clients["gateway"]
	if code, b := do(t, c, http.MethodPost, rc.base+"/v1/networks", `{"network":{"name":"n1","subnets":["10.1.0.0/24"]}}`); code != http.StatusForbidden {
		t.Errorf("gateway creates a network through REST: %d %s", code, b)
	}
}

// Without a client certificate and with api.http_anonymous none (the
// default), every request is refused with 401 and the error JSON.
func TestRESTAnonymousNone(t *testing.T) {
	rc := startRESTController(t, nil, nil)
	c := rc.client(t, tlsconfig.Files{})
	for _, path := range []string{"/v1/networks", "/openapi.json", "/v1/networks:watch", "/nowhere"} {
		code, b := do(t, c, http.MethodGet, rc.base+path, "")
		if e := restError(t, b); code != http.StatusUnauthorized || e.Code != codes.Unauthenticated || e.CodeName != "UNAUTHENTICATED" {
			t.Errorf("GET %s: %d %+v", path, code, e)
		}
	}
}

// Anonymous admin only on a loopback listener without TLS; viewer with TLS
// is fine; a bad role is refused.
func TestRESTConfig(t *testing.T) {
	ca := tlstest.NewCA(t, "iotfabric-ca")
	for _, tc := range []struct {
		listen, anon string
		tls, ok      bool
	}{
		{"127.0.0.1:0", "admin", false, true},
		{"127.0.0.1:0", "admin", true, false},
		{"0.0.0.0:0", "admin", false, false},
		{"0.0.0.0:0", "viewer", false, false}, // no TLS, not loopback, no api.insecure
		{"0.0.0.0:0", "viewer", true, true},
		{"127.0.0.1:0", "root", false, false},
		{"nowhere", "none", false, false},
		{"off", "admin", true, true}, // off: nothing to check
	} {
		cfg := DefaultConfig()
		cfg.API.HTTPListen, cfg.API.HTTPAnonymous = tc.listen, tc.anon
		if tc.tls {
			cfg.API.TLS = ca.Issue("controller")
		}
		if err := cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: %v", tc, err)
		}
	}
	cfg := DefaultConfig()
	if cfg.HTTPEnabled() || cfg.API.HTTPAnonymous != "none" || cfg.API.HTTPMaxStreams != rest.DefaultMaxStreams {
		t.Errorf("defaults: %q %q %d", cfg.API.HTTPListen, cfg.API.HTTPAnonymous, cfg.API.HTTPMaxStreams)
	}
}

// An identity cannot be forged: a REST request naming a caller in headers
// (as grpc-gateway's metadata headers or the in-process key itself) stays
// the anonymous viewer, and the external gRPC listener ignores the
// in-process key (a viewer's certificate sending it stays a viewer).
func TestRESTForgedIdentity(t *testing.T) {
	ca := tlstest.NewCA(t, "iotfabric-ca")
	rc := startRESTController(t, ca, func(c *Config) { c.API.HTTPAnonymous = "viewer" })
	c := rc.client(t, tlsconfig.Files{})
	for _, h := range []string{"X-Iotfabric-Rest-Call", "Grpc-Metadata-X-Iotfabric-Rest-Call", "Grpc-Metadata-Identity", "X-Forwarded-Client-Cert", "Authorization"} {
		req, _ := http.NewRequest(http.MethodPost, rc.base+"/v1/networks", strings.NewReader(`{"network":{"name":"forged","subnets":["10.9.0.0/24"]}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(h, "admin")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(restError(t, b).Message, "viewer:anonymous may not call") {
			t.Errorf("header %s: %d %s", h, resp.StatusCode, b)
		}
	}
	tcv := &tlsController{ca: ca, c: rc.c}
	conn := tcv.dial(t, ca.Viewer("victor"))
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-iotfabric-rest-call", "admin")
	_, err := v1.NewNetworkServiceClient(conn).CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "forged", Subnets: []string{"10.9.0.0/24"}}})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("gRPC with the in-process key as a viewer: %v", err)
	}
}

// CRUD through REST as curl would do it, with pagination and the bulk call.
func TestRESTCRUD(t *testing.T) {
	rc := startRESTController(t, nil, func(c *Config) { c.API.HTTPAnonymous = "admin" })
	c := rc.client(t, tlsconfig.Files{})
	b := rc.base
	mustDo := func(method, path, body string, want int) map[string]any {
		t.Helper()
		code, resp := do(t, c, method, b+path, body)
		if code != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, code, resp, want)
		}
		var m map[string]any
		if err := json.Unmarshal(resp, &m); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, resp)
		}
		return m
	}
	n := mustDo("POST", "/v1/networks", `{"network":{"name":"sensors","subnets":["10.10.0.0/24"]}}`, 200)
	if n["name"] != "sensors" || n["autoRouteTarget"] != "target:64512:8000001" {
		t.Errorf("created network %v", n)
	}
	n = mustDo("PATCH", "/v1/networks/sensors", `{"network":{"subnets":["10.10.0.0/24"],"exportRouteTargets":["target:64512:100"]}}`, 200)
	if fmt.Sprint(n["exportRouteTargets"]) != "[target:64512:100]" {
		t.Errorf("patched network %v", n)
	}
	for i := range 5 {
		mustDo("POST", "/v1/gateways", fmt.Sprintf(`{"gateway":{"name":"gw-%d","underlayAddress":"192.0.2.%d"}}`, i, i+1), 200)
	}
	var names []string
	tok := ""
	for pages := 0; ; pages++ {
		page := mustDo("GET", "/v1/gateways?page_size=2&page_token="+tok, "", 200)
		for _, g := range page["gateways"].([]any) {
			names = append(names, g.(map[string]any)["name"].(string))
		}
		tok, _ = page["nextPageToken"].(string)
		if tok == "" {
			if pages != 2 {
				t.Errorf("%d pages, want 3", pages+1)
			}
			break
		}
	}
	if strings.Join(names, " ") != "gw-0 gw-1 gw-2 gw-3 gw-4" {
		t.Errorf("paged gateways %v", names)
	}
	e := mustDo("POST", "/v1/endpoints", `{"endpoint":{"id":"c0ffee:eth0","network":"sensors","gateway":"gw-0","label":100}}`, 200)
	if addrs := fmt.Sprint(e["addresses"]); !strings.Contains(addrs, "10.10.0.") {
		t.Errorf("endpoint addresses %v", e)
	}
	batch := mustDo("POST", "/v1/endpoints:batch", `{"endpoints":[{"id":"b1","network":"sensors","gateway":"gw-1"},{"id":"b2","network":"nowhere","gateway":"gw-1"}]}`, 200)
	if errs := batch["errors"].([]any); errs[0] != "" || !strings.Contains(errs[1].(string), "nowhere") {
		t.Errorf("batch %v", batch)
	}
	got := mustDo("GET", "/v1/endpoints/c0ffee:eth0", "", 200)
	if got["id"] != "c0ffee:eth0" || got["label"] != float64(100) {
		t.Errorf("got endpoint %v", got)
	}
	list := mustDo("GET", "/v1/endpoints?network=sensors&gateway=gw-1", "", 200)
	if eps := list["endpoints"].([]any); len(eps) != 1 || eps[0].(map[string]any)["id"] != "b1" {
		t.Errorf("filtered endpoints %v", list)
	}
	mustDo("GET", "/v1/ipam/sensors", "", 200)
	mustDo("GET", "/v1/routes?network=sensors", "", 200)
	mustDo("DELETE", "/v1/endpoints/c0ffee:eth0", "", 200)
	mustDo("DELETE", "/v1/endpoints/b1", "", 200)
	mustDo("GET", "/v1/endpoints/c0ffee:eth0", "", 404)
	mustDo("DELETE", "/v1/networks/sensors", "", 200)
	if l := mustDo("GET", "/v1/networks", "", 200); len(l["networks"].([]any)) != 0 {
		t.Errorf("networks left: %v", l)
	}
	// Audited as gRPC calls are.
	if want := `msg=call component=audit identity=admin:anonymous method=/iotfabric.v1.NetworkService/CreateNetwork object=sensors code=OK`; !strings.Contains(rc.log.String(), want) {
		t.Errorf("no audit line %q in\n%s", want, rc.log.String())
	}
	// What REST did, gRPC sees.
	if _, err := v1.NewGatewayServiceClient(rc.grpcConn(t)).GetGateway(context.Background(), &v1.NameRequest{Name: "gw-4"}); err != nil {
		t.Error(err)
	}
}

// Bad input gets the error JSON, with the gRPC API's very message for the
// same request.
func TestRESTErrors(t *testing.T) {
	rc := startRESTController(t, nil, func(c *Config) { c.API.HTTPAnonymous = "admin" })
	c := rc.client(t, tlsconfig.Files{})
	conn := rc.grpcConn(t)
	nets, eps := v1.NewNetworkServiceClient(conn), v1.NewEndpointServiceClient(conn)
	ctx := context.Background()
	if _, err := nets.CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "sensors", Subnets: []string{"10.10.0.0/24"}}}); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("n", 64)
	for _, tc := range []struct {
		name, method, path, body string
		grpc                     func() error
	}{
		{"bad name", "POST", "/v1/networks", `{"network":{"name":"bad name!","subnets":["10.1.0.0/24"]}}`, func() error {
			_, err := nets.CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "bad name!", Subnets: []string{"10.1.0.0/24"}}})
			return err
		}},
		{"long name", "POST", "/v1/networks", `{"network":{"name":"` + long + `","subnets":["10.1.0.0/24"]}}`, func() error {
			_, err := nets.CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: long, Subnets: []string{"10.1.0.0/24"}}})
			return err
		}},
		{"unknown network", "POST", "/v1/endpoints", `{"endpoint":{"id":"e1","network":"nowhere","gateway":"gw"}}`, func() error {
			_, err := eps.CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: "e1", Network: "nowhere", Gateway: "gw"}})
			return err
		}},
		{"exists", "POST", "/v1/networks", `{"network":{"name":"sensors","subnets":["10.20.0.0/24"]}}`, func() error {
			_, err := nets.CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "sensors", Subnets: []string{"10.20.0.0/24"}}})
			return err
		}},
		{"not found", "GET", "/v1/networks/nowhere", "", func() error {
			_, err := nets.GetNetwork(ctx, &v1.NameRequest{Name: "nowhere"})
			return err
		}},
		{"bad page token", "GET", "/v1/networks?page_token=garbage", "", func() error {
			_, err := nets.ListNetworks(ctx, &v1.ListNetworksRequest{PageToken: "garbage"})
			return err
		}},
	} {
		code, b := do(t, c, tc.method, rc.base+tc.path, tc.body)
		e := restError(t, b)
		want := status.Convert(tc.grpc())
		if e.Code != want.Code() || e.Message != want.Message() || code != httpStatusOf(want.Code()) {
			t.Errorf("%s: HTTP %d %+v; gRPC %v %q", tc.name, code, e, want.Code(), want.Message())
		}
		if e.CodeName != strings.ToUpper(strings.ReplaceAll(camelToSnake(want.Code().String()), " ", "_")) {
			t.Errorf("%s: codeName %s for %v", tc.name, e.CodeName, want.Code())
		}
	}
	// Requests only REST can get wrong.
	for _, tc := range []struct {
		name, method, path, ctype, body string
		status                          int
		code                            codes.Code
		msg                             string
	}{
		{"malformed JSON", "POST", "/v1/networks", "application/json", `{"network":`, 400, codes.InvalidArgument, ""},
		{"not JSON", "POST", "/v1/networks", "application/json", `network=sensors`, 400, codes.InvalidArgument, "invalid character"},
		{"unknown field", "POST", "/v1/networks", "application/json", `{"network":{"name":"x","colour":"red"}}`, 400, codes.InvalidArgument, `unknown field "colour"`},
		{"wrong type", "POST", "/v1/networks", "application/json", `{"network":{"name":7}}`, 400, codes.InvalidArgument, "invalid value"},
		{"form body", "POST", "/v1/networks", "application/x-www-form-urlencoded", `name=x`, 415, codes.InvalidArgument, "takes application/json"},
		{"too large", "POST", "/v1/endpoints:batch", "application/json", `{"endpoints":[` + strings.Repeat(`{"id":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},`, 130000) + `{}]}`, 413, codes.ResourceExhausted, "request body over 4194304 bytes"},
		{"unknown path", "GET", "/v2/networks", "", "", 404, codes.NotFound, "no such path"},
		{"unknown API path", "GET", "/v1/bogus", "", "", 404, codes.NotFound, ""},
		{"method not allowed", "PUT", "/v1/networks/sensors", "application/json", `{}`, 501, codes.Unimplemented, ""},
		{"bad query", "GET", "/v1/networks?page_size=many", "", "", 400, codes.InvalidArgument, ""},
	} {
		req, _ := http.NewRequest(tc.method, rc.base+tc.path, strings.NewReader(tc.body))
		if tc.ctype != "" {
			req.Header.Set("Content-Type", tc.ctype)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		e := restError(t, b)
		if resp.StatusCode != tc.status || e.Code != tc.code || !strings.Contains(e.Message, tc.msg) || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: HTTP %d %s %+v, want %d %v %q", tc.name, resp.StatusCode, resp.Header.Get("Content-Type"), e, tc.status, tc.code, tc.msg)
		}
	}
}

// httpStatusOf is the HTTP status the REST API gives a gRPC code (written
// out, docs/rest.md).
func httpStatusOf(c codes.Code) int {
	switch c {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return 400
	case codes.NotFound:
		return 404
	case codes.AlreadyExists, codes.Aborted:
		return 409
	case codes.PermissionDenied:
		return 403
	case codes.Unauthenticated:
		return 401
	case codes.ResourceExhausted:
		return 429
	}
	return 500
}

// camelToSnake turns InvalidArgument into Invalid Argument.
func camelToSnake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// The OpenAPI document is served, and it is the committed file.
func TestRESTOpenAPI(t *testing.T) {
	rc := startRESTController(t, nil, func(c *Config) { c.API.HTTPAnonymous = "viewer" })
	code, b := do(t, rc.client(t, tlsconfig.Files{}), http.MethodGet, rc.base+"/openapi.json", "")
	_, file, _, _ := runtime.Caller(0)
	want, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "rest", "openapi.json"))
	if err != nil {
		t.Fatal(err)
	}
	if code != 200 || !bytes.Equal(b, want) {
		t.Fatalf("GET /openapi.json: %d, %d bytes, want the %d of pkg/rest/openapi.json", code, len(b), len(want))
	}
	var doc struct {
		Swagger string                    `json:"swagger"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || doc.Swagger != "2.0" {
		t.Fatalf("not an OpenAPI 2.0 document: %v", err)
	}
	for _, p := range []string{"/v1/networks", "/v1/endpoints:batch", "/v1/endpoints:watch", "/v1/ipam/{name}", "/v1/tokens", "/v1/revocations"} {
		if doc.Paths[p] == nil {
			t.Errorf("no path %s", p)
		}
	}
}

// sse reads a server-sent event stream.
type sse struct {
	r *bufio.Reader
}

// next returns the next event's data (skipping comments), or "error: ..." for an error event.
func (s sse) next() (string, error) {
	var data, event string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "" && data != "":
			if event == "error" {
				return "error: " + data, nil
			}
			return data, nil
		case strings.HasPrefix(line, "data: "):
			data = line[len("data: "):]
		case strings.HasPrefix(line, "event: "):
			event = line[len("event: "):]
		}
	}
}

// A watch through REST delivers an endpoint created through gRPC within a
// second; it resumes from Last-Event-ID; it ends when the controller stops.
func TestRESTWatchSSE(t *testing.T) {
	rc := startRESTController(t, nil, func(c *Config) { c.API.HTTPAnonymous = "viewer" })
	conn := rc.grpcConn(t)
	ctx := context.Background()
	if _, err := v1.NewNetworkServiceClient(conn).CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "sensors", Subnets: []string{"10.10.0.0/24"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := v1.NewGatewayServiceClient(conn).CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.1"}}); err != nil {
		t.Fatal(err)
	}
	c := rc.client(t, tlsconfig.Files{})
	c.Timeout = 0
	resp, err := c.Get(rc.base + "/v1/endpoints:watch")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("watch: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := sse{bufio.NewReader(resp.Body)}
	ev, err := s.next()
	if err != nil || !strings.Contains(ev, `"EVENT_TYPE_SYNCED"`) {
		t.Fatalf("first event %q, %v; want SYNCED (no endpoints yet)", ev, err)
	}
	start := time.Now()
	if _, err := v1.NewEndpointServiceClient(conn).CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: "pod-a", Network: "sensors", Gateway: "gw"}}); err != nil {
		t.Fatal(err)
	}
	ev, err = s.next()
	latency := time.Since(start)
	if err != nil || !strings.Contains(ev, `"id":"pod-a"`) && !strings.Contains(ev, `"id": "pod-a"`) {
		t.Fatalf("event %q, %v", ev, err)
	}
	t.Logf("endpoint created through gRPC reached the REST watch in %v", latency)
	if latency > time.Second {
		t.Errorf("event after %v, want within 1s", latency)
	}
	var got struct {
		Revision string `json:"revision"`
	}
	if err := json.Unmarshal([]byte(ev), &got); err != nil {
		t.Fatal(err)
	}

	// Resume: Last-Event-ID is the revision to continue after.
	if _, err := v1.NewEndpointServiceClient(conn).CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: "pod-b", Network: "sensors", Gateway: "gw"}}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, rc.base+"/v1/endpoints:watch", nil)
	req.Header.Set("Last-Event-ID", got.Revision)
	resp2, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	ev, err = sse{bufio.NewReader(resp2.Body)}.next()
	if err != nil || !strings.Contains(strings.ReplaceAll(ev, " ", ""), `"id":"pod-b"`) {
		t.Fatalf("resumed watch: %q, %v; want pod-b only", ev, err)
	}

	// The controller stops: the streams end.
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := s.next(); err != nil {
				done <- err
				return
			}
		}
	}()
	rc.c.Stop()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("watch still open after the controller stopped")
	}
}
