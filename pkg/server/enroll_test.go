package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/iotfabric/iotfabric/internal/syncbuf"
	"github.com/iotfabric/iotfabric/pkg/enroll"
	"github.com/iotfabric/iotfabric/pkg/enrollclient"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	"github.com/iotfabric/iotfabric/pkg/store/etcd/etcdtest"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig/tlstest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// enrollController is a controller that signs certificates with its CA.
type enrollController struct {
	*tlsController
	fp string // its CA's fingerprint
}

// enrollConfig is a configuration with mutual TLS and enrollment by ca.
func enrollConfig(ca *tlstest.CA, lifetime, grace time.Duration) Config {
	cfg := DefaultConfig()
	cfg.API.Listen, cfg.Metrics.Listen, cfg.API.TLS = "127.0.0.1:0", MetricsOff, ca.Issue("controller")
	cfg.API.Enrollment.CAKey = ca.KeyFile()
	cfg.API.Enrollment.CertLifetime, cfg.API.Enrollment.RenewGrace = lifetime, grace
	cfg.Liveness.Interval = time.Hour
	return cfg
}

func startEnroll(t *testing.T, ca *tlstest.CA, cfg Config, open func(context.Context) (store.Store, error)) *enrollController {
	t.Helper()
	if ca == nil {
		ca = tlstest.NewCA(t, "iotfabric-ca")
		cfg = enrollConfig(ca, DefaultCertLifetime, DefaultRenewGrace)
	}
	var st store.Store
	exclusive := open == nil
	if open == nil {
		var err error
		if st, err = bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{NoSync: true}); err != nil {
			t.Fatal(err)
		}
		open = func(context.Context) (store.Store, error) { return st, nil }
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	lb := &syncbuf.Buffer{}
	c, err := Start(context.Background(), cfg, Options{Logger: slog.New(slog.NewTextHandler(lb, nil)), OpenStore: open, ExclusiveStore: exclusive})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	cert, _ := x509.ParseCertificate(mustPEM(t, cfg.API.TLS.CA))
	return &enrollController{tlsController: &tlsController{ca: ca, c: c, st: st, log: lb}, fp: enroll.Fingerprint(cert)}
}

// token makes a bootstrap token with an admin's certificate.
func (ec *enrollController) token(t *testing.T, kind v1.TokenKind, name, role string, ttl time.Duration) string {
	t.Helper()
	resp, err := v1.NewEnrollmentServiceClient(ec.dial(t, ec.ca.Admin("alice"))).CreateToken(context.Background(),
		&v1.CreateTokenRequest{Kind: kind, Name: name, Role: role, TtlSeconds: int64(ttl / time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if resp.CaFingerprint != ec.fp {
		t.Fatalf("token's CA fingerprint %s, want %s", resp.CaFingerprint, ec.fp)
	}
	return resp.Token
}

// dialAs connects with an enrolled identity's renewing credentials.
func dialAs(t *testing.T, addr string, r *enrollclient.Renewer) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(r.Credentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func join(t *testing.T, addr, tok, fp string) enrollclient.Identity {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := enrollclient.Join(ctx, addr, tok, fp)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func renewer(t *testing.T, id enrollclient.Identity, addrs ...string) *enrollclient.Renewer {
	t.Helper()
	r, err := enrollclient.NewRenewer(id, "", addrs, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// The enrollment flow over real TLS: a gateway joins with a token and gets
// gateway:<name> whatever its CSR asked; the certificate works for its own
// gateway only; the token does not work twice, an expired one not at all,
// and of concurrent joins with one token exactly one wins.
func TestJoin(t *testing.T) {
	ec := startEnroll(t, nil, Config{}, nil)
	addr := ec.c.Addr()
	tok := ec.token(t, v1.TokenKind_TOKEN_KIND_GATEWAY, "gw-7", "", time.Hour)
	id := join(t, addr, tok, ec.fp)
	if got := id.Name().String(); got != "gateway:gw-7" {
		t.Fatalf("identity %s", got)
	}
	if life := time.Until(id.Cert.NotAfter); life < 29*24*time.Hour || life > 31*24*time.Hour {
		t.Errorf("certificate lifetime %v, want the default 30 days", life)
	}
	agent := v1.NewAgentServiceClient(dialAs(t, addr, renewer(t, id, addr)))
	ctx := context.Background()
	if _, err := agent.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw-7", UnderlayAddress: "192.0.2.7"}}); err != nil {
		t.Fatalf("enrolled gateway registers itself: %v", err)
	}
	if _, err := agent.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw-8", UnderlayAddress: "192.0.2.8"}}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("enrolled gw-7 registers gw-8: %v", err)
	}

	// Used: refused.
	if _, err := enrollclient.Join(ctx, addr, tok, ec.fp); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("token used twice: %v", err)
	}
	// Expired: refused.
	short := ec.token(t, v1.TokenKind_TOKEN_KIND_GATEWAY, "gw-9", "", time.Second)
	time.Sleep(1100 * time.Millisecond)
	if _, err := enrollclient.Join(ctx, addr, short, ec.fp); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("expired token: %v", err)
	}
	// A forged secret for a real id: refused, and the token still works.
	good := ec.token(t, v1.TokenKind_TOKEN_KIND_GATEWAY, "gw-10", "", time.Hour)
	forged := good[:strings.LastIndexByte(good, '.')+1] + strings.Repeat("A", 43)
	if _, err := enrollclient.Join(ctx, addr, forged, ec.fp); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("forged token: %v", err)
	}
	// Concurrent joins with one token: exactly one certificate.
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for i := 0; i < 8; i++ {
		wg.Go(func() {
			if _, err := enrollclient.Join(ctx, addr, good, ec.fp); err == nil {
				mu.Lock()
				won++
				mu.Unlock()
			} else if status.Code(err) != codes.Unauthenticated {
				t.Errorf("concurrent join: %v", err)
			}
		})
	}
	wg.Wait()
	if won != 1 {
		t.Fatalf("%d of 8 concurrent joins with one token won, want 1", won)
	}
	// A wrong CA fingerprint: the client refuses the controller, and the
	// token is not sent (it still works afterwards).
	other := tlstest.NewCA(t, "other")
	otherCert, _ := x509.ParseCertificate(mustPEM(t, other.Path))
	tok2 := ec.token(t, v1.TokenKind_TOKEN_KIND_GATEWAY, "gw-11", "", time.Hour)
	if _, err := enrollclient.Join(ctx, addr, tok2, enroll.Fingerprint(otherCert)); err == nil || !strings.Contains(err.Error(), "fingerprint") {
		t.Fatalf("join with a wrong CA fingerprint: %v", err)
	}
	join(t, addr, tok2, ec.fp)

	// Tokens are listed without secrets and deleted by an admin only.
	es := v1.NewEnrollmentServiceClient(ec.dial(t, ec.ca.Admin("alice")))
	lt, err := es.ListTokens(ctx, &v1.ListTokensRequest{})
	if err != nil || len(lt.Tokens) != 1 || lt.Tokens[0].Name != "gw-9" {
		t.Fatalf("tokens left: %v %v", lt, err)
	}
	if _, err := v1.NewEnrollmentServiceClient(dialAs(t, addr, renewer(t, id, addr))).DeleteToken(ctx, &v1.DeleteTokenRequest{Id: lt.Tokens[0].Id}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("gateway deletes a token: %v", err)
	}
	if _, err := es.DeleteToken(ctx, &v1.DeleteTokenRequest{Id: lt.Tokens[0].Id}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ec.log.String(), "token "+lt.Tokens[0].Id) && !strings.Contains(ec.log.String(), "msg=call component=audit") {
		t.Error("joins are not audited")
	}
	if strings.Contains(ec.log.String(), good[strings.LastIndexByte(good, '.')+1:]) {
		t.Error("a token's secret is in the log")
	}
}

// Without a CA key, the controller refuses enrollment and says why.
func TestJoinExternalCA(t *testing.T) {
	tc := startTLS(t)
	_, err := v1.NewEnrollmentServiceClient(tc.dial(t, tc.ca.Admin("alice"))).CreateToken(context.Background(),
		&v1.CreateTokenRequest{Kind: v1.TokenKind_TOKEN_KIND_GATEWAY, Name: "gw-1"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "external CA") {
		t.Fatalf("token without a CA key: %v", err)
	}
}

func mustPEM(t *testing.T, path string) []byte {
	t.Helper()
	id, err := enrollclient.LoadCertificate(path)
	if err != nil {
		t.Fatal(err)
	}
	return id.Raw
}

// A revoked gateway is cut off: its open route stream ends within a second,
// its next calls and connections are refused, on both controllers sharing
// etcd; --purge removes its endpoints; enrolling again with a new token
// works.
func TestRevokeGateway(t *testing.T) {
	srv := etcdtest.Start(t)
	ca := tlstest.NewCA(t, "iotfabric-ca")
	cfg := enrollConfig(ca, DefaultCertLifetime, DefaultRenewGrace)
	onEtcd := func(context.Context) (store.Store, error) { return openEtcd(t, srv.Endpoint), nil }
	c1, c2 := startEnroll(t, ca, cfg, onEtcd), startEnroll(t, ca, cfg, onEtcd)
	ctx := context.Background()
	adm := ec1Admin(t, c1)
	if _, err := v1.NewNetworkServiceClient(c1.dial(t, ca.Admin("alice"))).CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "red", Subnets: []string{"10.9.0.0/16"}}}); err != nil {
		t.Fatal(err)
	}
	id := join(t, c1.c.Addr(), c1.token(t, v1.TokenKind_TOKEN_KIND_GATEWAY, "gw-7", "", time.Hour), c1.fp)
	r := renewer(t, id, c1.c.Addr(), c2.c.Addr())
	a1, a2 := v1.NewAgentServiceClient(dialAs(t, c1.c.Addr(), r)), v1.NewAgentServiceClient(dialAs(t, c2.c.Addr(), r))
	if _, err := a1.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw-7", UnderlayAddress: "192.0.2.7"}}); err != nil {
		t.Fatal(err)
	}
	if rr, err := a1.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: "gw-7", Endpoints: []*v1.AgentEndpoint{{Id: "ep-1", Network: "red"}}}); err != nil || rr.Results[0].Error != "" {
		t.Fatal(rr, err)
	}
	streams := map[string]v1.AgentService_WatchGatewayRoutesClient{}
	for name, a := range map[string]v1.AgentServiceClient{"controller 1": a1, "controller 2": a2} {
		s, err := a.WatchGatewayRoutes(ctx, &v1.WatchGatewayRoutesRequest{Gateway: "gw-7"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil { // the snapshot: the stream is up
			t.Fatalf("%s: %v", name, err)
		}
		streams[name] = s
	}
	ended := make(chan string, 2)
	for name, s := range streams {
		go func() {
			for {
				if _, err := s.Recv(); err != nil {
					if status.Code(err) != codes.PermissionDenied {
						t.Errorf("%s: stream ended with %v, want PermissionDenied", name, err)
					}
					ended <- name
					return
				}
			}
		}()
	}
	start := time.Now()
	resp, err := adm.RevokeGateway(ctx, &v1.RevokeGatewayRequest{Gateway: "gw-7"})
	if err != nil || len(resp.Serials) != 1 || resp.Serials[0] != enroll.Serial(id.Cert.SerialNumber) {
		t.Fatalf("revoke: %v %v", resp, err)
	}
	for range 2 {
		select {
		case name := <-ended:
			t.Logf("%s: stream closed %v after the revocation", name, time.Since(start))
		case <-time.After(time.Second):
			t.Fatal("a revoked gateway's stream is still open after 1 s")
		}
	}
	for name, a := range map[string]v1.AgentServiceClient{"controller 1": a1, "controller 2": a2} {
		if _, err := a.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw-7", UnderlayAddress: "192.0.2.7"}}); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("%s: revoked gateway's call on its open connection: %v", name, err)
		}
		// A new connection: refused at the handshake.
		conn := dialAs(t, map[string]string{"controller 1": c1.c.Addr(), "controller 2": c2.c.Addr()}[name], r)
		if _, err := v1.NewAgentServiceClient(conn).Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw-7", UnderlayAddress: "192.0.2.7"}}); err == nil {
			t.Fatalf("%s: revoked certificate on a new connection accepted", name)
		}
	}
	if err := r.RenewNow(ctx); err == nil {
		t.Fatal("a revoked certificate renewed itself")
	}
	lr, err := adm.ListRevoked(ctx, &v1.ListRevokedRequest{})
	if err != nil || len(lr.Certificates) != 1 || lr.Certificates[0].Identity != "gateway:gw-7" {
		t.Fatalf("revoked list: %v %v", lr, err)
	}
	// The endpoints stayed (no purge).
	eps := v1.NewEndpointServiceClient(c2.dial(t, ca.Admin("alice")))
	if l, err := eps.ListEndpoints(ctx, &v1.ListEndpointsRequest{Gateway: "gw-7"}); err != nil || len(l.Endpoints) != 1 {
		t.Fatalf("endpoints after revoke without purge: %v %v", l, err)
	}

	// Enrolled again with a new token, on the other controller: works.
	id2 := join(t, c2.c.Addr(), c2.token(t, v1.TokenKind_TOKEN_KIND_GATEWAY, "gw-7", "", time.Hour), c2.fp)
	a := v1.NewAgentServiceClient(dialAs(t, c1.c.Addr(), renewer(t, id2, c1.c.Addr())))
	if _, err := a.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw-7", UnderlayAddress: "192.0.2.7"}}); err != nil {
		t.Fatalf("re-enrolled gateway: %v", err)
	}
	// Revoked with purge: its endpoints go.
	resp, err = adm.RevokeGateway(ctx, &v1.RevokeGatewayRequest{Gateway: "gw-7", Purge: true})
	if err != nil || resp.EndpointsDeleted != 1 {
		t.Fatalf("revoke --purge: %v %v", resp, err)
	}
	if l, err := eps.ListEndpoints(ctx, &v1.ListEndpointsRequest{Gateway: "gw-7"}); err != nil || len(l.Endpoints) != 0 {
		t.Fatalf("endpoints after revoke --purge: %v %v", l, err)
	}
}

func ec1Admin(t *testing.T, ec *enrollController) v1.EnrollmentServiceClient {
	return v1.NewEnrollmentServiceClient(ec.dial(t, ec.ca.Admin("alice")))
}

// Certificates renew over their own identity before they expire, with no
// restart of the client: a connection made after a renewal presents the new
// certificate; calls go on across renewals. Across a controller restart
// (the same store) and on a second controller sharing etcd, too.
func TestRenew(t *testing.T) {
	srv := etcdtest.Start(t)
	ca := tlstest.NewCA(t, "iotfabric-ca")
	cfg := enrollConfig(ca, 3*time.Second, time.Hour)
	onEtcd := func(context.Context) (store.Store, error) { return openEtcd(t, srv.Endpoint), nil }
	c1, c2 := startEnroll(t, ca, cfg, onEtcd), startEnroll(t, ca, cfg, onEtcd)
	id := join(t, c1.c.Addr(), c1.token(t, v1.TokenKind_TOKEN_KIND_GATEWAY, "gw-7", "", time.Hour), c1.fp)
	dir := t.TempDir()
	if err := id.Save(dir); err != nil {
		t.Fatal(err)
	}
	r, err := enrollclient.NewRenewer(id, dir, []string{c2.c.Addr(), c1.c.Addr()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	renewed := make(chan enrollclient.Identity, 10)
	r.OnRenew = func(id enrollclient.Identity) { renewed <- id }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	agent := v1.NewAgentServiceClient(dialAs(t, c1.c.Addr(), r))
	serials := map[string]bool{enroll.Serial(id.Cert.SerialNumber): true}
	deadline := time.Now().Add(20 * time.Second)
	cut := 0
	for len(serials) < 3 && time.Now().Before(deadline) {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := agent.Register(cctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw-7", UnderlayAddress: "192.0.2.7"}})
		ccancel()
		// A call in flight when the connection of an expiring certificate
		// is closed fails with Unavailable; the next one reconnects.
		if status.Code(err) == codes.Unavailable && cut < len(serials) {
			cut++
			continue
		}
		// A renewal that comes late (a slow machine, qemu-user) leaves the
		// certificate expired within its grace for a moment: calls are
		// refused until the renewed one is in use, as they would be for
		// the agent. Too few renewals still fail below.
		if status.Code(err) == codes.PermissionDenied && strings.Contains(err.Error(), "it may only renew") {
			select {
			case id := <-renewed:
				serials[enroll.Serial(id.Cert.SerialNumber)] = true
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if err != nil {
			t.Fatalf("call with %d certificates so far: %v", len(serials), err)
		}
		select {
		case id := <-renewed:
			serials[enroll.Serial(id.Cert.SerialNumber)] = true
		case <-time.After(100 * time.Millisecond):
		}
	}
	if len(serials) < 3 {
		t.Fatalf("%d certificates in 20 s with a lifetime of 3 s", len(serials))
	}
	saved, err := enrollclient.Load(dir)
	if err != nil || !saved.Cert.Equal(r.Identity().Cert) {
		t.Fatalf("the renewed certificate is not the one saved: %v", err)
	}
	if !saved.Key.Equal(id.Key) {
		t.Fatal("the key changed")
	}
}

// A certificate expired within the renewal grace may renew, and nothing
// else; beyond the grace it is refused at the handshake. Renewal also works
// after the controller restarted on its store.
func TestRenewGrace(t *testing.T) {
	ca := tlstest.NewCA(t, "iotfabric-ca")
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	open := func(context.Context) (store.Store, error) { return bolt.Open(path, bolt.Options{NoSync: true}) }
	cfg := enrollConfig(ca, time.Second, time.Hour)
	c := startEnroll(t, ca, cfg, open)
	id := join(t, c.c.Addr(), c.token(t, v1.TokenKind_TOKEN_KIND_GATEWAY, "gw-7", "", time.Hour), c.fp)
	ctx := context.Background()
	c.c.Stop()
	time.Sleep(time.Until(id.Cert.NotAfter) + 200*time.Millisecond) // expired
	c = startEnroll(t, ca, cfg, open)                               // restarted
	r := renewer(t, id, c.c.Addr())
	agent := v1.NewAgentServiceClient(dialAs(t, c.c.Addr(), r))
	_, err := agent.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw-7", UnderlayAddress: "192.0.2.7"}})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("call with an expired certificate: %v", err)
	}
	if err := r.RenewNow(ctx); err != nil {
		t.Fatalf("renewal within the grace: %v", err)
	}
	if _, err := agent.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw-7", UnderlayAddress: "192.0.2.7"}}); err != nil {
		t.Fatalf("call after the renewal, same client connection: %v", err)
	}

	// Beyond the grace: refused.
	c.c.Stop()
	cfg.API.Enrollment.RenewGrace = time.Second
	c = startEnroll(t, ca, cfg, open)
	id2 := join(t, c.c.Addr(), c.token(t, v1.TokenKind_TOKEN_KIND_GATEWAY, "gw-8", "", time.Hour), c.fp)
	time.Sleep(time.Until(id2.Cert.NotAfter.Add(time.Second)) + 200*time.Millisecond)
	if err := renewer(t, id2, c.c.Addr()).RenewNow(ctx); err == nil {
		t.Fatal("a certificate expired beyond the grace renewed")
	}
}

// The whole role table again, on a controller with enrollment on (it
// verifies client certificates itself), with certificates made by the
// enrollment flow: an admin and a viewer by user tokens, a gateway by a
// gateway token; "none" is a client without any certificate.
func TestRoleTableEnrolled(t *testing.T) {
	ec := startEnroll(t, nil, Config{}, nil)
	addr := ec.c.Addr()
	dial := func(kind v1.TokenKind, name, role string) *grpc.ClientConn {
		id := join(t, addr, ec.token(t, kind, name, role, time.Hour), ec.fp)
		return dialAs(t, addr, renewer(t, id, addr))
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(mustPEMFile(t, ec.ca.Path))
	anon, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { anon.Close() })
	checkRoleTable(t, map[string]*grpc.ClientConn{
		"admin":   dial(v1.TokenKind_TOKEN_KIND_USER, "alice", "admin"),
		"viewer":  dial(v1.TokenKind_TOKEN_KIND_USER, "victor", "viewer"),
		"gateway": dial(v1.TokenKind_TOKEN_KIND_GATEWAY, "gw-1", ""),
		"none":    anon,
	})
}

// CA rotation as docs/security.md describes it: the controllers trust both
// CAs and sign with the new one; an enrolled gateway given both CAs renews
// into the new CA with no new token; once the old CA is dropped, only the
// renewed certificate works.
func TestCARotation(t *testing.T) {
	old := tlstest.NewCA(t, "ca-2025")
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	open := func(context.Context) (store.Store, error) { return bolt.Open(path, bolt.Options{NoSync: true}) }
	c := startEnroll(t, old, enrollConfig(old, DefaultCertLifetime, DefaultRenewGrace), open)
	id := join(t, c.c.Addr(), c.token(t, v1.TokenKind_TOKEN_KIND_GATEWAY, "gw-7", "", time.Hour), c.fp)
	idDir := filepath.Join(dir, "gw-7")
	if err := id.Save(idDir); err != nil {
		t.Fatal(err)
	}
	c.c.Stop()

	// Steps 1-3: both CAs trusted, the new one signs, the controller's
	// certificate from the new one; the gateway's ca.pem holds both.
	next := tlstest.NewCA(t, "ca-2026")
	both := filepath.Join(dir, "both.pem")
	if err := os.WriteFile(both, append(mustPEMFile(t, old.Path), mustPEMFile(t, next.Path)...), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := enrollConfig(next, DefaultCertLifetime, DefaultRenewGrace)
	cfg.API.TLS.CA = both
	cfg.API.Enrollment.CACert = next.Path
	c = startEnroll(t, next, cfg, open)
	if err := os.WriteFile(filepath.Join(idDir, enrollclient.CAFile), mustPEMFile(t, both), 0o600); err != nil {
		t.Fatal(err)
	}
	id, err := enrollclient.Load(idDir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := enrollclient.NewRenewer(id, idDir, []string{c.c.Addr()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	register := func(conn *grpc.ClientConn) error {
		_, err := v1.NewAgentServiceClient(conn).Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw-7", UnderlayAddress: "192.0.2.7"}})
		return err
	}
	if err := register(dialAs(t, c.c.Addr(), r)); err != nil {
		t.Fatalf("old CA's certificate while both are trusted: %v", err)
	}
	if err := r.RenewNow(ctx); err != nil {
		t.Fatal(err)
	}
	nextCert, _ := x509.ParseCertificate(mustPEM(t, next.Path))
	if err := r.Identity().Cert.CheckSignatureFrom(nextCert); err != nil {
		t.Fatalf("renewed certificate not signed by the new CA: %v", err)
	}
	c.c.Stop()

	// Step 4: the old CA dropped.
	cfg.API.TLS.CA = next.Path
	c = startEnroll(t, next, cfg, open)
	if err := register(dialAs(t, c.c.Addr(), r)); err != nil {
		t.Fatalf("renewed certificate after the old CA was dropped: %v", err)
	}
	if err := register(dialAs(t, c.c.Addr(), renewer(t, id, c.c.Addr()))); err == nil {
		t.Fatal("the old CA's certificate is still accepted")
	}
}

// A controller alone on its bbolt file does not watch its store for
// revocations: its own take effect at once (stream ended within a second,
// next call refused).
func TestRevokeAlone(t *testing.T) {
	ec := startEnroll(t, nil, Config{}, nil)
	ctx := context.Background()
	id := join(t, ec.c.Addr(), ec.token(t, v1.TokenKind_TOKEN_KIND_GATEWAY, "gw-7", "", time.Hour), ec.fp)
	a := v1.NewAgentServiceClient(dialAs(t, ec.c.Addr(), renewer(t, id, ec.c.Addr())))
	if _, err := a.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw-7", UnderlayAddress: "192.0.2.7"}}); err != nil {
		t.Fatal(err)
	}
	s, err := a.WatchGatewayRoutes(ctx, &v1.WatchGatewayRoutesRequest{Gateway: "gw-7"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := s.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()
	if _, err := ec1Admin(t, ec).RevokeGateway(ctx, &v1.RevokeGatewayRequest{Gateway: "gw-7"}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("stream ended with %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("stream still open 1 s after the revocation")
	}
	if _, err := a.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw-7", UnderlayAddress: "192.0.2.7"}}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("call after the revocation: %v", err)
	}
}

// One token, joins racing on two controllers that share etcd: exactly one
// certificate is issued.
func TestJoinRaceOnEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	ca := tlstest.NewCA(t, "iotfabric-ca")
	cfg := enrollConfig(ca, DefaultCertLifetime, DefaultRenewGrace)
	onEtcd := func(context.Context) (store.Store, error) { return openEtcd(t, srv.Endpoint), nil }
	c1, c2 := startEnroll(t, ca, cfg, onEtcd), startEnroll(t, ca, cfg, onEtcd)
	for round := 0; round < 5; round++ {
		tok := c1.token(t, v1.TokenKind_TOKEN_KIND_GATEWAY, fmt.Sprint("gw-", round), "", time.Hour)
		var wg sync.WaitGroup
		var won atomic.Int32
		for i := 0; i < 8; i++ {
			addr := []string{c1.c.Addr(), c2.c.Addr()}[i%2]
			wg.Go(func() {
				_, err := enrollclient.Join(context.Background(), addr, tok, c1.fp)
				switch {
				case err == nil:
					won.Add(1)
				case status.Code(err) != codes.Unauthenticated:
					t.Errorf("join: %v", err)
				}
			})
		}
		wg.Wait()
		if n := won.Load(); n != 1 {
			t.Fatalf("round %d: %d of 8 joins with one token on two controllers won, want 1", round, n)
		}
	}
}
