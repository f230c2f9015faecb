package agent_test

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// footprintAgentEnv names the vrouter-agent binary TestFootprintAgent measures
// (make bench-footprint sets it and runs the test in the vmtest VM, whose
// kernel programs the MPLSoUDP routes).
const footprintAgentEnv = "IOTFABRIC_FOOTPRINT_AGENT"

// TestFootprintAgent: a real vrouter-agent process for gateway A follows a real
// controller; endpoints on gateway B, created through the controller's API,
// become MPLSoUDP routes in gateway A's kernel (through nexthops). The agent's
// resident set (/proc), its Go heap (the live heap of its last GC, from
// GODEBUG=gctrace=1) and its state directory are measured after start and with
// 1,000 and 10,000 routes; at both sizes, the CPU time per route change over
// 100 route additions and 100 withdrawals, one API call each, less the
// agent's idle CPU over the same time (the ratio of the two shows whether a
// change costs work proportional to the table).
// Prints FOOTPRINT lines.
func TestFootprintAgent(t *testing.T) {
	bin := os.Getenv(footprintAgentEnv)
	if bin == "" {
		t.Skip("benchmark: make bench-footprint (runs in the vmtest VM)")
	}
	if lo, err := netlink.LinkByName("lo"); err != nil || netlink.LinkSetUp(lo) != nil {
		t.Fatalf("loopback: %v", err)
	}
	ctx := context.Background()
	ctl := fabrictest.StartController(t)
	api := ctl.Dial()
	createNetwork(t, api, "red", "10.0.0.0/8")
	uA, uB := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	if _, err := api.GW.CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{Name: "gw-b", UnderlayAddress: uB.String()}}); err != nil {
		t.Fatal(err)
	}
	gwA, peer := netnstest.New(t, "iofgw"), netnstest.New(t, "iofgw")
	netnstest.Connect(t, gwA, peer, netip.PrefixFrom(uA, 24), netip.PrefixFrom(uB, 24))

	dir := t.TempDir()
	stateDir, logFile := filepath.Join(dir, "state"), filepath.Join(dir, "agent.log")
	lf, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	cmd := exec.Command(bin, "--gateway", "gw-a", "--underlay", uA.String(), "--controller", ctl.Addr,
		"--netns", gwA.Path(), "--state-dir", stateDir, "--cni-socket", filepath.Join(dir, "cni.sock"), "--log-level", "warn")
	cmd.Env = append(os.Environ(), "GODEBUG=gctrace=1")
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	routes := func() int {
		rs, err := gwA.Handle().RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC, Protocol: overlay.RouteProtocol},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			t.Fatal(err)
		}
		return len(rs)
	}
	waitRoutes := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Minute); routes() != n; time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(logFile)
				t.Fatalf("gateway A has %d routes, want %d\n%s", routes(), n, tail(string(b), 30))
			}
		}
	}
	next := 0
	var ids []string
	create := func(n int) {
		t.Helper()
		for n > 0 {
			k := min(n, 500)
			var eps []*v1.Endpoint
			for range k {
				next++
				id := fmt.Sprintf("ep-%d", next)
				ids = append(ids, id)
				eps = append(eps, &v1.Endpoint{Id: id, Network: "red", Gateway: "gw-b", Label: uint32(1000 + next)})
			}
			r, err := api.EP.CreateEndpoints(ctx, &v1.CreateEndpointsRequest{Endpoints: eps})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range r.Errors {
				if e != "" {
					t.Fatal(e)
				}
			}
			n -= k
		}
	}
	fmt.Printf("FOOTPRINT %-28s %10s %10s %10s %10s %12s\n", "vrouter-agent", "RSS MiB", "anon MiB", "file MiB", "heap MiB", "state KiB")
	measure := func(what string) {
		time.Sleep(3 * time.Second) // settle: the last applies and their garbage
		fmt.Printf("FOOTPRINT %-28s %10.1f %10.1f %10.1f %10s %12.1f\n", what, float64(statusKiB(t, cmd.Process.Pid, "VmRSS"))/1024,
			float64(statusKiB(t, cmd.Process.Pid, "RssAnon"))/1024, float64(statusKiB(t, cmd.Process.Pid, "RssFile"))/1024,
			lastHeapMiB(t, logFile), float64(dirBytes(stateDir))/1024)
	}
	sock := filepath.Join(dir, "cni.sock")
	waitServing(t, sock)
	// A pod on gateway A: a gateway is sent the routes of the networks it
	// has endpoints in.
	list, err := libcni.NetworkConfFromBytes(fmt.Appendf(nil, `{"cniVersion": "1.1.0", "name": "iotfabric", "plugins": [
	  {"type": "iotfabric", "socket": %q, "network": "red"}]}`, sock))
	if err != nil {
		t.Fatal(err)
	}
	pod := netnstest.New(t, "iofpod")
	if _, err := fabrictest.NewCNI(t, pluginDir).Conf.AddNetworkList(ctx, list, &libcni.RuntimeConf{ContainerID: "fp", NetNS: pod.Path(), IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	base := routes() // the pod's own host route
	measure("after start, 1 pod, 0 routes")
	// churn adds n routes one API call each, then withdraws them one call
	// each, and returns the agent's CPU time per route change, less what it
	// spends idle (keepalives, timers) over the same time, measured just
	// before.
	churn := func(n int) float64 {
		t.Helper()
		have := routes()
		idle0, i0 := cpuTicks(t, cmd.Process.Pid), time.Now()
		time.Sleep(10 * time.Second)
		idleRate := float64(cpuTicks(t, cmd.Process.Pid)-idle0) / float64(clockTicks) / time.Since(i0).Seconds()
		cpu0, t0 := cpuTicks(t, cmd.Process.Pid), time.Now()
		for range n {
			create(1)
		}
		waitRoutes(have + n)
		for _, id := range ids[len(ids)-n:] {
			if _, err := api.EP.DeleteEndpoint(ctx, &v1.GetEndpointRequest{Id: id}); err != nil {
				t.Fatal(err)
			}
		}
		ids = ids[:len(ids)-n]
		waitRoutes(have)
		wall := time.Since(t0).Seconds()
		cpu := float64(cpuTicks(t, cmd.Process.Pid)-cpu0) / float64(clockTicks)
		fmt.Printf("FOOTPRINT vrouter-agent at %d routes: %.2f s CPU for %d changes over %.1f s; idle %.3f CPU-s/s\n", have-base, cpu, 2*n, wall, idleRate)
		return max(cpu-idleRate*wall, 0) / float64(2*n)
	}
	create(1000)
	waitRoutes(base + 1000)
	measure("1,000 routes")
	const changes = 200
	per1k := churn(changes / 2)
	create(9000)
	waitRoutes(base + 10000)
	measure("10,000 routes")
	per10k := churn(changes / 2)
	fmt.Printf("FOOTPRINT vrouter-agent CPU per route change: %.0f µs at 1,000 routes, %.0f µs at 10,000 routes (ratio %.1f; %d changes each, one API call per change)\n",
		per1k*1e6, per10k*1e6, per10k/max(per1k, 1e-9), changes)
	measure("10,000 routes, after churn")
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times (100 on Linux).
const clockTicks = 100

func waitServing(t *testing.T, sock string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("agent not serving within 60 s")
		}
	}
}

// statusKiB is a figure of /proc/PID/status in KiB: VmRSS (the resident
// set), RssAnon (the process's own memory: heap, stacks, runtime) or RssFile
// (pages of the binary and other files, clean: the kernel can reclaim them).
func statusKiB(t *testing.T, pid int, field string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field+":" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatalf("no %s", field)
	return 0
}

// cpuTicks is the process's user and system time in clock ticks.
func cpuTicks(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name in parentheses; utime and stime are the
	// 14th and 15th of the whole line.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return u + s
}

var gctrace = regexp.MustCompile(`gc \d+ @.* (\d+)->(\d+)->(\d+) MB`)

// lastHeapMiB is the live heap after the last GC the runtime traced.
func lastHeapMiB(t *testing.T, logFile string) string {
	f, err := os.Open(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	last := "no GC yet"
	s := bufio.NewScanner(f)
	for s.Scan() {
		if m := gctrace.FindStringSubmatch(s.Text()); m != nil {
			last = m[3] // whole MiB
			if last == "0" {
				last = "<1"
			}
		}
	}
	return last
}

func dirBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if i, err := d.Info(); err == nil {
				n += i.Size()
			}
		}
		return nil
	})
	return n
}

func tail(s string, n int) string {
	l := strings.Split(s, "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}
