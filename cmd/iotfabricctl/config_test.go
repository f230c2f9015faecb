package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/iotfabric/iotfabric/pkg/api"
	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig/tlstest"
)

func TestResolvePrecedence(t *testing.T) {
	ctx := &configContext{Name: "prod", Server: "ctx:1", TLSCert: "c.pem", TLSKey: "/k/k.pem", TLSCA: "ca.pem", Timeout: 5 * time.Second}
	fromCtx := tlsconfig.Files{Cert: "/etc/x/c.pem", Key: "/k/k.pem", CA: "/etc/x/ca.pem"}
	flagTLS := tlsconfig.Files{Cert: "f.pem"}
	for _, tc := range []struct {
		name string
		g    given
		x    *configContext
		want settings
	}{
		{"defaults", given{}, nil, settings{server: defaultServer, timeout: defaultTimeout}},
		{"context", given{}, ctx, settings{server: "ctx:1", timeout: 5 * time.Second, tls: fromCtx, tlsContext: "prod"}},
		{"context without server or timeout", given{}, &configContext{Name: "x"}, settings{server: defaultServer, timeout: defaultTimeout}},
		{"env over context", given{envServer: "env:2"}, ctx, settings{server: "env:2", timeout: 5 * time.Second, tls: fromCtx, tlsContext: "prod"}},
		{"env over default", given{envServer: "env:2"}, nil, settings{server: "env:2", timeout: defaultTimeout}},
		{"flag over env and context", given{server: "flag:3", envServer: "env:2", timeout: time.Minute}, ctx, settings{server: "flag:3", timeout: time.Minute, tls: fromCtx, tlsContext: "prod"}},
		{"one TLS flag replaces the three files", given{tls: flagTLS}, ctx, settings{server: "ctx:1", timeout: 5 * time.Second, tls: flagTLS}},
	} {
		if got := resolve(tc.g, tc.x, "/etc/x"); got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// cfgRun runs one command line with the config file at path.
func cfgRun(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	rc := run(args, &out, &errb)
	return out.String(), errb.String(), rc
}

func TestConfigRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "iotfabric")
	path := filepath.Join(dir, "config.yaml")
	t.Setenv(configEnv, path)

	// No file: no contexts, no error.
	if out, errs, rc := cfgRun(t, "config", "view"); rc != 0 || !strings.Contains(out, path) {
		t.Fatalf("view without a file: rc %d %q %q", rc, out, errs)
	}
	steps := []struct {
		args []string
		want string
	}{
		{[]string{"config", "set-context", "prod", "--server", "ctl.example:50051", "--tls-cert", "/p/admin.crt", "--tls-key", "/p/admin.key", "--tls-ca", "/p/ca.crt"}, "context prod created"},
		{[]string{"config", "set-context", "lab", "--server", "lab:50051", "--timeout", "5s"}, "context lab created"},
		{[]string{"config", "set-context", "prod", "--timeout", "1m"}, "context prod updated"},
		{[]string{"config", "use-context", "prod"}, "current context is prod"},
		{[]string{"config", "get-contexts"}, "*        prod"},
	}
	for _, s := range steps {
		out, errs, rc := cfgRun(t, s.args...)
		if rc != 0 || !strings.Contains(out, s.want) {
			t.Fatalf("%v: rc %d, stdout %q, stderr %q; want %q", s.args, rc, out, errs, s.want)
		}
	}
	out, _, rc := cfgRun(t, "config", "view")
	for _, want := range []string{"# " + path, "current-context: prod", "name: prod # current", "server: ctl.example:50051", "tls-key: /p/admin.key", "timeout: 1m0s", "name: lab\n", "timeout: 5s"} {
		if rc != 0 || !strings.Contains(out, want) {
			t.Errorf("view lacks %q:\n%s", want, out)
		}
	}
	// What view prints is a config file that reads back the same.
	cf, err := parseConfig("view", []byte(out))
	if err != nil || cf.CurrentContext != "prod" || len(cf.Contexts) != 2 || cf.Contexts[0].Timeout != time.Minute || cf.Contexts[0].TLSCA != "/p/ca.crt" {
		t.Errorf("view read back: %v %+v", err, cf)
	}
	for _, p := range []struct {
		name string
		mode os.FileMode
	}{{path, 0o600}, {dir, 0o700}} {
		if fi, err := os.Stat(p.name); err != nil || fi.Mode().Perm() != p.mode {
			t.Errorf("%s: %v, mode %v, want %v", p.name, err, fi.Mode().Perm(), p.mode)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary files left next to the config file: %v", ents)
	}
	// Relative file names on the command line are stored absolute.
	wd, _ := os.Getwd()
	if out, errs, rc := cfgRun(t, "config", "set-context", "lab", "--tls-cert", "a.crt", "--tls-key", "a.key", "--tls-ca", "ca.crt"); rc != 0 {
		t.Fatalf("set-context relative: rc %d %q %q", rc, out, errs)
	}
	if out, _, _ := cfgRun(t, "config", "view"); !strings.Contains(out, "tls-cert: "+filepath.Join(wd, "a.crt")) {
		t.Errorf("relative tls-cert not made absolute:\n%s", out)
	}
	for _, tc := range []struct {
		args []string
		rc   int
		want string
	}{
		{[]string{"config", "use-context", "staging"}, 1, `unknown context "staging": known contexts: prod, lab`},
		{[]string{"--context", "staging", "network", "list"}, 2, `unknown context "staging": known contexts: prod, lab`},
		{[]string{"config", "set-context", "half", "--tls-cert", "/c.pem"}, 2, "tls-cert without a tls-key"},
		{[]string{"config", "delete-context", "staging"}, 1, "known contexts: prod, lab"},
	} {
		out, errs, rc := cfgRun(t, tc.args...)
		if rc != tc.rc || out != "" || !strings.Contains(errs, tc.want) || strings.Count(errs, "\n") != 1 {
			t.Errorf("%v: rc %d (want %d), stdout %q, stderr %q (want one line with %q)", tc.args, rc, tc.rc, out, errs, tc.want)
		}
	}
	if out, _, rc := cfgRun(t, "-o", "json", "config", "get-contexts"); rc != 0 || !strings.Contains(out, `"timeout": "1m0s"`) || !strings.Contains(out, `"name": "lab"`) {
		t.Errorf("get-contexts -o json:\n%s", out)
	}
	for _, args := range [][]string{{"--context", ""}, {"config", "use-context", ""}} {
		if got := complete(t, args...); !sameSet(got, []string{"prod", "lab"}) {
			t.Errorf("complete %q: got %q, want prod and lab", args, got)
		}
	}
	if out, errs, rc := cfgRun(t, "config", "delete-context", "prod"); rc != 0 || !strings.Contains(out, "context prod deleted") {
		t.Fatalf("delete-context: rc %d %q %q", rc, out, errs)
	}
	if out, _, _ := cfgRun(t, "config", "view"); strings.Contains(out, "prod") || strings.Contains(out, "current-context") {
		t.Errorf("after delete-context prod:\n%s", out)
	}
}

func TestConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	t.Setenv(configEnv, path)
	for _, tc := range []struct {
		file, want string
	}{
		{"current-context: a\ncontexts:\n  - name: a\n    server: [x\n", path + ": line 3: did not find expected"},
		{"contexts:\n  - name: a\n    sever: x:1\n", path + ": line 3: field sever not found"},
		{"contexts:\n  - name: a\n    timeout: soon\n", path + ": line 3: "},
		{"contexts:\n  - name: a\n    tls-cert: c.pem\n", `context "a": tls-cert and tls-key go together`},
		{"current-context: b\ncontexts:\n  - name: a\n", `current-context: unknown context "b": known contexts: a`},
	} {
		if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{{"config", "view"}, {"--server", "127.0.0.1:1", "network", "list"}} {
			if args[0] == "config" && strings.HasPrefix(tc.file, "current-context: b") {
				continue // view shows a file whose current context is gone, to be mended
			}
			out, errs, rc := cfgRun(t, args...)
			if rc != 1 || out != "" || !strings.Contains(errs, tc.want) || strings.Count(errs, "\n") != 1 {
				t.Errorf("%q, %v: rc %d, stdout %q, stderr %q; want one line with %q", tc.file, args, rc, out, errs, tc.want)
			}
		}
	}
	// An unreadable file: a directory where the file should be.
	t.Setenv(configEnv, dir)
	if _, errs, rc := cfgRun(t, "config", "get-contexts"); rc != 1 || !strings.Contains(errs, dir) {
		t.Errorf("unreadable file: rc %d %q", rc, errs)
	}
}

// TestContextMutualTLS reaches a mutual-TLS controller with nothing but the
// config file's context: no flags, no $IOTFABRIC_SERVER.
func TestContextMutualTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	sc, err := tlsconfig.Server(ca.Issue("controller"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	authz := &api.Authorizer{}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(sc)), grpc.UnaryInterceptor(authz.Unary), grpc.StreamInterceptor(authz.Stream))
	api.Services{Controller: controller.New(st, controller.Config{})}.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	defer gs.Stop()

	// The file names the certificates relative to its own directory.
	dir := t.TempDir()
	rel := func(p string) string {
		r, err := filepath.Rel(dir, p)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	f := ca.Admin("operator")
	file := "current-context: tls\ncontexts:\n" +
		"  - name: tls\n    server: " + lis.Addr().String() + "\n    tls-cert: " + rel(f.Cert) + "\n    tls-key: " + rel(f.Key) + "\n    tls-ca: " + rel(f.CA) + "\n    timeout: 10s\n" +
		"  - name: plain\n    server: " + lis.Addr().String() + "\n"
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(configEnv, path)
	t.Setenv(serverEnv, "")

	out, errs, rc := cfgRun(t, "network", "create", "sensors", "--subnet", "10.1.0.0/24")
	if rc != 0 || !strings.Contains(out, "sensors") {
		t.Fatalf("network create through the context: rc %d %q %q", rc, out, errs)
	}
	if out, errs, rc := cfgRun(t, "network", "list"); rc != 0 || !strings.Contains(out, "10.1.0.0/24") {
		t.Fatalf("network list through the context: rc %d %q %q", rc, out, errs)
	}
	// A context whose files are missing: the config file is wrong (exit 1), and the error names the context.
	if err := os.WriteFile(path, []byte(file+"  - name: gone\n    server: 127.0.0.1:1\n    tls-cert: gone.crt\n    tls-key: gone.key\n    tls-ca: gone-ca.crt\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errs, rc := cfgRun(t, "--context", "gone", "network", "list"); rc != 1 || !strings.Contains(errs, "context gone: load certificate "+filepath.Join(dir, "gone.crt")) {
		t.Errorf("--context gone: rc %d %q", rc, errs)
	}
	// --context selects the other context for one command: plaintext, refused.
	if _, _, rc := cfgRun(t, "--context", "plain", "network", "list"); rc != 1 {
		t.Errorf("--context plain: rc %d, want 1 (plaintext to a TLS controller)", rc)
	}
	// $IOTFABRIC_SERVER wins over the context's server, --server over both.
	t.Setenv(serverEnv, "127.0.0.1:1")
	if _, errs, rc := cfgRun(t, "network", "list"); rc != 1 || !strings.Contains(errs, "127.0.0.1:1") {
		t.Errorf("$%s over the context: rc %d %q", serverEnv, rc, errs)
	}
	if out, errs, rc := cfgRun(t, "--server", lis.Addr().String(), "network", "list"); rc != 0 || !strings.Contains(out, "sensors") {
		t.Errorf("--server over $%s: rc %d %q %q", serverEnv, rc, out, errs)
	}
}
