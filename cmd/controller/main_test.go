package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func TestConfigFileAndValidation(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(`
data_dir: /tmp/x
api:
  listen: 127.0.0.1:6000
bgp:
  asn: 65001
  router_id: 10.0.0.1
  peers:
    - address: 10.0.0.2
      asn: 65001
      password: secret
`), 0o600)
	c, err := loadConfig(good)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/tmp/x" || c.API.Listen != "127.0.0.1:6000" || c.Metrics.Listen != DefaultMetricsListen || c.BGP.ASN != 65001 || len(c.BGP.Peers) != 1 {
		t.Fatalf("loaded %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	typo := filepath.Join(dir, "typo.yaml")
	os.WriteFile(typo, []byte("data_dri: /tmp\n"), 0o600)
	if _, err := loadConfig(typo); err == nil || !strings.Contains(err.Error(), "data_dri") {
		t.Fatalf("unknown key: %v", err)
	}
	empty := filepath.Join(dir, "empty.yaml")
	os.WriteFile(empty, nil, 0o600)
	if _, err := loadConfig(empty); err != nil {
		t.Fatalf("empty file: %v", err)
	}
	bad := defaultConfig()
	bad.API.Listen = "nonsense"
	bad.Log.Level = "loud"
	bad.BGP.Peers = []PeerConfig{{Address: "x"}}
	err = bad.Validate()
	for _, want := range []string{"api.listen", "log.level", "peers[0].address", "peers[0].asn"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validation error %v does not name %s", err, want)
		}
	}
}

func TestRunFlagsAndHelp(t *testing.T) {
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	if rc := run([]string{"--help"}, devnull); rc != 0 {
		t.Fatalf("--help exit %d", rc)
	}
	if rc := run([]string{"--bogus"}, devnull); rc != 2 {
		t.Fatalf("unknown flag exit %d, want 2", rc)
	}
	if rc := run([]string{"--log-level", "loud"}, devnull); rc != 2 {
		t.Fatalf("bad config exit %d, want 2", rc)
	}
	if rc := run([]string{"--api-listen", "0.0.0.0:0", "--data-dir", t.TempDir()}, devnull); rc != 2 {
		t.Fatalf("non-loopback API without TLS nor --api-insecure: exit %d, want 2", rc)
	}
}

// The daemon serves, answers /healthz and /metrics, stops cleanly when its
// context ends, and a restart on the same data directory finds its state.
func TestServeRestartKeepsState(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cfg := defaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.API.Listen = "127.0.0.1:0"
	cfg.Metrics.Listen = "127.0.0.1:0"
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	start := func() (string, string, func()) {
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan [2]string, 1)
		done := make(chan error, 1)
		go func() { done <- serve(ctx, cfg, log, func(a, m string) { ready <- [2]string{a, m} }) }()
		select {
		case addrs := <-ready:
			return addrs[0], addrs[1], func() {
				cancel()
				select {
				case err := <-done:
					if err != nil {
						t.Errorf("serve: %v", err)
					}
				case <-time.After(15 * time.Second):
					t.Error("controller did not stop within 15s")
				}
			}
		case err := <-done:
			t.Fatalf("serve: %v", err)
		case <-time.After(15 * time.Second):
			t.Fatal("controller did not start")
		}
		return "", "", nil
	}

	api, metrics, stop := start()
	conn, err := grpc.NewClient(api, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	n, err := v1.NewNetworkServiceClient(conn).CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "n", Subnets: []string{"10.0.0.0/24"}}})
	if err != nil {
		t.Fatal(err)
	}
	v1.NewGatewayServiceClient(conn).CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{Name: "g", UnderlayAddress: "192.0.2.1"}})
	e1, err := v1.NewEndpointServiceClient(conn).CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: "e1", Network: "n", Gateway: "g"}})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"/healthz": "ok", "/metrics": `iotfabric_api_requests_total{code="OK",method="CreateEndpoint"} 1`} {
		resp, err := http.Get("http://" + metrics + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Contains(body, []byte(want)) {
			t.Fatalf("%s does not contain %q:\n%s", path, want, body)
		}
	}
	conn.Close()
	stop()

	api, _, stop = start()
	defer stop()
	conn, _ = grpc.NewClient(api, grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer conn.Close()
	got, err := v1.NewNetworkServiceClient(conn).GetNetwork(ctx, &v1.NameRequest{Name: "n"})
	if err != nil || got.Id != n.Id {
		t.Fatalf("after restart: %+v %v", got, err)
	}
	e2, err := v1.NewEndpointServiceClient(conn).CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: "e2", Network: "n", Gateway: "g"}})
	if err != nil || e2.Addresses[0] == e1.Addresses[0] {
		t.Fatalf("after restart the next endpoint got %v (e1 holds %v): %v", e2.GetAddresses(), e1.Addresses, err)
	}
}
