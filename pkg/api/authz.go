package api

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/big"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Authorizer is the API's one authorization point: its interceptors (Unary,
// Stream) decide every call from the caller's identity (tlsconfig.IdentityOf
// of the verified client certificate) and the table of methods per role
// (methods, below), restrict a gateway to its own gateway, and write the
// audit log. A method the table does not know is denied to everyone.
//
// pkg/server installs it; a program that registers Services on a gRPC
// server of its own must install it too, or nothing is checked.
type Authorizer struct {
	// Anonymous is the identity of a caller on a connection without TLS
	// (tlsconfig.Admin on a loopback listener without TLS; the zero
	// identity, which may call nothing but the health check, otherwise).
	Anonymous tlsconfig.Identity
	// Audit receives one line per mutating call and per denied call (nil:
	// discarded).
	Audit *slog.Logger
	// PeerVerified says that the server's TLS configuration verifies client
	// certificates itself (tlsconfig.ServerWith) and leaves VerifiedChains
	// empty: a peer certificate on a connection has then passed it. A
	// certificate that has expired (accepted within the renewal grace) may
	// then only renew.
	PeerVerified bool
	// Revocations, when set, refuses revoked certificates on every call, and
	// ends a stream when its certificate is revoked.
	Revocations Revocations
	// Identify, when set, gives the caller and its verified certificate (nil:
	// none) instead of the connection: pkg/rest's in-process gRPC server,
	// whose callers its HTTP listener authenticated. The decision, the table
	// and the audit log are the same.
	Identify func(ctx context.Context) (tlsconfig.Identity, *x509.Certificate)
}

// Revocations is the set of revoked certificate serials (pkg/enroll's).
type Revocations interface {
	Revoked(serial *big.Int) bool
	// Watch returns a channel closed when serial is revoked, and a function
	// to call when no longer interested.
	Watch(serial *big.Int) (<-chan struct{}, func())
}

// roles is a set of roles.
type roles uint8

func (r roles) has(x tlsconfig.Role) bool { return r&(1<<x) != 0 }

const (
	viewer  roles = 1 << tlsconfig.RoleViewer
	admin   roles = 1 << tlsconfig.RoleAdmin
	gateway roles = 1 << tlsconfig.RoleGateway
	anyone  roles = 1<<tlsconfig.RoleNone | viewer | admin | gateway
)

// rule is one method's row of the table.
type rule struct {
	roles roles
	// mutates: the call changes state; it is audited.
	mutates bool
	// gateway, when set, returns the gateway the request acts for: a gateway
	// identity may act for its own only.
	gateway func(req any) string
	// object names what a mutating request acts on, for the audit log.
	object func(req any) string
	// routine: the call is a gateway's routine traffic (an endpoint
	// report, one per pod added or deleted: a deletion is reported as a
	// full sync): its audit line is auditReport, which the bounded log
	// limits per caller and outcome like a refusal, instead of auditCall,
	// which it keeps whole.
	routine bool
	// expiredOK: a certificate accepted within the renewal grace may call it.
	expiredOK bool
}

// methods is the table: role x service x method. Viewers read (get, list,
// watch), admins do everything, a gateway calls the agent service for its own
// gateway and reads networks (its agent learns a network's subnets and block
// sizes with GetNetwork). The health check is open to every caller.
var methods = map[string]rule{
	v1.NetworkService_CreateNetwork_FullMethodName: {roles: admin, mutates: true, object: func(r any) string { return r.(*v1.CreateNetworkRequest).GetNetwork().GetName() }},
	v1.NetworkService_GetNetwork_FullMethodName:    {roles: admin | viewer | gateway},
	v1.NetworkService_ListNetworks_FullMethodName:  {roles: admin | viewer},
	v1.NetworkService_UpdateNetwork_FullMethodName: {roles: admin, mutates: true, object: func(r any) string { return r.(*v1.UpdateNetworkRequest).GetNetwork().GetName() }},
	v1.NetworkService_DeleteNetwork_FullMethodName: {roles: admin, mutates: true, object: nameObject},
	v1.NetworkService_WatchNetworks_FullMethodName: {roles: admin | viewer},

	v1.GatewayService_CreateGateway_FullMethodName: {roles: admin, mutates: true, object: func(r any) string { return r.(*v1.CreateGatewayRequest).GetGateway().GetName() }},
	v1.GatewayService_GetGateway_FullMethodName:    {roles: admin | viewer},
	v1.GatewayService_ListGateways_FullMethodName:  {roles: admin | viewer},
	v1.GatewayService_UpdateGateway_FullMethodName: {roles: admin, mutates: true, object: func(r any) string { return r.(*v1.UpdateGatewayRequest).GetGateway().GetName() }},
	v1.GatewayService_DeleteGateway_FullMethodName: {roles: admin, mutates: true, object: nameObject},
	v1.GatewayService_WatchGateways_FullMethodName: {roles: admin | viewer},

	v1.EndpointService_CreateEndpoint_FullMethodName: {roles: admin, mutates: true, object: func(r any) string { return r.(*v1.CreateEndpointRequest).GetEndpoint().GetId() }},
	v1.EndpointService_CreateEndpoints_FullMethodName: {roles: admin, mutates: true, object: func(r any) string {
		return strconv.Itoa(len(r.(*v1.CreateEndpointsRequest).GetEndpoints())) + " endpoints"
	}},
	v1.EndpointService_GetEndpoint_FullMethodName:    {roles: admin | viewer},
	v1.EndpointService_ListEndpoints_FullMethodName:  {roles: admin | viewer},
	v1.EndpointService_UpdateEndpoint_FullMethodName: {roles: admin, mutates: true, object: func(r any) string { return r.(*v1.UpdateEndpointRequest).GetEndpoint().GetId() }},
	v1.EndpointService_DeleteEndpoint_FullMethodName: {roles: admin, mutates: true, object: func(r any) string { return r.(*v1.GetEndpointRequest).GetId() }},
	v1.EndpointService_WatchEndpoints_FullMethodName: {roles: admin | viewer},

	v1.IpamService_GetIpam_FullMethodName: {roles: admin | viewer},

	v1.AgentService_Register_FullMethodName: {roles: admin | gateway, mutates: true,
		gateway: func(r any) string { return r.(*v1.RegisterRequest).GetGateway().GetName() }},
	v1.AgentService_ReportEndpoints_FullMethodName: {roles: admin | gateway, mutates: true, routine: true,
		gateway: func(r any) string { return r.(*v1.ReportEndpointsRequest).GetGateway() },
		object: func(r any) string {
			q := r.(*v1.ReportEndpointsRequest)
			return fmt.Sprintf("%s: %d endpoints, full sync %t", q.GetGateway(), len(q.GetEndpoints()), q.GetFullSync())
		}},
	v1.AgentService_LeaseBlock_FullMethodName: {roles: admin | gateway, mutates: true,
		gateway: func(r any) string { return r.(*v1.LeaseBlockRequest).GetGateway() },
		object: func(r any) string {
			q := r.(*v1.LeaseBlockRequest)
			return fmt.Sprintf("%s: %s IPv%d", q.GetGateway(), q.GetNetwork(), q.GetFamily())
		}},
	v1.AgentService_WatchGatewayRoutes_FullMethodName: {roles: admin | gateway,
		gateway: func(r any) string { return r.(*v1.WatchGatewayRoutesRequest).GetGateway() }},

	v1.PeerService_AddPeer_FullMethodName:    {roles: admin, mutates: true, object: func(r any) string { return r.(*v1.AddPeerRequest).GetPeer().GetAddress() }},
	v1.PeerService_DeletePeer_FullMethodName: {roles: admin, mutates: true, object: func(r any) string { return r.(*v1.DeletePeerRequest).GetAddress() }},
	v1.PeerService_ListPeers_FullMethodName:  {roles: admin | viewer},

	v1.RouteService_ListRoutes_FullMethodName:  {roles: admin | viewer},
	v1.RouteService_WatchRoutes_FullMethodName: {roles: admin | viewer},

	v1.GatewayLinkService_GetGatewayLinks_FullMethodName: {roles: admin | viewer},

	// Join's credential is its bootstrap token: callers without a
	// certificate make it. Renew is for the caller's own identity (the
	// certificate it presents), also expired within the renewal grace.
	v1.EnrollmentService_Join_FullMethodName:  {roles: anyone, mutates: true, object: func(r any) string { return "token " + tokenID(r.(*v1.JoinRequest).GetToken()) }},
	v1.EnrollmentService_Renew_FullMethodName: {roles: admin | viewer | gateway, mutates: true, expiredOK: true},
	v1.EnrollmentService_CreateToken_FullMethodName: {roles: admin, mutates: true, object: func(r any) string {
		q := r.(*v1.CreateTokenRequest)
		return q.GetKind().String() + " " + q.GetName()
	}},
	v1.EnrollmentService_ListTokens_FullMethodName:    {roles: admin},
	v1.EnrollmentService_DeleteToken_FullMethodName:   {roles: admin, mutates: true, object: func(r any) string { return r.(*v1.DeleteTokenRequest).GetId() }},
	v1.EnrollmentService_RevokeGateway_FullMethodName: {roles: admin, mutates: true, object: func(r any) string { return r.(*v1.RevokeGatewayRequest).GetGateway() }},
	v1.EnrollmentService_ListRevoked_FullMethodName:   {roles: admin},

	healthpb.Health_Check_FullMethodName: {roles: anyone},
	healthpb.Health_Watch_FullMethodName: {roles: anyone},
	// Reflection describes the API (grpcurl); it changes nothing.
	reflectionv1.ServerReflection_ServerReflectionInfo_FullMethodName:      {roles: admin | viewer},
	reflectionv1alpha.ServerReflection_ServerReflectionInfo_FullMethodName: {roles: admin | viewer},
}

func nameObject(r any) string { return r.(*v1.NameRequest).GetName() }

// tokenID is the public part of a bootstrap token (iof1.<id>.<secret>), for
// the audit log; the secret is never logged.
func tokenID(tok string) string {
	parts := strings.SplitN(tok, ".", 3)
	if len(parts) < 2 {
		return "(malformed)"
	}
	return parts[1]
}

// callerKey keys the caller (a *caller) in a unary call's context.
type callerKey struct{}

// caller is who called: the identity, and the certificate it comes from
// (nil without one).
type caller struct {
	id   tlsconfig.Identity
	cert *x509.Certificate
}

// identityFrom returns the caller's identity the Authorizer put in a unary
// call's context (false: none, the Authorizer is not installed).
func identityFrom(ctx context.Context) (tlsconfig.Identity, bool) {
	c, ok := ctx.Value(callerKey{}).(*caller)
	if !ok {
		return tlsconfig.Identity{}, false
	}
	return c.id, true
}

// certFrom returns the caller's verified certificate the Authorizer put in
// a unary call's context (nil: none).
func certFrom(ctx context.Context) *x509.Certificate {
	if c, ok := ctx.Value(callerKey{}).(*caller); ok {
		return c.cert
	}
	return nil
}

// identify returns the identity of the caller, and its certificate: that of
// its verified client certificate on a TLS connection, Anonymous otherwise.
func (a *Authorizer) identify(ctx context.Context) (tlsconfig.Identity, *x509.Certificate) {
	if a.Identify != nil {
		return a.Identify(ctx)
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return a.Anonymous, nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return a.Anonymous, nil
	}
	var leaf *x509.Certificate
	switch {
	case len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0:
		leaf = ti.State.VerifiedChains[0][0]
	case a.PeerVerified && len(ti.State.PeerCertificates) > 0:
		leaf = ti.State.PeerCertificates[0]
	default:
		return tlsconfig.Identity{}, nil // TLS without a verified client certificate
	}
	return tlsconfig.IdentityOf(leaf), leaf
}

// Admit is what the certificate alone decides for a request that reaches
// no gRPC method (the REST listener's other paths: its OpenAPI document, the
// web console): a revoked certificate, or an expired one (accepted within
// the renewal grace), is refused, and the refusal audited, as on a call.
// what names the request for the message and the audit log.
func (a *Authorizer) Admit(ctx context.Context, id tlsconfig.Identity, cert *x509.Certificate, what string) error {
	err := a.admit(id, cert, what, rule{})
	if err != nil {
		a.denied(ctx, id, what, "", err)
	}
	return err
}

// admit checks what the certificate alone decides: revoked, or expired (a
// certificate accepted within the renewal grace may only renew).
func (a *Authorizer) admit(id tlsconfig.Identity, cert *x509.Certificate, method string, r rule) error {
	if cert == nil {
		return nil
	}
	if a.Revocations != nil && a.Revocations.Revoked(cert.SerialNumber) {
		return status.Errorf(codes.PermissionDenied, "%s may not call %s: its certificate (serial %s) is revoked", id, method, cert.SerialNumber.Text(16))
	}
	if !r.expiredOK && time.Now().After(cert.NotAfter) {
		return status.Errorf(codes.PermissionDenied, "%s may not call %s: its certificate expired at %s; it may only renew (EnrollmentService/Renew)",
			id, method, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// AuditSucceeded reports whether r is the audit line of a call that
// succeeded. A bounded log (internal/logbound) keeps every such line and
// limits the others, refusals and failures, per caller: a flood of refused
// calls cannot fill the disk, and every call is still counted in the API's
// request metric (by method and code). A gateway's routine reports (its
// endpoint reports, auditReport) are limited too, succeeded or not: a line
// each for the first ten of a caller in 10 s, then a count.
func AuditSucceeded(r slog.Record) bool {
	if r.Message != auditCall {
		return false
	}
	ok := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == logkey.Code {
			ok = a.Value.String() == codes.OK.String()
			return false
		}
		return true
	})
	return ok
}

// The audit log's messages.
const (
	auditCall   = "call"
	auditDenied = "denied"
	auditReport = "endpoint report" // a rule's routine request
)

// mayDo says what id may do, for the messages of denials.
func mayDo(id tlsconfig.Identity) string {
	switch id.Role {
	case tlsconfig.RoleViewer:
		return "a viewer may only read (get, list, watch)"
	case tlsconfig.RoleGateway:
		return fmt.Sprintf("a gateway may only register, report endpoints, lease blocks and watch routes for itself (gateway %q), read networks and renew its certificate", id.Gateway)
	case tlsconfig.RoleAdmin:
		return "an admin may call every known method"
	default:
		return fmt.Sprintf("a certificate without an iotfabric role may only call the health check (roles are given by the subject's organization %s, %s or %s; see docs/security.md)",
			tlsconfig.OrgAdmins, tlsconfig.OrgViewers, tlsconfig.OrgGateways)
	}
}

// check decides the call of method with req by id (req nil: not read yet).
func check(id tlsconfig.Identity, method string, r rule, known bool, req any) error {
	if !known {
		return status.Errorf(codes.PermissionDenied, "%s may not call %s: unknown method", id, method)
	}
	if !r.roles.has(id.Role) {
		return status.Errorf(codes.PermissionDenied, "%s may not call %s: %s", id, method, mayDo(id))
	}
	if req != nil && id.Role == tlsconfig.RoleGateway && r.gateway != nil {
		if gw := r.gateway(req); gw != id.Gateway {
			return status.Errorf(codes.PermissionDenied, "%s may not call %s for gateway %q: %s", id, method, gw, mayDo(id))
		}
	}
	return nil
}

// Authorize decides a unary call of method with req by the caller of ctx
// (Identify's, or the connection's), as Unary does, and audits a denial:
// for a handler that stands for a call without making it through a gRPC
// server (the web console's summary).
func (a *Authorizer) Authorize(ctx context.Context, method string, req any) error {
	_, _, err := a.decide(ctx, method, req)
	return err
}

// decide is Unary's decision: the caller, its rule, and PermissionDenied
// (audited) when it may not call.
func (a *Authorizer) decide(ctx context.Context, method string, req any) (*caller, rule, error) {
	id, cert := a.identify(ctx)
	r, known := methods[method]
	err := check(id, method, r, known, req)
	if err == nil {
		err = a.admit(id, cert, method, r)
	}
	if err != nil {
		a.denied(ctx, id, method, r.objectOf(req), err)
		return nil, r, err
	}
	return &caller{id: id, cert: cert}, r, nil
}

// Unary is the interceptor of unary calls.
func (a *Authorizer) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	c, r, err := a.decide(ctx, info.FullMethod, req)
	if err != nil {
		return nil, err
	}
	id := c.id
	resp, err := handler(context.WithValue(ctx, callerKey{}, c), req)
	if r.mutates && a.Audit != nil {
		msg := auditCall
		if r.routine {
			msg = auditReport
		}
		a.Audit.LogAttrs(ctx, slog.LevelInfo, msg, slog.String(logkey.Identity, id.String()), slog.String(logkey.Method, info.FullMethod),
			slog.String(logkey.Object, r.objectOf(req)), slog.String(logkey.Code, Code(err).String()))
	}
	return resp, err
}

// objectOf names what req acts on ("" for a read).
func (r rule) objectOf(req any) string {
	switch {
	case !r.mutates || req == nil:
		return ""
	case r.object != nil:
		return r.object(req)
	case r.gateway != nil:
		return r.gateway(req)
	}
	return ""
}

// Stream is the interceptor of streaming calls. The gateway a gateway's
// stream acts for is checked on its request, when the handler reads it.
func (a *Authorizer) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	id, cert := a.identify(ctx)
	r, known := methods[info.FullMethod]
	err := check(id, info.FullMethod, r, known, nil)
	if err == nil {
		err = a.admit(id, cert, info.FullMethod, r)
	}
	if err != nil {
		a.denied(ctx, id, info.FullMethod, "", err)
		return err
	}
	if id.Role == tlsconfig.RoleGateway && r.gateway != nil {
		ss = &restrictedStream{ServerStream: ss, a: a, id: id, method: info.FullMethod, r: r}
	}
	if a.Revocations == nil || cert == nil {
		return handler(srv, ss)
	}
	// The stream ends when its certificate is revoked.
	revoked, stop := a.Revocations.Watch(cert.SerialNumber)
	defer stop()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-revoked:
			cancel()
		case <-sctx.Done():
		}
	}()
	err = handler(srv, &ctxStream{ServerStream: ss, ctx: sctx})
	select {
	case <-revoked:
		err = status.Errorf(codes.PermissionDenied, "%s: its certificate (serial %s) was revoked", id, cert.SerialNumber.Text(16))
		a.denied(ctx, id, info.FullMethod, "", err)
	default:
	}
	return err
}

// ctxStream is a stream whose context ends earlier than its connection's.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

// restrictedStream checks the requests a gateway sends on a stream.
type restrictedStream struct {
	grpc.ServerStream
	a      *Authorizer
	id     tlsconfig.Identity
	method string
	r      rule
}

func (s *restrictedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if err := check(s.id, s.method, s.r, true, m); err != nil {
		s.a.denied(s.Context(), s.id, s.method, s.r.gateway(m), err)
		return err
	}
	return nil
}

func (a *Authorizer) denied(ctx context.Context, id tlsconfig.Identity, method, object string, err error) {
	if a.Audit == nil {
		return
	}
	a.Audit.LogAttrs(ctx, slog.LevelWarn, auditDenied, slog.String(logkey.Identity, id.String()), slog.String(logkey.Method, method),
		slog.String(logkey.Object, object), slog.String(logkey.Code, codes.PermissionDenied.String()), slog.String(logkey.Reason, status.Convert(err).Message()))
}
