package server

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/iotfabric/iotfabric/internal/proctest"
	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	"github.com/iotfabric/iotfabric/pkg/store/etcd/etcdtest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// childEnv holds, in a re-executed test binary, the JSON of the childConfig
// of a controller to run as a process of its own (to be killed).
const childEnv = "IOTFABRIC_SERVER_TEST_CHILD"

type childConfig struct {
	DataDir       string
	EtcdEndpoint  string
	EtcdNamespace string
	Interval      time.Duration
}

func TestMain(m *testing.M) {
	if v, ok := os.LookupEnv(childEnv); ok {
		os.Exit(runChild(v))
	}
	os.Exit(m.Run())
}

// runChild runs a controller until it is killed; it prints its API address.
func runChild(v string) int {
	var cc childConfig
	if err := json.Unmarshal([]byte(v), &cc); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg := DefaultConfig()
	cfg.API.Listen, cfg.Metrics.Listen = "127.0.0.1:0", MetricsOff
	cfg.DataDir, cfg.Liveness.Interval = cc.DataDir, cc.Interval
	if cc.EtcdEndpoint != "" {
		cfg.Etcd.Endpoints, cfg.Etcd.Namespace = []string{cc.EtcdEndpoint}, cc.EtcdNamespace
	}
	c, err := Start(context.Background(), cfg, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("api=%s\n", c.Addr())
	return map[bool]int{true: 1}[c.Wait() != nil]
}

// startChild starts a controller in a process of its own; its Ready is the
// API address.
func startChild(t *testing.T, cc childConfig) *proctest.Proc {
	t.Helper()
	conf, _ := json.Marshal(cc)
	return proctest.Start(t, []string{childEnv + "=" + string(conf)}, false, func(line string) (string, bool) {
		return strings.CutPrefix(line, "api=")
	})
}

func clients(t *testing.T, addr string) (v1.AgentServiceClient, v1.GatewayServiceClient) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return v1.NewAgentServiceClient(conn), v1.NewGatewayServiceClient(conn)
}

// openStream opens a route stream of gateway gw and waits for its snapshot.
func openStream(ctx context.Context, t *testing.T, a v1.AgentServiceClient, gw string) context.CancelFunc {
	t.Helper()
	sctx, cancel := context.WithCancel(ctx)
	s, err := a.WatchGatewayRoutes(sctx, &v1.WatchGatewayRoutesRequest{Gateway: gw})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	return cancel
}

func gatewayState(ctx context.Context, t *testing.T, g v1.GatewayServiceClient, gw string) v1.GatewayState {
	t.Helper()
	out, err := g.GetGateway(ctx, &v1.NameRequest{Name: gw})
	if err != nil {
		t.Fatal(err)
	}
	return out.State
}

// A single bbolt controller killed while a gateway streams routes from it
// leaves the stream's marker behind; the controller started again on the
// same data directory marks the gateway down within one interval, and sweeps
// the marker and the dead instance's liveness key.
func TestKilledControllerMarkersSweptAtRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	const interval = time.Second
	first := startChild(t, childConfig{DataDir: dir, Interval: interval})
	a, g := clients(t, first.Ready)
	if _, err := a.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.1"}}); err != nil {
		t.Fatal(err)
	}
	openStream(ctx, t, a, "gw")
	if s := gatewayState(ctx, t, g, "gw"); s != v1.GatewayState_GATEWAY_STATE_UP {
		t.Fatalf("gateway %v with a stream open", s)
	}
	first.Kill()

	cfg := DefaultConfig()
	cfg.DataDir, cfg.API.Listen, cfg.Metrics.Listen, cfg.Liveness.Interval = dir, "127.0.0.1:0", MetricsOff, interval
	started := time.Now()
	c, err := Start(ctx, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	_, g2 := clients(t, c.Addr())
	for gatewayState(ctx, t, g2, "gw") != v1.GatewayState_GATEWAY_STATE_DOWN {
		if time.Since(started) > interval {
			t.Fatalf("gateway still up %v after the restart of the controller that streamed to it", time.Since(started))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("gateway down %v after the restart began", time.Since(started))

	// After a clean stop, the store holds no marker and no liveness key.
	c.Stop()
	st, err := bolt.Open(filepath.Join(dir, "state.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, p := range []string{keys.Streams, keys.Controllers} {
		if kvs, _, err := st.List(ctx, p); err != nil || len(kvs) > 0 {
			t.Errorf("%s after a clean stop: %v, %v; want none", p, kvs, err)
		}
	}
}

// Two controllers share etcd and a gateway streams from both. One is killed:
// once its heartbeat is stale its marker no longer keeps the gateway up, and
// the end of the stream at the other controller marks the gateway down.
func TestGatewayDownAfterOtherControllerKilled(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const interval = 200 * time.Millisecond
	killed := startChild(t, childConfig{EtcdEndpoint: srv.Endpoint, EtcdNamespace: "/down/", Interval: interval})
	a1, _ := clients(t, killed.Ready)
	a2, g2 := startOnEtcdEvery(t, srv.Endpoint, interval)
	if _, err := a1.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.1"}}); err != nil {
		t.Fatal(err)
	}
	openStream(ctx, t, a1, "gw")
	close2 := openStream(ctx, t, a2, "gw")
	defer close2()

	st := openEtcd(t, srv.Endpoint)
	defer st.Close()
	markers, rev, err := st.List(ctx, keys.GatewayStreams("gw"))
	if err != nil || len(markers) != 2 {
		t.Fatalf("stream markers %v, %v; want one per controller", markers, err)
	}
	killed.Kill()
	killedAt := time.Now()

	// The surviving controller sweeps the dead one's marker once its
	// heartbeat is stale; the gateway stays up meanwhile.
	w := st.Watch(ctx, keys.GatewayStreams("gw"), rev)
	waitDeleted := func(what string) {
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
				t.Fatalf("%s: no stream marker was removed", what)
			}
		}
	}
	waitDeleted("dead controller")
	d := time.Since(killedAt)
	t.Logf("dead controller's marker swept %v after the kill (interval %v)", d, interval)
	if d > (controller.DeadAfter+2)*interval {
		t.Errorf("dead controller's marker swept %v after the kill; want within %v", d, (controller.DeadAfter+2)*interval)
	}
	if s := gatewayState(ctx, t, g2, "gw"); s != v1.GatewayState_GATEWAY_STATE_UP {
		t.Fatalf("gateway %v while it streams from the live controller", s)
	}
	close2()
	waitDeleted("stream at the live controller")
	if s := gatewayState(ctx, t, g2, "gw"); s != v1.GatewayState_GATEWAY_STATE_DOWN {
		t.Fatalf("gateway %v after its last live stream ended", s)
	}
	if kvs, _, err := st.List(ctx, keys.Controllers); err != nil || len(kvs) != 1 {
		t.Errorf("liveness keys %v, %v; want only the live controller's", kvs, err)
	}
}

// A stream closing while the other controller streaming to the gateway is
// dead but not yet swept marks the gateway down: dead markers do not count.
func TestCloseIgnoresDeadControllersMarkers(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A long interval: the live controller does not sweep during the test.
	a, g := startOnEtcdEvery(t, srv.Endpoint, time.Hour)
	if _, err := a.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.1"}}); err != nil {
		t.Fatal(err)
	}
	st := openEtcd(t, srv.Endpoint)
	defer st.Close()
	// The marker of a dead instance: heartbeat long ago.
	hb := fmt.Sprintf(`{"time":%q,"interval_ms":1000}`, time.Now().Add(-time.Minute).Format(time.RFC3339Nano))
	if _, err := st.Txn(ctx, nil, []store.Op{store.Put(keys.Controller("dead"), []byte(hb)),
		store.Put(keys.GatewayStream("gw", "dead-1"), nil)}); err != nil {
		t.Fatal(err)
	}
	closeStream := openStream(ctx, t, a, "gw")
	_, rev, err := st.List(ctx, keys.GatewayStreams("gw"))
	if err != nil {
		t.Fatal(err)
	}
	w := st.Watch(ctx, keys.GatewayStreams("gw"), rev)
	closeStream()
	select {
	case <-w:
	case <-ctx.Done():
		t.Fatal("the stream's marker was never removed")
	}
	if s := gatewayState(ctx, t, g, "gw"); s != v1.GatewayState_GATEWAY_STATE_DOWN {
		t.Fatalf("gateway %v after its last live stream ended (a dead controller's marker is left)", s)
	}
}
