package server

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig/tlstest"
)

// Under TLS a connection's read buffer is its own for as long as the
// connection lives (on plain TCP it is pooled): the controller's
// (apiBufferSize) keeps an idle gateway's connection about 28 KB smaller
// than gRPC's default 32 KiB would. Measured as live heap per idle
// connection, against the default in the same run.
func TestTLSConnectionReadBuffer(t *testing.T) {
	const conns = 200
	ca := tlstest.NewCA(t, "iotfabric-ca")
	gw := ca.Issue("gateway:gw-1")
	perConn := func(opts ...grpc.ServerOption) float64 {
		st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.API.Listen, cfg.Metrics.Listen, cfg.API.TLS = "127.0.0.1:0", MetricsOff, ca.Issue("controller")
		cfg.Liveness.Interval = time.Hour
		c, err := Start(context.Background(), cfg, Options{ExclusiveStore: true, ServerOptions: opts,
			OpenStore: func(context.Context) (store.Store, error) { return st, nil }})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Stop()
		tc, err := tlsconfig.Client(gw)
		if err != nil {
			t.Fatal(err)
		}
		heap := func() uint64 {
			runtime.GC()
			runtime.GC()
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			return m.HeapAlloc
		}
		var ccs []*grpc.ClientConn
		defer func() {
			for _, cc := range ccs {
				cc.Close()
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		dial := func() {
			cc, err := grpc.NewClient(c.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
			if err != nil {
				t.Fatal(err)
			}
			ccs = append(ccs, cc)
			if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
				t.Fatal(err)
			}
		}
		dial() // the first connection's one-off costs
		before := heap()
		for range conns {
			dial()
		}
		return (float64(heap()) - float64(before)) / conns
	}
	now := perConn()
	grpcDefault := perConn(grpc.ReadBufferSize(32 << 10))
	t.Logf("live heap per idle TLS connection (both ends): %.1f KB, %.1f KB with gRPC's default read buffer", now/1e3, grpcDefault/1e3)
	if saved := grpcDefault - now; saved < 20e3 {
		t.Errorf("the controller's read buffer saves %.1f KB per TLS connection against gRPC's default (want about 28 KB: it is %d bytes)", saved/1e3, apiBufferSize)
	}
}
