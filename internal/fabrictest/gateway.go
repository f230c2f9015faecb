package fabrictest

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/pkg/agent"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/overlay"
)

// Gateway is one gateway: its namespace (nil: no kernel, states are only
// recorded), its agent with a CNI socket and a state directory that survive
// Restart.
type Gateway struct {
	t           testing.TB
	Name        string
	Underlay    netip.Addr
	NS          *netnstest.NS
	Dir         string
	Sock        string
	Controllers []string
	Log         *slog.Logger
	// OnState, if set before the state changes, sees every applied state.
	OnState func(overlay.State)
	// Options, if set, adjusts the agent's options at each Start.
	Options func(*agent.Options)

	mu      sync.Mutex
	agent   *agent.Agent
	cancel  context.CancelFunc
	stopped chan struct{}
	last    overlay.State
	applied int
	live    map[string]bool
	changed chan struct{}
}

// recorder is the Applier of a gateway without a namespace.
type recorder struct{}

func (recorder) Set(context.Context, overlay.State) error { return nil }

// StartGateway starts a gateway's agent; kernel selects a namespace with a
// real overlay.Manager (else states are only recorded); opts, if given,
// adjusts the agent's options (Gateway.Options).
func StartGateway(t testing.TB, name string, underlay netip.Addr, controllers []string, kernel bool, opts ...func(*agent.Options)) *Gateway {
	g := &Gateway{t: t, Name: name, Underlay: underlay, Dir: t.TempDir(), Controllers: controllers, changed: make(chan struct{}), Log: slog.New(slog.DiscardHandler)}
	if len(opts) > 0 {
		g.Options = func(o *agent.Options) {
			for _, f := range opts {
				f(o)
			}
		}
	}
	if os.Getenv("IOTFABRIC_TEST_LOG") != "" {
		g.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With(logkey.Gateway, name)
	}
	g.Sock = filepath.Join(g.Dir, "cni.sock")
	if kernel {
		g.NS = netnstest.New(t, "iofgw")
	}
	g.Start()
	t.Cleanup(g.Stop)
	return g
}

// Agent returns the running agent.
func (g *Gateway) Agent() *agent.Agent {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.agent
}

// Start starts the agent (again) on the gateway's state directory.
func (g *Gateway) Start() {
	t := g.t
	var applier agent.Applier = recorder{}
	var m *overlay.Manager
	hostNS := ""
	if g.NS != nil {
		var err error
		if m, err = overlay.New(context.Background(), overlay.Config{NetNS: g.NS.Path(), Logger: g.Log}); err != nil {
			t.Fatal(err)
		}
		applier, hostNS = m, g.NS.Path()
	}
	o := agent.Options{
		Config:      agent.Config{Gateway: g.Name, Underlay: g.Underlay, StateDir: filepath.Join(g.Dir, "state"), Log: g.Log},
		Controllers: g.Controllers, DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		Applier: applier, HostNetns: hostNS, CNISocket: g.Sock,
		OnApply: func(s overlay.State, err error) {
			if g.OnState != nil {
				g.OnState(s)
			}
			g.mu.Lock()
			g.last = s
			g.applied++
			g.notifyLocked()
			g.mu.Unlock()
		},
		OnSession: func(addr string, live bool) {
			g.mu.Lock()
			if g.live == nil {
				g.live = map[string]bool{}
			}
			g.live[addr] = live
			g.notifyLocked()
			g.mu.Unlock()
		},
	}
	if g.Options != nil {
		g.Options(&o)
	}
	a, err := agent.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if m != nil {
			defer m.Close()
		}
		if err := a.Run(ctx); err != nil {
			t.Errorf("agent %s: %v", g.Name, err)
		}
	}()
	g.mu.Lock()
	g.agent, g.cancel, g.stopped = a, cancel, stopped
	g.mu.Unlock()
	<-a.Ready()
}

func (g *Gateway) notifyLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// WaitLive waits until the number of live controller streams is n.
func (g *Gateway) WaitLive(timeout time.Duration, n int) {
	g.t.Helper()
	deadline := time.After(timeout)
	for {
		g.mu.Lock()
		live := 0
		for _, l := range g.live {
			if l {
				live++
			}
		}
		ch := g.changed
		g.mu.Unlock()
		if live == n {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			g.t.Fatalf("gateway %s: %d live controller streams, want %d", g.Name, live, n)
		}
	}
}

// Stop stops the agent (the data plane stays).
func (g *Gateway) Stop() {
	g.mu.Lock()
	cancel, stopped := g.cancel, g.stopped
	g.cancel = nil
	g.mu.Unlock()
	if cancel != nil {
		cancel()
		<-stopped
	}
}

// WaitState waits until the desired state last applied satisfies ok.
func (g *Gateway) WaitState(timeout time.Duration, what string, ok func(overlay.State) bool) overlay.State {
	g.t.Helper()
	deadline := time.After(timeout)
	for {
		g.mu.Lock()
		st, ch, n := g.last, g.changed, g.applied
		g.mu.Unlock()
		if n > 0 && ok(st) {
			return st
		}
		select {
		case <-ch:
		case <-deadline:
			g.t.Fatalf("gateway %s: %s: not within %v; last state %+v", g.Name, what, timeout, st)
		}
	}
}

// HasRoute reports whether st routes prefix of network via gateway gw with label.
func HasRoute(st overlay.State, network string, prefix netip.Prefix, gw netip.Addr, label uint32) bool {
	for _, n := range st.Networks {
		if n.Name != network {
			continue
		}
		for _, r := range n.Routes {
			if r.Prefix == prefix && r.RemoteUnderlay == gw && (label == 0 || r.Label == label) {
				return true
			}
		}
	}
	return false
}

// CNI drives the plugin binary through libcni.
type CNI struct {
	Conf *libcni.CNIConfig
	dir  string
}

// Exec runs plugins like libcni's default, but is safe for concurrent use
// from the start (libcni's lazy default is not).
func Exec() invoke.Exec {
	return &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
}

// NewCNI uses the plugin built in pluginDir (see BuildPlugin).
func NewCNI(t testing.TB, pluginDir string) *CNI {
	ex := Exec()
	dir := t.TempDir()
	return &CNI{Conf: libcni.NewCNIConfigWithCacheDir([]string{pluginDir, "/usr/lib/cni"}, dir, ex), dir: dir}
}

// List is the configuration list of the plugin for gw's socket and network.
func (c *CNI) List(g *Gateway, network string) *libcni.NetworkConfigList {
	l, err := libcni.NetworkConfFromBytes(fmt.Appendf(nil, `{"cniVersion": "1.1.0", "name": "iotfabric", "plugins": [
	  {"type": "iotfabric", "socket": %q, "network": %q}]}`, g.Sock, network))
	if err != nil {
		g.t.Fatal(err)
	}
	return l
}

// Add adds pod (container id) to network on gateway g.
func (c *CNI) Add(ctx context.Context, g *Gateway, network, id string, pod *netnstest.NS) (*current.Result, error) {
	r, err := c.Conf.AddNetworkList(ctx, c.List(g, network), &libcni.RuntimeConf{ContainerID: id, NetNS: pod.Path(), IfName: "eth0"})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(r)
}

// Del deletes pod from network on gateway g.
func (c *CNI) Del(ctx context.Context, g *Gateway, network, id string, pod *netnstest.NS) error {
	return c.Conf.DelNetworkList(ctx, c.List(g, network), &libcni.RuntimeConf{ContainerID: id, NetNS: pod.Path(), IfName: "eth0"})
}
