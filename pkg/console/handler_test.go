package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	"github.com/iotfabric/iotfabric/pkg/console"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// clientLister serves the summary's lists from a controller's gRPC API.
type clientLister struct{ c fabrictest.Clients }

func (l clientLister) ListNetworks(ctx context.Context, r *v1.ListNetworksRequest) (*v1.ListNetworksResponse, error) {
	return l.c.Net.ListNetworks(ctx, r)
}
func (l clientLister) ListGateways(ctx context.Context, r *v1.ListGatewaysRequest) (*v1.ListGatewaysResponse, error) {
	return l.c.GW.ListGateways(ctx, r)
}
func (l clientLister) ListEndpoints(ctx context.Context, r *v1.ListEndpointsRequest) (*v1.ListEndpointsResponse, error) {
	return l.c.EP.ListEndpoints(ctx, r)
}

// allowOnly lets callers with the header X-Test-Role: viewer call anything.
func allowOnly(r *http.Request, method string) (context.Context, error) {
	if r.Header.Get("X-Test-Role") != "viewer" {
		return nil, status.Errorf(codes.PermissionDenied, "%s: not allowed", method)
	}
	return r.Context(), nil
}

func get(t *testing.T, h http.Handler, target, role string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	if role != "" {
		req.Header.Set("X-Test-Role", role)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Result()
}

func TestConfig(t *testing.T) {
	on, off := true, false
	for _, tc := range []struct {
		cfg  console.Config
		rest bool
		want bool
	}{{console.Config{}, true, true}, {console.Config{}, false, false}, {console.Config{Enabled: &off}, true, false},
		{console.Config{Enabled: &on}, false, false}, {console.Config{Enabled: &on}, true, true}} {
		if got := tc.cfg.On(tc.rest); got != tc.want {
			t.Errorf("%+v On(%v) = %v", tc.cfg, tc.rest, got)
		}
	}
	for _, bad := range []console.Config{{GraphiteURL: "127.0.0.1:8080"}, {GraphiteURL: "ftp://x"}, {GraphiteURL: "http://x/?a=b"},
		{AlertAfter: -time.Second}, {SensorTargets: strings.Repeat("a", 2000)}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v: no error", bad)
		} else if !strings.Contains(err.Error(), "console.") {
			t.Errorf("%+v: error %q does not name the key", bad, err)
		}
	}
	if err := (console.Config{GraphiteURL: "http://127.0.0.1:8080/graphite"}).Validate(); err != nil {
		t.Error(err)
	}
}

// TestStaticAndHeaders: every page path serves the single page with a
// content security policy that runs only the console's own script.
func TestStaticAndHeaders(t *testing.T) {
	fc := fabrictest.StartController(t)
	h, err := console.New(console.Config{}, console.Options{Lister: clientLister{fc.Dial()}, Authorize: allowOnly})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/ui/", "/ui/index.html", "/ui/overview", "/ui/console.js", "/ui/console.css", "/ui/config.json"} {
		resp := get(t, h, p, "")
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %s", p, resp.Status)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
			t.Errorf("%s: CSP %q", p, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", p)
		}
		switch {
		case p == "/ui/console.js" && !strings.Contains(string(body), "textContent"):
			t.Errorf("%s: not the script", p)
		case p == "/ui/overview" && !strings.Contains(string(body), `<script src="/ui/console.js"`):
			t.Errorf("%s: not the page", p)
		case p == "/ui/config.json" && !strings.Contains(string(body), `"graphite":false`):
			t.Errorf("%s: %s", p, body)
		}
	}
	// The script never parses API data as HTML.
	js := string(must(io.ReadAll(get(t, h, "/ui/console.js", "").Body)))
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("} {
		if strings.Contains(js, bad) {
			t.Errorf("console.js uses %s", bad)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestSummary counts what a real controller holds, and is refused to a
// caller the authorizer refuses.
func TestSummary(t *testing.T) {
	fc := fabrictest.StartController(t)
	cl := fc.Dial()
	ctx := context.Background()
	if _, err := cl.Net.CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "blue", Subnets: []string{"10.1.0.0/16"}}}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := cl.GW.CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{Name: fmt.Sprint("gw", i), UnderlayAddress: fmt.Sprintf("192.0.2.%d", i+1)}}); err != nil {
			t.Fatal(err)
		}
	}
	var eps []*v1.Endpoint
	for i := range 7 {
		eps = append(eps, &v1.Endpoint{Id: fmt.Sprint("ep", i), Network: "blue", Gateway: fmt.Sprint("gw", i%3)})
	}
	if _, err := cl.EP.CreateEndpoints(ctx, &v1.CreateEndpointsRequest{Endpoints: eps}); err != nil {
		t.Fatal(err)
	}
	h, err := console.New(console.Config{}, console.Options{Lister: clientLister{cl}, Authorize: allowOnly})
	if err != nil {
		t.Fatal(err)
	}
	resp := get(t, h, "/ui/api/summary", "viewer")
	var s console.Summary
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %v", resp.Status, err)
	}
	if s.Networks != 1 || s.Gateways != 3 || s.Endpoints != 7 || s.NetworkEndpoints["blue"] != 7 || s.GatewayEndpoints["gw0"] != 3 ||
		s.GatewayStates["registered"] != 3 || s.EndpointRevision == 0 {
		t.Errorf("summary %+v", s)
	}
	// A change moves the store's revision: the counts follow.
	if _, err := cl.EP.CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: "ep-late", Network: "blue", Gateway: "gw2"}}); err != nil {
		t.Fatal(err)
	}
	s = console.Summary{}
	if err := json.NewDecoder(get(t, h, "/ui/api/summary", "viewer").Body).Decode(&s); err != nil || s.Endpoints != 8 || s.GatewayEndpoints["gw2"] != 3 {
		t.Errorf("after a change: %+v %v", s, err)
	}
	resp = get(t, h, "/ui/api/summary", "")
	var e struct {
		Code     int
		CodeName string
		Message  string
	}
	json.NewDecoder(resp.Body).Decode(&e)
	if resp.StatusCode != http.StatusForbidden || e.Code != int(codes.PermissionDenied) || e.CodeName != "PERMISSION_DENIED" || !strings.Contains(e.Message, "ListNetworks") {
		t.Errorf("refused caller: %s %+v", resp.Status, e)
	}
}

// TestGraphiteProxyBounds: only the render API, only its parameters, bounded.
func TestGraphiteProxyBounds(t *testing.T) {
	var got []string
	graphite := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.String())
		switch r.URL.Query().Get("target") {
		case "html":
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, "<script>alert(1)</script>")
		case "big":
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", fmt.Sprint(9<<20))
		default:
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `[{"target":"a.b","datapoints":[[1,2]]}]`)
		}
	}))
	defer graphite.Close()
	fc := fabrictest.StartController(t)
	h, err := console.New(console.Config{GraphiteURL: graphite.URL + "/"}, console.Options{Lister: clientLister{fc.Dial()}, Authorize: allowOnly})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		query string
		role  string
		code  int
	}{
		{"target=a.*&from=-1h", "viewer", 200},
		{"target=a.*", "", 403},
		{"", "viewer", 400},
		{"target=a&format=pickle", "viewer", 400},
		{"target=a&local=1", "viewer", 400},
		{"target=a&from=-1h&from=-2h", "viewer", 400},
		{"target=" + strings.Repeat("x", 1100), "viewer", 400},
		{"target=" + strings.Repeat("x", 5000), "viewer", 400},
		{strings.Repeat("target=a&", 9), "viewer", 400},
		{"target=html", "viewer", 503},
		{"target=big", "viewer", 429},
	} {
		resp := get(t, h, "/ui/graphite/render?"+tc.query, tc.role)
		if resp.StatusCode != tc.code {
			b, _ := io.ReadAll(resp.Body)
			t.Errorf("%.60s: %s %s, want %d", tc.query, resp.Status, b, tc.code)
		}
	}
	if len(got) != 3 || !strings.HasPrefix(got[0], "/render?") || !strings.Contains(got[0], "format=json") {
		t.Errorf("graphite saw %q", got)
	}
	u, _ := url.Parse(got[0])
	if u.Query().Get("target") != "a.*" || u.Query().Get("from") != "-1h" {
		t.Errorf("graphite saw %q", got[0])
	}
	// Other paths of graphite-web are not reachable through the console.
	if resp := get(t, h, "/ui/graphite/metrics/find?query=*", "viewer"); resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Type") == "application/json" {
		t.Errorf("metrics/find reachable")
	}
}
