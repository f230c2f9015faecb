package rest

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/iotfabric/iotfabric/pkg/api"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	"github.com/iotfabric/iotfabric/pkg/validate"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// fakeNets is a NetworkService whose watch sends what the test gives it.
// (The whole controller behind the REST API is tested in pkg/server.)
type fakeNets struct {
	v1.UnimplementedNetworkServiceServer
	events chan *v1.NetworkEvent
	ended  chan error // a watch's result
}

func (f *fakeNets) WatchNetworks(_ *v1.WatchRequest, s grpc.ServerStreamingServer[v1.NetworkEvent]) error {
	err := func() error {
		for {
			select {
			case ev := <-f.events:
				if err := s.Send(ev); err != nil {
					return err
				}
			case <-s.Context().Done():
				return s.Context().Err()
			}
		}
	}()
	f.ended <- err
	return err
}

func (f *fakeNets) CreateNetwork(_ context.Context, r *v1.CreateNetworkRequest) (*v1.VirtualNetwork, error) {
	if err := validate.Name("network", r.GetNetwork().GetName()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return r.GetNetwork(), nil
}

func newTestHandler(t testing.TB, tune func(*Options)) (*Handler, *fakeNets) {
	t.Helper()
	f := &fakeNets{events: make(chan *v1.NetworkEvent), ended: make(chan error, 16)}
	opts := Options{
		Register:   func(g grpc.ServiceRegistrar) { v1.RegisterNetworkServiceServer(g, f) },
		Authorizer: &api.Authorizer{},
		Anonymous:  tlsconfig.Identity{Role: tlsconfig.RoleAdmin, Name: "test"},
	}
	if tune != nil {
		tune(&opts)
	}
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h, f
}

func openWatch(t *testing.T, ctx context.Context, url string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/networks:watch", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// A watch writes a comment line every heartbeat and an event as one data
// line of protojson.
func TestWatchHeartbeatAndEvents(t *testing.T) {
	h, f := newTestHandler(t, func(o *Options) { o.Heartbeat = 20 * time.Millisecond })
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close) // after the watches' bodies are closed
	resp := openWatch(t, context.Background(), srv.URL)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("watch: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	r := bufio.NewReader(resp.Body)
	readUntil := func(prefix string) string {
		t.Helper()
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("looking for %q: %v", prefix, err)
			}
			if strings.HasPrefix(line, prefix) {
				return line
			}
		}
	}
	readUntil(": heartbeat")
	f.events <- &v1.NetworkEvent{Type: v1.EventType_EVENT_TYPE_PUT, Network: &v1.VirtualNetwork{Name: "n1"}, Revision: 42}
	if id := readUntil("id: "); id != "id: 42\n" {
		t.Errorf("id line %q", id)
	}
	data := readUntil("data: ")
	var ev map[string]any
	if err := json.Unmarshal([]byte(strings.TrimPrefix(data, "data: ")), &ev); err != nil || ev["revision"] != "42" || ev["network"].(map[string]any)["name"] != "n1" {
		t.Errorf("data line %q: %v", data, err)
	}
	readUntil(": heartbeat")
}

// A watch outlives the server's read timeout (which bounds the request).
func TestWatchOutlivesReadTimeout(t *testing.T) {
	h, _ := newTestHandler(t, func(o *Options) { o.Heartbeat = 50 * time.Millisecond })
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ReadTimeout = 200 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	resp := openWatch(t, context.Background(), srv.URL)
	r := bufio.NewReader(resp.Body)
	start := time.Now()
	for time.Since(start) < time.Second {
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatalf("watch ended after %v: %v", time.Since(start), err)
		}
	}
}

// A client that stops reading is cut off once the watch holds StreamBuffer
// events for it: the stream to the service ends, memory stays bounded.
func TestWatchSlowClientCutOff(t *testing.T) {
	h, f := newTestHandler(t, func(o *Options) { o.StreamBuffer = 4 })
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)                                // after the watches' bodies are closed
	resp := openWatch(t, context.Background(), srv.URL) // never read
	_ = resp
	big := strings.Repeat("x", 256<<10)
	deadline := time.After(20 * time.Second)
	for sent := 0; ; sent++ {
		select {
		case f.events <- &v1.NetworkEvent{Network: &v1.VirtualNetwork{Name: big}}:
		case err := <-f.ended:
			t.Logf("cut off after %d events of 256 KiB: %v", sent, err)
			if sent > 1000 {
				t.Errorf("%d events sent before the cut", sent)
			}
			return
		case <-deadline:
			t.Fatalf("slow client not cut off after %d events", sent)
		}
	}
}

// A watch ends on the service's side when its client goes away.
func TestWatchClientGone(t *testing.T) {
	h, f := newTestHandler(t, nil)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close) // after the watches' bodies are closed
	ctx, cancel := context.WithCancel(context.Background())
	resp := openWatch(t, ctx, srv.URL)
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	cancel()
	select {
	case <-f.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("watch still running after its client went")
	}
}

// Past MaxStreams, a watch is refused with 429 RESOURCE_EXHAUSTED; Close
// ends the open ones.
func TestWatchLimit(t *testing.T) {
	h, f := newTestHandler(t, func(o *Options) { o.MaxStreams = 1 })
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close) // after the watches' bodies are closed
	if resp := openWatch(t, context.Background(), srv.URL); resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	resp := openWatch(t, context.Background(), srv.URL)
	b, _ := io.ReadAll(resp.Body)
	var e Error
	if err := json.Unmarshal(b, &e); err != nil || resp.StatusCode != http.StatusTooManyRequests || e.CodeName != "RESOURCE_EXHAUSTED" || resp.Header.Get("Retry-After") == "" {
		t.Errorf("second watch: %d %s", resp.StatusCode, b)
	}
	h.EndStreams()
	start := time.Now()
	select {
	case <-f.ended:
		t.Logf("watch ended %v after EndStreams", time.Since(start))
	case <-time.After(30 * time.Second): // 5 s was passed once in CI, with every package's tests at once on 2 cores
		t.Fatal("watch still running 30 s after EndStreams")
	}
}

// The in-process server knows a caller only by the token of a request in
// progress; the token metadata a request carries is replaced.
func TestCallTokens(t *testing.T) {
	var cs calls
	cs.m = map[string]Caller{}
	admin := Caller{Identity: tlsconfig.Identity{Role: tlsconfig.RoleAdmin, Name: "a"}}
	r, end := cs.begin(httptest.NewRequest(http.MethodGet, "/", nil), admin)
	out := withToken(metadata.AppendToOutgoingContext(r.Context(), callMD, "forged"))
	md, _ := metadata.FromOutgoingContext(out)
	if v := md.Get(callMD); len(v) != 1 || v[0] == "forged" {
		t.Fatalf("outgoing token %v", v)
	}
	in := metadata.NewIncomingContext(context.Background(), md)
	if id, _ := cs.identify(in); id != admin.Identity {
		t.Errorf("identity %v during the request", id)
	}
	for _, md := range []metadata.MD{nil, metadata.Pairs(callMD, "forged"), metadata.Pairs(callMD, md.Get(callMD)[0], callMD, "x")} {
		if id, _ := cs.identify(metadata.NewIncomingContext(context.Background(), md)); id.Role != tlsconfig.RoleNone {
			t.Errorf("metadata %v: identity %v", md, id)
		}
	}
	end()
	if id, _ := cs.identify(in); id.Role != tlsconfig.RoleNone {
		t.Errorf("identity %v after the request", id)
	}
	// Without a request, no token at all.
	md, _ = metadata.FromOutgoingContext(withToken(metadata.AppendToOutgoingContext(context.Background(), callMD, "forged")))
	if v := md.Get(callMD); len(v) != 0 {
		t.Errorf("token %v without a request", v)
	}
}

// The in-process server denies a method the role table does not know, to an
// admin too, as the gRPC API does.
func TestUnknownMethodDenied(t *testing.T) {
	called := false
	bogus := &grpc.ServiceDesc{ServiceName: "iotfabric.v1.BogusService", HandlerType: (*any)(nil), Methods: []grpc.MethodDesc{{
		MethodName: "Call",
		Handler: func(srv any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (any, error) {
			req := &v1.NameRequest{}
			if err := dec(req); err != nil {
				return nil, err
			}
			return in(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/iotfabric.v1.BogusService/Call"}, func(context.Context, any) (any, error) {
				called = true
				return &v1.VirtualNetwork{}, nil
			})
		}}}}
	h, _ := newTestHandler(t, func(o *Options) {
		reg := o.Register
		o.Register = func(g grpc.ServiceRegistrar) { reg(g); g.RegisterService(bogus, struct{}{}) }
	})
	admin := Caller{Identity: tlsconfig.Identity{Role: tlsconfig.RoleAdmin, Name: "a"}}
	r, end := h.calls.begin(httptest.NewRequest(http.MethodGet, "/", nil), admin)
	defer end()
	err := h.conn.Invoke(r.Context(), "/iotfabric.v1.BogusService/Call", &v1.NameRequest{}, &v1.VirtualNetwork{})
	if called {
		t.Error("the unknown method ran")
	}
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "unknown method") {
		t.Errorf("unknown method: %v", err)
	}
	if _, err := v1.NewNetworkServiceClient(h.conn).CreateNetwork(r.Context(), &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "n1"}}); err != nil {
		t.Errorf("known method as admin: %v", err)
	}
	if _, err := v1.NewNetworkServiceClient(h.conn).CreateNetwork(context.Background(), &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "n1"}}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("known method without a request's token: %v", err)
	}
}

// FuzzRequestBody posts anything as a CreateNetwork body: the answer is the
// network, or the error JSON with a consistent code, name and HTTP status.
func FuzzRequestBody(f *testing.F) {
	for _, s := range []string{`{"network":{"name":"n1"}}`, `{"network":{"name":"bad name"}}`, `{`, `[]`, `{"network":7}`,
		`{"colour":1}`, `{"network":{"name":"` + strings.Repeat("n", 64) + `"}}`, "\xff", `null`, `{"network":{"subnets":[1]}}`} {
		f.Add(s, "application/json")
	}
	f.Add(`name=x`, "text/plain")
	h, _ := newTestHandler(f, nil)
	f.Fuzz(func(t *testing.T, body, ctype string) {
		req := httptest.NewRequest(http.MethodPost, "/v1/networks", strings.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code == 200 {
			var n map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &n); err != nil {
				t.Fatalf("200 with %q: %v", w.Body.String(), err)
			}
			return
		}
		var e Error
		dec := json.NewDecoder(w.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("%d: not the error JSON: %v", w.Code, err)
		}
		if e.CodeName != codeName(e.Code) || e.Message == "" || e.Details == nil {
			t.Fatalf("error %+v", e)
		}
		if want := runtime.HTTPStatusFromCode(e.Code); w.Code != want && w.Code != http.StatusUnsupportedMediaType && w.Code != http.StatusRequestEntityTooLarge {
			t.Fatalf("HTTP %d for %v", w.Code, e.Code)
		}
		if w.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("Content-Type %q", w.Header().Get("Content-Type"))
		}
	})
}
