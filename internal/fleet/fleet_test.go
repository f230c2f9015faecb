package fleet_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/iotfabric/iotfabric/internal/fleet"
	"github.com/iotfabric/iotfabric/internal/proctest"
	"github.com/iotfabric/iotfabric/pkg/server"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

const controllerEnv = "IOTFABRIC_FLEET_CONTROLLER"

// TestMain runs a controller (pkg/server, as cmd/controller does) when the
// test binary is re-executed with IOTFABRIC_FLEET_CONTROLLER set to its
// configuration file, so that its memory is its own.
func TestMain(m *testing.M) {
	if conf, ok := os.LookupEnv(controllerEnv); ok {
		os.Exit(runController(conf))
	}
	// Thousands of agents keep connections and files open.
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < 200_000 {
		want := syscall.Rlimit{Cur: 200_000, Max: max(lim.Max, 200_000)}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) != nil {
			lim.Cur = lim.Max
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		}
	}
	os.Exit(m.Run())
}

func runController(conf string) int {
	cfg, err := server.LoadConfig(conf)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	var lvl slog.Level
	lvl.UnmarshalText([]byte(cfg.Log.Level))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	c, err := server.Start(ctx, cfg, server.Options{Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("fleet controller serving %s\n", c.Addr())
	if err := c.Wait(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// controller is a controller process on a fixed address and data directory.
type controller struct {
	t       *testing.T
	conf    string
	addr    string
	metrics string // its /metrics and /debug/pprof/
	proc    *proctest.Proc
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func newController(t *testing.T) *controller {
	// The store is on tmpfs when there is one: the figures are the
	// controller's, not the disk's (this machine's disk is shared).
	dir, err := fleet.ShmDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c := &controller{t: t, conf: filepath.Join(dir, "controller.yaml"), addr: freeAddr(t), metrics: freeAddr(t)}
	os.WriteFile(c.conf, fmt.Appendf(nil, "data_dir: %s\napi:\n  listen: %s\nmetrics:\n  listen: %s\n  pprof: true\nlog:\n  level: %s\n", filepath.Join(dir, "data"), c.addr, c.metrics, logLevel()), 0o600)
	c.start()
	return c
}

func (c *controller) start() {
	c.proc = proctest.Start(c.t, []string{controllerEnv + "=" + c.conf}, false, func(line string) (string, bool) {
		a, ok := strings.CutPrefix(line, "fleet controller serving ")
		return a, ok
	})
}

// stop ends the process with sig (SIGTERM: a clean stop) and waits.
func (c *controller) stop(sig syscall.Signal) {
	c.proc.Cmd.Process.Signal(sig)
	c.proc.Kill() // waits; a no-op signal once it exited
}

// rss is the controller's resident memory in bytes.
func (c *controller) rss() int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.proc.Cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// memStats is what the controller's Go runtime says of its memory, after a
// collection.
type memStats struct {
	heap, stacks, goroutines int64
}

// mem collects the controller's garbage (through its heap profile) three
// times, as an idle controller does within minutes (Go collects at least
// every 2 minutes; each collection halves the goroutine stacks that use
// under a quarter of theirs), and reads its heap in use, goroutine stacks and goroutines from /metrics;
// with IOTFABRIC_BENCH_FLEET_PROFILES set to a directory, the heap and
// goroutine profiles are kept there as <name>.heap and <name>.goroutine
// (go tool pprof -top FILE).
func (c *controller) mem(name string) memStats {
	get := func(path string) []byte {
		resp, err := http.Get("http://" + c.metrics + path)
		if err != nil {
			c.t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			c.t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
		}
		return b
	}
	var heap []byte
	for range 3 {
		heap = get("/debug/pprof/heap?gc=1")
	}
	if dir := os.Getenv("IOTFABRIC_BENCH_FLEET_PROFILES"); dir != "" {
		os.WriteFile(filepath.Join(dir, name+".heap"), heap, 0o644)
		os.WriteFile(filepath.Join(dir, name+".goroutine"), get("/debug/pprof/goroutine"), 0o644)
	}
	var m memStats
	for _, l := range strings.Split(string(get("/metrics")), "\n") {
		name, v, ok := strings.Cut(l, " ")
		if !ok {
			continue
		}
		f, _ := strconv.ParseFloat(v, 64)
		switch name {
		case "go_memstats_heap_inuse_bytes":
			m.heap = int64(f)
		case "go_memstats_stack_inuse_bytes":
			m.stacks = int64(f)
		case "go_goroutines":
			m.goroutines = int64(f)
		}
	}
	return m
}

// scenario is one fleet run.
type scenario struct {
	gateways, perNetwork, endpoints int
	idle                            time.Duration
	memOnly                         bool // stop once synced and measured
}

type result struct {
	scenario
	rssBase, rssSynced  int64
	memBase, memSynced  memStats
	synced              time.Duration
	p50, p99, pmax      time.Duration
	restart             time.Duration
	restartBytes        int64
	idleBytesPerGwHour  float64
	routesPerGateway    int
	syncBytesPerGateway int64
}

func logLevel() string {
	if os.Getenv("IOTFABRIC_TEST_LOG") != "" {
		return "debug"
	}
	return "warn"
}

// testLog is the agents' log: stderr with IOTFABRIC_TEST_LOG set, else none.
func testLog() *slog.Logger {
	if os.Getenv("IOTFABRIC_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func pct(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

func runScenario(t *testing.T, sc scenario) result {
	ctx := context.Background()
	r := result{scenario: sc}
	ctl := newController(t)
	conn, err := grpc.NewClient(ctl.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	nets := v1.NewNetworkServiceClient(conn)
	eps := v1.NewEndpointServiceClient(conn)
	agents := v1.NewAgentServiceClient(conn)
	nNets := (sc.gateways + sc.perNetwork - 1) / sc.perNetwork
	for i := range nNets {
		if _, err := nets.CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: fmt.Sprintf("fleet-%d", i),
			Subnets: []string{fmt.Sprintf("10.%d.%d.0/20", i>>4, (i&15)<<4)}}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := agents.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "probe", UnderlayAddress: "198.18.0.1"}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	r.memBase = ctl.mem("base")
	r.rssBase = ctl.rss()

	dir, err := fleet.ShmDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	start := time.Now()
	f, err := fleet.Start(ctx, fleet.Config{Controllers: []string{ctl.addr}, Gateways: sc.gateways, EndpointsPerGateway: sc.endpoints,
		Network: func(i int) string { return fmt.Sprintf("fleet-%d", i/sc.perNetwork) }, Dir: dir, Log: testLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	if _, err := f.WaitAll(ctx, 10*time.Minute, "registered", func(g *fleet.Gateway) bool { return g.Live() == 1 }); err != nil {
		t.Fatal(err)
	}
	if err := f.AddEndpoints(ctx, sc.endpoints, 16); err != nil {
		t.Fatal(err)
	}
	want := (sc.perNetwork - 1) * sc.endpoints
	r.routesPerGateway = want
	if _, err := f.WaitAll(ctx, 10*time.Minute, "synced", func(g *fleet.Gateway) bool { return g.Routes() >= want }); err != nil {
		t.Fatal(err)
	}
	r.synced = time.Since(start)
	r.syncBytesPerGateway = (f.BytesIn.Load() + f.BytesOut.Load()) / int64(sc.gateways)
	time.Sleep(time.Second)
	r.memSynced = ctl.mem(fmt.Sprintf("synced-%d", sc.gateways))
	r.rssSynced = ctl.rss()
	if sc.memOnly {
		return r
	}

	// One change reaching every stream: one endpoint per network, in one call.
	var probes []netip.Prefix
	var req v1.CreateEndpointsRequest
	for i := range nNets {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 4), byte((i&15)<<4 + 15), 250})
		probes = append(probes, netip.PrefixFrom(a, 32))
		req.Endpoints = append(req.Endpoints, &v1.Endpoint{Id: fmt.Sprintf("probe-%d", i), Network: fmt.Sprintf("fleet-%d", i),
			Gateway: "probe", Addresses: []string{a.String()}, Label: uint32(16 + i)})
	}
	f.Probe(probes)
	resp, err := eps.CreateEndpoints(ctx, &req)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range resp.GetErrors() {
		if e != "" {
			t.Fatal(e)
		}
	}
	if _, err := f.WaitAll(ctx, 2*time.Minute, "probe", (*fleet.Gateway).Probed); err != nil {
		t.Fatal(err)
	}
	lat := f.ProbeLatencies()
	r.p50, r.p99, r.pmax = pct(lat, .5), pct(lat, .99), pct(lat, 1)

	// Idle traffic.
	b0 := f.BytesIn.Load() + f.BytesOut.Load()
	time.Sleep(sc.idle)
	idle := f.BytesIn.Load() + f.BytesOut.Load() - b0
	r.idleBytesPerGwHour = float64(idle) / float64(sc.gateways) * float64(time.Hour) / float64(sc.idle)

	// Controller SIGTERM and restart on the same data: until every gateway
	// streams again, and the bytes that took.
	b0 = f.BytesIn.Load() + f.BytesOut.Load()
	t0 := time.Now()
	ctl.stop(syscall.SIGTERM)
	if _, err := f.WaitAll(ctx, time.Minute, "sessions down", func(g *fleet.Gateway) bool { return g.Live() == 0 }); err != nil {
		t.Fatal(err)
	}
	ctl.start()
	if _, err := f.WaitAll(ctx, 10*time.Minute, "streaming again", func(g *fleet.Gateway) bool { return g.Live() == 1 }); err != nil {
		t.Fatal(err)
	}
	r.restart = time.Since(t0)
	time.Sleep(time.Second)
	r.restartBytes = f.BytesIn.Load() + f.BytesOut.Load() - b0
	if _, err := f.WaitAll(ctx, time.Minute, "routes after the restart", func(g *fleet.Gateway) bool { return g.Routes() >= want+1 }); err != nil {
		t.Fatal(err)
	}
	return r
}

func printTable(rs []result) {
	fmt.Printf("\nbench-fleet: simulated gateways (real agents, one gRPC connection each) against one controller process\n")
	fmt.Printf("%8s %8s %8s %12s %12s %10s %9s %9s %9s %10s %14s %12s\n", "gateways", "gw/net", "routes/gw", "ctl MB", "ctl KB/gw", "synced", "chg p50", "chg p99", "chg max", "restart", "restart B/gw", "idle B/gw-h")
	for _, r := range rs {
		fmt.Printf("%8d %8d %8d %12.0f %12.1f %10s %9s %9s %9s %10s %14d %12.0f\n", r.gateways, r.perNetwork, r.routesPerGateway,
			float64(r.rssSynced)/(1<<20), float64(r.rssSynced-r.rssBase)/1024/float64(r.gateways), r.synced.Round(100*time.Millisecond),
			r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond), r.pmax.Round(time.Millisecond), r.restart.Round(100*time.Millisecond),
			r.restartBytes/int64(r.gateways), r.idleBytesPerGwHour)
	}
	fmt.Println()
}

// TestFleetSmoke: 100 simulated gateways (10 per network, one endpoint
// each) register, sync, get one change, survive a controller restart; the
// figures are printed, the checks are that every step completes.
func TestFleetSmoke(t *testing.T) {
	r := runScenario(t, scenario{gateways: 100, perNetwork: 10, endpoints: 1, idle: 2 * time.Second})
	printTable([]result{r})
}

// TestBenchFleet: make bench-fleet. IOTFABRIC_BENCH_FLEET lists the fleet
// sizes (e.g. 1000,5000,10000).
func TestBenchFleet(t *testing.T) {
	sizes := os.Getenv("IOTFABRIC_BENCH_FLEET")
	if sizes == "" {
		t.Skip("benchmark: run with IOTFABRIC_BENCH_FLEET=1000,5000,10000 (make bench-fleet)")
	}
	idle := time.Minute
	if v := os.Getenv("IOTFABRIC_BENCH_FLEET_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		idle = d
	}
	var rs []result
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, runScenario(t, scenario{gateways: n, perNetwork: 100, endpoints: 2, idle: idle}))
		printTable(rs)
	}
}

// grpcFloor is what n bare gRPC connections, each with one open server
// stream (health Watch), cost the controller process: gRPC's own share of
// a gateway, which no route state or iotfabric code is part of.
func grpcFloor(t *testing.T, n int) result {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctl := newController(t)
	defer ctl.stop(syscall.SIGTERM)
	r := result{scenario: scenario{gateways: n}}
	r.memBase, r.rssBase = ctl.mem("floor-base"), ctl.rss()
	for i := range n {
		conn, err := grpc.NewClient(ctl.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		w, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Recv(); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	time.Sleep(time.Second)
	r.memSynced = ctl.mem(fmt.Sprintf("floor-%d", n))
	r.rssSynced = ctl.rss()
	return r
}

func printMemTable(rs []result) {
	fmt.Printf("\nbench-fleet-mem: controller memory per idle gateway (one gRPC connection and route stream each), after collections\n")
	fmt.Printf("%8s %8s %9s %10s %10s %12s %12s %12s\n", "gateways", "gw/net", "routes/gw", "ctl MB", "RSS KB/gw", "heap KB/gw", "stack KB/gw", "goroutines/gw")
	for _, r := range rs {
		n := float64(r.gateways)
		if r.perNetwork == 0 {
			fmt.Printf("%8d %8s %9s", r.gateways, "bare", "gRPC")
		} else {
			fmt.Printf("%8d %8d %9d", r.gateways, r.perNetwork, r.routesPerGateway)
		}
		fmt.Printf(" %10.0f %10.1f %10.1f %12.1f %12.1f\n",
			float64(r.rssSynced)/(1<<20), float64(r.rssSynced-r.rssBase)/1024/n,
			float64(r.memSynced.heap-r.memBase.heap)/1024/n, float64(r.memSynced.stacks-r.memBase.stacks)/1024/n,
			float64(r.memSynced.goroutines-r.memBase.goroutines)/n)
	}
	fmt.Println()
}

// TestBenchFleetMemory: make bench-fleet-mem. IOTFABRIC_BENCH_FLEET_MEM
// lists the fleet sizes; each fleet registers, admits one endpoint per
// gateway (100 gateways per network) and syncs; then the controller's
// memory per gateway is printed, and beside it that of as many bare gRPC
// connections with one stream each (the "bare gRPC" rows).
func TestBenchFleetMemory(t *testing.T) {
	sizes := os.Getenv("IOTFABRIC_BENCH_FLEET_MEM")
	if sizes == "" {
		t.Skip("benchmark: run with IOTFABRIC_BENCH_FLEET_MEM=1000,2000 (make bench-fleet-mem)")
	}
	var rs []result
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, runScenario(t, scenario{gateways: n, perNetwork: 100, endpoints: 1, memOnly: true}))
		printMemTable(rs)
		rs = append(rs, grpcFloor(t, n))
		printMemTable(rs)
	}
}
