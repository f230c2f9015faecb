// Package rest is the controller's REST API: the iotfabric.v1 services
// (except the gateways' AgentService and their enrollment calls) as JSON over
// HTTP, through the grpc-gateway code generated from the google.api.http
// annotations of the protos (proto/iotfabric/v1/gw), the watches as
// server-sent events, and the OpenAPI document at /openapi.json
// (docs/rest.md).
//
// It authorizes exactly as the gRPC API does, with the same pkg/api
// Authorizer: the handler authenticates the caller of each HTTP request (its
// verified client certificate, else the listener's anonymous identity), and
// the gateway calls the services on a gRPC server of its own, in process
// (an in-memory listener nobody else reaches), whose interceptors are the
// API's — metrics, recovery, the Authorizer with its table and its audit log.
// That server's Authorizer takes the caller from a random token the handler
// makes per request and passes as call metadata: a request cannot name
// itself a caller (the handler forwards no HTTP header as metadata and sets
// the token itself), and the external gRPC listener never reads the token.
//
// It owns the HTTP side only: bounds on bodies and streams, error JSON,
// server-sent events. The http.Server, its listener and TLS are pkg/server's.
package rest

import (
	"context"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/iotfabric/iotfabric/pkg/api"
	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	"github.com/iotfabric/iotfabric/pkg/validate"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
	gw "github.com/iotfabric/iotfabric/proto/iotfabric/v1/gw"
)

// Defaults of Options.
const (
	// DefaultMaxStreams bounds the watches (server-sent event streams) one
	// listener serves at once.
	DefaultMaxStreams = 100
	// DefaultHeartbeat is the period of a watch's comment lines, which keep
	// proxies from closing it and let the client notice a dead connection.
	DefaultHeartbeat = 15 * time.Second
	// DefaultStreamBuffer bounds the events a watch holds for a client that
	// reads slower than they come; past it (or DefaultStreamBufferBytes) the
	// client is cut off.
	DefaultStreamBuffer      = 1024
	DefaultStreamBufferBytes = 4 << 20
	// WriteTimeout bounds each write to a client: a whole response, or one
	// event of a watch.
	WriteTimeout = 30 * time.Second
)

// Options configure a Handler.
type Options struct {
	// Register registers the API's services on the in-process gRPC server
	// (pkg/api's Services.Register).
	Register func(grpc.ServiceRegistrar)
	// Authorizer is the gRPC API's (its audit log, revocations); the
	// in-process server uses a copy whose Identify takes the caller from
	// the HTTP request.
	Authorizer *api.Authorizer
	// Unary and Stream are the interceptors run before the Authorizer
	// (metrics, recovery), as on the gRPC API.
	Unary  []grpc.UnaryServerInterceptor
	Stream []grpc.StreamServerInterceptor
	// Anonymous is the identity of a caller without a client certificate
	// (the zero identity: such requests are refused with 401).
	Anonymous tlsconfig.Identity
	// MaxStreams bounds the watches served at once (0: DefaultMaxStreams).
	MaxStreams int
	// Heartbeat is the period of a watch's comment lines (0: DefaultHeartbeat).
	Heartbeat time.Duration
	// StreamBuffer, StreamBufferBytes bound what a watch holds for a slow
	// client (0: the defaults).
	StreamBuffer, StreamBufferBytes int
	// Extra are more handlers on the same listener, by http.ServeMux pattern
	// (the web console at "/ui/"), behind the same authentication: CallerFrom
	// gives them the caller.
	Extra  map[string]http.Handler
	Logger *slog.Logger
}

// Handler serves the REST API. The http.Server that serves it must verify
// client certificates against the API's CA in its TLS configuration
// (tlsconfig.ServerWith): the Handler takes a peer certificate as verified.
type Handler struct {
	opts    Options
	log     *slog.Logger
	mux     *http.ServeMux
	calls   calls
	gs      *grpc.Server
	conn    *grpc.ClientConn
	streams chan struct{} // one token per watch served
	ctx     context.Context
	cancel  context.CancelFunc // ends the watches
}

// openMD is the header the in-process server sends when a stream passed its
// interceptors: the watch is open and the HTTP response may begin.
const openMD = "x-iotfabric-stream-open"

// marshaler is the JSON of requests and responses: protojson with
// lowerCamelCase names and every field (grpc-gateway's default), refusing
// unknown fields.
var marshaler = &runtime.HTTPBodyMarshaler{Marshaler: &runtime.JSONPb{
	MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
	UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
}}

// New builds the handler and starts its in-process gRPC server; Close stops it.
func New(opts Options) (*Handler, error) {
	if opts.Register == nil || opts.Authorizer == nil {
		return nil, fmt.Errorf("rest: Register and Authorizer are required")
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = DefaultMaxStreams
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = DefaultHeartbeat
	}
	if opts.StreamBuffer <= 0 {
		opts.StreamBuffer = DefaultStreamBuffer
	}
	if opts.StreamBufferBytes <= 0 {
		opts.StreamBufferBytes = DefaultStreamBufferBytes
	}
	h := &Handler{opts: opts, log: opts.Logger, streams: make(chan struct{}, opts.MaxStreams)}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.calls.m = make(map[string]Caller)
	h.ctx, h.cancel = context.WithCancel(context.Background())

	authz := *opts.Authorizer
	authz.Identify = h.calls.identify
	h.gs = grpc.NewServer(
		grpc.ChainUnaryInterceptor(append(opts.Unary[:len(opts.Unary):len(opts.Unary)], authz.Unary)...),
		grpc.ChainStreamInterceptor(append(opts.Stream[:len(opts.Stream):len(opts.Stream)], authz.Stream, streamOpen)...),
		grpc.MaxRecvMsgSize(model.MaxMsgSize), grpc.MaxSendMsgSize(model.MaxMsgSize),
	)
	opts.Register(h.gs)
	lis := bufconn.Listen(1 << 20)
	go h.gs.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///iotfabric-rest",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(tokenUnary), grpc.WithChainStreamInterceptor(tokenStream),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(model.MaxMsgSize), grpc.MaxCallSendMsgSize(model.MaxMsgSize)),
	)
	if err != nil {
		h.gs.Stop()
		return nil, fmt.Errorf("rest: in-process client: %w", err)
	}
	h.conn = conn

	gm := runtime.NewServeMux(
		runtime.WithErrorHandler(gatewayError),
		// No HTTP header becomes call metadata, nor metadata a header.
		runtime.WithIncomingHeaderMatcher(func(string) (string, bool) { return "", false }),
		runtime.WithOutgoingHeaderMatcher(func(string) (string, bool) { return "", false }),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, marshaler),
		runtime.WithDisableHTTPMethodOverride(),
	)
	ctx := context.Background()
	for _, reg := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		gw.RegisterNetworkServiceHandler, gw.RegisterGatewayServiceHandler, gw.RegisterEndpointServiceHandler,
		gw.RegisterIpamServiceHandler, gw.RegisterPeerServiceHandler, gw.RegisterRouteServiceHandler,
		gw.RegisterEnrollmentServiceHandler, gw.RegisterGatewayLinkServiceHandler,
	} {
		if err := reg(ctx, gm, conn); err != nil {
			h.Close()
			return nil, fmt.Errorf("rest: %w", err)
		}
	}

	h.mux = http.NewServeMux()
	h.mux.Handle("/v1/", gm)
	h.mux.HandleFunc("GET /openapi.json", h.openapi)
	nws, gws, eps, rts := v1.NewNetworkServiceClient(conn), v1.NewGatewayServiceClient(conn), v1.NewEndpointServiceClient(conn), v1.NewRouteServiceClient(conn)
	h.mux.Handle("GET /v1/networks:watch", watch(h, func() *v1.WatchRequest { return &v1.WatchRequest{} }, nws.WatchNetworks, (*v1.NetworkEvent).GetRevision))
	h.mux.Handle("GET /v1/gateways:watch", watch(h, func() *v1.WatchRequest { return &v1.WatchRequest{} }, gws.WatchGateways, (*v1.GatewayEvent).GetRevision))
	h.mux.Handle("GET /v1/endpoints:watch", watch(h, func() *v1.WatchRequest { return &v1.WatchRequest{} }, eps.WatchEndpoints, (*v1.EndpointEvent).GetRevision))
	h.mux.Handle("GET /v1/routes:watch", watch(h, func() *v1.WatchRoutesRequest { return &v1.WatchRoutesRequest{} }, rts.WatchRoutes, nil))
	for pattern, x := range opts.Extra {
		h.mux.Handle(pattern, x)
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, status.Errorf(codes.NotFound, "no such path %s (the API is under /v1/, its description at /openapi.json)", validate.Quote(r.URL.Path)))
	})
	return h, nil
}

// streamOpen, the in-process server's last stream interceptor, sends the
// stream's header before the handler runs: the REST side then knows the
// call was admitted and answers 200 at once, also for a watch whose first
// event comes much later.
func streamOpen(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := ss.SendHeader(metadata.Pairs(openMD, "1")); err != nil {
		return err
	}
	return handler(srv, ss)
}

// ServeHTTP authenticates the caller, bounds the request and serves it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := h.authenticate(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := checkContentType(r); err != nil {
		writeErrorStatus(w, err, http.StatusUnsupportedMediaType)
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/v1/") {
		// The API's calls are refused by the Authorizer (revoked or expired
		// certificates, audited with their method); the other paths here.
		if err := h.opts.Authorizer.Admit(r.Context(), c.Identity, c.Cert, r.Method+" "+validate.Quote(r.URL.Path)); err != nil {
			writeError(w, err)
			return
		}
	}
	r, end := h.calls.begin(r, c)
	defer end()
	if r.Body != nil {
		lb := &limitedBody{rc: http.MaxBytesReader(w, r.Body, validate.MaxRequestBytes)}
		r.Body = lb
		r = r.WithContext(context.WithValue(r.Context(), limitKey{}, lb))
	}
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(WriteTimeout))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	h.mux.ServeHTTP(w, r)
}

// authenticate returns the caller: its verified client certificate's
// identity, else the anonymous identity, else UNAUTHENTICATED.
func (h *Handler) authenticate(r *http.Request) (Caller, error) {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		leaf := r.TLS.PeerCertificates[0]
		return Caller{Identity: tlsconfig.IdentityOf(leaf), Cert: leaf}, nil
	}
	if h.opts.Anonymous.Role == tlsconfig.RoleNone {
		return Caller{}, status.Error(codes.Unauthenticated, "no client certificate, and this listener serves no anonymous callers (api.http_anonymous: none): "+
			"present a client certificate signed by the API's CA (docs/rest.md)")
	}
	return Caller{Identity: h.opts.Anonymous}, nil
}

// checkContentType refuses a request body that is not JSON. A browser sends
// a cross-site form or text/plain body without asking; application/json it
// sends only after a CORS preflight, which this API never answers: so a page
// elsewhere cannot make a logged-in browser change anything.
func checkContentType(r *http.Request) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodDelete, http.MethodOptions:
		return nil
	}
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && mt == "application/json" {
		return nil
	}
	if ct == "" && r.ContentLength == 0 {
		return nil // no body
	}
	return status.Errorf(codes.InvalidArgument, "Content-Type %s: the API takes application/json", validate.Quote(ct))
}

// openapi serves the OpenAPI document to callers with a role.
func (h *Handler) openapi(w http.ResponseWriter, r *http.Request) {
	if c, _ := CallerFrom(r.Context()); c.Identity.Role == tlsconfig.RoleNone {
		writeError(w, status.Errorf(codes.PermissionDenied, "%s may not read the API's description: it has no iotfabric role (docs/security.md)", c.Identity))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(OpenAPI)
}

// Close ends the watches and stops the in-process server. The http.Server
// should be shut down first, or at least together (its watches end here).
func (h *Handler) Close() {
	h.cancel()
	if h.conn != nil {
		h.conn.Close()
	}
	h.gs.Stop()
}

// EndStreams ends the watches in progress (before http.Server.Shutdown,
// which waits for the requests in progress).
func (h *Handler) EndStreams() { h.cancel() }
