package kube

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestBenchKube (make bench-kube): IOTFABRIC_KUBE_NODES nodes (3,000) and
// IOTFABRIC_KUBE_PODS pods (30,000) as objects in a real API server, an
// endpoint per pod in the store. It prints the controller's cold start to
// fully reconciled beside plain informers listing and watching the same
// objects, and the writes to the API server during IOTFABRIC_KUBE_STEADY
// (5m) of steady state, from the API server's own metrics.
func TestBenchKube(t *testing.T) {
	if os.Getenv("IOTFABRIC_BENCH") == "" {
		t.Skip("a benchmark: make bench-kube")
	}
	nodes, pods := envInt("IOTFABRIC_KUBE_NODES", 3000), envInt("IOTFABRIC_KUBE_PODS", 30000)
	steady := 5 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("IOTFABRIC_KUBE_STEADY")); err == nil {
		steady = d
	}
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	e.ctx = ctx
	start := time.Now()
	if _, err := e.ctl.CreateNetwork(ctx, &v1.VirtualNetwork{Name: "default-net", Subnets: []string{"10.0.0.0/14"}}); err != nil {
		t.Fatal(err)
	}
	parallel(t, nodes, func(i int) error {
		name := fmt.Sprintf("node-%d", i)
		if _, err := e.ctl.CreateGateway(ctx, &v1.Gateway{Name: name, UnderlayAddress: fmt.Sprintf("100.%d.%d.1", 64+i/256, i%256)}); err != nil {
			return err
		}
		_, err := e.kc.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		return err
	})
	var mu sync.Mutex
	var eps []*v1.Endpoint
	parallel(t, pods, func(i int) error {
		node := fmt.Sprintf("node-%d", i%nodes)
		p, err := e.kc.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%d", i), Namespace: "default"},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		mu.Lock()
		eps = append(eps, &v1.Endpoint{Id: fmt.Sprintf("c%d:eth0", i), Network: "default-net", Gateway: node,
			Pod: &v1.PodRef{Namespace: "default", Name: p.Name, Uid: string(p.UID), ContainerId: fmt.Sprintf("c%d", i)}})
		mu.Unlock()
		return nil
	})
	for i := 0; i < len(eps); i += 1000 {
		_, errs := e.ctl.CreateEndpoints(ctx, eps[i:min(i+1000, len(eps))])
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("setup: %d nodes, %d pods, %d endpoints in %v", nodes, pods, len(eps), time.Since(start))

	// Peer: informers alone on the same objects.
	t0 := time.Now()
	kf := informers.NewSharedInformerFactory(e.kc, 0)
	synced := []cache.InformerSynced{kf.Core().V1().Namespaces().Informer().HasSynced, kf.Core().V1().Nodes().Informer().HasSynced, kf.Core().V1().Pods().Informer().HasSynced}
	pctx, pcancel := context.WithCancel(ctx)
	kf.Start(pctx.Done())
	cache.WaitForCacheSync(pctx.Done(), synced...)
	peer := time.Since(t0)
	pcancel()
	kf.Shutdown()

	before := apiWrites(t, e.kc)
	cfg := testConfig()
	cfg.PodGrace, cfg.NodeGrace = time.Hour, time.Hour
	t1 := time.Now()
	r, _ := e.start(t, cfg)
	select {
	case <-r.Reconciled():
	case <-time.After(10 * time.Minute):
		t.Fatal("not reconciled in 10 minutes")
	}
	cold := time.Since(t1)
	afterStart := apiWrites(t, e.kc)
	time.Sleep(steady)
	after := apiWrites(t, e.kc)
	fmt.Printf("bench-kube: %d nodes, %d pods: controller cold start to reconciled %v; informers alone %v; ratio %.1f (goal: under 10 s)\n",
		nodes, pods, cold.Round(time.Millisecond), peer.Round(time.Millisecond), cold.Seconds()/peer.Seconds())
	fmt.Printf("bench-kube: API writes during cold start %d (leases %d); steady state over %v: %d (leases %d; goal 0 besides the lease)\n",
		afterStart.other-before.other, afterStart.leases-before.leases, steady, after.other-afterStart.other, after.leases-afterStart.leases)
	if n := after.other - afterStart.other; n != 0 {
		t.Errorf("%d writes to the API server in steady state", n)
	}
}

type writes struct{ leases, other int64 }

// apiWrites sums apiserver_request_total for the mutating verbs.
func apiWrites(t *testing.T, kc *kubernetes.Clientset) writes {
	t.Helper()
	b, err := kc.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var w writes
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, "apiserver_request_total{") {
			continue
		}
		mutating := false
		for _, v := range []string{`verb="POST"`, `verb="PUT"`, `verb="PATCH"`, `verb="DELETE"`, `verb="APPLY"`} {
			mutating = mutating || strings.Contains(l, v)
		}
		if !mutating {
			continue
		}
		f := strings.Fields(l)
		n, _ := strconv.ParseFloat(f[len(f)-1], 64)
		if strings.Contains(l, `resource="leases"`) {
			w.leases += int64(n)
		} else {
			w.other += int64(n)
		}
	}
	return w
}

// parallel runs fn(0..n-1) on 32 goroutines and fails on the first error.
func parallel(t *testing.T, n int, fn func(int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	next := make(chan int)
	for range 32 {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					select {
					case errc <- err:
					default:
					}
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
}
