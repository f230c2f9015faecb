package kubee2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/pkg/bgp/bgptest"
	"github.com/iotfabric/iotfabric/pkg/kube"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestBenchKubeAddToFRR (make bench-kube): the time from a CNI ADD
// returning (pod object present, ADD through libcni with the Kubernetes
// CNI_ARGS on a real agent) to the pod's route in FRR's VPN table, for
// IOTFABRIC_KUBE_ADDS pods (100) in an empty cluster and again with
// IOTFABRIC_KUBE_NODES nodes (3,000) and IOTFABRIC_KUBE_PODS pods (30,000)
// as objects in the API server, which the controller's and the agent's
// informers follow. FRR is polled with vtysh; the time one poll takes is
// printed as the resolution.
func TestBenchKubeAddToFRR(t *testing.T) {
	if os.Getenv("IOTFABRIC_BENCH") == "" {
		t.Skip("a benchmark: make bench-kube")
	}
	nodes, pods, adds := envInt("IOTFABRIC_KUBE_NODES", 3000), envInt("IOTFABRIC_KUBE_PODS", 30000), envInt("IOTFABRIC_KUBE_ADDS", 100)
	f := newFabric(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Minute)
	defer cancel()
	f.ctx = ctx
	if out, err := f.api.RunKubectlStdin("apiVersion: iotfabric.io/v1\nkind: VirtualNetwork\nmetadata: {name: plant}\nspec: {subnets: [10.64.0.0/12]}\n", "apply", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := f.kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "iot",
		Annotations: map[string]string{kube.AnnotationNetwork: "plant"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := bgptest.Eventually(ctx, 30*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
		_, err := f.grpc.Net.GetNetwork(ctx, &v1.NameRequest{Name: "plant"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	u := netip.MustParseAddr("192.0.2.1")
	gw := f.gateway("node-a", u)

	// FRR logs each UPDATE it receives, with microseconds: the time a
	// route reached FRR is that of its line.
	if out, err := f.frr.Vtysh(ctx, "configure terminal", "log timestamp precision 6", "debug bgp updates in"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	atFRR := func(a netip.Addr, since time.Time) (time.Time, bool) {
		want := " " + a.String() + "/32"
		for _, l := range strings.Split(f.frr.Log(), "\n") {
			if !strings.Contains(l, "rcvd") || !strings.Contains(l, want) || strings.Contains(l, "withdrawn") || len(l) < 26 {
				continue
			}
			ts, err := time.ParseInLocation("2006/01/02 15:04:05.000000", l[:26], time.Local)
			if err == nil && !ts.Before(since) {
				return ts, true
			}
		}
		return time.Time{}, false
	}
	measure := func(round string) (fromReturn, fromStart []time.Duration) {
		for i := range adds {
			name := fmt.Sprintf("%s-%d", round, i)
			p := f.pod("iot", name, "node-a", nil)
			f.waitCached("node-a", "iot", name)
			begin := time.Now()
			r, err := f.add(gw, p, name, netnstest.New(t, "iofpod"))
			if err != nil {
				t.Fatalf("ADD %s: %v", name, err)
			}
			done := time.Now()
			a := addrOf(t, r)
			for {
				if ts, ok := atFRR(a, begin.Add(-time.Second)); ok {
					fromReturn = append(fromReturn, max(ts.Sub(done), 0))
					fromStart = append(fromStart, ts.Sub(begin))
					break
				}
				if time.Since(done) > time.Minute {
					t.Fatalf("%s (%s) not at FRR a minute after its ADD", name, a)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		return fromReturn, fromStart
	}
	q := func(d []time.Duration, p float64) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[min(len(s)-1, int(float64(len(s))*p))].Round(time.Millisecond)
	}
	empty, emptyStart := measure("e")

	start := time.Now()
	parallelDo(t, nodes, func(i int) error {
		_, err := f.kc.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%d", i)}}, metav1.CreateOptions{})
		return err
	})
	parallelDo(t, pods, func(i int) error {
		node := fmt.Sprintf("node-%d", i%nodes)
		if i%nodes == 0 {
			node = "node-a" // the measured node has its share of pods in its informer
		}
		_, err := f.kc.CoreV1().Pods("iot").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bg-%d", i), Namespace: "iot"},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
		return err
	})
	t.Logf("setup: %d nodes and %d pods created in %v", nodes, pods, time.Since(start).Round(time.Second))
	time.Sleep(5 * time.Second) // the informers take the new objects in
	full, fullStart := measure("s")
	fmt.Printf("bench-kube: ADD->FRR over %d ADDs, empty cluster: p50 %v p99 %v max %v (from the ADD's start: p50 %v p99 %v)\n",
		adds, q(empty, 0.5), q(empty, 0.99), q(empty, 1), q(emptyStart, 0.5), q(emptyStart, 0.99))
	fmt.Printf("bench-kube: ADD->FRR over %d ADDs, %d nodes and %d pods in the API server: p50 %v p99 %v max %v (from the ADD's start: p50 %v p99 %v); goal p99 under 100 ms\n",
		adds, nodes, pods, q(full, 0.5), q(full, 0.99), q(full, 1), q(fullStart, 0.5), q(fullStart, 0.99))
}

// parallelDo runs fn(0..n-1) on 32 goroutines and fails on the first error.
func parallelDo(t *testing.T, n int, fn func(int) error) {
	t.Helper()
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	next := make(chan int)
	for range 32 {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}
