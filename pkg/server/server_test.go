package server

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/etcd"
	"github.com/iotfabric/iotfabric/pkg/store/etcd/etcdtest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func openEtcd(t *testing.T, endpoint string) store.Store {
	t.Helper()
	s, err := etcd.Open(context.Background(), etcd.Options{Endpoints: []string{endpoint}, Namespace: "/down/"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startOnEtcd starts a controller of its own on the shared etcd.
func startOnEtcd(t *testing.T, endpoint string) (v1.AgentServiceClient, v1.GatewayServiceClient) {
	t.Helper()
	return startOnEtcdEvery(t, endpoint, DefaultLiveness)
}

// startOnEtcdEvery is startOnEtcd with a liveness interval.
func startOnEtcdEvery(t *testing.T, endpoint string, interval time.Duration) (v1.AgentServiceClient, v1.GatewayServiceClient) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.API.Listen, cfg.Metrics.Listen, cfg.Liveness.Interval = "127.0.0.1:0", MetricsOff, interval
	c, err := Start(context.Background(), cfg, Options{OpenStore: func(context.Context) (store.Store, error) { return openEtcd(t, endpoint), nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	conn, err := grpc.NewClient(c.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return v1.NewAgentServiceClient(conn), v1.NewGatewayServiceClient(conn)
}

// A gateway that streams routes from two controllers sharing etcd stays up
// while one of its streams ends, and is down when the last one ends.
func TestGatewayDownOnlyWhenLastStreamEnds(t *testing.T) {
	srv := etcdtest.Start(t)
	a1, g1 := startOnEtcd(t, srv.Endpoint)
	a2, _ := startOnEtcd(t, srv.Endpoint)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a1.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.1"}}); err != nil {
		t.Fatal(err)
	}
	open := func(a v1.AgentServiceClient) context.CancelFunc {
		sctx, scancel := context.WithCancel(ctx)
		s, err := a.WatchGatewayRoutes(sctx, &v1.WatchGatewayRoutesRequest{Gateway: "gw"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil { // the snapshot: the stream is open
			t.Fatal(err)
		}
		return scancel
	}
	close1, close2 := open(a1), open(a2)

	// Follow the stream markers, to know when a controller has closed its stream.
	st := openEtcd(t, srv.Endpoint)
	defer st.Close()
	markers, rev, err := st.List(ctx, keys.GatewayStreams("gw"))
	if err != nil || len(markers) != 2 {
		t.Fatalf("stream markers %v, %v; want one per controller", markers, err)
	}
	w := st.Watch(ctx, keys.GatewayStreams("gw"), rev)
	waitClosed := func() {
		t.Helper()
		for {
			select {
			case b := <-w:
				for _, ev := range b.Events {
					if ev.Type == store.EventDelete {
						return
					}
				}
			case <-ctx.Done():
				t.Fatal("a stream marker was never removed")
			}
		}
	}
	state := func() v1.GatewayState {
		g, err := g1.GetGateway(ctx, &v1.NameRequest{Name: "gw"})
		if err != nil {
			t.Fatal(err)
		}
		return g.State
	}

	close1()
	waitClosed()
	if s := state(); s != v1.GatewayState_GATEWAY_STATE_UP {
		t.Fatalf("gateway %v while it still streams from the second controller", s)
	}
	close2()
	waitClosed()
	if s := state(); s != v1.GatewayState_GATEWAY_STATE_DOWN {
		t.Fatalf("gateway %v after its last stream ended", s)
	}
	// A new stream marks it up again.
	close3 := open(a1)
	defer close3()
	if s := state(); s != v1.GatewayState_GATEWAY_STATE_UP {
		t.Fatalf("gateway %v with a stream open", s)
	}
}
