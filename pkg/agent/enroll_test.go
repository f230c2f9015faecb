package agent_test

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/agent"
	"github.com/iotfabric/iotfabric/pkg/enroll"
	"github.com/iotfabric/iotfabric/pkg/enrollclient"
	"github.com/iotfabric/iotfabric/pkg/server"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig/tlstest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// startEnrolling starts a controller that signs certificates living
// lifetime, and returns it with an admin's enrollment client and its CA's
// fingerprint.
func startEnrolling(t *testing.T, lifetime time.Duration) (*server.Controller, v1.EnrollmentServiceClient, string) {
	ca := tlstest.NewCA(t, "iotfabric-ca")
	cfg := server.DefaultConfig()
	cfg.API.Listen, cfg.Metrics.Listen, cfg.API.TLS = "127.0.0.1:0", server.MetricsOff, ca.Issue("controller")
	cfg.API.Enrollment.CAKey, cfg.API.Enrollment.CertLifetime = ca.KeyFile(), lifetime
	cfg.DataDir = t.TempDir()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c, err := server.Start(context.Background(), cfg, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	tc, err := tlsconfig.Client(ca.Admin("alice"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(c.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	cert, err := enrollclient.LoadCertificate(ca.Path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v1.NewNetworkServiceClient(conn).CreateNetwork(context.Background(), &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "red", Subnets: []string{"10.4.0.0/16"}}}); err != nil {
		t.Fatal(err)
	}
	return c, v1.NewEnrollmentServiceClient(conn), enroll.Fingerprint(cert)
}

func joinFlags(t *testing.T, dir string, args ...string) *agent.Flags {
	var f agent.Flags
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	f.Register(fs)
	if err := fs.Parse(append([]string{"--underlay", "192.0.2.77", "--state-dir", filepath.Join(dir, "state"), "--cni-socket", filepath.Join(dir, "cni.sock")}, args...)); err != nil {
		t.Fatal(err)
	}
	return &f
}

// An agent started with --join enrolls (its key generated and kept 0600 in
// its state directory), streams routes with the certificate, and renews it
// by itself while it runs (a 3 s lifetime here), with no restart. With a
// wrong --ca-fingerprint it refuses the controller.
func TestJoinAndRenew(t *testing.T) {
	c, es, fp := startEnrolling(t, 3*time.Second)
	ctx := context.Background()
	tok, err := es.CreateToken(ctx, &v1.CreateTokenRequest{Kind: v1.TokenKind_TOKEN_KIND_GATEWAY, Name: "gw-7"})
	if err != nil {
		t.Fatal(err)
	}

	// A wrong fingerprint: refused, nothing written.
	dir := t.TempDir()
	wrong := "sha256:" + strings.Repeat("ab", 32)
	f := joinFlags(t, dir, "--join", tok.Token, "--ca-fingerprint", wrong, "--controller", c.Addr())
	if err := f.Enroll(ctx, nil); err == nil || !strings.Contains(err.Error(), "fingerprint") {
		t.Fatalf("join with a wrong CA fingerprint: %v", err)
	}
	if enrollclient.Enrolled(f.IdentityDir()) {
		t.Fatal("an identity was written after a refused join")
	}

	f = joinFlags(t, dir, "--join", tok.Token, "--ca-fingerprint", fp, "--controller", c.Addr())
	if err := f.Enroll(ctx, nil); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(f.IdentityDir(), enrollclient.KeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	opts, err := f.Options(nil)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Gateway != "gw-7" {
		t.Fatalf("gateway %q, want the token's gw-7", opts.Gateway)
	}
	live := make(chan bool, 100)
	opts.OnSession = func(_ string, up bool) { live <- up }
	a, err := agent.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); a.Run(actx) }()
	defer func() { cancel(); <-done }()
	select {
	case up := <-live:
		if !up {
			t.Fatal("session down first")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the enrolled agent got no route stream")
	}
	// Renewals, seen in the state directory, while the agent runs.
	serials := map[string]bool{}
	deadline := time.Now().Add(15 * time.Second)
	start := time.Now()
	for len(serials) < 3 && time.Now().Before(deadline) {
		if id, err := enrollclient.Load(f.IdentityDir()); err == nil {
			serials[id.Cert.SerialNumber.String()] = true
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(serials) < 3 {
		t.Fatalf("%d certificates in the state directory in 15 s with a lifetime of 3 s", len(serials))
	}
	t.Logf("3 certificates in %v", time.Since(start))
	// The agent still streams (it reconnects with the renewed certificate
	// when the old one expires).
	last := false
	for drained := false; !drained; {
		select {
		case last = <-live:
		default:
			drained = true
		}
	}
	if !last {
		select {
		case up := <-live:
			if !up {
				t.Fatal("session down after renewals")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no route stream after the renewals")
		}
	}
	// Started again: no --join needed, the identity is in the state directory.
	f2 := joinFlags(t, dir, "--join", "ignored", "--controller", c.Addr())
	if err := f2.Enroll(ctx, nil); err != nil {
		t.Fatalf("--join on an enrolled state directory: %v", err)
	}
	if o, err := f2.Options(nil); err != nil || o.Gateway != "gw-7" {
		t.Fatalf("restart of an enrolled agent: %q %v", o.Gateway, err)
	}
}
