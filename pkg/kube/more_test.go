package kube

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func TestFreeSubnet(t *testing.T) {
	pool := netip.MustParsePrefix("10.200.0.0/22")
	used := []netip.Prefix{netip.MustParsePrefix("10.200.0.0/24"), netip.MustParsePrefix("10.200.2.128/25")}
	p, ok := freeSubnet(pool, 24, used)
	if !ok || p.String() != "10.200.1.0/24" {
		t.Fatal(p, ok)
	}
	used = append(used, p)
	if p, ok = freeSubnet(pool, 24, used); !ok || p.String() != "10.200.3.0/24" {
		t.Fatal(p, ok)
	}
	used = append(used, p)
	if p, ok = freeSubnet(pool, 24, used); ok {
		t.Fatal("pool should be exhausted", p)
	}
	if p, ok = freeSubnet(netip.MustParsePrefix("fd00:a::/120"), 124, nil); !ok || p.String() != "fd00:a::/124" {
		t.Fatal(p, ok)
	}
}

func TestNetworkFor(t *testing.T) {
	for _, c := range []struct {
		ns, pod map[string]string
		want    string
		err     bool
	}{
		{nil, nil, "def", false},
		{map[string]string{AnnotationNetwork: "blue"}, nil, "blue", false},
		{map[string]string{AnnotationNetwork: "blue"}, map[string]string{AnnotationNetwork: "red"}, "red", false},
		{map[string]string{AnnotationIsolation: "true"}, nil, "ns-team", false},
		{map[string]string{AnnotationIsolation: "false"}, nil, "def", false},
		{map[string]string{AnnotationIsolation: "yes"}, nil, "", true},
		{map[string]string{AnnotationNetwork: "bad name"}, nil, "", true},
		{nil, map[string]string{AnnotationNetwork: "-x"}, "", true},
	} {
		got, err := NetworkFor("team", c.ns, c.pod, "def")
		if got != c.want || (err != nil) != c.err {
			t.Errorf("%v %v: %q %v, want %q (error %v)", c.ns, c.pod, got, err, c.want, c.err)
		}
	}
	if _, err := NamespaceNetwork("x", nil, ""); err == nil {
		t.Error("no default network accepted")
	}
}

// TestNamespaces: an isolated namespace gets a network from the pool (and
// loses it when it goes); malformed annotations and unknown networks get Events.
func TestNamespaces(t *testing.T) {
	e := newEnv(t)
	r, _ := e.start(t, testConfig())
	e.waitReconciled(t, r)
	mk := func(name string, ann map[string]string) {
		if _, err := e.kc.CoreV1().Namespaces().Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mk("team-a", map[string]string{AnnotationIsolation: "true"})
	mk("team-b", map[string]string{AnnotationIsolation: "true"})
	mk("odd", map[string]string{AnnotationIsolation: "maybe"})
	mk("lost", map[string]string{AnnotationNetwork: "nowhere"})
	subnets := map[string]string{}
	for _, ns := range []string{"team-a", "team-b"} {
		eventually(t, 30*time.Second, ns+" network", func() (bool, string) {
			n, err := e.ctl.GetNetwork(e.ctx, IsolatedNetwork(ns))
			if err != nil {
				return false, err.Error()
			}
			subnets[ns] = n.Subnets[0]
			return true, ""
		})
	}
	if subnets["team-a"] == subnets["team-b"] || !netip.MustParsePrefix("10.200.0.0/22").Contains(netip.MustParsePrefix(subnets["team-a"]).Addr()) {
		t.Fatalf("isolated subnets %v", subnets)
	}
	u, _ := e.vn(t, "ns-team-a")
	if u.GetLabels()[LabelNamespace] != "team-a" {
		t.Fatalf("labels %v", u.GetLabels())
	}
	eventually(t, 20*time.Second, "Events", func() (bool, string) {
		return hasEvent(e.events(t, "default", "odd"), ReasonBadAnnotation) && hasEvent(e.events(t, "default", "lost"), ReasonUnknownNetwork),
			fmt.Sprint(e.events(t, "default", "odd"), e.events(t, "default", "lost"))
	})
	// Deleting the namespace (terminating here: no namespace controller runs) deletes its network.
	if err := e.kc.CoreV1().Namespaces().Delete(e.ctx, "team-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "team-a's network deleted", func() (bool, string) {
		_, err1 := e.ctl.GetNetwork(e.ctx, "ns-team-a")
		_, err2 := e.vn(t, "ns-team-a")
		return err1 != nil && err2 != nil, fmt.Sprint(err1, err2)
	})
}

// TestNodeGone: a node's annotations make its gateway; once the node is
// deleted, after the grace period, its endpoints and gateway are removed.
func TestNodeGone(t *testing.T) {
	e := newEnv(t)
	if _, err := e.ctl.CreateNetwork(e.ctx, &v1.VirtualNetwork{Name: "net", Subnets: []string{"10.3.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.NodeGrace = 2 * time.Second
	r, _ := e.start(t, cfg)
	e.waitReconciled(t, r)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", Annotations: map[string]string{AnnotationUnderlay: "192.0.2.7", AnnotationEncap: "mplsogre"}}}
	if _, err := e.kc.CoreV1().Nodes().Create(e.ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bad := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-bad", Annotations: map[string]string{AnnotationUnderlay: "not-an-ip"}}}
	if _, err := e.kc.CoreV1().Nodes().Create(e.ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "gateway from node", func() (bool, string) {
		g, err := e.ctl.GetGateway(e.ctx, "node-1")
		return err == nil && g.UnderlayAddress == "192.0.2.7" && g.Encapsulations[0] == v1.Encapsulation_ENCAPSULATION_MPLS_O_GRE, fmt.Sprint(g, err)
	})
	eventually(t, 20*time.Second, "Event on the bad node", func() (bool, string) {
		return hasEvent(e.events(t, "default", "node-bad"), ReasonBadNode), ""
	})
	if _, err := e.ctl.CreateEndpoint(e.ctx, &v1.Endpoint{Id: "c1:eth0", Network: "net", Gateway: "node-1", Label: 100,
		Pod: &v1.PodRef{Namespace: "default", Name: "p", Uid: "u1"}}); err != nil {
		t.Fatal(err)
	}
	if err := e.kc.CoreV1().Nodes().Delete(e.ctx, "node-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	time.Sleep(time.Second)
	if _, err := e.ctl.GetGateway(e.ctx, "node-1"); err != nil {
		t.Fatalf("gateway removed before the grace period: %v", err)
	}
	eventually(t, 20*time.Second, "gateway removed", func() (bool, string) {
		_, err := e.ctl.GetGateway(e.ctx, "node-1")
		eps, _, _ := e.ctl.ListEndpoints(e.ctx, "", "node-1")
		return err != nil && len(eps) == 0, fmt.Sprint(err, eps)
	})
	if d := time.Since(deleted); d < cfg.NodeGrace {
		t.Fatalf("removed after %v, grace %v", d, cfg.NodeGrace)
	}
}

// TestPodGC: the endpoint of a deleted pod is released after the grace
// period; a live pod's is kept; nothing is released while the API server is
// away, and collection resumes when it returns.
func TestPodGC(t *testing.T) {
	e := newEnv(t)
	if _, err := e.ctl.CreateNetwork(e.ctx, &v1.VirtualNetwork{Name: "net", Subnets: []string{"10.3.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ctl.CreateGateway(e.ctx, &v1.Gateway{Name: "gw", UnderlayAddress: "192.0.2.1"}); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.PodGrace = 2 * time.Second
	r, _ := e.start(t, cfg)
	e.waitReconciled(t, r)
	pod := func(name string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: corev1.PodSpec{NodeName: "gw", Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
		p, err := e.kc.CoreV1().Pods("default").Create(e.ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	ep := func(id string, p *corev1.Pod) {
		if _, err := e.ctl.CreateEndpoint(e.ctx, &v1.Endpoint{Id: id, Network: "net", Gateway: "gw", Label: 0,
			Pod: &v1.PodRef{Namespace: p.Namespace, Name: p.Name, Uid: string(p.UID), ContainerId: id}}); err != nil {
			t.Fatal(err)
		}
	}
	live, doomed := pod("live"), pod("doomed")
	ep("live-1", live)
	ep("doomed-1", doomed)
	// An endpoint of a pod UID that never existed (a StatefulSet pod made
	// again under the same name has a new UID), and one not from Kubernetes.
	ep("old-1", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "live", Namespace: "default", UID: "gone-uid"}})
	if _, err := e.ctl.CreateEndpoint(e.ctx, &v1.Endpoint{Id: "vm-1", Network: "net", Gateway: "gw"}); err != nil {
		t.Fatal(err)
	}
	// Deleted from the API without a CNI DEL (force: no kubelet runs here to finish a graceful deletion).
	zero := int64(0)
	if err := e.kc.CoreV1().Pods("default").Delete(e.ctx, "doomed", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "doomed and old released", func() (bool, string) {
		_, e1 := e.ctl.GetEndpoint(e.ctx, "doomed-1")
		_, e2 := e.ctl.GetEndpoint(e.ctx, "old-1")
		return e1 != nil && e2 != nil, fmt.Sprint(e1, e2)
	})
	for _, id := range []string{"live-1", "vm-1"} {
		if _, err := e.ctl.GetEndpoint(e.ctx, id); err != nil {
			t.Fatalf("%s released: %v", id, err)
		}
	}
	// API server away: an endpoint whose pod is unknown is kept, however long.
	e.s.Stop()
	ep("orphan-1", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "orphan", Namespace: "default", UID: "orphan-uid"}})
	time.Sleep(3 * cfg.PodGrace)
	for _, id := range []string{"live-1", "vm-1", "orphan-1"} {
		if _, err := e.ctl.GetEndpoint(e.ctx, id); err != nil {
			t.Fatalf("%s released while the API server was away: %v", id, err)
		}
	}
	e.s.Restart(t)
	eventually(t, 60*time.Second, "orphan released once the API server is back", func() (bool, string) {
		_, err := e.ctl.GetEndpoint(e.ctx, "orphan-1")
		return err != nil, fmt.Sprint(err)
	})
	if _, err := e.ctl.GetEndpoint(e.ctx, "live-1"); err != nil {
		t.Fatalf("live pod's endpoint released: %v", err)
	}
}

// TestLease: of two controllers exactly one leads; when it stops, the other
// takes over within the lease duration.
func TestLease(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig()
	r1, stop1 := e.start(t, cfg)
	eventually(t, 20*time.Second, "a leader", func() (bool, string) { return r1.Leading(), "" })
	r2, _ := e.start(t, cfg)
	time.Sleep(2 * cfg.Lease.Duration)
	if !r1.Leading() || r2.Leading() {
		t.Fatalf("leading: r1 %v r2 %v", r1.Leading(), r2.Leading())
	}
	stop1()
	start := time.Now()
	eventually(t, cfg.Lease.Duration+5*time.Second, "r2 takes over", func() (bool, string) { return r2.Leading(), "" })
	t.Logf("takeover after %v", time.Since(start))
	if r1.Leading() {
		t.Fatal("both lead")
	}
}
