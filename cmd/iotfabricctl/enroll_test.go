package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/iotfabric/iotfabric/pkg/server"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig/tlstest"
)

// Operators enroll with user tokens: an admin (with a certificate made by
// hand) creates a token, login writes a context that works with no flags,
// a viewer's login gives a viewer, renew replaces the certificate; gateway
// tokens print the agent's command line, and revoke answers.
func TestLoginWithUserToken(t *testing.T) {
	ca := tlstest.NewCA(t, "iotfabric-ca")
	cfg := server.DefaultConfig()
	cfg.API.Listen, cfg.Metrics.Listen, cfg.API.TLS = "127.0.0.1:0", server.MetricsOff, ca.Issue("controller")
	cfg.API.Enrollment.CAKey = ca.KeyFile()
	cfg.DataDir = t.TempDir()
	c, err := server.Start(context.Background(), cfg, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	confDir := t.TempDir()
	t.Setenv(configEnv, filepath.Join(confDir, "config.yaml"))
	f := ca.Admin("root")
	admin := []string{"--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-ca", f.CA}
	mkToken := func(args ...string) (token, fp string) {
		t.Helper()
		out, errs, rc := ctl(t, c.Addr(), append(admin, args...)...)
		if rc != 0 {
			t.Fatalf("%v: rc %d %q", args, rc, errs)
		}
		token = strings.Fields(out)[0]
		fp = regexp.MustCompile(`sha256:[0-9a-f]{64}`).FindString(out)
		if !strings.HasPrefix(token, "iof1.") || fp == "" {
			t.Fatalf("%v printed %q", args, out)
		}
		return token, fp
	}
	tok, fp := mkToken("user", "token", "create", "alice", "--role", "admin")
	out, errs, rc := ctl(t, "unused:1", "login", "--token", tok, "--controller", c.Addr(), "--ca-fingerprint", fp, "--name", "prod")
	if rc != 0 || !strings.Contains(out, "admin:alice") {
		t.Fatalf("login: rc %d %q %q", rc, out, errs)
	}
	key := filepath.Join(confDir, "prod", "key.pem")
	if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("login's key: %v %v", st, err)
	}
	run1 := func(args ...string) (string, string, int) {
		var o, e strings.Builder
		rc := run(args, &o, &e)
		return o.String(), e.String(), rc
	}
	if _, errs, rc := run1("network", "create", "red", "--subnet", "10.1.0.0/24"); rc != 0 {
		t.Fatalf("admin with the login context, no flags: rc %d %q", rc, errs)
	}
	if out, errs, rc := run1("renew"); rc != 0 || !strings.Contains(out, "renewed admin:alice") {
		t.Fatalf("renew: rc %d %q %q", rc, out, errs)
	}
	if _, errs, rc := run1("network", "list"); rc != 0 {
		t.Fatalf("after renew: rc %d %q", rc, errs)
	}
	// The token was used.
	if _, errs, rc := ctl(t, "unused:1", "login", "--token", tok, "--controller", c.Addr(), "--ca-fingerprint", fp, "--name", "again"); rc != 1 || !strings.Contains(errs, "unauthenticated") {
		t.Fatalf("login with a used token: rc %d %q", rc, errs)
	}
	vtok, _ := mkToken("user", "token", "create", "victor", "--role", "viewer")
	if _, errs, rc := ctl(t, "unused:1", "login", "--token", vtok, "--controller", c.Addr(), "--ca-fingerprint", fp, "--name", "ro"); rc != 0 {
		t.Fatalf("viewer login: %q", errs)
	}
	if _, errs, rc := run1("network", "delete", "red"); rc != 1 || !strings.Contains(errs, "viewer:victor") {
		t.Fatalf("viewer deletes a network: rc %d %q", rc, errs)
	}
	if _, _, rc := run1("--context", "prod", "gateway", "token", "list"); rc != 0 {
		t.Fatal("admin lists tokens")
	}
	gtok, _ := mkToken("gateway", "token", "create", "gw-7", "--ttl", "10m")
	if _, errs, rc := run1("--context", "prod", "gateway", "token", "delete", strings.Split(gtok, ".")[1]); rc != 0 {
		t.Fatalf("token delete: %q", errs)
	}
	if out, errs, rc := run1("--context", "prod", "gateway", "revoke", "gw-7", "--purge"); rc != 0 || !strings.Contains(out, "0 certificates revoked") {
		t.Fatalf("revoke: rc %d %q %q", rc, out, errs)
	}
	if _, errs, rc := run1("user", "token", "create", "bob"); rc != 2 || !strings.Contains(errs, "--role") {
		t.Fatalf("user token without --role: rc %d %q", rc, errs)
	}
}
