// Package fabrictest is the whole-fabric test harness: real controllers
// (built by pkg/server, as cmd/controller builds them) that can be stopped
// and started again on the same address and may share one etcd, real
// gateways (pkg/agent with a kernel data plane in a network namespace of
// internal/netnstest, or only recording its states) and CNI plugin builds.
// The agent's, the CNI plugin's and the vrouter agent's tests use it; their
// pods are netnstest namespaces too.
//
// It may only start things the way the programs start them (server.Start,
// agent.New); it owns no production code.
package fabrictest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/server"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Controller is a controller serving its API on a loopback address, with its
// state in a bbolt file of its own unless Open says otherwise.
type Controller struct {
	t    testing.TB
	dir  string
	Addr string
	opts []grpc.ServerOption
	Log  *slog.Logger
	// Open opens the controller's store (default: a bbolt file of its own,
	// without fsync).
	Open func() (store.Store, error)
	// BGP, if set before Start, runs the BGP speaker with its peers.
	BGP *bgp.Config
	// Config is the configuration it was last started with.
	Config server.Config
	// Tune, if set before Start, changes the configuration the controller
	// starts with (after the defaults and the fields above).
	Tune func(*server.Config)
	// NoAuthorization, if set before Start, serves the API without its
	// authorization (benchmarks of its cost).
	NoAuthorization bool

	mu  sync.Mutex
	srv *server.Controller
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

// StartControllerWith starts the controller c describes (Open, BGP, Tune).
func StartControllerWith(t testing.TB, c *Controller, opts ...grpc.ServerOption) *Controller {
	c.t, c.dir, c.Addr, c.opts, c.Log = t, t.TempDir(), "127.0.0.1:0", opts, slog.New(slog.DiscardHandler)
	if os.Getenv("IOTFABRIC_TEST_LOG") != "" {
		c.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With(logkey.Controller, t.Name())
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

// config is the controller's configuration: the defaults, its address, no
// metrics, and the BGP section c.BGP describes.
func (c *Controller) config() server.Config {
	cfg := server.DefaultConfig()
	cfg.DataDir = c.dir
	cfg.API.Listen = c.Addr
	cfg.Metrics.Listen = server.MetricsOff
	if b := c.BGP; b != nil {
		cfg.BGP = BGPSection(*b)
	}
	if c.Tune != nil {
		c.Tune(&cfg)
	}
	return cfg
}

// BGPSection is the configuration file's BGP section for a speaker configuration.
func BGPSection(b bgp.Config) server.BGPConfig {
	s := server.DefaultConfig().BGP
	if b.ASN != 0 {
		s.ASN = b.ASN
	}
	s.RouterID = b.RouterID.String()
	if b.ListenPort != 0 {
		s.ListenPort = int32(b.ListenPort)
	}
	if len(b.ListenAddress) > 0 {
		s.ListenAddress = b.ListenAddress[0].String()
	}
	s.RouteReflector = b.RouteReflector
	if b.ClusterID.IsValid() {
		s.ClusterID = b.ClusterID.String()
	}
	s.GracefulRestart.Disabled, s.GracefulRestart.RestartTime = b.GracefulRestart.Disabled, b.GracefulRestart.RestartTime
	for _, p := range b.Peers {
		s.Peers = append(s.Peers, server.PeerConfig{Address: p.Address.String(), ASN: p.ASN, Password: p.Password, Port: p.Port})
	}
	return s
}

// Start starts the controller again (on the address it had).
func (c *Controller) Start() {
	t := c.t
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.srv != nil {
		return
	}
	cfg := c.config()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, err := server.Start(context.Background(), cfg, server.Options{Logger: c.Log, ServerOptions: c.opts, NoAuthorization: c.NoAuthorization,
		OpenStore: func(context.Context) (store.Store, error) { return c.Open() }})
	if err != nil {
		t.Fatal(err)
	}
	c.Config, c.srv, c.Addr = cfg, srv, srv.Addr()
}

// Stop stops the controller (its streams and connections end).
func (c *Controller) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.srv != nil {
		c.srv.Stop()
		c.srv = nil
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

// BuildPlugin builds cmd/cni-plugin as dir/iotfabric and returns dir.
func BuildPlugin(dir string) (string, error) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	// go test puts its own toolchain's bin first on the test's PATH, so this
	// is the go command that builds the tests.
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("build the CNI plugin: %w", err)
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
