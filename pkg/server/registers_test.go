package server

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// A started controller runs its gateway cache: an agent registering its
// unchanged gateway again is answered from memory, which
// iotfabric_gateway_registers_total counts apart from the store's answers.
func TestRegistersFromMemoryCounted(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DataDir, cfg.API.Listen, cfg.Metrics.Listen = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0"
	c, err := Start(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	conn, err := grpc.NewClient(c.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	agents := v1.NewAgentServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.1"}, AgentVersion: "1.0"}
	scrape := func() string {
		resp, err := http.Get("http://" + c.MetricsAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if _, err := agents.Register(ctx, req); err != nil {
		t.Fatal(err)
	}
	if m := scrape(); !strings.Contains(m, `iotfabric_gateway_registers_total{from="store"} 1`+"\n") || !strings.Contains(m, `iotfabric_gateway_registers_total{from="memory"} 0`+"\n") {
		t.Fatalf("after a first registration, /metrics has:\n%s", grepLines(m, "iotfabric_gateway_registers_total"))
	}
	// Registered again (unchanged), once the cache has the gateway.
	for !strings.Contains(scrape(), `iotfabric_gateway_registers_total{from="memory"} 1`+"\n") {
		if ctx.Err() != nil {
			t.Fatalf("no registration answered from memory:\n%s", grepLines(scrape(), "iotfabric_gateway_registers_total"))
		}
		time.Sleep(10 * time.Millisecond)
		if _, err := agents.Register(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
