// Package fleet is a load generator for capacity planning: a fleet of
// simulated gateways, each a real vrouter agent (pkg/agent: its core, its
// controller sessions with keepalive, backoff and the route stream) with its
// own gRPC connection to each controller, its own state directory and a
// data plane that programs nothing but applies route changes route by route,
// as the real one does (dataPlane). Endpoints are admitted through the
// agent's CNI handler, as the plugin would. The fleet counts the bytes its
// connections carry and records when each gateway's sessions are live and
// when a probe route reaches it, which is what `make bench-fleet` prints.
//
// One process holds as many gateways as its open-file limit allows (two or
// three files each); a larger fleet is split over worker processes
// (Config.Processes, WorkerEnv, ServeWorker) that report their gateways'
// state to the process that started them.
//
// It starts only agents; the controllers are the caller's.
package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/iotfabric/iotfabric/pkg/agent"
	"github.com/iotfabric/iotfabric/pkg/cni"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Config describes a fleet.
type Config struct {
	// Controllers are the controllers' API addresses (plaintext gRPC).
	Controllers []string
	// Gateways is the number of simulated gateways.
	Gateways int
	// EndpointsPerGateway are admitted on each gateway once it runs.
	EndpointsPerGateway int
	// Network returns the network of gateway i's endpoints.
	Network func(i int) string
	// Dir holds the gateways' state directories.
	Dir string
	// StartRate bounds how many gateways start per second (0: 500).
	StartRate int
	// Keepalive is the agents' keepalive (0: the agent's default).
	Keepalive time.Duration
	Log       *slog.Logger
	// First is the index of the first gateway (its name and underlay).
	First int
	// Processes splits the gateways evenly over that many worker
	// processes (this executable started again with WorkerEnv set, see
	// ServeWorker); 0 or 1: they run in this process. ProcessesFor says
	// how many the open-file limit needs.
	Processes int
}

// Fleet is a running fleet.
type Fleet struct {
	cfg Config
	gws []*Gateway
	wg  sync.WaitGroup

	// BytesIn and BytesOut count what the fleet's connections received
	// from and sent to the controllers.
	BytesIn, BytesOut atomic.Int64

	probeMu sync.Mutex
	probe   map[netip.Prefix]bool // routes whose arrival is being timed
	probeT0 time.Time

	workers []*worker // when split over processes
	bytesMu sync.Mutex
}

// Gateway is one simulated gateway.
type Gateway struct {
	Name string
	// Agent is the gateway's agent; nil when it runs in a worker process.
	Agent *agent.Agent
	f     *Fleet
	idx   int

	mu       sync.Mutex
	live     map[string]bool
	downs    map[string]int // sessions that ended, per controller
	liveAt   time.Time      // when the last session became live
	routes   int            // remote routes the data plane holds
	set      routeSet       // the data plane's routes (dataPlane)
	probeAt  time.Time      // a probe route was applied (the data plane has it)
	recvAt   time.Time      // a probe route was received on the route stream
	cancel   context.CancelFunc
	done     chan struct{}
	attached int
	dirty    atomic.Bool // changed since a worker last reported it
}

func newGateway(f *Fleet, i int) *Gateway {
	return &Gateway{Name: fmt.Sprintf("fleet-gw-%05d", i), f: f, idx: i, live: map[string]bool{}, downs: map[string]int{}, done: make(chan struct{})}
}

// countConn counts the bytes of a connection.
type countConn struct {
	net.Conn
	in, out *atomic.Int64
}

func (c *countConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.in.Add(int64(n))
	return n, err
}

func (c *countConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.out.Add(int64(n))
	return n, err
}

// fileMargin is the files the rest of the process keeps open.
const fileMargin = 200

// Underlay is gateway i's underlay address (100.64.0.0/10).
func Underlay(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{100, byte(64 + i>>16), byte(i >> 8), byte(i)})
}

// Start starts the fleet's agents, StartRate per second, and returns once
// all run (their sessions connect on their own).
func Start(ctx context.Context, cfg Config) (*Fleet, error) {
	logOn := cfg.Log != nil
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.StartRate <= 0 {
		cfg.StartRate = 500
	}
	if cfg.Processes > 1 {
		return startWorkers(ctx, cfg, logOn)
	}
	// Each gateway keeps a connection per controller and its route log
	// (pkg/agent appends to it) open.
	perGw := len(cfg.Controllers) + 1
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(perGw*cfg.Gateways+fileMargin) {
		return nil, fmt.Errorf("%d gateways need about %d open files (%d each: a connection per controller and the route log) and this process may open %d: raise its limit (ulimit -n) or run fewer gateways per process (Config.Processes, ProcessesFor)",
			cfg.Gateways, perGw*cfg.Gateways+fileMargin, perGw, lim.Cur)
	}
	f := &Fleet{cfg: cfg, probe: map[netip.Prefix]bool{}}
	// As gRPC's own dialer, which the agent uses: TCP keepalive with the
	// system's settings, not Go's 15 s (see pkg/server's listenAPI).
	dialer := net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: -1, Interval: -1, Count: -1}}
	dial := grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return &countConn{Conn: c, in: &f.BytesIn, out: &f.BytesOut}, nil
	})
	tick := time.NewTicker(time.Second / time.Duration(cfg.StartRate))
	defer tick.Stop()
	for i := range cfg.Gateways {
		g := newGateway(f, cfg.First+i)
		dir := filepath.Join(cfg.Dir, g.Name)
		// No OnApply: the agent would build the whole desired state for it
		// on every change, which the real gateway does not.
		a, err := agent.New(agent.Options{
			Config:      agent.Config{Gateway: g.Name, Underlay: Underlay(g.idx), StateDir: dir, Log: cfg.Log},
			Controllers: cfg.Controllers,
			DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), dial, grpc.WithStreamInterceptor(g.streamInterceptor)},
			Keepalive:   cfg.Keepalive,
			Applier:     dataPlane{g: g},
			OnSession:   g.onSession,
		})
		if err != nil {
			f.Stop()
			return nil, fmt.Errorf("gateway %d: %w", i, err)
		}
		g.Agent = a
		actx, cancel := context.WithCancel(context.Background())
		g.cancel = cancel
		f.gws = append(f.gws, g)
		f.wg.Go(func() {
			defer close(g.done)
			if err := a.Run(actx); err != nil {
				cfg.Log.Error("fleet gateway stopped", logkey.Gateway, g.Name, logkey.Err, err)
			}
		})
		select {
		case <-tick.C:
		case <-ctx.Done():
			f.Stop()
			return nil, ctx.Err()
		}
	}
	return f, nil
}

// Gateways returns the fleet's gateways.
func (f *Fleet) Gateways() []*Gateway { return f.gws }

func (g *Gateway) onSession(ctl string, live bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.live[ctl] && !live {
		g.downs[ctl]++
	}
	g.live[ctl] = live
	if live {
		g.liveAt = time.Now()
	}
	g.dirty.Store(true)
}

// LiveOn reports whether the gateway's session with controller ctl is live.
func (g *Gateway) LiveOn(ctl string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.live[ctl]
}

// Downs is how many of the gateway's live sessions with ctl have ended.
func (g *Gateway) Downs(ctl string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.downs[ctl]
}

// probes returns the routes whose arrival is being timed.
func (f *Fleet) probes() map[netip.Prefix]bool {
	f.probeMu.Lock()
	defer f.probeMu.Unlock()
	return f.probe
}

// Live reports how many of its controllers' sessions are live.
func (g *Gateway) Live() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, l := range g.live {
		if l {
			n++
		}
	}
	return n
}

// Routes is the number of remote routes the gateway's data plane holds.
func (g *Gateway) Routes() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.routes
}

// AddEndpoints admits n more endpoints on every gateway through the agent's
// CNI handler (ADD then attach), conc gateways at a time.
func (f *Fleet) AddEndpoints(ctx context.Context, n, conc int) error {
	if len(f.workers) > 0 {
		return f.ask(command{Op: "add", N: n, Conc: max(1, (conc+len(f.workers)-1)/len(f.workers))})
	}
	sem := make(chan struct{}, max(conc, 1))
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for i, g := range f.gws {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			for range n {
				id := fmt.Sprintf("%s-c%d", g.Name, g.attached)
				g.attached++
				req := &cni.Request{Op: cni.OpAdd, ContainerID: id, IfName: "eth0", Network: f.cfg.Network(i)}
				resp := g.Agent.Handle(ctx, req)
				for try := 0; resp.Error != nil && resp.Error.Code == cni.CodeTryAgainLater && try < 5; try++ {
					// As a container runtime does: the controller was busy.
					time.Sleep(time.Second)
					resp = g.Agent.Handle(ctx, req)
				}
				if resp.Error == nil {
					resp = g.Agent.Handle(ctx, &cni.Request{Op: cni.OpAttach, ContainerID: id, IfName: "eth0", MAC: "02:00:00:00:00:01"})
				}
				if resp.Error != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("gateway %s: %s", g.Name, resp.Error.Error())
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// WaitAll waits until every gateway satisfies ok, polling; it returns how
// long that took, or an error saying how many did not by timeout.
func (f *Fleet) WaitAll(ctx context.Context, timeout time.Duration, what string, ok func(*Gateway) bool) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		missing := 0
		var example string
		for _, g := range f.gws {
			if !ok(g) {
				if missing == 0 {
					example = g.Name
				}
				missing++
			}
		}
		if missing == 0 {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s: %d of %d gateways not within %v (e.g. %s)", what, missing, len(f.gws), timeout, example)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Probe times the arrival of routes to the given prefixes (host routes):
// call before the change that makes them; ProbeLatencies then returns, per
// gateway that got one of them, the time from the call.
func (f *Fleet) Probe(prefixes []netip.Prefix) error {
	t0 := time.Now()
	f.probeFrom(prefixes, t0)
	if len(f.workers) > 0 {
		return f.ask(command{Op: "probe", Prefixes: prefixes, T0: t0.UnixNano()})
	}
	return nil
}

func (f *Fleet) probeFrom(prefixes []netip.Prefix, t0 time.Time) {
	f.probeMu.Lock()
	defer f.probeMu.Unlock()
	f.probe = map[netip.Prefix]bool{}
	for _, p := range prefixes {
		f.probe[p] = true
	}
	f.probeT0 = t0
	for _, g := range f.gws {
		g.mu.Lock()
		g.probeAt, g.recvAt = time.Time{}, time.Time{}
		g.mu.Unlock()
		g.dirty.Store(true)
	}
}

// ProbeLatencies returns the latencies, since Probe, of the probe routes'
// arrival in the gateways' data planes (the agents applied them).
func (f *Fleet) ProbeLatencies() []time.Duration {
	return f.probeLatencies(func(g *Gateway) time.Time { return g.probeAt })
}

// ProbeReceived returns the latencies, since Probe, of the probe routes'
// arrival on the gateways' route streams (received, not yet applied): what
// the controller and the network take, without the agents' own work, which
// here shares the machine's cores with every other simulated gateway.
func (f *Fleet) ProbeReceived() []time.Duration {
	return f.probeLatencies(func(g *Gateway) time.Time { return g.recvAt })
}

func (f *Fleet) probeLatencies(at func(*Gateway) time.Time) []time.Duration {
	f.probeMu.Lock()
	t0 := f.probeT0
	f.probeMu.Unlock()
	var out []time.Duration
	for _, g := range f.gws {
		g.mu.Lock()
		// A worker's report from before Probe may still say an earlier
		// arrival.
		if t := at(g); !t.IsZero() && !t.Before(t0) {
			out = append(out, t.Sub(t0))
		}
		g.mu.Unlock()
	}
	return out
}

// streamInterceptor stamps the arrival of a probe route on the gateway's
// route stream, as the agent receives it.
func (g *Gateway) streamInterceptor(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil || method != v1.AgentService_WatchGatewayRoutes_FullMethodName {
		return s, err
	}
	return probeStream{ClientStream: s, g: g}, nil
}

type probeStream struct {
	grpc.ClientStream
	g *Gateway
}

func (s probeStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if u, ok := m.(*v1.GatewayRoutes); ok && err == nil && len(u.GetPut()) > 0 {
		s.g.received(u.GetPut())
	}
	return err
}

// received stamps the first probe route among routes.
func (g *Gateway) received(routes []*v1.Route) {
	probe := g.f.probes()
	if len(probe) == 0 {
		return
	}
	for _, r := range routes {
		if p, err := netip.ParsePrefix(r.GetPrefix()); err == nil && probe[p] {
			g.mu.Lock()
			if g.recvAt.IsZero() {
				g.recvAt = time.Now()
				g.dirty.Store(true)
			}
			g.mu.Unlock()
			return
		}
	}
}

// Probed reports whether the gateway got a probe route since Probe.
func (g *Gateway) Probed() bool {
	g.f.probeMu.Lock()
	t0 := g.f.probeT0
	g.f.probeMu.Unlock()
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.probeAt.IsZero() && !g.probeAt.Before(t0)
}

// Stop stops every agent and waits for them (and for the worker
// processes, when the fleet is split over them).
func (f *Fleet) Stop() {
	if len(f.workers) > 0 {
		f.stopWorkers()
		return
	}
	for _, g := range f.gws {
		if g.cancel != nil {
			g.cancel()
		}
	}
	f.wg.Wait()
}

// ShmDir returns a directory for the fleet's state under /dev/shm when it
// exists (thousands of agents fsync their state), else under base.
func ShmDir(base string) (string, error) {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return os.MkdirTemp("/dev/shm", "iotfabric-fleet-")
	}
	return os.MkdirTemp(base, "fleet-")
}
