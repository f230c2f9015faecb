// Package agenttest has what the agent's and the CNI plugin's tests share: a
// real controller (store, route table and AgentService, as cmd/controller
// wires them) that can be stopped and started again on the same address,
// network namespaces that clean up after themselves, and plugin builds.
package agenttest

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/iotfabric/iotfabric/pkg/api"
	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/gobgp"
	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	"github.com/iotfabric/iotfabric/pkg/vpn"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Controller is a controller serving the API and AgentService on a loopback
// address, with its state in a bbolt file.
type Controller struct {
	t    testing.TB
	dir  string
	Addr string
	opts []grpc.ServerOption
	Log  *slog.Logger
	// Open opens the controller's store (default: a bbolt file of its own).
	Open func() (store.Store, error)
	// BGP, if set before Start, runs the BGP speaker with its peers.
	BGP *bgp.Config

	mu   sync.Mutex
	stop func()
}

// StartController starts a controller; it is stopped at the end of the test.
func StartController(t testing.TB, opts ...grpc.ServerOption) *Controller {
	return StartControllerStore(t, nil, opts...)
}

// StartControllerStore starts a controller on the store open returns (nil:
// a bbolt file of its own); several controllers may share one etcd.
func StartControllerStore(t testing.TB, open func() (store.Store, error), opts ...grpc.ServerOption) *Controller {
	return StartControllerWith(t, &Controller{Open: open}, opts...)
}

// StartControllerWith starts the controller c describes (Open, BGP).
func StartControllerWith(t testing.TB, c *Controller, opts ...grpc.ServerOption) *Controller {
	c.t, c.dir, c.Addr, c.opts, c.Log = t, t.TempDir(), "127.0.0.1:0", opts, slog.New(slog.DiscardHandler)
	if os.Getenv("IOTFABRIC_TEST_LOG") != "" {
		c.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("controller", t.Name())
	}
	if c.Open == nil {
		dir := c.dir
		c.Open = func() (store.Store, error) {
			return bolt.Open(filepath.Join(dir, "state.db"), bolt.Options{NoSync: true})
		}
	}
	c.Start()
	t.Cleanup(c.Stop)
	return c
}

// Start starts the controller again (on the address it had).
func (c *Controller) Start() {
	t := c.t
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stop != nil {
		return
	}
	st, err := c.Open()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ctl := controller.New(st, controller.Config{Logger: c.Log})
	if _, err := ctl.LoadNetworks(ctx); err != nil {
		t.Fatal(err)
	}
	var sp bgp.Speaker
	var peers []bgp.PeerConfig
	if c.BGP != nil {
		gsp, err := gobgp.New(c.BGP.WithDefaults(), c.Log)
		if err != nil {
			cancel()
			st.Close()
			t.Fatal(err)
		}
		sp, peers = gsp, c.BGP.Peers
	}
	r := vpn.NewRunner(st, sp, 64512, c.Log)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	<-r.Ready()
	gs := grpc.NewServer(c.opts...)
	api.Services{Controller: ctl, Routes: r, Peers: vpn.NewPeers(st, r, peers), Logger: c.Log}.Register(gs)
	lis, err := net.Listen("tcp", c.Addr)
	if err != nil {
		cancel()
		<-done
		st.Close()
		t.Fatal(err)
	}
	c.Addr = lis.Addr().String()
	go gs.Serve(lis)
	c.stop = func() {
		gs.Stop()
		cancel()
		<-done
		st.Close()
	}
}

// Stop stops the controller (its streams and connections end).
func (c *Controller) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stop != nil {
		c.stop()
		c.stop = nil
	}
}

// DeadAddr returns a loopback address nothing listens on.
func DeadAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Clients are the controller's API clients.
type Clients struct {
	Net   v1.NetworkServiceClient
	EP    v1.EndpointServiceClient
	GW    v1.GatewayServiceClient
	Route v1.RouteServiceClient
	Agent v1.AgentServiceClient
}

// Dial returns API clients (closed at the end of the test).
func (c *Controller) Dial(opts ...grpc.DialOption) Clients {
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(c.Addr, opts...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { conn.Close() })
	return Clients{v1.NewNetworkServiceClient(conn), v1.NewEndpointServiceClient(conn), v1.NewGatewayServiceClient(conn),
		v1.NewRouteServiceClient(conn), v1.NewAgentServiceClient(conn)}
}

// NewNS makes a network namespace (bind-mounted under /run/netns with a random
// name) with its loopback up, removed at the end of the test.
func NewNS(t testing.TB) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Close()
		testutils.UnmountNS(n)
	})
	err = n.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// RequireRoot skips t unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
}

// BuildPlugin builds cmd/cni-plugin as dir/iotfabric and returns dir.
func BuildPlugin(dir string) (string, error) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "..")
	goCmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goCmd); err != nil {
		goCmd = "go"
	}
	cmd := exec.Command(goCmd, "build", "-o", filepath.Join(dir, "iotfabric"), "./cmd/cni-plugin")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", &buildError{err: err, out: string(out)}
	}
	return dir, nil
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }
