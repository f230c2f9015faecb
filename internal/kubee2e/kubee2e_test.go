package kubee2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	"github.com/iotfabric/iotfabric/internal/kubetest"
	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/internal/testenv"
	"github.com/iotfabric/iotfabric/pkg/agent"
	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
	"github.com/iotfabric/iotfabric/pkg/kube"
	"github.com/iotfabric/iotfabric/pkg/kube/podwatch"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	"github.com/iotfabric/iotfabric/pkg/server"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

var pluginDir string

func TestMain(m *testing.M) {
	if spec, ok := os.LookupEnv(controllerEnv); ok {
		os.Exit(childController(spec))
	}
	bgptest.ReexecInNewNetns()
	if os.Geteuid() != 0 {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "iotfabric-kubee2e-")
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

// fabric is the whole system under test: a real kube-apiserver with the
// manifests of deploy/kubernetes applied, a controller with the Kubernetes
// reconciler and its BGP speaker peering with FRR, and gateways whose agents
// watch their node's pods as the agent's service account.
type fabric struct {
	t    *testing.T
	ctx  context.Context
	api  *kubetest.Server
	kc   *kubernetes.Clientset
	ctl  *fabrictest.Controller
	grpc fabrictest.Clients
	frr  *bgptest.FRR
	cni  *fabrictest.CNI

	watchers map[string]*podwatch.Watcher // by node
}

const (
	nodeGrace = 3 * time.Second
	podGrace  = 2 * time.Second
)

func newFabric(t *testing.T) *fabric {
	bgptest.RequireRoot(t)
	testenv.RequireFile(t, "/usr/lib/frr/bgpd", "frr")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	api := kubetest.Start(t, kubetest.ControllerUser, kubetest.AgentUser)
	api.Apply(t, "namespace.yaml", "crd-virtualnetwork.yaml", "rbac.yaml")

	self := bgptest.Self(t)
	frrNS := bgptest.NewNetns(t)
	local, edge := netip.MustParsePrefix("10.95.7.1/24"), netip.MustParsePrefix("10.95.7.2/24")
	bgptest.Connect(t, self, frrNS, local, edge)
	const asn = 64512
	frr := bgptest.StartFRR(t, frrNS, bgptest.FRRConfig{ASN: asn, RouterID: edge.Addr(),
		Neighbors: []bgptest.FRRNeighbor{{Address: local.Addr(), ASN: asn}}})
	kubeconfig := api.KubeconfigFor(t, kubetest.ControllerUser.Name)
	ctl := fabrictest.StartControllerWith(t, &fabrictest.Controller{
		BGP: &bgp.Config{ASN: asn, RouterID: local.Addr(), ListenPort: -1, Peers: []bgp.PeerConfig{{Address: edge.Addr(), ASN: asn}}},
		Tune: func(c *server.Config) {
			c.Kubernetes = kube.Config{Enabled: true, Kubeconfig: kubeconfig, DefaultNetwork: "default",
				NodeGrace: nodeGrace, PodGrace: podGrace,
				Lease: kube.LeaseConfig{Namespace: "iotfabric-system", Duration: 3 * time.Second, Renew: 2 * time.Second, Retry: 500 * time.Millisecond}}
		}})
	return &fabric{t: t, ctx: ctx, api: api, kc: api.Client(t, "admin"), ctl: ctl, grpc: ctl.Dial(), frr: frr, cni: fabrictest.NewCNI(t, pluginDir),
		watchers: map[string]*podwatch.Watcher{}}
}

// gateway starts a gateway named like its node, in a network namespace of
// its own, its agent with the node-scoped pod watcher.
func (f *fabric) gateway(node string, underlay netip.Addr) *fabrictest.Gateway {
	t := f.t
	if _, err := f.kc.CoreV1().Nodes().Create(f.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var w *podwatch.Watcher
	g := fabrictest.StartGateway(t, node, underlay, []string{f.ctl.Addr}, true, func(o *agent.Options) {
		var err error
		w, err = podwatch.New(podwatch.Config{Node: node, DefaultNetwork: "default", Kubeconfig: f.api.KubeconfigFor(t, kubetest.AgentUser.Name), GetTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		o.Pods = w // the agent runs it
	})
	f.watchers[node] = w
	deadline := time.Now().Add(30 * time.Second)
	for !w.Synced() {
		if time.Now().After(deadline) {
			t.Fatalf("gateway %s: pod informers not synced", node)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return g
}

// pod creates a pod object bound to node (no kubelet: nothing runs it).
func (f *fabric) pod(ns, name, node string, ann map[string]string) *corev1.Pod {
	f.t.Helper()
	p, err := f.kc.CoreV1().Pods(ns).Create(f.ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

// add runs CNI ADD for pod on gateway g as a container runtime does: a
// configuration without a network, the pod in CNI_ARGS.
func (f *fabric) add(g *fabrictest.Gateway, p *corev1.Pod, container string, netns *netnstest.NS) (*current.Result, error) {
	list, err := libcni.NetworkConfFromBytes(fmt.Appendf(nil, `{"cniVersion": "1.1.0", "name": "iotfabric", "plugins": [
	  {"type": "iotfabric", "socket": %q}]}`, g.Sock))
	if err != nil {
		f.t.Fatal(err)
	}
	rt := &libcni.RuntimeConf{ContainerID: container, NetNS: netns.Path(), IfName: "eth0", Args: [][2]string{
		{"IgnoreUnknown", "true"}, {"K8S_POD_NAMESPACE", p.Namespace}, {"K8S_POD_NAME", p.Name},
		{"K8S_POD_INFRA_CONTAINER_ID", container}, {"K8S_POD_UID", string(p.UID)}}}
	r, err := f.cni.Conf.AddNetworkList(f.ctx, list, rt)
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(r)
}

func addrOf(t *testing.T, r *current.Result) netip.Addr {
	t.Helper()
	if len(r.IPs) == 0 {
		t.Fatalf("ADD result without addresses: %+v", r)
	}
	a, ok := netip.AddrFromSlice(r.IPs[0].Address.IP.To4())
	if !ok {
		t.Fatalf("ADD result address %v", r.IPs[0].Address)
	}
	return a
}

// atFRR waits until FRR's VPNv4 table has (want) or lacks (!want) the pod
// route of addr from gateway underlay u.
func (f *fabric) atFRR(u, addr netip.Addr, label uint32, want bool, timeout time.Duration) {
	f.t.Helper()
	key := fmt.Sprintf("%s:1 %s/32", u, addr)
	err := bgptest.Eventually(f.ctx, timeout, 100*time.Millisecond, func(ctx context.Context) error {
		tbl, err := f.frr.VPNTable(ctx, "ipv4")
		if err != nil {
			return err
		}
		ps := tbl[key]
		switch {
		case want && len(ps) == 0:
			return fmt.Errorf("%s not at FRR", key)
		case want && (ps[0].NextHop != u || (label != 0 && ps[0].Label != label)):
			return fmt.Errorf("%s at FRR with next hop %s label %d, want %s and %d", key, ps[0].NextHop, ps[0].Label, u, label)
		case !want && len(ps) > 0:
			return fmt.Errorf("%s still at FRR", key)
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

// endpoint returns the controller's endpoint of a container's eth0.
// endpoint returns the container's endpoint once it has its label (the ADD
// records it first, and its attach gives it the label).
func (f *fabric) endpoint(container string) (*v1.Endpoint, error) {
	var ep *v1.Endpoint
	err := bgptest.Eventually(f.ctx, 20*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
		e, err := f.grpc.EP.GetEndpoint(ctx, &v1.GetEndpointRequest{Id: container + ":eth0"})
		if err != nil {
			return err
		}
		if e.GetLabel() == 0 {
			return fmt.Errorf("endpoint %s has no label yet", e.GetId())
		}
		ep = e
		return nil
	})
	return ep, err
}

// networkStatus waits for the pod's k8s.v1.cni.cncf.io/network-status annotation.
func (f *fabric) networkStatus(p *corev1.Pod, timeout time.Duration) []podwatch.NetworkStatus {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		cur, err := f.kc.CoreV1().Pods(p.Namespace).Get(f.ctx, p.Name, metav1.GetOptions{})
		if err == nil {
			if v, ok := cur.Annotations[kube.AnnotationNetworkStatus]; ok {
				var st []podwatch.NetworkStatus
				if err := json.Unmarshal([]byte(v), &st); err != nil {
					f.t.Fatalf("pod %s/%s: network-status %q: %v", p.Namespace, p.Name, v, err)
				}
				return st
			}
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("pod %s/%s: no network-status annotation within %v (last error %v)", p.Namespace, p.Name, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestKubernetesEndToEnd: a namespace annotated with a VirtualNetwork (a
// custom resource), pods bound to two nodes, CNI ADD through libcni with
// the Kubernetes CNI_ARGS on each node's gateway. The pods get addresses of
// the namespace's network, each gateway routes to the other's pod, FRR has
// both VPN routes, the network-status annotations are written and the
// endpoints name their pods. With the API server killed, no endpoint is
// released and a new pod is still admitted from the cached mapping (its
// annotation follows when the API server is back). A node deleted: after
// the grace period its pod's route is withdrawn at FRR.
func TestKubernetesEndToEnd(t *testing.T) {
	f := newFabric(t)
	t.Logf("API server, controller, FRR up")
	if out, err := f.api.RunKubectlStdin(`apiVersion: iotfabric.io/v1
kind: VirtualNetwork
metadata: {name: plant}
spec:
  subnets: [10.77.0.0/16]
  exportRouteTargets: ["target:64512:77"]
`, "apply", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := f.kc.CoreV1().Namespaces().Create(f.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "iot",
		Annotations: map[string]string{kube.AnnotationNetwork: "plant"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	subnet := netip.MustParsePrefix("10.77.0.0/16")
	err := bgptest.Eventually(f.ctx, 30*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
		_, err := f.grpc.Net.GetNetwork(ctx, &v1.NameRequest{Name: "plant"})
		return err
	})
	if err != nil {
		t.Fatalf("the VirtualNetwork did not reach the controller: %v", err)
	}

	uA, uB := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	gwA, gwB := f.gateway("node-a", uA), f.gateway("node-b", uB)
	netnstest.Connect(t, gwA.NS, gwB.NS, netip.PrefixFrom(uA, 24), netip.PrefixFrom(uB, 24))

	p1, p2 := f.pod("iot", "sensor-1", "node-a", nil), f.pod("iot", "sensor-2", "node-b", nil)
	ns1, ns2 := netnstest.New(t, "iofpod"), netnstest.New(t, "iofpod")
	r1, err := f.add(gwA, p1, "c1", ns1)
	if err != nil {
		t.Fatalf("ADD sensor-1: %v", err)
	}
	r2, err := f.add(gwB, p2, "c2", ns2)
	if err != nil {
		t.Fatalf("ADD sensor-2: %v", err)
	}
	a1, a2 := addrOf(t, r1), addrOf(t, r2)
	for _, a := range []netip.Addr{a1, a2} {
		if !subnet.Contains(a) {
			t.Fatalf("pod address %s is not in the namespace's network %s", a, subnet)
		}
	}
	// Each gateway routes to the other's pod over the underlay, with the
	// pod's label.
	e1, err := f.endpoint("c1")
	if err != nil {
		t.Fatal(err)
	}
	e2, err := f.endpoint("c2")
	if err != nil {
		t.Fatal(err)
	}
	gwA.WaitState(20*time.Second, "route to sensor-2", func(s overlay.State) bool {
		return fabrictest.HasRoute(s, "plant", netip.PrefixFrom(a2, 32), uB, e2.Label)
	})
	gwB.WaitState(20*time.Second, "route to sensor-1", func(s overlay.State) bool {
		return fabrictest.HasRoute(s, "plant", netip.PrefixFrom(a1, 32), uA, e1.Label)
	})
	f.atFRR(uA, a1, e1.Label, true, 30*time.Second)
	f.atFRR(uB, a2, e2.Label, true, 30*time.Second)
	for _, c := range []struct {
		ep   *v1.Endpoint
		p    *corev1.Pod
		id   string
		addr netip.Addr
	}{{e1, p1, "c1", a1}, {e2, p2, "c2", a2}} {
		pr := c.ep.GetPod()
		if pr.GetNamespace() != "iot" || pr.GetName() != c.p.Name || pr.GetUid() != string(c.p.UID) || pr.GetContainerId() != c.id {
			t.Fatalf("endpoint %s names pod %+v, want iot/%s uid %s container %s", c.ep.Id, pr, c.p.Name, c.p.UID, c.id)
		}
		st := f.networkStatus(c.p, 20*time.Second)
		if len(st) != 1 || st[0].Name != "iotfabric/plant" || len(st[0].IPs) != 1 || st[0].IPs[0] != c.addr.String() ||
			len(st[0].Gateway) != 1 || st[0].Gateway[0] != overlay.DefaultPodGatewayAddr.String() || st[0].Interface != "eth0" {
			t.Fatalf("pod %s network-status %+v, want network iotfabric/plant, ip %s, gateway %s", c.p.Name, st, c.addr, overlay.DefaultPodGatewayAddr)
		}
	}
	pingOverMPLS(t, ns1, a2)

	// iotfabric.io/ip: a fixed address in a block no gateway holds yet
	// (gateway A gets the block with the pod). The same address asked on
	// node B, an address of A's block asked on B, and one outside the
	// network: CNI error 7 and a Warning Event on the pod; B admits its next
	// pod as usual.
	fixed := netip.MustParseAddr("10.77.200.10")
	pf := f.pod("iot", "meter", "node-a", map[string]string{kube.AnnotationIP: fixed.String()})
	rf, err := f.add(gwA, pf, "cf", netnstest.New(t, "iofpod"))
	if err != nil {
		t.Fatalf("ADD with a fixed address: %v", err)
	}
	if got := addrOf(t, rf); got != fixed {
		t.Fatalf("pod asking for %s got %s", fixed, got)
	}
	ef, err := f.endpoint("cf")
	if err != nil {
		t.Fatal(err)
	}
	f.atFRR(uA, fixed, ef.Label, true, 30*time.Second)
	for i, c := range []struct{ pod, ip, want string }{
		{"meter-twin", "10.77.200.10", "already in use"},
		{"meter-b", "10.77.200.11", "leased to another gateway"},
		{"meter-out", "10.99.0.1", "in no subnet of network plant"},
	} {
		p := f.pod("iot", c.pod, "node-b", map[string]string{kube.AnnotationIP: c.ip})
		_, err := f.add(gwB, p, fmt.Sprintf("cx%d", i), netnstest.New(t, "iofpod"))
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Error(), c.want) {
			t.Fatalf("pod %s asking for %s: %v, want CNI error 7 saying %q", c.pod, c.ip, err, c.want)
		}
		ev := f.waitEvent(p)
		if ev.Type != corev1.EventTypeWarning || !strings.Contains(ev.Message, c.want) || len(ev.Message) > podwatch.MaxEventMessage {
			t.Fatalf("Event on pod %s: %s %q", c.pod, ev.Type, ev.Message)
		}
	}
	p4 := f.pod("iot", "sensor-4", "node-b", nil)
	r4, err := f.add(gwB, p4, "c4", netnstest.New(t, "iofpod"))
	if err != nil {
		t.Fatalf("ADD on node B after the refusals: %v", err)
	}
	if a4 := addrOf(t, r4); !subnet.Contains(a4) || netip.MustParsePrefix("10.77.200.0/24").Contains(a4) {
		t.Fatalf("sensor-4 got %s", a4)
	}

	// The API server dies: nothing is released (pod grace passes
	// several times), a pod the agent knows is admitted from the cache.
	p3 := f.pod("iot", "sensor-3", "node-a", nil)
	f.waitCached("node-a", "iot", "sensor-3")
	f.api.Kill()
	t.Logf("API server killed")
	ns3 := netnstest.New(t, "iofpod")
	r3, err := f.add(gwA, p3, "c3", ns3)
	if err != nil {
		t.Fatalf("ADD with the API server away: %v", err)
	}
	a3 := addrOf(t, r3)
	if !subnet.Contains(a3) {
		t.Fatalf("headless pod address %s is not in %s", a3, subnet)
	}
	e3, err := f.endpoint("c3")
	if err != nil {
		t.Fatalf("the headless pod's endpoint: %v", err)
	}
	f.atFRR(uA, a3, e3.Label, true, 30*time.Second)
	time.Sleep(3 * podGrace)
	for _, id := range []string{"c1", "c2", "c3", "cf", "c4"} {
		if _, err := f.endpoint(id); err != nil {
			t.Fatalf("endpoint %s with the API server away: %v", id, err)
		}
	}
	f.api.Restart(t)
	t.Logf("API server back")
	st := f.networkStatus(p3, 30*time.Second)
	if len(st) != 1 || len(st[0].IPs) != 1 || st[0].IPs[0] != a3.String() {
		t.Fatalf("sensor-3 network-status after the API server came back: %+v, want ip %s", st, a3)
	}
	time.Sleep(2 * podGrace)
	for _, id := range []string{"c1", "c2", "c3", "cf", "c4"} {
		if _, err := f.endpoint(id); err != nil {
			t.Fatalf("endpoint %s after the API server came back: %v", id, err)
		}
	}

	// Node B goes away with its gateway: the route of its pod stays
	// until the grace period has passed, then FRR sees it withdrawn.
	gwB.Stop()
	time.Sleep(500 * time.Millisecond)
	f.atFRR(uB, a2, 0, true, 5*time.Second)
	deleted := time.Now()
	if err := f.kc.CoreV1().Nodes().Delete(f.ctx, "node-b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.atFRR(uB, a2, 0, false, nodeGrace+30*time.Second)
	took := time.Since(deleted)
	if took < nodeGrace {
		t.Fatalf("node-b's pod route withdrawn %v after the node was deleted, before the grace period of %v", took, nodeGrace)
	}
	f.atFRR(uA, a1, e1.Label, true, 5*time.Second)
	t.Logf("node-b deleted: its pod route withdrawn at FRR after %v (grace %v)", took.Round(time.Millisecond), nodeGrace)
}

// waitEvent waits for the agent's Event on a pod whose ADD it refused.
func (f *fabric) waitEvent(p *corev1.Pod) corev1.Event {
	f.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		l, err := f.kc.CoreV1().Events(p.Namespace).List(f.ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + p.Name})
		if err != nil {
			f.t.Fatal(err)
		}
		for _, e := range l.Items {
			if e.Reason == podwatch.ReasonAddRefused && e.InvolvedObject.UID == p.UID {
				return e
			}
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("no %s Event on pod %s/%s", podwatch.ReasonAddRefused, p.Namespace, p.Name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitCached waits until the node's pod watcher holds the pod in its cache.
func (f *fabric) waitCached(node, ns, name string) {
	f.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !f.watchers[node].Cached(ns, name) {
		if time.Now().After(deadline) {
			f.t.Fatalf("node %s: pod %s/%s not in the agent's cache", node, ns, name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pingOverMPLS sends ICMP echoes from pod A to pod B's address when the
// kernel can carry MPLSoUDP (mpls_router, mpls_iptunnel, fou); this
// machine's kernel may lack them (make vmtest-cni runs the data plane on a
// kernel that has them).
func pingOverMPLS(t *testing.T, from *netnstest.NS, dst netip.Addr) {
	t.Helper()
	if _, err := os.Stat("/proc/sys/net/mpls"); err != nil {
		t.Logf("no MPLS in this kernel: pod-to-pod traffic not checked here (the routes are)")
		return
	}
	var out []byte
	var err error
	for range 20 {
		if out, err = from.Command("ping", "-n", "-c", "1", "-W", "1", dst.String()).CombinedOutput(); err == nil {
			return
		}
	}
	t.Fatalf("ping %s over MPLS: %v\n%s", dst, err, out)
}
