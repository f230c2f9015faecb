package fleet_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
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
	"github.com/iotfabric/iotfabric/pkg/store/etcd/etcdtest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

const controllerEnv = "IOTFABRIC_FLEET_CONTROLLER"

// grpcEnv sets gRPC server options of the controller processes, for
// measuring what they change (make bench-fleet-mem FLEET_GRPC=...): a
// comma-separated list of read=N (ReadBufferSize), write=N
// (WriteBufferSize), shared=0|1 (SharedWriteBuffer), window=N
// (InitialWindowSize), connwindow=N (InitialConnWindowSize); "" or
// "default" for none.
const grpcEnv = "IOTFABRIC_BENCH_FLEET_GRPC"

// grpcOptions parses a grpcEnv value.
func grpcOptions(v string) ([]grpc.ServerOption, error) {
	var opts []grpc.ServerOption
	for _, kv := range strings.Split(v, ",") {
		if kv = strings.TrimSpace(kv); kv == "" || kv == "default" {
			continue
		}
		k, val, _ := strings.Cut(kv, "=")
		n, err := strconv.Atoi(val)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", grpcEnv, err)
		}
		switch k {
		case "read":
			opts = append(opts, grpc.ReadBufferSize(n))
		case "write":
			opts = append(opts, grpc.WriteBufferSize(n))
		case "shared":
			//lint:ignore SA1019 the deprecated option is measured on purpose (bench-fleet-mem)
			opts = append(opts, grpc.SharedWriteBuffer(n != 0))
		case "window":
			opts = append(opts, grpc.InitialWindowSize(int32(n)))
		case "connwindow":
			opts = append(opts, grpc.InitialConnWindowSize(int32(n)))
		default:
			return nil, fmt.Errorf("%s: unknown option %q", grpcEnv, k)
		}
	}
	return opts, nil
}

// TestMain runs a controller (pkg/server, as cmd/controller does) when the
// test binary is re-executed with IOTFABRIC_FLEET_CONTROLLER set to its
// configuration file, so that its memory is its own.
func TestMain(m *testing.M) {
	if conf, ok := os.LookupEnv(controllerEnv); ok {
		os.Exit(runController(conf))
	}
	if _, ok := os.LookupEnv(fleet.WorkerEnv); ok {
		os.Exit(fleet.ServeWorker(os.Stdin, os.Stdout))
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
	gopts, err := grpcOptions(os.Getenv(grpcEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	c, err := server.Start(ctx, cfg, server.Options{Logger: log, ServerOptions: gopts})
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
	grpc    string // grpcEnv for this process ("": the test's own)
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func newController(t *testing.T) *controller { return newControllerOn(t, "") }

// newControllerOn starts a controller on etcd (etcdURL, namespace /fleet/)
// or, when it is "", on a bbolt store of its own.
func newControllerOn(t *testing.T, etcdURL string) *controller {
	return newControllerGRPC(t, etcdURL, "")
}

// newControllerGRPC is newControllerOn with the gRPC server options
// grpcOpts (grpcEnv's form; "": those of the test's environment).
func newControllerGRPC(t *testing.T, etcdURL, grpcOpts string) *controller {
	// The store is on tmpfs when there is one: the figures are the
	// controller's, not the disk's (this machine's disk is shared).
	dir, err := fleet.ShmDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c := &controller{t: t, conf: filepath.Join(dir, "controller.yaml"), addr: freeAddr(t), metrics: freeAddr(t), grpc: grpcOpts}
	var store string
	if etcdURL != "" {
		store = fmt.Sprintf("etcd:\n  endpoints: [%q]\n  namespace: /fleet/\n", etcdURL)
	}
	os.WriteFile(c.conf, fmt.Appendf(nil, store+"data_dir: %s\napi:\n  listen: %s\nmetrics:\n  listen: %s\n  pprof: true\nlog:\n  level: %s\n", filepath.Join(dir, "data"), c.addr, c.metrics, logLevel()), 0o600)
	c.start()
	return c
}

// controllerReady is how long a controller process has to start serving.
const controllerReady = 5 * time.Minute

func (c *controller) start() {
	env := []string{controllerEnv + "=" + c.conf}
	if c.grpc != "" {
		env = append(env, grpcEnv+"="+c.grpc)
	}
	// A controller started again on the store of a 10,000-gateway fleet
	// loads it while every agent reconnects: on a busy machine that takes
	// longer than proctest's usual 30 s.
	c.proc = proctest.StartWithin(c.t, controllerReady, env, false, func(line string) (string, bool) {
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

// changeSent is the controller's histogram of route changes handed to
// gateway streams (iotfabric_gateway_route_change_seconds): cumulative
// counts by upper bound.
func (c *controller) changeSent() map[float64]float64 {
	resp, err := http.Get("http://" + c.metrics + "/metrics")
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	h := map[float64]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(l, `iotfabric_gateway_route_change_seconds_bucket{le="`)
		if !ok {
			continue
		}
		le, v, _ := strings.Cut(rest, `"} `)
		bound, err1 := strconv.ParseFloat(le, 64) // "+Inf" parses too
		n, err2 := strconv.ParseFloat(v, 64)
		if err1 == nil && err2 == nil {
			h[bound] = n
		}
	}
	return h
}

// sentQuantile is the upper bound of the bucket holding quantile q of the
// changes handed to streams between the histograms before and after (-1:
// above the last bound), and how many there were.
func sentQuantile(before, after map[float64]float64, q float64) (time.Duration, int) {
	bounds := slices.Sorted(maps.Keys(after))
	if len(bounds) == 0 {
		return 0, 0
	}
	total := after[bounds[len(bounds)-1]] - before[bounds[len(bounds)-1]]
	for _, b := range bounds {
		if total > 0 && after[b]-before[b] >= q*total {
			if math.IsInf(b, 1) {
				return -1, int(total)
			}
			return time.Duration(b * float64(time.Second)), int(total)
		}
	}
	return 0, int(total)
}

// refused is how many calls the controller refused with
// RESOURCE_EXHAUSTED (full syncs past the admission limit) since it started.
func (c *controller) refused() int64 {
	resp, err := http.Get("http://" + c.metrics + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var n int64
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "iotfabric_api_requests_total{") && strings.Contains(l, `code="ResourceExhausted"`) {
			_, v, _ := strings.Cut(l, "} ")
			f, _ := strconv.ParseFloat(v, 64)
			n += int64(f)
		}
	}
	return n
}

// codes is how many calls of the API method the controller answered, per
// gRPC code, since it started.
func (c *controller) codes(method string) map[string]int64 {
	out := map[string]int64{}
	resp, err := http.Get("http://" + c.metrics + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "iotfabric_api_requests_total{") || !strings.Contains(l, `method="`+method+`"`) {
			continue
		}
		_, code, _ := strings.Cut(l, `code="`)
		code, _, _ = strings.Cut(code, `"`)
		_, v, _ := strings.Cut(l, "} ")
		f, _ := strconv.ParseFloat(v, 64)
		out[code] += int64(f)
	}
	return out
}

// startRate is the fleet's start rate, IOTFABRIC_BENCH_FLEET_START_RATE
// gateways per second (0: fleet's default).
func startRate(t *testing.T) int {
	v := os.Getenv("IOTFABRIC_BENCH_FLEET_START_RATE")
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// cpuProfile profiles the controller's CPU for d in the background into
// IOTFABRIC_BENCH_FLEET_PROFILES/<name>.cpu and, over the same time, the
// load generator's (the agents: this process, or each worker process) into
// <name>-agents.cpu (<name>-agents-N.cpu per worker); the returned
// function waits for both. Without the variable it does nothing.
func (c *controller) cpuProfile(f *fleet.Fleet, name string, d time.Duration) (wait func()) {
	dir := os.Getenv("IOTFABRIC_BENCH_FLEET_PROFILES")
	if dir == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", c.metrics, int(d.Seconds())))
		if err != nil {
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		os.WriteFile(filepath.Join(dir, name+".cpu"), b, 0o644)
	}()
	if err := f.CPUProfile(dir, name+"-agents", d); err != nil {
		c.t.Log(err)
	}
	return func() { <-done }
}

// scenario is one fleet run.
type scenario struct {
	gateways, perNetwork, endpoints int
	idle                            time.Duration
	memOnly                         bool // stop once synced and measured
	processes                       int  // load generator processes (0: as the open-file limit needs)
}

type result struct {
	scenario
	grpcOpts            string // the bare floor's gRPC options ("": the environment's)
	processes           int    // load generator processes
	rssBase, rssSynced  int64
	memBase, memSynced  memStats
	synced              time.Duration
	p50, p99, pmax      time.Duration // the change applied by every agent
	rp50, rp99, rpmax   time.Duration // the change received on every route stream
	sp50, sp99, spmax   time.Duration // the change handed to every stream by the controller (bucket bounds)
	restart             time.Duration
	restartDown         time.Duration // SIGTERM until every session ended
	restartServing      time.Duration // start until the controller served
	restartRefused      int64         // calls refused (RESOURCE_EXHAUSTED) until all stream
	restartBytes        int64
	idleBytesPerGwHour  float64
	idleDowns           int // sessions that ended while idle (each costs a reconnect)
	routesPerGateway    int
	syncBytesPerGateway int64
}

// testLogLevel is IOTFABRIC_TEST_LOG's level: "info", "warn" or "error",
// anything else debug; false when it is not set.
func testLogLevel() (slog.Level, bool) {
	v, ok := os.LookupEnv("IOTFABRIC_TEST_LOG")
	if !ok || v == "" {
		return 0, false
	}
	var l slog.Level
	if l.UnmarshalText([]byte(v)) != nil || l < slog.LevelInfo {
		l = slog.LevelDebug
	}
	return l, true
}

// logLevel is the controllers' log level: IOTFABRIC_TEST_LOG's, else warn.
func logLevel() string {
	if l, ok := testLogLevel(); ok {
		return strings.ToLower(l.String())
	}
	return "warn"
}

// testLog is the agents' log: stderr at IOTFABRIC_TEST_LOG's level
// (IOTFABRIC_TEST_LOG=warn: every session that ended and why), else none.
func testLog() *slog.Logger {
	l, ok := testLogLevel()
	if !ok {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

func pct(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

// probeGateway registers the gateway the probe endpoints are on, with one
// endpoint in each of the nNets networks, so that every gateway holds a
// route through it (on a real gateway: a tunnel to it) before the probe:
// the probe is then a new endpoint on a gateway the others already reach,
// which a real gateway applies route by route. (A route through a gateway
// it has no tunnel to yet makes it apply its whole state.)
func probeGateway(ctx context.Context, t *testing.T, conn *grpc.ClientConn, nNets int) {
	if _, err := v1.NewAgentServiceClient(conn).Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "probe", UnderlayAddress: "198.18.0.1"}}); err != nil {
		t.Fatal(err)
	}
	req, _ := probeEndpoints(nNets, "anchor", 251, uint32(16+nNets))
	createProbeEndpoints(ctx, t, conn, req)
}

// probeEndpoints are one endpoint per network on the probe gateway:
// 10.x.y.host in each network's subnet, labels from label0.
func probeEndpoints(nNets int, id string, host byte, label0 uint32) (*v1.CreateEndpointsRequest, []netip.Prefix) {
	var probes []netip.Prefix
	var req v1.CreateEndpointsRequest
	for i := range nNets {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 4), byte((i&15)<<4 + 15), host})
		probes = append(probes, netip.PrefixFrom(a, 32))
		req.Endpoints = append(req.Endpoints, &v1.Endpoint{Id: fmt.Sprintf("%s-%d", id, i), Network: fmt.Sprintf("fleet-%d", i),
			Gateway: "probe", Addresses: []string{a.String()}, Label: label0 + uint32(i)})
	}
	return &req, probes
}

func createProbeEndpoints(ctx context.Context, t *testing.T, conn *grpc.ClientConn, req *v1.CreateEndpointsRequest) {
	resp, err := v1.NewEndpointServiceClient(conn).CreateEndpoints(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range resp.GetErrors() {
		if e != "" {
			t.Fatal(e)
		}
	}
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
	nNets := (sc.gateways + sc.perNetwork - 1) / sc.perNetwork
	for i := range nNets {
		if _, err := nets.CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: fmt.Sprintf("fleet-%d", i),
			Subnets: []string{fmt.Sprintf("10.%d.%d.0/20", i>>4, (i&15)<<4)}}}); err != nil {
			t.Fatal(err)
		}
	}
	if !sc.memOnly {
		probeGateway(ctx, t, conn, nNets)
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
	procs := sc.processes
	if procs == 0 {
		procs = fleet.ProcessesFor(sc.gateways, 1)
	}
	r.processes = procs
	f, err := fleet.Start(ctx, fleet.Config{Controllers: []string{ctl.addr}, Gateways: sc.gateways, EndpointsPerGateway: sc.endpoints,
		Network: func(i int) string { return fmt.Sprintf("fleet-%d", i/sc.perNetwork) }, Dir: dir, Log: testLog(), Processes: procs,
		StartRate: startRate(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	if _, err := f.WaitAll(ctx, 30*time.Minute, "registered", func(g *fleet.Gateway) bool { return g.Live() == 1 }); err != nil {
		t.Fatal(err)
	}
	if err := f.AddEndpoints(ctx, sc.endpoints, 16); err != nil {
		t.Fatal(err)
	}
	want := (sc.perNetwork - 1) * sc.endpoints
	if !sc.memOnly {
		want++ // the probe gateway's
	}
	r.routesPerGateway = want
	if _, err := f.WaitAll(ctx, 30*time.Minute, "synced", func(g *fleet.Gateway) bool { return g.Routes() >= want }); err != nil {
		t.Fatal(err)
	}
	r.synced = time.Since(start)
	t.Logf("%d gateways: synced after %s", sc.gateways, r.synced.Round(100*time.Millisecond))
	r.syncBytesPerGateway = (f.BytesIn.Load() + f.BytesOut.Load()) / int64(sc.gateways)
	time.Sleep(time.Second)
	r.memSynced = ctl.mem(fmt.Sprintf("synced-%d", sc.gateways))
	r.rssSynced = ctl.rss()
	if sc.memOnly {
		return r
	}

	// One change reaching every stream: one endpoint per network, in one call.
	req, probes := probeEndpoints(nNets, "probe", 250, 16)
	waitProf := ctl.cpuProfile(f, fmt.Sprintf("change-%d", sc.gateways), 15*time.Second)
	if err := f.Probe(probes); err != nil {
		t.Fatal(err)
	}
	sent0 := ctl.changeSent()
	tc := time.Now()
	createProbeEndpoints(ctx, t, conn, req)
	call := time.Since(tc)
	if _, err := f.WaitAll(ctx, 2*time.Minute, "probe", (*fleet.Gateway).Probed); err != nil {
		t.Fatal(err)
	}
	lat, recv := f.ProbeLatencies(), f.ProbeReceived()
	if len(recv) != len(lat) {
		t.Fatalf("%d gateways applied the probe, %d received it on their route stream", len(lat), len(recv))
	}
	r.p50, r.p99, r.pmax = pct(lat, .5), pct(lat, .99), pct(lat, 1)
	r.rp50, r.rp99, r.rpmax = pct(recv, .5), pct(recv, .99), pct(recv, 1)
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	sent1 := ctl.changeSent()
	var sentN int
	r.sp50, _ = sentQuantile(sent0, sent1, .5)
	r.sp99, sentN = sentQuantile(sent0, sent1, .99)
	r.spmax, _ = sentQuantile(sent0, sent1, 1)
	t.Logf("%d gateways: change: handed to %d streams by the controller p50 <= %s p99 <= %s max <= %s (its histogram's bounds)",
		sc.gateways, sentN, r.sp50, r.sp99, r.spmax)
	t.Logf("%d gateways: change: the call creating %d endpoints took %s; received on the streams min %s p50 %s p99 %s max %s; applied min %s p50 %s p99 %s max %s",
		sc.gateways, len(req.Endpoints), ms(call), ms(pct(recv, 0)), ms(r.rp50), ms(r.rp99), ms(r.rpmax), ms(pct(lat, 0)), ms(r.p50), ms(r.p99), ms(r.pmax))
	waitProf()

	// Idle traffic.
	downs := func() (n int) {
		for _, g := range f.Gateways() {
			n += g.Downs(ctl.addr)
		}
		return n
	}
	b0, d0 := f.BytesIn.Load()+f.BytesOut.Load(), downs()
	time.Sleep(sc.idle)
	idle := f.BytesIn.Load() + f.BytesOut.Load() - b0
	r.idleBytesPerGwHour = float64(idle) / float64(sc.gateways) * float64(time.Hour) / float64(sc.idle)
	r.idleDowns = downs() - d0
	t.Logf("%d gateways: idle %s: %d bytes, %d sessions ended", sc.gateways, sc.idle, idle, r.idleDowns)

	// Controller SIGTERM and restart on the same data: until every gateway
	// streams again, and the bytes that took.
	b0 = f.BytesIn.Load() + f.BytesOut.Load()
	t0 := time.Now()
	ctl.stop(syscall.SIGTERM)
	if _, err := f.WaitAll(ctx, 5*time.Minute, "sessions down", func(g *fleet.Gateway) bool { return g.Live() == 0 }); err != nil {
		t.Fatal(err)
	}
	r.restartDown = time.Since(t0)
	t.Logf("%d gateways: SIGTERM until every session ended: %s", sc.gateways, r.restartDown.Round(100*time.Millisecond))
	t1 := time.Now()
	ctl.start()
	r.restartServing = time.Since(t1)
	t.Logf("%d gateways: restarted controller serving after %s", sc.gateways, r.restartServing.Round(100*time.Millisecond))
	waitProf = ctl.cpuProfile(f, fmt.Sprintf("restart-%d", sc.gateways), 30*time.Second)
	if _, err := f.WaitAll(ctx, 10*time.Minute, "streaming again", func(g *fleet.Gateway) bool { return g.Live() == 1 }); err != nil {
		t.Fatal(err)
	}
	r.restart = time.Since(t0)
	r.restartRefused = ctl.refused()
	waitProf()
	time.Sleep(time.Second)
	r.restartBytes = f.BytesIn.Load() + f.BytesOut.Load() - b0
	if _, err := f.WaitAll(ctx, 5*time.Minute, "routes after the restart", func(g *fleet.Gateway) bool { return g.Routes() >= want+1 }); err != nil {
		t.Fatal(err)
	}
	return r
}

func printTable(rs []result) {
	fmt.Printf("\nbench-fleet: simulated gateways (real agents, one gRPC connection each) against one controller process\n")
	fmt.Printf("(chg: one endpoint per network created in one call, until every agent applied it; strm: until every route stream received it; sent: until the controller handed it to every stream, the bound of its histogram's bucket)\n")
	fmt.Printf("%8s %6s %8s %8s %12s %12s %10s %11s %9s %9s %9s %9s %9s %9s %9s %9s %10s %13s %8s %14s %12s %11s\n", "gateways", "procs", "gw/net", "routes/gw", "ctl MB", "ctl KB/gw", "synced", "sync B/gw", "sent p50", "sent p99", "strm p50", "strm p99", "strm max", "chg p50", "chg p99", "chg max", "restart", "(stop/start)", "refused", "restart B/gw", "idle B/gw-h", "idle downs")
	for _, r := range rs {
		fmt.Printf("%8d %6d %8d %8d %12.0f %12.1f %10s %11d %9s %9s %9s %9s %9s %9s %9s %9s %10s %13s %8d %14d %12.0f %11d\n", r.gateways, r.processes, r.perNetwork, r.routesPerGateway,
			float64(r.rssSynced)/(1<<20), float64(r.rssSynced-r.rssBase)/1024/float64(r.gateways), r.synced.Round(100*time.Millisecond), r.syncBytesPerGateway,
			"<="+r.sp50.String(), "<="+r.sp99.String(), r.rp50.Round(time.Millisecond), r.rp99.Round(time.Millisecond), r.rpmax.Round(time.Millisecond),
			r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond), r.pmax.Round(time.Millisecond), r.restart.Round(100*time.Millisecond),
			r.restartDown.Round(100*time.Millisecond).String()+"/"+r.restartServing.Round(100*time.Millisecond).String(), r.restartRefused, r.restartBytes/int64(r.gateways), r.idleBytesPerGwHour, r.idleDowns)
	}
	fmt.Println()
}

// TestFleetSmoke: 100 simulated gateways (10 per network, one endpoint
// each) split over two worker processes register, sync, get one change,
// survive a controller restart; the figures are printed, the checks are
// that every step completes. (TestFleetPairSmoke runs its gateways in this
// process.)
func TestFleetSmoke(t *testing.T) {
	r := runScenario(t, scenario{gateways: 100, perNetwork: 10, endpoints: 1, idle: 2 * time.Second, processes: 2})
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
//
// grpcOpts (grpcEnv's form) are the server's gRPC options ("": those of the
// test's environment).
func grpcFloor(t *testing.T, n int, grpcOpts string) result {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctl := newControllerGRPC(t, "", grpcOpts)
	defer ctl.stop(syscall.SIGTERM)
	r := result{scenario: scenario{gateways: n}, grpcOpts: grpcOpts}
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
	fmt.Printf("%8s %8s %9s %10s %10s %12s %12s %12s %s\n", "gateways", "gw/net", "routes/gw", "ctl MB", "RSS KB/gw", "heap KB/gw", "stack KB/gw", "goroutines/gw", "  gRPC options")
	for _, r := range rs {
		n := float64(r.gateways)
		if r.perNetwork == 0 {
			fmt.Printf("%8d %8s %9s", r.gateways, "bare", "gRPC")
		} else {
			fmt.Printf("%8d %8d %9d", r.gateways, r.perNetwork, r.routesPerGateway)
		}
		opts := r.grpcOpts
		if opts == "" {
			opts = os.Getenv(grpcEnv)
		}
		fmt.Printf(" %10.0f %10.1f %10.1f %12.1f %12.1f  %s\n",
			float64(r.rssSynced)/(1<<20), float64(r.rssSynced-r.rssBase)/1024/n,
			float64(r.memSynced.heap-r.memBase.heap)/1024/n, float64(r.memSynced.stacks-r.memBase.stacks)/1024/n,
			float64(r.memSynced.goroutines-r.memBase.goroutines)/n, opts)
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
		if os.Getenv("IOTFABRIC_BENCH_FLEET_MEM_BARE") == "" {
			rs = append(rs, runScenario(t, scenario{gateways: n, perNetwork: 100, endpoints: 1, memOnly: true}))
			printMemTable(rs)
		}
		// Bare floors, one per set of gRPC options (";"-separated).
		for _, opts := range strings.Split(os.Getenv("IOTFABRIC_BENCH_FLEET_GRPC_FLOORS"), ";") {
			rs = append(rs, grpcFloor(t, n, opts))
			printMemTable(rs)
		}
	}
}

// pairResult is one run of two controllers on etcd, one of them killed.
type pairResult struct {
	gateways, routesPerGateway int
	processes                  int // load generator processes
	rss1, rss2                 int64
	synced                     time.Duration
	noticed                    time.Duration // until every gateway's session with the killed one ended
	survivorLost               int           // sessions with the survivor that ended meanwhile
	p50, p99, pmax             time.Duration // a change through the survivor after the kill
	killBytes                  int64         // from the kill until that change reached every gateway
	back                       time.Duration // the killed one restarted: until every gateway streams from both
	backBytes                  int64
}

// runPair: two controller processes on one etcd; the fleet's agents have a
// session with each (as agents with two --controller). One controller is
// killed with SIGKILL: how long until every gateway has noticed, whether
// any session with the survivor ended, a change made through the survivor
// (p50/p99/max), the bytes all that took; then the killed controller is
// started again (a new instance on the same store): until every gateway
// streams from both again, and the bytes.
//
// Each step's figure is printed as it is measured, and when a step does not
// complete, the controllers' answers to Register so far.
func runPair(t *testing.T, n, perNetwork, endpoints int, timeout time.Duration) pairResult {
	ctx := context.Background()
	etcd := etcdtest.Start(t)
	c1, c2 := newControllerOn(t, etcd.Endpoint), newControllerOn(t, etcd.Endpoint)
	defer c1.stop(syscall.SIGTERM)
	defer c2.stop(syscall.SIGTERM)
	conn, err := grpc.NewClient(c2.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	nNets := (n + perNetwork - 1) / perNetwork
	nets := v1.NewNetworkServiceClient(conn)
	for i := range nNets {
		if _, err := nets.CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: fmt.Sprintf("fleet-%d", i),
			Subnets: []string{fmt.Sprintf("10.%d.%d.0/20", i>>4, (i&15)<<4)}}}); err != nil {
			t.Fatal(err)
		}
	}
	probeGateway(ctx, t, conn, nNets)
	dir, err := fleet.ShmDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	r := pairResult{gateways: n, routesPerGateway: (perNetwork-1)*endpoints + 1, processes: fleet.ProcessesFor(n, 2)}
	start := time.Now()
	f, err := fleet.Start(ctx, fleet.Config{Controllers: []string{c1.addr, c2.addr}, Gateways: n, EndpointsPerGateway: endpoints,
		Network: func(i int) string { return fmt.Sprintf("fleet-%d", i/perNetwork) }, Dir: dir, Log: testLog(), Processes: r.processes,
		StartRate: startRate(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	step := func(what string, d time.Duration, err error) {
		if err != nil {
			fmt.Printf("bench-fleet-pair %d: %v; Register answers: controller 1 %v, controller 2 %v\n", n, err, c1.codes("Register"), c2.codes("Register"))
			t.Fatal(err)
		}
		fmt.Printf("bench-fleet-pair %d: %s: %v\n", n, what, d.Round(10*time.Millisecond))
	}
	_, err = f.WaitAll(ctx, timeout, "registered with both", func(g *fleet.Gateway) bool { return g.Live() == 2 })
	step("all registered with both", time.Since(start), err)
	if err := f.AddEndpoints(ctx, endpoints, 16); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WaitAll(ctx, timeout, "synced", func(g *fleet.Gateway) bool { return g.Routes() >= r.routesPerGateway }); err != nil {
		for _, g := range f.Gateways()[:3] {
			t.Logf("%s: %d routes, %d sessions", g.Name, g.Routes(), g.Live())
		}
		step("", 0, err)
	}
	r.synced = time.Since(start)
	step("all synced", r.synced, nil)
	time.Sleep(time.Second)
	r.rss1, r.rss2 = c1.rss(), c2.rss()

	downs := func() int {
		s := 0
		for _, g := range f.Gateways() {
			s += g.Downs(c2.addr)
		}
		return s
	}
	lost0 := downs()
	b0 := f.BytesIn.Load() + f.BytesOut.Load()
	t0 := time.Now()
	c1.stop(syscall.SIGKILL)
	var err2 error
	_, err2 = f.WaitAll(ctx, timeout, "killed controller noticed", func(g *fleet.Gateway) bool { return !g.LiveOn(c1.addr) })
	r.noticed = time.Since(t0)
	step("SIGKILL noticed by all", r.noticed, err2)
	req, probes := probeEndpoints(nNets, "probe", 250, 16)
	waitProf := c2.cpuProfile(f, fmt.Sprintf("pair-change-%d", n), 15*time.Second)
	if err := f.Probe(probes); err != nil {
		t.Fatal(err)
	}
	createProbeEndpoints(ctx, t, conn, req)
	_, err = f.WaitAll(ctx, timeout, "probe through the survivor", (*fleet.Gateway).Probed)
	step("change through the survivor reached all (since the kill)", time.Since(t0), err)
	lat := f.ProbeLatencies()
	r.p50, r.p99, r.pmax = pct(lat, .5), pct(lat, .99), pct(lat, 1)
	waitProf()
	time.Sleep(time.Second)
	r.killBytes = f.BytesIn.Load() + f.BytesOut.Load() - b0
	r.survivorLost = downs() - lost0

	b0 = f.BytesIn.Load() + f.BytesOut.Load()
	t0 = time.Now()
	c1.start()
	step("killed one started again, serving", time.Since(t0), nil)
	waitProf = c1.cpuProfile(f, fmt.Sprintf("pair-back-%d", n), 30*time.Second)
	_, err = f.WaitAll(ctx, timeout, "streaming from both again", func(g *fleet.Gateway) bool { return g.Live() == 2 })
	r.back = time.Since(t0)
	step("killed one started again, all stream from both", r.back, err)
	waitProf()
	time.Sleep(time.Second)
	r.backBytes = f.BytesIn.Load() + f.BytesOut.Load() - b0
	return r
}

func printPairTable(rs []pairResult) {
	fmt.Printf("\nbench-fleet-pair: two controllers on one etcd, every gateway streaming from both; one SIGKILLed, then started again\n")
	fmt.Printf("%8s %6s %9s %8s %8s %9s %9s %9s %9s %9s %9s %12s %10s %12s\n", "gateways", "procs", "routes/gw", "ctl1 MB", "ctl2 MB", "synced",
		"noticed", "lost", "chg p50", "chg p99", "chg max", "kill B/gw", "back", "back B/gw")
	for _, r := range rs {
		fmt.Printf("%8d %6d %9d %8.0f %8.0f %9s %9s %9d %9s %9s %9s %12d %10s %12d\n", r.gateways, r.processes, r.routesPerGateway,
			float64(r.rss1)/(1<<20), float64(r.rss2)/(1<<20), r.synced.Round(100*time.Millisecond), r.noticed.Round(10*time.Millisecond),
			r.survivorLost, r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond), r.pmax.Round(time.Millisecond),
			r.killBytes/int64(r.gateways), r.back.Round(100*time.Millisecond), r.backBytes/int64(r.gateways))
	}
	fmt.Println()
}

// TestBenchFleetPair: make bench-fleet-pair. IOTFABRIC_BENCH_FLEET_PAIR
// lists the fleet sizes.
func TestBenchFleetPair(t *testing.T) {
	sizes := os.Getenv("IOTFABRIC_BENCH_FLEET_PAIR")
	if sizes == "" {
		t.Skip("benchmark: run with IOTFABRIC_BENCH_FLEET_PAIR=1000 (make bench-fleet-pair)")
	}
	var rs []pairResult
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, runPair(t, n, 100, 2, 30*time.Minute))
		printPairTable(rs)
	}
}

// TestFleetPairSmoke: 50 gateways, two controllers on etcd, one killed and
// started again; the checks are that every step completes and that no
// session with the survivor ended.
func TestFleetPairSmoke(t *testing.T) {
	r := runPair(t, 50, 10, 1, 20*time.Second)
	printPairTable([]pairResult{r})
	if r.survivorLost != 0 {
		t.Errorf("%d sessions with the surviving controller ended", r.survivorLost)
	}
}
