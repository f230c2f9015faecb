package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/iotfabric/iotfabric/pkg/api"
	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig/tlstest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func startController(t *testing.T) string {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	gs := grpc.NewServer()
	api.Services{Controller: controller.New(st, controller.Config{})}.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

func ctl(t *testing.T, server string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	rc := run(append([]string{"--server", server}, args...), &out, &errb)
	return out.String(), errb.String(), rc
}

func TestWalkThrough(t *testing.T) {
	srv := startController(t)
	steps := []struct {
		args []string
		want string
	}{
		{[]string{"network", "create", "sensors", "--subnet", "10.1.0.0/24", "--subnet", "fd00:1::/64", "--export-rt", "target:64512:100"}, "target:64512:8000001"},
		{[]string{"gateway", "create", "gw1", "--address", "192.0.2.1", "--encap", "mplsoudp"}, "mplsoudp"},
		{[]string{"endpoint", "create", "--network", "sensors", "--gateway", "gw1", "--name", "pod-a", "--label", "100"}, "10.1.0.1,fd00:1::1"},
		{[]string{"endpoint", "create", "--network", "sensors", "--gateway", "gw1", "--name", "vm", "--ip", "10.1.0.77"}, "10.1.0.77"},
		{[]string{"endpoint", "list", "--network", "sensors"}, "vm"},
		{[]string{"ipam", "show", "sensors"}, "10.1.0.64/28"},
		{[]string{"network", "update", "sensors", "--import-rt", "target:65000:5"}, "target:65000:5"},
		{[]string{"endpoint", "update", "vm", "--label", "200"}, "active"},
	}
	for _, s := range steps {
		out, errs, rc := ctl(t, srv, s.args...)
		if rc != 0 || !strings.Contains(out, s.want) {
			t.Fatalf("%v: rc %d, stdout %q, stderr %q; want %q", s.args, rc, out, errs, s.want)
		}
	}
	out, _, _ := ctl(t, srv, "-o", "json", "endpoint", "list")
	var eps []map[string]any
	if err := json.Unmarshal([]byte(out), &eps); err != nil || len(eps) != 2 {
		t.Fatalf("json list: %v\n%s", err, out)
	}
	out, _, _ = ctl(t, srv, "endpoint", "show", "pod-a", "-o", "json")
	var one map[string]any
	if err := json.Unmarshal([]byte(out), &one); err != nil || one["label"] != float64(100) {
		t.Fatalf("json show: %v\n%s", err, out)
	}
}

func TestErrorsAreOneLine(t *testing.T) {
	srv := startController(t)
	ctl(t, srv, "network", "create", "n", "--subnet", "10.0.0.0/28")
	for _, tc := range []struct {
		args []string
		rc   int
		want string
	}{
		{[]string{"network", "create", "x", "--subnet", "10.0.0.1/24"}, 1, "invalid argument: network x: subnet 10.0.0.1/24 has host bits set"},
		{[]string{"network", "show", "missing"}, 1, `not found: network "missing" not found`},
		{[]string{"network", "create", "x"}, 2, "needs at least one --subnet"},
		{[]string{"network", "create", "x", "--subnet", "10.0.0.0/24", "--encap", "carrier-pigeon"}, 2, "unknown encapsulation"},
		{[]string{"gateway", "create", "g"}, 2, "needs --address"},
		{[]string{"endpoint", "create", "--network", "n"}, 2, "needs --network, --gateway and --name"},
		{[]string{"frobnicate", "x"}, 2, "unknown command"},
		{[]string{"-o", "yaml", "network", "list"}, 2, "output format"},
		{[]string{"--server", "127.0.0.1:1", "network", "list"}, 1, "cannot reach the controller at 127.0.0.1:1"},
	} {
		out, errs, rc := ctl(t, srv, tc.args...)
		if rc != tc.rc || !strings.Contains(errs, tc.want) || strings.Count(strings.TrimSpace(errs), "\n") != 0 || out != "" {
			t.Errorf("%v: rc %d (want %d), stderr %q (want one line with %q), stdout %q", tc.args, rc, tc.rc, errs, tc.want, out)
		}
	}
}

func TestMutualTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	sc, err := tlsconfig.Server(ca.Issue("controller"))
	if err != nil {
		t.Fatal(err)
	}
	st, _ := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
	defer st.Close()
	authz := &api.Authorizer{}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(sc)), grpc.UnaryInterceptor(authz.Unary), grpc.StreamInterceptor(authz.Stream))
	api.Services{Controller: controller.New(st, controller.Config{})}.Register(gs)
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	go gs.Serve(lis)
	defer gs.Stop()
	f := ca.Admin("operator")
	out, errs, rc := ctl(t, lis.Addr().String(), "--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-ca", f.CA, "network", "list")
	if rc != 0 || !strings.Contains(out, "NAME") {
		t.Fatalf("with a certificate: rc %d %q %q", rc, out, errs)
	}
	v := ca.Viewer("auditor")
	if _, errs, rc := ctl(t, lis.Addr().String(), "--tls-cert", v.Cert, "--tls-key", v.Key, "--tls-ca", v.CA, "network", "delete", "red"); rc == 0 || !strings.Contains(errs, "viewer") {
		t.Fatalf("a viewer deleted a network: rc %d %q", rc, errs)
	}
	if _, _, rc := ctl(t, lis.Addr().String(), "network", "list"); rc == 0 {
		t.Fatal("plaintext accepted by a mutual-TLS controller")
	}
	if _, errs, rc := ctl(t, lis.Addr().String(), "--tls-cert", f.Cert, "network", "list"); rc != 2 || !strings.Contains(errs, "all three files") {
		t.Fatalf("incomplete TLS flags: rc %d %q", rc, errs)
	}
}

// TestGatewayShowAgent: gateway show prints what the agent registered, and
// dashes for a gateway whose agent never did.
func TestGatewayShowAgent(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := controller.New(st, controller.Config{})
	gs := grpc.NewServer()
	api.Services{Controller: c}.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	srv := lis.Addr().String()
	if _, errs, rc := ctl(t, srv, "gateway", "create", "gw1", "--address", "192.0.2.1"); rc != 0 {
		t.Fatalf("gateway create: rc %d, %s", rc, errs)
	}
	out, errs, rc := ctl(t, srv, "gateway", "show", "gw1")
	if rc != 0 || !strings.Contains(out, "ARCH") || !strings.Contains(out, "-  ") {
		t.Fatalf("gateway show before registration: rc %d, stdout %q, stderr %q", rc, out, errs)
	}
	// What the agent's Register carries, as the agent service hands it on.
	if _, _, err := c.RegisterGateway(context.Background(), &v1.Gateway{Name: "gw1", UnderlayAddress: "192.0.2.1"},
		controller.Agent{KernelFeatures: []string{"mpls", "vrf", "bpf-fast-path"}, Architecture: "arm64", Version: "v1.2.3"}); err != nil {
		t.Fatal(err)
	}
	out, errs, rc = ctl(t, srv, "gateway", "show", "gw1")
	for _, want := range []string{"ARCH", "AGENT-VERSION", "KERNEL-FEATURES", "arm64", "v1.2.3", "mpls,vrf,bpf-fast-path"} {
		if rc != 0 || !strings.Contains(out, want) {
			t.Fatalf("gateway show: rc %d, stdout %q, stderr %q; want %q", rc, out, errs, want)
		}
	}
	out, _, _ = ctl(t, srv, "gateway", "show", "gw1", "-o", "json")
	var g map[string]any
	if err := json.Unmarshal([]byte(out), &g); err != nil {
		t.Fatal(err)
	}
	if g["architecture"] != "arm64" || g["agent_version"] != "v1.2.3" {
		t.Errorf("gateway show -o json: %s", out)
	}
	// The list keeps its columns.
	if out, _, _ = ctl(t, srv, "gateway", "list"); strings.Contains(out, "arm64") {
		t.Errorf("gateway list: %s", out)
	}
}
