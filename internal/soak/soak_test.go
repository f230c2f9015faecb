package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/internal/testenv"
	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// TestMain runs the soak in a network namespace of its own (as root), so
// the links and addresses it makes never touch the host's.
func TestMain(m *testing.M) {
	if os.Getenv(durationEnv) != "" {
		bgptest.ReexecInNewNetns()
	}
	os.Exit(m.Run())
}

const durationEnv = "IOTFABRIC_SOAK_DURATION"

// The warm-up flood that runs before the heap before the flood is
// measured is the flood itself (scale.flapRoutes routes, announced and
// withdrawn once): see the comment where it runs.

// profilesEnv names a directory for the controller's heap profiles before
// the warm-up flood, with it held, before the flood and after it (cold.pb.gz,
// flood.pb.gz, before.pb.gz, after.pb.gz); unset, none are taken.
const profilesEnv = "IOTFABRIC_SOAK_PROFILES"

// scale is what a soak of a given duration does: the 10-minute form flaps
// 50,000 routes and writes at most 10 MB of log; shorter forms scale both
// down with the duration.
type scale struct {
	duration     time.Duration
	flapRoutes   int
	logBound     int64
	agentKillGap time.Duration
	ctlKillGap   time.Duration
}

func scaleFor(d time.Duration) scale {
	f := float64(d) / float64(10*time.Minute)
	return scale{duration: d, flapRoutes: max(1000, int(50000*f)), logBound: max(1<<20, int64(10e6*f)),
		agentKillGap: max(10*time.Second, d/12), ctlKillGap: max(40*time.Second, d/4)}
}

// stats counts operations and errors per kind.
type stats struct {
	mu      sync.Mutex
	ops     map[string]int
	errs    map[string]int
	samples map[string][]string // a few distinct errors per kind
}

func (s *stats) add(kind string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ops[kind]++
	if err == nil {
		return
	}
	s.errs[kind]++
	msg := err.Error()
	if len(msg) > 160 {
		msg = msg[:160] + "..."
	}
	if len(s.samples[kind]) < 2 && !slices.Contains(s.samples[kind], msg) {
		s.samples[kind] = append(s.samples[kind], msg)
	}
}

// proc is a daemon run from a built binary, its output appended to a log
// file that survives restarts.
type proc struct {
	name string
	args []string
	log  string
	ns   *netnstest.NS // run inside this namespace when set

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) start(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	var cmd *exec.Cmd
	if p.ns != nil {
		cmd = p.ns.Command(p.args[0], p.args[1:]...)
	} else {
		cmd = exec.Command(p.args[0], p.args[1:]...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// Pdeathsig fires when the thread that forked the process exits, not
	// the test: a thread the Go runtime hands to a goroutine that enters a
	// network namespace (the CNI calls) is ended with it, and would take a
	// daemon started from it along. The process is started from a thread
	// locked to a goroutine that lives as long as the process.
	done, started := make(chan struct{}), make(chan error)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		started <- err
		if err != nil {
			return
		}
		cmd.Wait()
		f.Close()
		close(done)
	}()
	if err := <-started; err != nil {
		f.Close()
		t.Fatal(err)
	}
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
}

// kill sends SIGKILL and waits for the process to exit.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func build(t *testing.T, dir string) {
	t.Helper()
	for out, pkg := range map[string]string{"controller": "./cmd/controller", "vrouter-agent": "./cmd/vrouter-agent", "iotfabric": "./cmd/cni-plugin"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, out), pkg)
		cmd.Dir = "../.."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, b)
		}
	}
}

// gateway is one gateway: its agent process, namespace and pod slots.
type gateway struct {
	name     string
	underlay string
	ns       *netnstest.NS
	dir      string
	sock     string
	agent    *proc
	pods     []*netnstest.NS
	mu       sync.Mutex
	used     map[string]bool // "pod/ifname" slots holding an interface
	conflist map[string]*libcni.NetworkConfigList
}

// gate lets the load's workers be paused: each holds it from the start of
// an operation to the start of its next one.
type gate struct {
	paused atomic.Bool
	busy   atomic.Int64
}

// enter waits while the load is paused; false when ctx ended.
func (g *gate) enter(ctx context.Context) bool {
	for ctx.Err() == nil {
		g.busy.Add(1)
		if !g.paused.Load() {
			return true
		}
		g.busy.Add(-1)
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func (g *gate) leave() { g.busy.Add(-1) }

// pause stops the load and returns when no operation is under way.
func (g *gate) pause() {
	g.paused.Store(true)
	for g.busy.Load() != 0 {
		time.Sleep(20 * time.Millisecond)
	}
}

func (g *gate) resume() { g.paused.Store(false) }

func TestSoak(t *testing.T) {
	v := os.Getenv(durationEnv)
	if v == "" {
		t.Skipf("set %s (2m, 10m) to run the soak (make soak)", durationEnv)
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Minute || d > 10*time.Minute {
		t.Fatalf("%s=%q: want a duration from 1m to 10m", durationEnv, v)
	}
	sc := scaleFor(d)
	testenv.RequireRoot(t, "network namespaces, FRR and the gateways' data plane")
	testenv.RequireProgram(t, "vtysh", "frr")
	testenv.RequireFile(t, bgptest.FRRDir+"/bgpd", "frr")
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	start := time.Now()
	phase := func(what string) { t.Logf("%v: %s", time.Since(start).Round(time.Second), what) }
	build(t, bin)
	phase("binaries built")
	ctx := context.Background()
	st := &stats{ops: map[string]int{}, errs: map[string]int{}, samples: map[string][]string{}}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 13))
	var rngMu sync.Mutex
	rnd := func(n int) int { rngMu.Lock(); defer rngMu.Unlock(); return rng.IntN(n) }

	// The edge router.
	self := bgptest.Self(t)
	frrNS := bgptest.NewNetns(t)
	local, peer := netip.MustParsePrefix("10.97.0.1/24"), netip.MustParsePrefix("10.97.0.2/24")
	bgptest.Connect(t, self, frrNS, local, peer)
	frr := bgptest.StartFRR(t, frrNS, bgptest.FRRConfig{ASN: 64512, RouterID: peer.Addr(),
		Neighbors: []bgptest.FRRNeighbor{{Address: local.Addr(), ASN: 64512}}})
	if _, err := frr.Vtysh(ctx, "configure terminal", "route-map soak permit 10", "set extcommunity rt 65000:1"); err != nil {
		t.Fatal(err)
	}

	// The controller.
	apiAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := filepath.Join(dir, "controller.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`
data_dir: %s
api:
  listen: %s
metrics:
  listen: %s
  pprof: true
bgp:
  asn: 64512
  router_id: %s
  listen_port: -1
  peers:
    - {address: %s, asn: 64512, max_prefixes: 200000}
`, filepath.Join(dir, "data"), apiAddr, metricsAddr, local.Addr(), peer.Addr())), 0o600)
	ctl := &proc{name: "controller", args: []string{filepath.Join(bin, "controller"), "--config", conf}, log: filepath.Join(dir, "controller.log")}
	ctl.start(t)
	t.Cleanup(ctl.kill)
	conn, err := grpc.NewClient(apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	netc, epc, gwc := v1.NewNetworkServiceClient(conn), v1.NewEndpointServiceClient(conn), v1.NewGatewayServiceClient(conn)
	routec, ipamc := v1.NewRouteServiceClient(conn), v1.NewIpamServiceClient(conn)
	waitAPI := func() {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := netc.ListNetworks(cctx, &v1.ListNetworksRequest{})
			cancel()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("controller API: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitAPI()
	for _, n := range []*v1.VirtualNetwork{
		{Name: "red", Subnets: []string{"10.1.0.0/16"}},
		{Name: "blue", Subnets: []string{"10.2.0.0/16", "fd00:2::/48"}},
		{Name: "edge", Subnets: []string{"10.3.0.0/16"}, ImportRouteTargets: []string{"target:65000:1"}},
	} {
		if _, err := netc.CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: n}); err != nil {
			t.Fatal(err)
		}
	}

	// The gateways.
	var gws []*gateway
	for i := range 3 {
		g := &gateway{name: fmt.Sprintf("gw-%d", i), underlay: fmt.Sprintf("192.0.2.%d", 11+i), ns: netnstest.New(t, "soakgw"),
			dir: filepath.Join(dir, fmt.Sprintf("gw-%d", i)), used: map[string]bool{}, conflist: map[string]*libcni.NetworkConfigList{}}
		g.sock = filepath.Join(g.dir, "cni.sock")
		os.MkdirAll(g.dir, 0o755)
		g.agent = &proc{name: g.name, log: filepath.Join(dir, g.name+".log"), args: []string{filepath.Join(bin, "vrouter-agent"),
			"--gateway", g.name, "--underlay", g.underlay, "--controller", apiAddr, "--netns", g.ns.Path(),
			"--state-dir", filepath.Join(g.dir, "state"), "--cni-socket", g.sock}}
		g.agent.start(t)
		t.Cleanup(g.agent.kill)
		for range 6 {
			g.pods = append(g.pods, netnstest.New(t, "soakpod"))
		}
		for _, n := range []string{"red", "blue", "nosuchnet"} {
			l, err := libcni.NetworkConfFromBytes([]byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"iotfabric","plugins":[{"type":"iotfabric","socket":%q,"network":%q}]}`, g.sock, n)))
			if err != nil {
				t.Fatal(err)
			}
			g.conflist[n] = l
		}
		gws = append(gws, g)
	}
	cniRun := libcni.NewCNIConfig([]string{bin}, nil)
	if keep := os.Getenv(keepEnv); keep != "" {
		// Registered after the daemons' kills, so it runs before them.
		t.Cleanup(func() { keepLogs(t, keep, append([]*proc{ctl}, agentsOf(gws)...)) })
	}

	// Memory before the flood: the least heap seen over a few seconds (the
	// heap right after a collection).
	heap := func() (uint64, error) {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(cctx, http.MethodGet, "http://"+metricsAddr+"/metrics", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_alloc_bytes "); ok {
				f, err := strconv.ParseFloat(v, 64)
				return uint64(f), err
			}
		}
		return 0, fmt.Errorf("no go_memstats_heap_alloc_bytes in the metrics")
	}
	// settledHeap is the live heap: the least heap seen over window, each
	// sample read right after a full collection that the profile endpoint
	// forces (/debug/pprof/heap?gc=1 runs runtime.GC, which also finishes
	// sweeping). Without it the least sample of go_memstats_heap_alloc_bytes
	// still counts garbage of the cycle in progress: an idle controller
	// may not collect for minutes, and a busy one sweeps lazily.
	settledHeap := func(window time.Duration) uint64 {
		var low uint64
		for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(time.Second) {
			// The text form of the profile ends with the memory
			// statistics read right after the collection and the
			// profile; the metric, read in a request of its own, also
			// counted what the controller allocated in between (the
			// heap profile after the flood held 4.9 MB, as before it,
			// while the metric's least value was 7.4 MB against 6.0).
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			req, _ := http.NewRequestWithContext(cctx, http.MethodGet, "http://"+metricsAddr+"/debug/pprof/heap?gc=1&debug=1", nil)
			resp, err := http.DefaultClient.Do(req)
			var h uint64
			if err == nil {
				sc := bufio.NewScanner(resp.Body)
				sc.Buffer(make([]byte, 1<<20), 1<<20)
				for sc.Scan() {
					if v, ok := strings.CutPrefix(sc.Text(), "# HeapAlloc = "); ok {
						h, _ = strconv.ParseUint(v, 10, 64)
					}
				}
				resp.Body.Close()
			}
			cancel()
			if h != 0 && (low == 0 || h < low) {
				low = h
			}
		}
		return low
	}
	// saveHeap writes the controller's heap profile (after a collection) to
	// $IOTFABRIC_SOAK_PROFILES/name.pb.gz when that is set, for
	// `go tool pprof -base before.pb.gz after.pb.gz`.
	pdir := os.Getenv(profilesEnv)
	getHeap := func(query string) ([]byte, error) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(cctx, http.MethodGet, "http://"+metricsAddr+"/debug/pprof/heap?"+query, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return io.ReadAll(resp.Body)
	}
	writeProfile := func(name string, body []byte) {
		os.MkdirAll(pdir, 0o755)
		if err := os.WriteFile(filepath.Join(pdir, name+".pb.gz"), body, 0o644); err != nil {
			t.Logf("heap profile %s: %v", name, err)
		}
	}
	saveHeap := func(name string) {
		if pdir == "" {
			return
		}
		body, err := getHeap("gc=1")
		if err != nil {
			t.Logf("heap profile %s: %v", name, err)
			return
		}
		writeProfile(name, body)
	}
	var memPeak atomic.Uint64
	// objects counts what the controller holds (the heap's other part).
	objects := func() string {
		var eps, nets, gws int
		req := &v1.ListEndpointsRequest{PageSize: 1000}
		for {
			r, err := epc.ListEndpoints(ctx, req)
			if err != nil {
				return err.Error()
			}
			eps += len(r.GetEndpoints())
			if req.PageToken = r.GetNextPageToken(); req.PageToken == "" {
				break
			}
		}
		if r, err := netc.ListNetworks(ctx, &v1.ListNetworksRequest{PageSize: 1000}); err == nil {
			nets = len(r.GetNetworks())
		}
		if r, err := gwc.ListGateways(ctx, &v1.ListGatewaysRequest{PageSize: 1000}); err == nil {
			gws = len(r.GetGateways())
		}
		return fmt.Sprintf("%d endpoints, %d networks, %d gateways", eps, nets, gws)
	}

	runCtx, stop := context.WithTimeout(ctx, sc.duration)
	defer stop()
	var wg sync.WaitGroup
	var ctlDown atomic.Bool
	var load gate // the API's and the plugin's load, paused while the heap before the flood is measured

	// Memory sampler. The peak is the metric's, which counts the garbage
	// of the cycle in progress too. With IOTFABRIC_SOAK_PROFILES set, it
	// also fetches the heap profile at each sample and, at each new peak
	// 10 % above the last one saved, saves the previous sample's profile
	// as peak-base.pb.gz and, after a collection (which gives the live
	// heap right after the peak, memPeakLive), the profile as peak.pb.gz:
	// `go tool pprof -sample_index=alloc_space -diff_base peak-base.pb.gz
	// peak.pb.gz` shows what was allocated on the way to the peak, and
	// peak.pb.gz's in-use space what of it was still live.
	var memPeakLive atomic.Uint64
	wg.Go(func() {
		var prev []byte
		var saved uint64
		for runCtx.Err() == nil {
			h, err := heap()
			if err == nil && h > memPeak.Load() {
				memPeak.Store(h)
				if pdir != "" && h > saved+saved/10 && prev != nil {
					saved = h
					writeProfile("peak-base", prev)
					if txt, err := getHeap("gc=1&debug=1"); err == nil {
						for l := range strings.Lines(string(txt)) {
							if v, ok := strings.CutPrefix(strings.TrimSpace(l), "# HeapAlloc = "); ok {
								live, _ := strconv.ParseUint(v, 10, 64)
								memPeakLive.Store(live)
							}
						}
					}
					if body, err := getHeap("gc=0"); err == nil {
						writeProfile("peak", body)
					}
				}
			}
			if pdir != "" {
				prev, _ = getHeap("gc=0")
			}
			time.Sleep(500 * time.Millisecond)
		}
	})

	// Random and hostile API calls.
	hostileName := func() string {
		switch rnd(6) {
		case 0:
			return strings.Repeat("x", 100_000)
		case 1:
			return "bad name!"
		case 2:
			return ""
		case 3:
			return "ünïcode"
		case 4:
			return strings.Repeat("a", 64)
		}
		return "-lead"
	}
	for w := range 2 {
		wg.Go(func() {
			for i := 0; load.enter(runCtx); i++ {
				cctx, cancel := context.WithTimeout(runCtx, 5*time.Second)
				var err error
				kind := ""
				switch k := rnd(12); k {
				case 0:
					kind = "api network create"
					_, err = netc.CreateNetwork(cctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: fmt.Sprintf("api-n%d", rnd(8)),
						Subnets: []string{fmt.Sprintf("10.%d.0.0/16", 100+rnd(8))}}})
				case 1:
					kind = "api network update"
					_, err = netc.UpdateNetwork(cctx, &v1.UpdateNetworkRequest{Network: &v1.VirtualNetwork{Name: fmt.Sprintf("api-n%d", rnd(8)),
						Subnets: []string{fmt.Sprintf("10.%d.0.0/16", 100+rnd(8))}, ExportRouteTargets: []string{fmt.Sprintf("target:65000:%d", rnd(100))}}})
				case 2:
					kind = "api network delete"
					_, err = netc.DeleteNetwork(cctx, &v1.NameRequest{Name: fmt.Sprintf("api-n%d", rnd(8))})
				case 3:
					kind = "api gateway create"
					_, err = gwc.CreateGateway(cctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{Name: fmt.Sprintf("api-g%d", rnd(5)), UnderlayAddress: fmt.Sprintf("198.51.100.%d", 1+rnd(200))}})
				case 4:
					kind = "api gateway delete"
					_, err = gwc.DeleteGateway(cctx, &v1.NameRequest{Name: fmt.Sprintf("api-g%d", rnd(5))})
				case 5, 6:
					kind = "api endpoint create"
					gw := fmt.Sprintf("api-g%d", rnd(5))
					if rnd(3) == 0 {
						gw = gws[rnd(len(gws))].name // on a real gateway: its agent's next full sync removes it
					}
					_, err = epc.CreateEndpoint(cctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: fmt.Sprintf("api-e%d-%d", w, rnd(200)),
						Network: []string{"red", "blue", fmt.Sprintf("api-n%d", rnd(8))}[rnd(3)], Gateway: gw}})
				case 7:
					kind = "api endpoint delete"
					_, err = epc.DeleteEndpoint(cctx, &v1.GetEndpointRequest{Id: fmt.Sprintf("api-e%d-%d", w, rnd(200))})
				case 8:
					kind = "api hostile network"
					n := &v1.VirtualNetwork{Name: hostileName(), Subnets: []string{"10.250.0.0/16"}}
					switch rnd(4) {
					case 0:
						n.Name, n.Subnets = "hostile", []string{"0.0.0.0/0"}
					case 1:
						n.Name, n.Subnets = "hostile", []string{"224.0.0.0/8"}
					case 2:
						n.Name = "hostile"
						for j := range 10_000 {
							n.ExportRouteTargets = append(n.ExportRouteTargets, fmt.Sprintf("target:65000:%d", j))
						}
					}
					_, err = netc.CreateNetwork(cctx, &v1.CreateNetworkRequest{Network: n})
				case 9:
					kind = "api hostile gateway"
					_, err = gwc.CreateGateway(cctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{Name: hostileName(), UnderlayAddress: []string{"0.0.0.0", "224.0.0.1", "x", "192.0.2.99"}[rnd(4)]}})
				case 10:
					kind = "api hostile endpoint"
					_, err = epc.CreateEndpoint(cctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: hostileName(), Network: "red", Gateway: gws[0].name,
						Addresses: []string{[]string{"10.9.9.9", "10.1.0.0", "x", "10.1.255.255"}[rnd(4)]}, Label: uint32(rnd(2_000_000))}})
				default:
					kind = "api list"
					_, err = epc.ListEndpoints(cctx, &v1.ListEndpointsRequest{PageSize: int32(1 + rnd(1000))})
				}
				cancel()
				if !ctlDown.Load() {
					st.add(kind, err)
				}
				time.Sleep(time.Duration(rnd(50)) * time.Millisecond)
				load.leave()
			}
		})
	}

	// CNI ADD and DEL, valid and hostile, on every gateway.
	for _, g := range gws {
		wg.Go(func() {
			for load.enter(runCtx) {
				pod := rnd(len(g.pods))
				ifn := fmt.Sprintf("eth%d", rnd(4))
				slot := fmt.Sprintf("%d/%s", pod, ifn)
				rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("%s-p%d-%s", g.name, pod, ifn), NetNS: g.pods[pod].Path(), IfName: ifn}
				network := []string{"red", "blue"}[rnd(2)]
				kind := "cni add"
				hostile := rnd(5) == 0
				if hostile {
					switch rnd(5) {
					case 0:
						kind, rt.IfName = "cni hostile ifname", []string{"eth@0", "a-very-long-interface-name", "..", "eth 0"}[rnd(4)]
					case 1:
						kind, rt.Args = "cni hostile args", [][2]string{{"K8S_POD_NAME", strings.Repeat("p", 100_000)}}
					case 2:
						kind, network = "cni unknown network", "nosuchnet"
					case 3:
						kind, rt.ContainerID = "cni hostile container id", strings.Repeat("c", 300)
					default:
						kind, rt.ContainerID = "cni hostile container id", "bad/../id"
					}
				}
				g.mu.Lock()
				held := g.used[slot]
				g.mu.Unlock()
				cctx, cancel := context.WithTimeout(runCtx, 30*time.Second)
				var err error
				switch {
				case held && !hostile:
					kind = "cni del"
					err = cniRun.DelNetworkList(cctx, g.conflist[network], rt)
					if err == nil {
						g.mu.Lock()
						delete(g.used, slot)
						g.mu.Unlock()
					} else {
						// The network may have been the other one: DEL
						// releases whatever the id holds, so try it too.
						other := map[string]string{"red": "blue", "blue": "red"}[network]
						if err = cniRun.DelNetworkList(cctx, g.conflist[other], rt); err == nil {
							g.mu.Lock()
							delete(g.used, slot)
							g.mu.Unlock()
						}
					}
				case held:
					cancel()
					load.leave()
					continue
				default:
					_, err = cniRun.AddNetworkList(cctx, g.conflist[network], rt)
					if err == nil && !hostile {
						g.mu.Lock()
						g.used[slot] = true
						g.mu.Unlock()
					} else if err != nil && !hostile {
						// A failed ADD is rolled back by the runtime with DEL.
						cniRun.DelNetworkList(cctx, g.conflist[network], rt)
					}
				}
				cancel()
				st.add(kind, err)
				time.Sleep(time.Duration(rnd(100)) * time.Millisecond)
				load.leave()
			}
		})
	}

	// clearLoad removes what the load made (the pods' interfaces through
	// the plugin, the API's endpoints, networks and gateways), so that the
	// heap before and after the flood are measured with the same objects:
	// the API's pools of names do not hold the same number of objects at
	// two moments (71 endpoints and 7 networks before the flood, 121 and
	// 10 after it, in one run).
	clearLoad := func() error {
		var errs []error
		var ids []string
		req := &v1.ListEndpointsRequest{PageSize: 1000}
		for {
			r, err := epc.ListEndpoints(ctx, req)
			if err != nil {
				return err
			}
			for _, e := range r.GetEndpoints() {
				if strings.HasPrefix(e.GetId(), "api-") {
					ids = append(ids, e.GetId())
					continue
				}
				// A pod's interface (also one a hostile ADD made): its id
				// is "<container id>:<interface>", the container id
				// "<gateway>-p<pod>-<interface>".
				cid, ifn, _ := strings.Cut(e.GetId(), ":")
				var g *gateway
				for _, x := range gws {
					if x.name == e.GetGateway() {
						g = x
					}
				}
				pod := 0
				if k := strings.LastIndex(cid, "-p"); k >= 0 {
					fmt.Sscanf(cid[k+2:], "%d", &pod)
				}
				if g == nil || pod >= len(g.pods) {
					errs = append(errs, fmt.Errorf("endpoint %s of gateway %s: no pod of the soak", e.GetId(), e.GetGateway()))
					continue
				}
				conf := g.conflist[e.GetNetwork()]
				if conf == nil {
					conf = g.conflist["red"] // DEL releases whatever the id holds
				}
				rt := &libcni.RuntimeConf{ContainerID: cid, NetNS: g.pods[pod].Path(), IfName: ifn}
				var err error
				for try := 0; try < 30; try++ {
					cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					err = cniRun.DelNetworkList(cctx, conf, rt)
					cancel()
					if err == nil {
						break
					}
					time.Sleep(time.Second) // its agent restarting
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: DEL %s: %w", g.name, e.GetId(), err))
				}
			}
			if req.PageToken = r.GetNextPageToken(); req.PageToken == "" {
				break
			}
		}
		for _, g := range gws {
			clear(g.used)
		}
		for _, id := range ids {
			// (gone already when its gateway's agent made a full sync)
			if _, err := epc.DeleteEndpoint(ctx, &v1.GetEndpointRequest{Id: id}); err != nil && status.Code(err) != codes.NotFound {
				errs = append(errs, err)
			}
		}
		for i := range 8 {
			netc.DeleteNetwork(ctx, &v1.NameRequest{Name: fmt.Sprintf("api-n%d", i)})
		}
		for i := range 5 {
			gwc.DeleteGateway(ctx, &v1.NameRequest{Name: fmt.Sprintf("api-g%d", i)})
		}
		// The agents report the pods' deletions on their own time.
		const want = "0 endpoints, 3 networks, 3 gateways"
		o := objects()
		for deadline := time.Now().Add(30 * time.Second); o != want && time.Now().Before(deadline); o = objects() {
			time.Sleep(200 * time.Millisecond)
		}
		if o != want {
			errs = append(errs, fmt.Errorf("after the load was cleared the controller holds %s", o))
		}
		return errors.Join(errs...)
	}

	// The edge router flaps VPN routes with the route target network edge
	// imports.
	routeLine := func(i int) string {
		return fmt.Sprintf("network 100.%d.%d.%d/32 rd 10.97.0.2:%d label %d", 64+i/65536, (i/256)%256, i%256, 1+i%4, 100000+i%1000)
	}
	announced := make([]bool, sc.flapRoutes)
	setRoutes := func(ctx context.Context, idx []int, on bool) error {
		idx = slices.DeleteFunc(slices.Clone(idx), func(i int) bool { return announced[i] == on })
		for chunk := range slices.Chunk(idx, 2000) {
			cmds := []string{"configure terminal", "router bgp 64512", "address-family ipv4 vpn"}
			for _, i := range chunk {
				l := routeLine(i) + " route-map soak"
				if !on {
					l = "no " + routeLine(i)
				}
				cmds = append(cmds, l)
			}
			if _, err := frr.Vtysh(ctx, cmds...); err != nil {
				return err
			}
			for _, i := range chunk {
				announced[i] = on
			}
		}
		return nil
	}
	all := make([]int, sc.flapRoutes)
	for i := range all {
		all[i] = i
	}
	// Warm-up: the API's and the plugin's objects (from bounded pools of
	// names) reach their working size; memory before the flood is measured
	// then, before the edge router and the kills start.
	time.Sleep(min(20*time.Second, sc.duration/6))
	// Then the flood's routes are announced and withdrawn once: the heap
	// before the flood then holds what that path allocates on first use
	// (GoBGP's receive path, the route table's import, gRPC's buffer
	// pools, protobuf's lazily built types) and the room GoBGP's own
	// table keeps for the largest table it has held (its destinations
	// map, a Go map, never shrinks: +1.5 MB after 50,000 routes, bounded
	// by the import limit, not growing with floods). What the check then
	// finds is memory a flood leaves behind that the previous flood of
	// the same size did not: a leak. Our own maps are built again once
	// they fall under a quarter of their peak (TestReceivedFloodGivesMemoryBack
	// in pkg/vpn and pkg/bgp/gobgp checks those against a cold heap), and
	// the report gives the heap before this warm-up too ("cold").
	phase("warm-up over")
	// Both heaps are measured with nothing in flight: the load stops
	// here (the calls under way end first) and goes on after the
	// measurement; after the flood it is over.
	load.pause()
	if err := clearLoad(); err != nil {
		t.Fatal(err)
	}
	memCold := settledHeap(5 * time.Second)
	saveHeap("cold")
	warm := all
	edgeRoutes := func(want int) error {
		deadline := time.Now().Add(60*time.Second + time.Duration(len(all))*5*time.Millisecond)
		count := func() (int, error) {
			n, tok := 0, ""
			for {
				r, err := routec.ListRoutes(ctx, &v1.ListRoutesRequest{Network: "edge", PageSize: 5000, PageToken: tok})
				if err != nil {
					return n, err
				}
				n += len(r.GetRoutes())
				if tok = r.GetNextPageToken(); tok == "" {
					return n, nil
				}
			}
		}
		for {
			n, err := count()
			if err == nil && n == want {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("edge does not get to %d routes (%d, %v)", want, n, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	var memFlood uint64
	for _, on := range []bool{true, false} {
		if err := setRoutes(ctx, warm, on); err != nil {
			t.Fatal(err)
		}
		if err := edgeRoutes(map[bool]int{true: len(warm)}[on]); err != nil {
			t.Fatal(err)
		}
		if on {
			// The live heap with the whole flood held and nothing else
			// in flight: what the routes themselves cost (the peak under
			// the load also counts garbage not yet collected).
			memFlood = settledHeap(time.Second)
			saveHeap("flood")
		}
	}
	phase("warm-up flood over")
	memBefore := settledHeap(5 * time.Second)
	objBefore := objects()
	saveHeap("before")
	load.resume()
	wg.Go(func() {
		err := setRoutes(ctx, all, true)
		st.add("edge announce all", err)
		for runCtx.Err() == nil {
			var half []int
			for i := range all {
				if rnd(2) == 0 {
					half = append(half, i)
				}
			}
			// Batches run to their end (so that the test knows what FRR
			// announces); the loop stops between them.
			err := setRoutes(ctx, half, false)
			st.add("edge withdraw half", err)
			err = setRoutes(ctx, half, true)
			st.add("edge re-announce", err)
		}
	})

	// Chaos: agents and the controller killed with SIGKILL and restarted.
	wg.Go(func() {
		nextCtl := time.Now().Add(sc.ctlKillGap)
		for runCtx.Err() == nil {
			select {
			case <-runCtx.Done():
				return
			case <-time.After(sc.agentKillGap / 2):
			}
			g := gws[rnd(len(gws))]
			g.agent.kill()
			time.Sleep(time.Duration(200+rnd(2000)) * time.Millisecond)
			g.agent.start(t)
			st.add("kill agent", nil)
			if time.Now().After(nextCtl) {
				ctlDown.Store(true)
				ctl.kill()
				time.Sleep(time.Second)
				ctl.start(t)
				waitAPI()
				ctlDown.Store(false)
				st.add("kill controller", nil)
				nextCtl = time.Now().Add(sc.ctlKillGap)
			}
		}
	})
	wg.Wait()
	phase("chaos over")

	// The endpoints the API made on a real gateway are removed by its
	// agent's next full sync; the last ones may have come after it. A pod
	// added and deleted through the plugin on every gateway makes one (an
	// endpoint removed makes the agent's next report a full sync).
	for _, g := range gws {
		rt := &libcni.RuntimeConf{ContainerID: g.name + "-final", NetNS: g.pods[0].Path(), IfName: "eth9"}
		var err error
		for try := 0; try < 30; try++ {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if _, err = cniRun.AddNetworkList(cctx, g.conflist["red"], rt); err == nil {
				err = cniRun.DelNetworkList(cctx, g.conflist["red"], rt)
			} else {
				cniRun.DelNetworkList(cctx, g.conflist["red"], rt)
			}
			cancel()
			if err == nil {
				break
			}
			time.Sleep(time.Second) // its agent restarting
		}
		if err != nil {
			t.Errorf("%s: the final pod: %v", g.name, err)
		}
	}
	phase("final pods added and deleted")

	// Settle: a known tenth of the flood stays announced; every pod slot is
	// released and set up again once, so that the runtime's view is known.
	var keep, drop []int
	for i := range all {
		if i%10 == 0 {
			keep = append(keep, i)
		} else {
			drop = append(drop, i)
		}
	}
	if err := setRoutes(ctx, keep, true); err != nil {
		t.Error(err)
	}
	if err := setRoutes(ctx, drop, false); err != nil {
		t.Error(err)
	}

	// Invariants, waited for (agents resync after their restarts).
	check := func(frrKeep map[string]bool) []string {
		var problems []string
		// Endpoints at the controller: no address twice.
		owner := map[string]string{}
		perNet := map[string]int{}
		byGW := map[string]map[string][]string{}
		req := &v1.ListEndpointsRequest{PageSize: 1000}
		for {
			r, err := epc.ListEndpoints(ctx, req)
			if err != nil {
				return []string{err.Error()}
			}
			for _, e := range r.GetEndpoints() {
				for _, a := range e.GetAddresses() {
					k := e.GetNetwork() + " " + a
					if o, dup := owner[k]; dup {
						problems = append(problems, fmt.Sprintf("address %s recorded for %s and %s", k, o, e.GetId()))
					}
					owner[k] = e.GetId()
					perNet[e.GetNetwork()]++
				}
				if byGW[e.GetGateway()] == nil {
					byGW[e.GetGateway()] = map[string][]string{}
				}
				byGW[e.GetGateway()][e.GetId()] = e.GetAddresses()
			}
			if req.PageToken = r.GetNextPageToken(); req.PageToken == "" {
				break
			}
		}
		// IPAM counts.
		nets, err := netc.ListNetworks(ctx, &v1.ListNetworksRequest{PageSize: 1000})
		if err != nil {
			return []string{err.Error()}
		}
		for _, n := range nets.GetNetworks() {
			ip, err := ipamc.GetIpam(ctx, &v1.NameRequest{Name: n.GetName()})
			if err != nil {
				problems = append(problems, err.Error())
				continue
			}
			var used uint64
			for _, s := range ip.GetSubnets() {
				used += s.GetUsed()
			}
			if used != uint64(perNet[n.GetName()]) {
				problems = append(problems, fmt.Sprintf("network %s: IPAM counts %d addresses in use, its endpoints hold %d", n.GetName(), used, perNet[n.GetName()]))
			}
		}
		// Every address a gateway holds is recorded for its endpoint.
		for _, g := range gws {
			local, err := agentEndpoints(filepath.Join(g.dir, "state"))
			if err != nil {
				problems = append(problems, err.Error())
				continue
			}
			for id, e := range local {
				for _, a := range e.addrs {
					if o := owner[e.network+" "+a]; o != id {
						problems = append(problems, fmt.Sprintf("%s: address %s of %s is recorded for %q", g.name, a, id, o))
					}
				}
			}
			for id := range byGW[g.name] {
				if _, ok := local[id]; !ok {
					problems = append(problems, fmt.Sprintf("%s: the controller lists %s on it, its agent does not hold it", g.name, id))
				}
			}
		}
		// Every gateway holds the routes of its networks as the controller has them.
		routes := map[string]map[string]string{} // network -> "rd prefix" -> "label nexthop"
		routesOf := func(n string) map[string]string {
			if m, ok := routes[n]; ok {
				return m
			}
			m := map[string]string{}
			req := &v1.ListRoutesRequest{Network: n, PageSize: 5000}
			for {
				r, err := routec.ListRoutes(ctx, req)
				if err != nil {
					problems = append(problems, err.Error())
					break
				}
				for _, rt := range r.GetRoutes() {
					m[rt.GetRouteDistinguisher()+" "+rt.GetPrefix()] = fmt.Sprint(rt.GetLabel(), " ", rt.GetNextHop(), " ", rt.GetOrigin())
				}
				if req.PageToken = r.GetNextPageToken(); req.PageToken == "" {
					break
				}
			}
			routes[n] = m
			return m
		}
		for _, g := range gws {
			held, err := agentRoutes(filepath.Join(g.dir, "state"))
			if err != nil {
				problems = append(problems, err.Error())
				continue
			}
			nets := map[string]bool{}
			for n := range held {
				nets[n] = true
			}
			for n := range nets {
				want := routesOf(n)
				got := held[n]
				if len(got) != len(want) {
					problems = append(problems, fmt.Sprintf("%s: %d routes of network %s, the controller has %d", g.name, len(got), n, len(want)))
					continue
				}
				for k, v := range want {
					if got[k] != v {
						problems = append(problems, fmt.Sprintf("%s: route %s of %s is %q, the controller's %q", g.name, k, n, got[k], v))
						break
					}
				}
			}
		}
		// FRR's VPN table: the controller's local routes it received, and
		// the edge network's imported routes are FRR's own.
		tbl, err := frrVPN(ctx, frr)
		if err != nil {
			return append(problems, err.Error())
		}
		fromCtl, own := map[string]bool{}, map[string]bool{}
		for k, peers := range tbl {
			for _, p := range peers {
				if p == local.Addr().String() {
					fromCtl[k] = true
				} else {
					own[k] = true
				}
			}
		}
		ctlLocal, ctlImported := map[string]bool{}, map[string]bool{}
		for _, n := range nets.GetNetworks() {
			for k, v := range routesOf(n.GetName()) {
				if strings.HasSuffix(v, v1.RouteOrigin_ROUTE_ORIGIN_LOCAL.String()) && strings.Contains(k, ".") && !strings.Contains(k, "::") {
					ctlLocal[k] = true
				}
				if n.GetName() == "edge" && strings.HasSuffix(v, v1.RouteOrigin_ROUTE_ORIGIN_IMPORTED.String()) {
					ctlImported[k] = true
				}
			}
		}
		if d := setDiff(fromCtl, ctlLocal); d != "" {
			problems = append(problems, "FRR's routes from the controller vs the controller's local IPv4 routes: "+d)
		}
		if d := setDiff(ctlImported, frrKeep); d != "" {
			problems = append(problems, "the controller's imported routes of edge vs the routes FRR announces: "+d)
		}
		if d := setDiff(own, frrKeep); d != "" {
			problems = append(problems, "FRR's own routes vs those it was told to announce: "+d)
		}
		return problems
	}
	frrKeep := map[string]bool{}
	for _, i := range keep {
		f := strings.Fields(routeLine(i))
		frrKeep[f[3]+" "+f[1]] = true
	}
	var problems []string
	settleStart := time.Now()
	deadline := settleStart.Add(3 * time.Minute)
	for {
		t0 := time.Now()
		problems = check(frrKeep)
		if len(problems) == 0 || time.Now().After(deadline) {
			break
		}
		t.Logf("after %v (a check takes %v): %d problems, first: %.300s", time.Since(settleStart).Round(time.Second), time.Since(t0).Round(time.Millisecond), len(problems), problems[0])
		time.Sleep(2 * time.Second)
	}
	t.Logf("invariants checked %v after the chaos ended", time.Since(settleStart).Round(time.Second))
	// The rest of the flood withdrawn: memory back to its level before.
	if err := setRoutes(ctx, keep, false); err != nil {
		t.Error(err)
	}
	if err := clearLoad(); err != nil {
		t.Error(err)
	}
	var memAfter uint64
	for end := time.Now().Add(time.Minute); time.Now().Before(end); {
		if d := check(map[string]bool{}); len(d) == 0 {
			memAfter = settledHeap(10 * time.Second)
			if float64(memAfter) <= 1.1*float64(memBefore) {
				break
			}
		} else {
			time.Sleep(time.Second)
		}
	}
	phase("heap after the flood measured")
	objAfter := objects()
	saveHeap("after")
	// The daemons' logs: kept beside the profiles (for a failed run),
	// counted against the bound and broken down.
	logs := newLogBreakdown()
	for _, p := range append([]*proc{ctl}, agentsOf(gws)...) {
		b, err := os.ReadFile(p.log)
		if err != nil {
			t.Error(err)
			continue
		}
		if pdir != "" {
			os.WriteFile(filepath.Join(pdir, p.name+".log"), b, 0o644)
		}
		kind := "agent"
		if p == ctl {
			kind = "controller"
		}
		logs.add(p.name, kind, bytes.NewReader(b))
	}
	logBytes := logs.total.bytes

	// Summary.
	var b strings.Builder
	fmt.Fprintf(&b, "soak %v: %d edge routes flapped, 3 gateways, controller pid %d\n", sc.duration, sc.flapRoutes, ctl.pid())
	kinds := slices.Sorted(func(yield func(string) bool) {
		for k := range st.ops {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range kinds {
		fmt.Fprintf(&b, "  %-28s %7d ops %7d errors\n", k, st.ops[k], st.errs[k])
		for _, m := range st.samples[k] {
			fmt.Fprintf(&b, "      e.g. %s\n", m)
		}
	}
	mb := func(x uint64) float64 { return float64(x) / (1 << 20) }
	fmt.Fprintf(&b, "  controller heap: %.1f MB before the warm-up flood of %d routes (after the flood: %.0f %% of that)\n", mb(memCold), sc.flapRoutes, 100*float64(memAfter)/float64(max(memCold, 1)))
	fmt.Fprintf(&b, "  controller live heap with the warm-up flood held: %.1f MB (%.1f KB per route over before)\n", mb(memFlood), float64(memFlood-min(memFlood, memBefore))/1024/float64(sc.flapRoutes))
	fmt.Fprintf(&b, "  controller heap: before %.1f MB, peak %.1f MB, after %.1f MB (%.0f %% of before)\n", mb(memBefore), mb(memPeak.Load()), mb(memAfter), 100*float64(memAfter)/float64(max(memBefore, 1)))
	if pdir != "" {
		fmt.Fprintf(&b, "  controller live heap right after the peak: %.1f MB (profiles in %s)\n", mb(memPeakLive.Load()), pdir)
	}
	fmt.Fprintf(&b, "  controller objects: before the flood %s; after %s\n", objBefore, objAfter)
	fmt.Fprintf(&b, "  log bytes (controller + agents): %d (bound %d)\n", logBytes, sc.logBound)
	b.WriteString(logs.format(12))
	fmt.Fprintf(&b, "  invariants: %d problems\n", len(problems))
	fmt.Print(b.String())
	for i, p := range problems {
		if i == 20 {
			t.Errorf("... and %d more", len(problems)-20)
			break
		}
		t.Error(p)
	}
	if memAfter == 0 || float64(memAfter) > 1.1*float64(memBefore) {
		t.Errorf("controller heap after the flood %.1f MB, before %.1f MB: not within 10 %%", mb(memAfter), mb(memBefore))
	}
	if logBytes > sc.logBound {
		t.Errorf("the daemons wrote %d bytes of log, the bound is %d", logBytes, sc.logBound)
	}
	for _, k := range []string{"cni add", "cni del", "api endpoint create", "kill agent", "kill controller", "edge withdraw half"} {
		if st.ops[k] == 0 {
			t.Errorf("no %q happened: the soak did not exercise it", k)
		}
	}
}

func agentsOf(gws []*gateway) []*proc {
	var out []*proc
	for _, g := range gws {
		out = append(out, g.agent)
	}
	return out
}

// frrVPN returns FRR's VPNv4 table from one `show bgp ipv4 vpn json`:
// "<rd> <prefix>" -> the peers of its paths ("(unspec)" for FRR's own).
func frrVPN(ctx context.Context, frr *bgptest.FRR) (map[string][]string, error) {
	out, err := frr.Vtysh(ctx, "show bgp ipv4 vpn json")
	if err != nil {
		return nil, err
	}
	var tbl struct {
		Routes struct {
			RDs map[string]json.RawMessage `json:"routeDistinguishers"`
		} `json:"routes"`
	}
	if err := json.Unmarshal(out, &tbl); err != nil {
		return nil, err
	}
	m := map[string][]string{}
	for rd, raw := range tbl.Routes.RDs {
		var prefixes map[string]json.RawMessage
		if err := json.Unmarshal(raw, &prefixes); err != nil {
			return nil, fmt.Errorf("RD %s: %w", rd, err)
		}
		for pfx, raw := range prefixes {
			var paths []struct {
				PeerID string `json:"peerId"`
			}
			if json.Unmarshal(raw, &paths) != nil {
				continue // not a prefix's paths
			}
			for _, p := range paths {
				m[rd+" "+pfx] = append(m[rd+" "+pfx], p.PeerID)
			}
		}
	}
	return m, nil
}

func setDiff(got, want map[string]bool) string {
	var missing, extra []string
	for k := range want {
		if !got[k] {
			missing = append(missing, k)
		}
	}
	for k := range got {
		if !want[k] {
			extra = append(extra, k)
		}
	}
	if len(missing)+len(extra) == 0 {
		return ""
	}
	slices.Sort(missing)
	slices.Sort(extra)
	return fmt.Sprintf("%d missing (%v), %d extra (%v)", len(missing), head(missing), len(extra), head(extra))
}

func head(xs []string) []string { return xs[:min(len(xs), 3)] }

type agentEP struct {
	network string
	addrs   []string
}

// agentEndpoints reads an agent's endpoints from its state directory.
func agentEndpoints(dir string) (map[string]agentEP, error) {
	b, err := os.ReadFile(filepath.Join(dir, "endpoints.json"))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st struct {
		Endpoints []struct {
			ID        string   `json:"id"`
			Network   string   `json:"network"`
			Addresses []string `json:"addresses"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	out := map[string]agentEP{}
	for _, e := range st.Endpoints {
		out[e.ID] = agentEP{network: e.Network, addrs: e.Addresses}
	}
	return out, nil
}

// agentRoutes replays an agent's route log: network -> "rd prefix" ->
// "label nexthop origin".
func agentRoutes(dir string) (map[string]map[string]string, error) {
	f, err := os.Open(filepath.Join(dir, "routes.log"))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var rec struct {
			Put json.RawMessage `json:"put"`
			Del *struct {
				Network string `json:"n"`
				Prefix  string `json:"p"`
				RD      string `json:"rd"`
			} `json:"del"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			continue // a torn last line
		}
		if rec.Put != nil {
			var r v1.Route
			if err := protojson.Unmarshal(rec.Put, &r); err != nil {
				return nil, err
			}
			if out[r.GetNetwork()] == nil {
				out[r.GetNetwork()] = map[string]string{}
			}
			out[r.GetNetwork()][r.GetRouteDistinguisher()+" "+r.GetPrefix()] = fmt.Sprint(r.GetLabel(), " ", r.GetNextHop(), " ", r.GetOrigin())
		}
		if rec.Del != nil {
			delete(out[rec.Del.Network], rec.Del.RD+" "+rec.Del.Prefix)
		}
	}
	for n, m := range out {
		if len(m) == 0 {
			delete(out, n)
		}
	}
	return out, sc.Err()
}
