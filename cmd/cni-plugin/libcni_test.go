package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/internal/testenv"
	"github.com/iotfabric/iotfabric/pkg/agent"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

var pluginDir string

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		dir, err := os.MkdirTemp("", "iotfabric-cni-plugin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if pluginDir, err = fabrictest.BuildPlugin(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// env is one gateway: a controller, the gateway's namespace with a real
// overlay.Manager, an agent serving the CNI socket, and libcni.
type env struct {
	t       *testing.T
	ctl     *fabrictest.Controller
	api     fabrictest.Clients
	gw      *netnstest.NS
	dir     string
	sock    string
	cni     *libcni.CNIConfig
	agent   *agent.Agent
	cancel  context.CancelFunc
	stopped chan struct{}
}

func newEnv(t *testing.T, opts ...grpc.ServerOption) *env {
	netnstest.RequireRoot(t)
	e := &env{t: t, ctl: fabrictest.StartController(t, opts...), gw: netnstest.New(t, "iofgw"), dir: t.TempDir()}
	e.api = e.ctl.Dial()
	if _, err := e.api.Net.CreateNetwork(context.Background(), &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "red", Subnets: []string{"10.1.0.0/16"}}}); err != nil {
		t.Fatal(err)
	}
	e.sock = filepath.Join(e.dir, "cni.sock")
	// An explicit exec: libcni's lazy default is not safe for concurrent use.
	ex := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	e.cni = libcni.NewCNIConfigWithCacheDir([]string{pluginDir, "/usr/lib/cni"}, filepath.Join(e.dir, "cache"), ex)
	e.startAgent()
	return e
}

func (e *env) startAgent() {
	t := e.t
	m, err := overlay.New(context.Background(), overlay.Config{NetNS: e.gw.Path()})
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Options{
		Config:      agent.Config{Gateway: "gw-a", Underlay: netip.MustParseAddr("192.0.2.1"), StateDir: filepath.Join(e.dir, "state"), Log: testLog(t)},
		Controllers: []string{e.ctl.Addr}, DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		Applier: m, HostNetns: e.gw.Path(), CNISocket: e.sock,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.agent, e.cancel, e.stopped = a, cancel, make(chan struct{})
	stopped := e.stopped
	go func() {
		defer close(stopped)
		defer m.Close()
		if err := a.Run(ctx); err != nil {
			t.Errorf("agent: %v", err)
		}
	}()
	t.Cleanup(e.stopAgent)
	<-a.Ready()
}

func (e *env) stopAgent() {
	if e.cancel != nil {
		e.cancel()
		<-e.stopped
		e.cancel = nil
	}
}

func (e *env) conflist(extra string) *libcni.NetworkConfigList {
	e.t.Helper()
	js := fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "iotfabric", "plugins": [
	  {"type": "iotfabric", "socket": %q, "network": "red"}%s]}`, e.sock, extra)
	l, err := libcni.NetworkConfFromBytes([]byte(js))
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

func (e *env) rt(id string, pod *netnstest.NS) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: pod.Path(), IfName: "eth0"}
}

func (e *env) add(l *libcni.NetworkConfigList, id string, pod *netnstest.NS) *current.Result {
	e.t.Helper()
	r, err := e.cni.AddNetworkList(context.Background(), l, e.rt(id, pod))
	if err != nil {
		e.t.Fatalf("ADD %s: %v", id, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		e.t.Fatal(err)
	}
	return res
}

func linkIn(t *testing.T, n *netnstest.NS, name string) (netlink.Link, *netlink.Handle) {
	t.Helper()
	h, err := netlink.NewHandleAt(n.NsHandle())
	if err != nil {
		t.Fatal(err)
	}
	l, err := h.LinkByName(name)
	if err != nil {
		h.Close()
		return nil, nil
	}
	return l, h
}

func TestLibcniAddCheckDelGCStatus(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l := e.conflist("")
	pod1, pod2 := netnstest.New(t, "iofpod"), netnstest.New(t, "iofpod")

	res := e.add(l, "c1", pod1)
	if res.CNIVersion != "1.1.0" || len(res.Interfaces) != 2 || len(res.IPs) != 1 {
		t.Fatalf("result: %+v", res)
	}
	ip := res.IPs[0]
	if ones, _ := ip.Address.Mask.Size(); ones != 32 || !ip.Gateway.Equal(net.IPv4(169, 254, 1, 1)) || *ip.Interface != 1 || res.Interfaces[1].Sandbox != pod1.Path() {
		t.Fatalf("result IP %+v, interfaces %+v", ip, res.Interfaces)
	}
	// The pod side: address, default route via 169.254.1.1.
	pl, ph := linkIn(t, pod1, "eth0")
	if pl == nil {
		t.Fatal("no eth0 in the pod")
	}
	addrs, _ := ph.AddrList(pl, netlink.FAMILY_V4)
	if len(addrs) != 1 || !addrs[0].IP.Equal(ip.Address.IP) {
		t.Fatalf("pod addresses %v, result %v", addrs, ip.Address)
	}
	routes, _ := ph.RouteList(pl, netlink.FAMILY_V4)
	if !hasDefaultVia(routes, "169.254.1.1") {
		t.Fatalf("pod routes: %v", routes)
	}
	ph.Close()
	// The host side: programmed by the agent through pkg/overlay.
	hl, hh := linkIn(t, e.gw, res.Interfaces[0].Name)
	if hl == nil {
		t.Fatalf("no host veth %s in the gateway namespace", res.Interfaces[0].Name)
	}
	haddrs, _ := hh.AddrList(hl, netlink.FAMILY_V4)
	if len(haddrs) != 1 || haddrs[0].IP.String() != "169.254.1.1" || hl.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("host veth %s: up=%v addresses %v", hl.Attrs().Name, hl.Attrs().Flags&net.FlagUp != 0, haddrs)
	}
	hh.Close()

	if err := e.cni.CheckNetworkList(ctx, l, e.rt("c1", pod1)); err != nil {
		t.Fatalf("CHECK on a good pod: %v", err)
	}
	// CHECK reports what differs.
	pl, ph = linkIn(t, pod1, "eth0")
	ph.AddrDel(pl, &netlink.Addr{IPNet: &ip.Address})
	ph.Close()
	err := e.cni.CheckNetworkList(ctx, l, e.rt("c1", pod1))
	if err == nil || !strings.Contains(err.Error(), "address "+ip.Address.IP.String()+" is missing on eth0") {
		t.Fatalf("CHECK after removing the address: %v", err)
	}

	// A second pod, then GC with only c2 valid: c1 goes, with its veth.
	res2 := e.add(l, "c2", pod2)
	if res2.IPs[0].Address.IP.Equal(ip.Address.IP) {
		t.Fatal("two pods got the same address")
	}
	if err := e.cni.GCNetworkList(ctx, l, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "c2", IfName: "eth0"}}}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	eps, _ := e.agent.Core().Endpoints(ctx)
	if len(eps) != 1 || eps[0].ContainerID != "c2" {
		t.Fatalf("after GC the agent has %+v", eps)
	}
	if l, _ := linkIn(t, e.gw, res.Interfaces[0].Name); l != nil {
		t.Fatal("GC left c1's host veth")
	}

	// DEL, and DEL again on what is gone.
	for i := range 2 {
		if err := e.cni.DelNetworkList(ctx, l, e.rt("c2", pod2)); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
	}
	if l, _ := linkIn(t, pod2, "eth0"); l != nil {
		t.Fatal("DEL left eth0 in the pod")
	}
	if eps, _ := e.agent.Core().Endpoints(ctx); len(eps) != 0 {
		t.Fatalf("after DEL the agent has %+v", eps)
	}

	// STATUS: fine while the agent serves; "not available" once it stopped.
	if err := e.cni.GetStatusNetworkList(ctx, l); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	e.stopAgent()
	err = e.cni.GetStatusNetworkList(ctx, l)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable {
		t.Fatalf("STATUS with the agent stopped: %v", err)
	}
}

func hasDefaultVia(routes []netlink.Route, gw string) bool {
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.String() == gw {
			return true
		}
	}
	return false
}

func TestLibcniConcurrentAdds(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l := e.conflist("")
	const n = 32
	pods := make([]*netnstest.NS, n)
	for i := range pods {
		pods[i] = netnstest.New(t, "iofpod")
	}
	var wg sync.WaitGroup
	results := make([]*current.Result, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			r, err := e.cni.AddNetworkList(ctx, l, e.rt(fmt.Sprintf("pod%d", i), pods[i]))
			if err == nil {
				results[i], err = current.NewResultFromResult(r)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	seen := map[string]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("ADD pod%d: %v", i, errs[i])
		}
		a := results[i].IPs[0].Address.IP.String()
		if j, dup := seen[a]; dup {
			t.Fatalf("pod%d and pod%d both got %s", j, i, a)
		}
		seen[a] = i
	}
	eps, _ := e.agent.Core().Endpoints(ctx)
	labels := map[uint32]bool{}
	for _, ep := range eps {
		labels[ep.Label] = true
	}
	if len(eps) != n || len(labels) != n {
		t.Fatalf("agent has %d endpoints with %d labels, want %d", len(eps), len(labels), n)
	}
	for i := range n {
		if err := e.cni.DelNetworkList(ctx, l, e.rt(fmt.Sprintf("pod%d", i), pods[i])); err != nil {
			t.Fatal(err)
		}
	}
	if eps, _ := e.agent.Core().Endpoints(ctx); len(eps) != 0 {
		t.Fatalf("after DEL: %d endpoints", len(eps))
	}
}

// runPlugin calls the plugin binary directly with a raw configuration.
func runPlugin(t *testing.T, command, netnsPath, conf string, env ...string) *types.Error {
	t.Helper()
	ex := &rawExec{}
	env = append([]string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=bad1", "CNI_NETNS=" + netnsPath, "CNI_IFNAME=eth0", "CNI_PATH=" + pluginDir}, env...)
	out, err := ex.run(filepath.Join(pluginDir, "iotfabric"), env, []byte(conf))
	if err == nil {
		return nil
	}
	var te types.Error
	if jerr := json.Unmarshal(out, &te); jerr != nil {
		t.Fatalf("%s: the plugin failed without CNI error JSON: %v; stdout %q", command, err, out)
	}
	return &te
}

func TestLibcniBadInput(t *testing.T) {
	e := newEnv(t)
	pod := netnstest.New(t, "iofpod")
	good := fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "n", "type": "iotfabric", "socket": %q, "network": "red"}`, e.sock)
	cases := []struct {
		name, cmd, netns, conf string
		code                   uint
		says                   string
		env                    []string
	}{
		{"interface name too long", "ADD", pod.Path(), good, types.ErrInvalidEnvironmentVariables, "interface name", []string{"CNI_IFNAME=averyveryverylongname"}},
		{"container id with a slash", "ADD", pod.Path(), good, types.ErrInvalidEnvironmentVariables, "containerID", []string{"CNI_CONTAINERID=a/b"}},
		{"malformed JSON", "ADD", pod.Path(), `{"cniVersion": "1.1.0", "name": `, types.ErrDecodingFailure, "", nil},
		{"unknown network", "ADD", pod.Path(), strings.Replace(good, `"red"`, `"blue"`, 1), types.ErrInvalidNetworkConfig, `unknown network "blue"`, nil},
		{"missing netns", "ADD", "/var/run/netns/iotfabric-absent-" + fmt.Sprint(os.Getpid()), good, types.ErrUnknownContainer, "cannot be opened", nil},
		{"wrong cniVersion", "ADD", pod.Path(), strings.Replace(good, `"1.1.0"`, `"7.0.0"`, 1), types.ErrIncompatibleCNIVersion, "", nil},
		{"relative socket", "ADD", pod.Path(), strings.Replace(good, e.sock, "cni.sock", 1), types.ErrInvalidNetworkConfig, "absolute path", nil},
		{"bad mtu", "ADD", pod.Path(), strings.Replace(good, `"network"`, `"mtu": 5, "network"`, 1), types.ErrInvalidNetworkConfig, "mtu", nil},
		{"no agent", "ADD", pod.Path(), strings.Replace(good, e.sock, e.sock+".absent", 1), types.ErrTryAgainLater, "not reachable", nil},
		{"status without agent", "STATUS", "", strings.Replace(good, e.sock, e.sock+".absent", 1), types.ErrPluginNotAvailable, "", nil},
		{"check without prevResult", "CHECK", pod.Path(), good, types.ErrInvalidNetworkConfig, "prevResult", nil},
	}
	for _, c := range cases {
		te := runPlugin(t, c.cmd, c.netns, c.conf, c.env...)
		if te == nil || te.Code != c.code || !strings.Contains(te.Msg+te.Details, c.says) {
			t.Errorf("%s: got %+v, want code %d saying %q", c.name, te, c.code, c.says)
		}
	}
	// Hostile input gets a short error: a 100 MB network name is quoted by
	// its first 64 bytes, and nothing reaches the agent.
	huge := strings.Repeat("n", 100<<20)
	te := runPlugin(t, "ADD", pod.Path(), strings.Replace(good, `"red"`, `"`+huge+`"`, 1))
	if te == nil || te.Code != types.ErrInvalidNetworkConfig || len(te.Msg)+len(te.Details) > 512 || !strings.Contains(te.Msg, "(104857600 bytes)") {
		t.Errorf("100 MB network name: code %v, %d bytes of message", te, len(te.Msg)+len(te.Details))
	}
	for _, ifn := range []string{"eth@0", "eth%d", "a:b", "..", "e\u00e9"} {
		te := runPlugin(t, "ADD", pod.Path(), good, "CNI_IFNAME="+ifn)
		if te == nil || te.Code != types.ErrInvalidEnvironmentVariables {
			t.Errorf("interface %q: %+v", ifn, te)
		}
	}
	// Nothing was left behind by the refused ADDs.
	if eps, _ := e.agent.Core().Endpoints(context.Background()); len(eps) != 0 {
		t.Fatalf("refused ADDs left endpoints: %+v", eps)
	}
	if l, _ := linkIn(t, pod, "eth0"); l != nil {
		t.Fatal("a refused ADD left eth0")
	}
}

// TestLibcniChainWithPortmap runs iotfabric then the reference portmap plugin:
// portmap gets iotfabric's result as prevResult; DEL runs through both.
func TestLibcniChainWithPortmap(t *testing.T) {
	e := newEnv(t)
	testenv.RequireFile(t, "/usr/lib/cni/portmap", "containernetworking-plugins")
	ctx := context.Background()
	// Debian's reference plugins (1.1.1) speak up to CNI 1.0.0.
	l, err := libcni.NetworkConfFromBytes([]byte(fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "iotfabric", "plugins": [
	  {"type": "iotfabric", "socket": %q, "network": "red"},
	  {"type": "portmap", "capabilities": {"portMappings": true}, "snat": false}]}`, e.sock)))
	if err != nil {
		t.Fatal(err)
	}
	pod := netnstest.New(t, "iofpod")
	rt := e.rt("chained", pod)
	rt.CapabilityArgs = map[string]any{"portMappings": []map[string]any{{"hostPort": 18080 + os.Getpid()%1000, "containerPort": 80, "protocol": "tcp"}}}
	// portmap's rules live in the test's own namespace: removed even when
	// the test fails half-way (a DEL of what is gone succeeds), and the
	// shared chain portmap leaves behind too when this test made it.
	hadChain := exec.Command("iptables", "-w", "-t", "nat", "-S", "CNI-HOSTPORT-DNAT").Run() == nil
	t.Cleanup(func() {
		e.cni.DelNetworkList(context.Background(), l, rt)
		if out, err := exec.Command("iptables", "-w", "-t", "nat", "-S", "CNI-HOSTPORT-DNAT").Output(); !hadChain && err == nil &&
			strings.TrimSpace(string(out)) == "-N CNI-HOSTPORT-DNAT" {
			for _, hook := range []string{"PREROUTING", "OUTPUT"} {
				exec.Command("iptables", "-w", "-t", "nat", "-D", hook, "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT").Run()
			}
			exec.Command("iptables", "-w", "-t", "nat", "-X", "CNI-HOSTPORT-DNAT").Run()
		}
	})
	r, err := e.cni.AddNetworkList(ctx, l, rt)
	if err != nil {
		t.Fatalf("ADD through the chain: %v", err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil || len(res.IPs) != 1 || len(res.Interfaces) != 2 {
		t.Fatalf("chained result: %+v", res)
	}
	// (No CHECK through the chain: Debian's portmap 1.1.1 checks IPv6 DNAT
	// chains it never created for an IPv4-only result and fails.)
	out, err := exec.Command("iptables", "-w", "-t", "nat", "-S").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--to-destination "+res.IPs[0].Address.IP.String()+":80") {
		t.Fatalf("portmap did not map to the pod's address %s: %v\n%s", res.IPs[0].Address.IP, err, out)
	}
	if err := e.cni.DelNetworkList(ctx, l, rt); err != nil {
		t.Fatalf("DEL through the chain: %v", err)
	}
	// iotfabric after another plugin: its prevResult is carried over.
	l2, err := libcni.NetworkConfFromBytes([]byte(fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "iotfabric2", "plugins": [
	  {"type": "loopback"}, {"type": "iotfabric", "socket": %q, "network": "red"}]}`, e.sock)))
	if err != nil {
		t.Fatal(err)
	}
	pod2 := netnstest.New(t, "iofpod")
	r, err = e.cni.AddNetworkList(ctx, l2, e.rt("after-loopback", pod2))
	if err != nil {
		t.Fatalf("ADD after loopback: %v", err)
	}
	res, _ = current.NewResultFromResult(r)
	if len(res.Interfaces) < 2 || res.Interfaces[len(res.Interfaces)-1].Name != "eth0" {
		t.Fatalf("result after loopback: %+v", res)
	}
	if err := e.cni.DelNetworkList(ctx, l2, e.rt("after-loopback", pod2)); err != nil {
		t.Fatal(err)
	}
}

// TestLibcniDualStack: a network with an IPv4 and an IPv6 subnet gives the
// pod a /32 and a /128, both in the result, with default routes.
func TestLibcniDualStack(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.api.Net.CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "dual", Subnets: []string{"10.20.0.0/16", "fd00:20::/64"}}}); err != nil {
		t.Fatal(err)
	}
	l, err := libcni.NetworkConfFromBytes(fmt.Appendf(nil, `{"cniVersion": "1.1.0", "name": "dual", "plugins": [
	  {"type": "iotfabric", "socket": %q, "network": "dual"}]}`, e.sock))
	if err != nil {
		t.Fatal(err)
	}
	pod := netnstest.New(t, "iofpod")
	res := e.add(l, "d1", pod)
	var v4, v6 bool
	for _, ip := range res.IPs {
		ones, bits := ip.Address.Mask.Size()
		v4 = v4 || (bits == 32 && ones == 32)
		v6 = v6 || (bits == 128 && ones == 128)
	}
	if !v4 || !v6 || len(res.Routes) != 2 {
		t.Fatalf("dual-stack result: ips %v routes %v", res.IPs, res.Routes)
	}
	pl, ph := linkIn(t, pod, "eth0")
	addrs, _ := ph.AddrList(pl, netlink.FAMILY_V6)
	ph.Close()
	found := false
	for _, a := range addrs {
		for _, ip := range res.IPs {
			found = found || a.IP.Equal(ip.Address.IP)
		}
	}
	if !found {
		t.Fatalf("no IPv6 address of the result on eth0: %v", addrs)
	}
	if err := e.cni.CheckNetworkList(ctx, l, e.rt("d1", pod)); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if err := e.cni.DelNetworkList(ctx, l, e.rt("d1", pod)); err != nil {
		t.Fatal(err)
	}
}
