package server

import (
	"context"
	"crypto/x509"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/iotfabric/iotfabric/pkg/enroll"
	"github.com/iotfabric/iotfabric/pkg/enrollclient"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
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
	lb := &logBuffer{}
	c, err := Start(context.Background(), cfg, Options{Logger: slog.New(slog.NewTextHandler(lb, nil)), OpenStore: open})
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
	if life := id.Cert.NotAfter.Sub(time.Now()); life < 29*24*time.Hour || life > 31*24*time.Hour {
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



