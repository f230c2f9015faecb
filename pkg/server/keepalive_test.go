package server

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// api.keepalive: defaults below the agents' 30 s pings, durations from the
// file, positive.
func TestKeepaliveConfig(t *testing.T) {
	want := KeepaliveConfig{MinTime: 10 * time.Second, Time: 60 * time.Second, Timeout: 20 * time.Second}
	if got := DefaultConfig().API.Keepalive; got != want {
		t.Errorf("default api.keepalive %+v, want %+v", got, want)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "controller.yaml")
	if err := os.WriteFile(path, []byte("data_dir: "+dir+"\napi:\n  keepalive:\n    min_time: 1s\n    time: 2s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	want = KeepaliveConfig{MinTime: time.Second, Time: 2 * time.Second, Timeout: 20 * time.Second}
	if cfg.API.Keepalive != want {
		t.Errorf("api.keepalive %+v, want %+v", cfg.API.Keepalive, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.API.Keepalive.Timeout = 0
	if err := cfg.Validate(); err == nil {
		t.Fatal("api.keepalive.timeout 0 accepted")
	}
}

// startFrozenProxy forwards TCP connections to upstream until frozen is
// closed; then it stops reading and writing without closing anything: the
// path died silently.
func startFrozenProxy(t *testing.T, upstream string) (addr string, frozen chan struct{}) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	frozen = make(chan struct{})
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	pump := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			select {
			case <-frozen:
				return // read nothing more: unanswered, unacknowledged
			default:
			}
			if err != nil {
				return
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			go pump(u, c)
			go pump(c, u)
		}
	}()
	return l.Addr().String(), frozen
}

// The controller pings an idle client connection (api.keepalive.time) and
// closes it when the ping goes unanswered (api.keepalive.timeout): a gateway
// whose path died silently is marked down instead of staying up until the
// kernel gives up on the connection. With the defaults (60 s, 20 s) the
// gateway stays up for the whole test.
func TestServerKeepaliveClosesDeadClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := DefaultConfig()
	cfg.DataDir, cfg.API.Listen, cfg.Metrics.Listen = t.TempDir(), "127.0.0.1:0", MetricsOff
	cfg.API.Keepalive.Time, cfg.API.Keepalive.Timeout = time.Second, time.Second
	c, err := Start(ctx, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	addr, frozen := startFrozenProxy(t, c.Addr())
	a, _ := clients(t, addr)
	if _, err := a.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.1"}}); err != nil {
		t.Fatal(err)
	}
	openStream(ctx, t, a, "gw")
	_, g := clients(t, c.Addr()) // directly, not through the dead path
	if s := gatewayState(ctx, t, g, "gw"); s != v1.GatewayState_GATEWAY_STATE_UP {
		t.Fatalf("gateway %v with a stream open", s)
	}
	close(frozen)
	start := time.Now()
	for gatewayState(ctx, t, g, "gw") != v1.GatewayState_GATEWAY_STATE_DOWN {
		if time.Since(start) > 6*time.Second {
			t.Fatalf("gateway still up %v after its path died (keepalive time 1s, timeout 1s)", time.Since(start))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("gateway down %v after its path died", time.Since(start).Round(time.Millisecond))
}
