package agent_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/pkg/cni"
	"github.com/iotfabric/iotfabric/pkg/overlay"
)

// agentBuildsEnv names two vrouter-agent binaries, comma-separated, built
// from the same source with different version strings (scripts/vmtest/arm.sh
// and scripts/vmtest-cni.sh build them).
const agentBuildsEnv = "IOTFABRIC_AGENT_BUILDS"

// TestVMAgentUpgrade runs inside the vmtest VMs (make vmtest-cni,
// vmtest-arm64, vmtest-armv7): gateway A runs the real vrouter-agent binary,
// gateway B an agent in the test; a pod on each exchanges a UDP datagram
// every 50 ms over MPLSoUDP. Gateway A's agent is stopped (SIGTERM), its
// binary replaced by the second build, and started again: no datagram is
// lost, the kernel sees no change of iotfabric's routes or of links in gateway A's namespace
// (the new agent adopts what the old one left), and the new agent serves
// the CNI plugin.
func TestVMAgentUpgrade(t *testing.T) {
	if os.Getenv("IOTFABRIC_VMTEST") == "" {
		t.Skip("runs inside the qemu VM: make vmtest-cni, vmtest-arm64, vmtest-armv7")
	}
	builds := strings.Split(os.Getenv(agentBuildsEnv), ",")
	if len(builds) != 2 {
		t.Fatalf("%s=%q: want two vrouter-agent binaries", agentBuildsEnv, os.Getenv(agentBuildsEnv))
	}
	if lo, err := netlink.LinkByName("lo"); err != nil || netlink.LinkSetUp(lo) != nil {
		t.Fatalf("loopback: %v", err)
	}
	ctx := context.Background()
	ctl := fabrictest.StartController(t)
	createNetwork(t, ctl.Dial(), "red", "10.5.0.0/16")
	uA, uB := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	gwA := netnstest.New(t, "iofgw")
	gwB := fabrictest.StartGateway(t, "gw-b", uB, []string{ctl.Addr}, true)
	netnstest.Connect(t, gwA, gwB.NS, netip.PrefixFrom(uA, 24), netip.PrefixFrom(uB, 24))

	dir := t.TempDir()
	bin, sock := filepath.Join(dir, "vrouter-agent"), filepath.Join(dir, "cni.sock")
	install := func(src string) {
		t.Helper()
		// As a package manager does: a new file renamed over the old one.
		b, err := os.ReadFile(src)
		if err == nil {
			err = os.WriteFile(bin+".new", b, 0o755)
		}
		if err == nil {
			err = os.Rename(bin+".new", bin)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	logFile := filepath.Join(dir, "agent.log")
	logs := func() string { b, _ := os.ReadFile(logFile); return string(b) }
	start := func() *exec.Cmd {
		t.Helper()
		cmd := exec.Command(bin, "--gateway", "gw-a", "--underlay", uA.String(), "--controller", ctl.Addr,
			"--netns", gwA.Path(), "--state-dir", filepath.Join(dir, "state"), "--cni-socket", sock, "--log-level", "warn")
		f, err := os.OpenFile(logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		client := &cni.Client{Path: sock}
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if _, err := client.Do(ctx, &cni.Request{Op: cni.OpStatus}); err == nil {
				return cmd
			} else if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("agent not serving within 30 s: %v\n%s", err, logs())
			}
		}
	}
	stop := func(cmd *exec.Cmd) {
		t.Helper()
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("agent exit after SIGTERM: %v\n%s", err, logs())
		}
	}
	install(builds[0])
	agentA := start()
	defer func() {
		if agentA.ProcessState == nil {
			agentA.Process.Kill()
			agentA.Wait()
		}
	}()

	list, err := libcni.NetworkConfFromBytes(fmt.Appendf(nil, `{"cniVersion": "1.1.0", "name": "iotfabric", "plugins": [
	  {"type": "iotfabric", "socket": %q, "network": "red"}]}`, sock))
	if err != nil {
		t.Fatal(err)
	}
	c := fabrictest.NewCNI(t, pluginDir)
	podA, podB := netnstest.New(t, "iofpod"), netnstest.New(t, "iofpod")
	ra, err := c.Conf.AddNetworkList(ctx, list, &libcni.RuntimeConf{ContainerID: "pa", NetNS: podA.Path(), IfName: "eth0"})
	if err != nil {
		t.Fatalf("pod on gateway A: %v\n%s", err, logs())
	}
	rA, _ := current.NewResultFromResult(ra)
	rB, err := c.Add(ctx, gwB, "red", "pb", podB)
	if err != nil {
		t.Fatal(err)
	}
	aA, aB := rA.IPs[0].Address.IP, rB.IPs[0].Address.IP
	pfx := func(ip net.IP) netip.Prefix { a, _ := netip.AddrFromSlice(ip.To4()); return netip.PrefixFrom(a, 32) }
	gwB.WaitState(30*time.Second, "route to pa", func(s overlay.State) bool { return fabrictest.HasRoute(s, "red", pfx(aA), uA, 0) })

	// UDP echo in pod B; pod A numbers its datagrams.
	var srv *net.UDPConn
	if err := podB.Do(func() (err error) { srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: aB, Port: 7777}); return }); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := srv.ReadFromUDP(buf)
			if err != nil {
				return
			}
			srv.WriteToUDP(buf[:n], from)
		}
	}()
	var cl *net.UDPConn
	if err := podA.Do(func() (err error) { cl, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: aB, Port: 7777}); return }); err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var mu sync.Mutex
	got := map[uint32]bool{}
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := cl.Read(buf)
			if err != nil && !isRefused(err) {
				return
			}
			if n == 4 {
				mu.Lock()
				got[binary.BigEndian.Uint32(buf)] = true
				mu.Unlock()
			}
		}
	}()
	answered := func(seq uint32) bool { mu.Lock(); defer mu.Unlock(); return got[seq] }
	// Until the path works (gateway A learns pod B's route from the controller).
	var seq uint32
	for deadline := time.Now().Add(30 * time.Second); ; {
		seq++
		cl.Write(binary.BigEndian.AppendUint32(nil, seq))
		time.Sleep(50 * time.Millisecond)
		if answered(seq) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s -> pod %s: no answer over the overlay within 30 s\n%s", aA, aB, logs())
		}
	}
	time.Sleep(200 * time.Millisecond)

	// Watch gateway A's kernel: every route and link change from here on.
	changes := watchKernel(t, gwA)
	first := seq + 1
	sending := make(chan struct{})
	sent := make(chan uint32)
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		s := first
		for {
			select {
			case <-sending:
				sent <- s - 1
				return
			case <-tick.C:
				cl.Write(binary.BigEndian.AppendUint32(nil, s))
				s++
			}
		}
	}()
	time.Sleep(time.Second)
	t0 := time.Now()
	stop(agentA)
	install(builds[1])
	agentA = start()
	upgrade := time.Since(t0)
	time.Sleep(2 * time.Second) // the new agent connects, adopts and applies
	close(sending)
	last := <-sent
	time.Sleep(time.Second) // the last answers
	var lost []uint32
	for s := first; s <= last; s++ {
		if !answered(s) {
			lost = append(lost, s)
		}
	}
	if ch := changes(); len(ch) > 0 {
		t.Errorf("gateway A's kernel changed across the upgrade:\n%s", strings.Join(ch, "\n"))
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d datagrams lost across the agent upgrade (first %d)\n%s", len(lost), last-first+1, lost[0], logs())
	}
	// The new agent serves: pod A's endpoint checks out through it.
	if err := c.Conf.CheckNetworkList(ctx, list, &libcni.RuntimeConf{ContainerID: "pa", NetNS: podA.Path(), IfName: "eth0"}); err != nil {
		t.Fatalf("CNI CHECK through the new agent: %v\n%s", err, logs())
	}
	v := func(b string) string {
		out, err := exec.Command(b, "--version").Output()
		if err != nil {
			return "(no --version)"
		}
		return strings.TrimSpace(string(out))
	}
	t.Logf("agent stopped, replaced and serving again in %v; %d datagrams at 50 ms intervals, none lost; no kernel change; builds: %q -> %q",
		upgrade.Round(time.Millisecond), last-first+1, v(builds[0]), v(builds[1]))
}

func isRefused(err error) bool { return err != nil && strings.Contains(err.Error(), "refused") }

// watchKernel records changes of iotfabric's routes (IPv4, IPv6; protocol
// 165) and of links in ns until the returned function is called, which
// returns them (not the feature probes).
func watchKernel(t *testing.T, ns *netnstest.NS) func() []string {
	t.Helper()
	done := make(chan struct{})
	h := ns.NsHandle()
	routes, links := make(chan netlink.RouteUpdate, 256), make(chan netlink.LinkUpdate, 256)
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: &h}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: &h}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var out []string
	go func() {
		for u := range routes {
			// iotfabric's routes only: the kernel adds routes of its own (an
			// enslaved veth's IPv6 link-local address lands in the VRF's
			// table once duplicate address detection is done).
			if u.Route.Protocol != overlay.RouteProtocol {
				continue
			}
			mu.Lock()
			out = append(out, fmt.Sprintf("route %d %v", u.Type, u.Route))
			mu.Unlock()
		}
	}()
	go func() {
		for u := range links {
			// Statistics updates of a link are no change; the feature probes
			// a starting agent creates and deletes at once ("iofp*") are no
			// state.
			if u.Header.Type == syscall.RTM_NEWLINK && u.Change == 0 || strings.HasPrefix(u.Attrs().Name, overlay.IfPrefix+"p") {
				continue
			}
			mu.Lock()
			out = append(out, fmt.Sprintf("link %d %s change %#x", u.Header.Type, u.Attrs().Name, u.Change))
			mu.Unlock()
		}
	}()
	var once sync.Once
	return func() []string {
		once.Do(func() { close(done) })
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), out...)
	}
}
