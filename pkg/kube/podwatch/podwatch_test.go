package podwatch

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/iotfabric/iotfabric/internal/kubetest"
	"github.com/iotfabric/iotfabric/pkg/cni"
	"github.com/iotfabric/iotfabric/pkg/kube"
)

// TestPodMapping runs the agent's watcher as the agent's service account
// (the ClusterRole of deploy/kubernetes/rbac.yaml): pods map to networks from
// the cache and by GET; with the API server stopped the cached namespace
// mapping decides; the network-status annotation is written.
func TestPodMapping(t *testing.T) {
	s := kubetest.Start(t, kubetest.User{Name: "system:serviceaccount:iotfabric-system:iotfabric-agent", Groups: []string{"system:serviceaccounts"}})
	for _, f := range []string{"namespace.yaml", "rbac.yaml"} {
		if out, err := s.RunKubectl("apply", "-f", filepath.Join("..", "..", "..", "deploy", "kubernetes", f)); err != nil {
			t.Fatalf("%s: %v\n%s", f, err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kc := s.Client(t, "admin")
	mkNS := func(name string, ann map[string]string) {
		if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mkNS("plain", nil)
	mkNS("blue", map[string]string{kube.AnnotationNetwork: "blue-net"})
	mkNS("iso", map[string]string{kube.AnnotationIsolation: "true"})
	mkNS("bad", map[string]string{kube.AnnotationIsolation: "perhaps"})
	mkPod := func(ns, name, node string, ann map[string]string) *corev1.Pod {
		p, err := kc.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p1 := mkPod("plain", "a", "node-1", nil)
	p2 := mkPod("blue", "b", "node-1", map[string]string{kube.AnnotationNetwork: "red-net"})
	p3 := mkPod("iso", "c", "node-1", nil)
	p4 := mkPod("bad", "d", "node-1", nil)
	other := mkPod("plain", "elsewhere", "node-2", nil)
	fixed := mkPod("plain", "fixed", "node-1", map[string]string{kube.AnnotationIP: " 10.64.0.77 "})
	badIP := mkPod("plain", "bad-ip", "node-1", map[string]string{kube.AnnotationIP: "10.64.0.300"})

	w, err := New(Config{Node: "node-1", DefaultNetwork: "default", Kubeconfig: s.KubeconfigFor(t, "system:serviceaccount:iotfabric-system:iotfabric-agent")})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); w.Run(wctx) }()
	defer func() { wcancel(); <-done }()
	deadline := time.Now().Add(30 * time.Second)
	for !w.Synced() {
		if time.Now().After(deadline) {
			t.Fatal("informers not synced")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := w.pods.Len(); n != 6 {
		t.Fatalf("the node-scoped informer holds %d pods, want 6 (not node-2's)", n)
	}
	for _, c := range []struct {
		p    *corev1.Pod
		want string
	}{{p1, "default"}, {p2, "red-net"}, {p3, "ns-iso"}, {other, "default"}} {
		got, _, err := w.Network(ctx, c.p.Namespace, c.p.Name, string(c.p.UID))
		if err != nil || got != c.want {
			t.Errorf("%s/%s: %q %v, want %q", c.p.Namespace, c.p.Name, got, err, c.want)
		}
	}
	var ce *cni.Error
	// iotfabric.io/ip: the fixed address goes with the network; a
	// malformed one refuses the ADD.
	if n, ip, err := w.Network(ctx, "plain", "fixed", string(fixed.UID)); err != nil || n != "default" || ip != netip.MustParseAddr("10.64.0.77") {
		t.Errorf("fixed address: %q %v %v", n, ip, err)
	}
	if _, ip, err := w.Network(ctx, "plain", "a", string(p1.UID)); err != nil || ip.IsValid() {
		t.Errorf("no fixed address asked: %v %v", ip, err)
	}
	if _, _, err := w.Network(ctx, "plain", "bad-ip", string(badIP.UID)); !errors.As(err, &ce) || ce.Code != cni.CodeInvalidNetworkConf {
		t.Errorf("malformed iotfabric.io/ip: %v", err)
	}
	if _, _, err := w.Network(ctx, p4.Namespace, p4.Name, string(p4.UID)); !errors.As(err, &ce) || ce.Code != cni.CodeInvalidNetworkConf {
		t.Errorf("malformed namespace annotation: %v", err)
	}
	// A pod re-created under the same name: the runtime's UID is not the cache's.
	if _, _, err := w.Network(ctx, "plain", "a", "not-the-uid"); !errors.As(err, &ce) || ce.Code != cni.CodeTryAgainLater {
		t.Errorf("UID mismatch: %v", err)
	}
	// A pod the API server does not know.
	if _, _, err := w.Network(ctx, "plain", "nobody", "u"); !errors.As(err, &ce) || ce.Code != cni.CodeTryAgainLater {
		t.Errorf("unknown pod: %v", err)
	}

	// The network-status annotation.
	w.Attached(cni.Endpoint{Network: "default", IfName: "eth0", MAC: "02:00:00:00:00:01", Addresses: []netip.Addr{netip.MustParseAddr("10.64.0.5")},
		PodNamespace: "plain", PodName: "a", PodUID: string(p1.UID)}, netip.MustParseAddr("169.254.1.1"))
	// And one for a UID that is not the pod's: left alone.
	w.Attached(cni.Endpoint{Network: "x", IfName: "eth0", PodNamespace: "blue", PodName: "b", PodUID: "stale"}, netip.Addr{})
	var st []NetworkStatus
	deadline = time.Now().Add(20 * time.Second)
	for {
		p, err := kc.CoreV1().Pods("plain").Get(ctx, "a", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := p.Annotations[kube.AnnotationNetworkStatus]; ok {
			if err := json.Unmarshal([]byte(v), &st); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("network-status annotation not written")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(st) != 1 || st[0].Name != "iotfabric/default" || st[0].IPs[0] != "10.64.0.5" || st[0].Gateway[0] != "169.254.1.1" || !st[0].Default {
		t.Fatalf("network-status %+v", st)
	}
	time.Sleep(time.Second)
	if p, _ := kc.CoreV1().Pods("blue").Get(ctx, "b", metav1.GetOptions{}); p.Annotations[kube.AnnotationNetworkStatus] != "" {
		t.Fatal("annotation written on a pod of another UID")
	}

	// A refused ADD: one Warning Event on the pod, written as the agent's
	// service account, its message bounded; a second refusal right after
	// writes no other.
	long := strings.Repeat("é", 2000)
	w.Refused("plain", "fixed", string(fixed.UID), &cni.Error{Code: cni.CodeInvalidNetworkConf, Msg: "address 10.64.0.77 taken", Details: long})
	w.Refused("plain", "fixed", string(fixed.UID), &cni.Error{Code: cni.CodeInvalidNetworkConf, Msg: "again"})
	var evs []corev1.Event
	deadline = time.Now().Add(20 * time.Second)
	for len(evs) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no Event on the refused pod")
		}
		time.Sleep(100 * time.Millisecond)
		l, err := kc.CoreV1().Events("plain").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=fixed"})
		if err != nil {
			t.Fatal(err)
		}
		evs = l.Items
	}
	time.Sleep(500 * time.Millisecond)
	l, err := kc.CoreV1().Events("plain").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=fixed"})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 1 {
		t.Fatalf("%d Events on the pod, want 1 (one per %v)", len(l.Items), EventInterval)
	}
	ev := l.Items[0]
	if ev.Reason != ReasonAddRefused || ev.Type != corev1.EventTypeWarning || ev.InvolvedObject.UID != fixed.UID || ev.Source.Host != "node-1" ||
		!strings.Contains(ev.Message, "(CNI error 7): address 10.64.0.77 taken") || len(ev.Message) > MaxEventMessage || !utf8.ValidString(ev.Message) {
		t.Fatalf("Event %s %s %s %s: %q (%d bytes)", ev.Reason, ev.Type, ev.InvolvedObject.UID, ev.Source.Host, ev.Message, len(ev.Message))
	}

	// API server away: the cached namespace mapping decides, quickly.
	s.Stop()
	start := time.Now()
	got, _, err := w.Network(ctx, "blue", "new-pod", "u2")
	if err != nil || got != "blue-net" {
		t.Fatalf("headless: %q %v", got, err)
	}
	if d := time.Since(start); d > DefaultGetTimeout+time.Second {
		t.Fatalf("headless mapping took %v", d)
	}
	if got, _, err := w.Network(ctx, "plain", "a", string(p1.UID)); err != nil || got != "default" {
		t.Fatalf("cached pod while headless: %q %v", got, err)
	}
}
