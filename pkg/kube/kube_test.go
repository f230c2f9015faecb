package kube

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/iotfabric/iotfabric/internal/kubetest"
	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// CRDPath is the VirtualNetwork CRD shipped in deploy/.
var crdPath = filepath.Join("..", "..", "deploy", "kubernetes", "crd-virtualnetwork.yaml")

// env is an API server with the CRD, a controller over a bbolt store and
// clients.
type env struct {
	s   *kubetest.Server
	ctl *controller.Controller
	kc  *kubernetes.Clientset
	dc  dynamic.Interface
	ctx context.Context
}

func newEnv(t *testing.T) *env {
	t.Helper()
	s := kubetest.Start(t)
	if out, err := s.RunKubectl("apply", "-f", crdPath); err != nil {
		t.Fatalf("apply CRD: %v\n%s", err, out)
	}
	if out, err := s.RunKubectl("wait", "--for=condition=established", "--timeout=60s", "crd/virtualnetworks.iotfabric.io"); err != nil {
		t.Fatalf("CRD not established: %v\n%s", err, out)
	}
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	dc, err := dynamic.NewForConfig(s.Config(t, "admin"))
	if err != nil {
		t.Fatal(err)
	}
	return &env{s: s, ctl: controller.New(st, controller.Config{}), kc: s.Client(t, "admin"), dc: dc, ctx: ctx}
}

func testConfig() Config {
	return Config{Enabled: true, DefaultNetwork: "default-net", IsolationPool: "10.200.0.0/22", IsolationPrefix: 24,
		NodeGrace: time.Second, PodGrace: time.Second,
		Lease: LeaseConfig{Namespace: "default", Duration: 3 * time.Second, Renew: 2 * time.Second, Retry: 500 * time.Millisecond}}
}

// start runs a reconciler until the test ends and waits for its first pass.
func (e *env) start(t *testing.T, cfg Config) (*Reconciler, context.CancelFunc) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	r, err := New(cfg, e.ctl, Options{RESTConfig: e.s.Config(t, "admin"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r, cancel
}

func (e *env) waitReconciled(t *testing.T, r *Reconciler) {
	t.Helper()
	select {
	case <-r.Reconciled():
	case <-time.After(60 * time.Second):
		t.Fatal("not reconciled within 60 s")
	}
}

// eventually polls cond until it holds (or fails the test after d).
func eventually(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for time.Now().Before(deadline) {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v (last: %s)", what, d, last)
}

func vnObj(name string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "iotfabric.io/v1", "kind": "VirtualNetwork",
		"metadata": map[string]any{"name": name}, "spec": spec}}
}

func (e *env) vn(t *testing.T, name string) (*unstructured.Unstructured, error) {
	return e.dc.Resource(VirtualNetworks).Get(e.ctx, name, metav1.GetOptions{})
}

func readyOf(u *unstructured.Unstructured) (status, reason, msg string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m := c.(map[string]any)
		if m["type"] == "Ready" {
			return fmt.Sprint(m["status"]), fmt.Sprint(m["reason"]), fmt.Sprint(m["message"])
		}
	}
	return "", "", ""
}

func (e *env) events(t *testing.T, ns, name string) []corev1.Event {
	l, err := e.kc.CoreV1().Events(ns).List(e.ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func hasEvent(evs []corev1.Event, reason string) bool {
	for _, ev := range evs {
		if ev.Reason == reason {
			return true
		}
	}
	return false
}

// TestVirtualNetworkBothWays: objects become networks and networks objects;
// changes flow both ways; a refused spec gets an Event and Ready=False and
// leaves the store alone; deletion waits for the network's endpoints.
func TestVirtualNetworkBothWays(t *testing.T) {
	e := newEnv(t)
	r, _ := e.start(t, testConfig())
	e.waitReconciled(t, r)
	vns := e.dc.Resource(VirtualNetworks)

	// Object -> store, with status.
	if _, err := vns.Create(e.ctx, vnObj("sensors", map[string]any{"subnets": []any{"10.1.0.0/24"}, "exportRouteTargets": []any{"target:64512:100"}, "encapsulations": []any{"mplsogre"}}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "sensors in the store, Ready", func() (bool, string) {
		n, err := e.ctl.GetNetwork(e.ctx, "sensors")
		if err != nil {
			return false, err.Error()
		}
		u, err := e.vn(t, "sensors")
		if err != nil {
			return false, err.Error()
		}
		st, _, _ := readyOf(u)
		id, _, _ := unstructured.NestedInt64(u.Object, "status", "id")
		rt, _, _ := unstructured.NestedString(u.Object, "status", "autoRouteTarget")
		return st == "True" && id == int64(n.Id) && rt == n.AutoRouteTarget && n.Encapsulations[0] == v1.Encapsulation_ENCAPSULATION_MPLS_O_GRE && n.ExportRouteTargets[0] == "target:64512:100",
			fmt.Sprintf("status=%s id=%d rt=%s net=%v", st, id, rt, n)
	})

	// Store -> object: a network made through the API appears, and so do its changes.
	if _, err := e.ctl.CreateNetwork(e.ctx, &v1.VirtualNetwork{Name: "api-net", Subnets: []string{"10.2.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "api-net as an object", func() (bool, string) {
		u, err := e.vn(t, "api-net")
		if err != nil {
			return false, err.Error()
		}
		s, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "subnets")
		st, _, _ := readyOf(u)
		return len(s) == 1 && s[0] == "10.2.0.0/24" && st == "True", fmt.Sprint(s, st)
	})
	if _, err := e.ctl.UpdateNetwork(e.ctx, &v1.VirtualNetwork{Name: "api-net", Subnets: []string{"10.2.0.0/24", "fd00:2::/64"}, ImportRouteTargets: []string{"target:64512:7"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "api-net's change in the object", func() (bool, string) {
		u, _ := e.vn(t, "api-net")
		s, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "subnets")
		rts, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "importRouteTargets")
		return len(s) == 2 && len(rts) == 1, fmt.Sprint(s, rts)
	})
	// Object change -> store.
	u, _ := e.vn(t, "sensors")
	_ = unstructured.SetNestedStringSlice(u.Object, []string{"10.1.0.0/24", "10.9.0.0/24"}, "spec", "subnets")
	if _, err := vns.Update(e.ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "sensors' new subnet in the store", func() (bool, string) {
		n, _ := e.ctl.GetNetwork(e.ctx, "sensors")
		return len(n.GetSubnets()) == 2, fmt.Sprint(n.GetSubnets())
	})

	// Bad objects: Event and Ready=False, nothing in the store.
	for name, spec := range map[string]map[string]any{
		"overlap":  {"subnets": []any{"10.5.0.0/24", "10.5.0.128/25"}},
		"bad-cidr": {"subnets": []any{"10.6.0.0/33"}},
		"bad-rt":   {"subnets": []any{"10.7.0.0/24"}, "importRouteTargets": []any{"target:nope"}},
	} {
		if _, err := vns.Create(e.ctx, vnObj(name, spec), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, name+" refused", func() (bool, string) {
			u, err := e.vn(t, name)
			if err != nil {
				return false, err.Error()
			}
			st, reason, msg := readyOf(u)
			return st == "False" && reason == ReasonRefused && hasEvent(e.events(t, "default", name), ReasonRefused), st + " " + reason + " " + msg
		})
		if _, err := e.ctl.GetNetwork(e.ctx, name); err == nil {
			t.Errorf("%s: refused network is in the store", name)
		}
	}
	// Fixing the spec applies it.
	u, _ = e.vn(t, "bad-cidr")
	_ = unstructured.SetNestedStringSlice(u.Object, []string{"10.6.0.0/24"}, "spec", "subnets")
	if _, err := vns.Update(e.ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "fixed bad-cidr", func() (bool, string) {
		_, err := e.ctl.GetNetwork(e.ctx, "bad-cidr")
		return err == nil, fmt.Sprint(err)
	})

	// Addresses used, and a deletion blocked while an endpoint is in the network.
	if _, err := e.ctl.CreateGateway(e.ctx, &v1.Gateway{Name: "gw-1", UnderlayAddress: "192.0.2.1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ctl.CreateEndpoint(e.ctx, &v1.Endpoint{Id: "c1:eth0", Network: "sensors", Gateway: "gw-1"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "addressesUsed 1", func() (bool, string) {
		u, _ := e.vn(t, "sensors")
		n, _, _ := unstructured.NestedInt64(u.Object, "status", "addressesUsed")
		return n == 1, fmt.Sprint(n)
	})
	if err := vns.Delete(e.ctx, "sensors", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "deletion blocked", func() (bool, string) {
		u, err := e.vn(t, "sensors")
		if err != nil {
			return false, err.Error()
		}
		st, reason, _ := readyOf(u)
		return st == "False" && reason == ReasonDeleteBlocked, st + reason
	})
	if _, err := e.ctl.DeleteEndpoint(e.ctx, "c1:eth0"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "sensors deleted", func() (bool, string) {
		_, err1 := e.vn(t, "sensors")
		_, err2 := e.ctl.GetNetwork(e.ctx, "sensors")
		return err1 != nil && err2 != nil, fmt.Sprint(err1, err2)
	})
	// Deleted through the API: the object goes too.
	if _, err := e.ctl.DeleteNetwork(e.ctx, "api-net"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "api-net object deleted", func() (bool, string) {
		_, err := e.vn(t, "api-net")
		return err != nil && strings.Contains(err.Error(), "not found"), fmt.Sprint(err)
	})
}
