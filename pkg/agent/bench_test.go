package agent_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/internal/testenv"
	"github.com/iotfabric/iotfabric/pkg/cni"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// The benchmarks run with IOTFABRIC_BENCH=1 (make bench-cni) and print
// their figures; they are tests so that they can set up namespaces,
// processes and a controller the way the other tests do.
func benchOnly(t *testing.T) {
	if os.Getenv("IOTFABRIC_BENCH") == "" {
		t.Skip("benchmark: run with IOTFABRIC_BENCH=1 (make bench-cni)")
	}
	netnstest.RequireRoot(t)
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return s[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// addLatencies ADDs n pods (namespaces made beforehand), conc at a time, and
// returns each ADD's latency. run performs one ADD.
func addLatencies(t *testing.T, pods []*netnstest.NS, conc int, run func(i int, pod *netnstest.NS) error) []time.Duration {
	lat := make([]time.Duration, len(pods))
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i, p := range pods {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			start := time.Now()
			err := run(i, p)
			lat[i] = time.Since(start)
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	return lat
}

func newPods(t *testing.T, n int) []*netnstest.NS {
	pods := make([]*netnstest.NS, n)
	for i := range pods {
		pods[i] = netnstest.New(t, "iofpod")
	}
	return pods
}

// TestBenchCNIAdd: ADD latency of the iotfabric plugin (agent with the real
// data plane in a gateway namespace) and of the reference bridge + host-local
// plugins, serial and 32 at a time, measured in the same run.
func TestBenchCNIAdd(t *testing.T) {
	benchOnly(t)
	testenv.RequireFile(t, "/usr/lib/cni/bridge", "containernetworking-plugins")
	const serialN, concN, conc = 100, 128, 32
	ctx := context.Background()
	ctl := fabrictest.StartController(t)
	createNetwork(t, ctl.Dial(), "red", "10.8.0.0/16")
	gw := fabrictest.StartGateway(t, "gw-bench", netip.MustParseAddr("192.0.2.50"), []string{ctl.Addr}, true)
	c := fabrictest.NewCNI(t, pluginDir)
	ours := c.List(gw, "red")

	// The reference runs in its own namespace (the plugins are started from a
	// thread inside it), with a bridge and host-local's files of its own.
	refNS := netnstest.New(t, "iofref")
	refDir := t.TempDir()
	brName := fmt.Sprintf("cnibr%d", os.Getpid()%100000)
	ref, err := libcni.NetworkConfFromBytes(fmt.Appendf(nil, `{"cniVersion": "1.0.0", "name": "ref", "plugins": [
	  {"type": "bridge", "bridge": %q, "isGateway": true, "ipam": {"type": "host-local", "dataDir": %q,
	   "ranges": [[{"subnet": "10.9.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}}]}`, brName, filepath.Join(refDir, "ipam")))
	if err != nil {
		t.Fatal(err)
	}
	refConf := libcni.NewCNIConfigWithCacheDir([]string{"/usr/lib/cni"}, filepath.Join(refDir, "cache"), fabrictest.Exec())
	addRef := func(i int, pod *netnstest.NS) error {
		return refNS.Do(func() error {
			_, err := refConf.AddNetworkList(ctx, ref, &libcni.RuntimeConf{ContainerID: fmt.Sprintf("ref%d", i), NetNS: pod.Path(), IfName: "eth0"})
			return err
		})
	}
	addOurs := func(prefix string) func(int, *netnstest.NS) error {
		return func(i int, pod *netnstest.NS) error {
			_, err := c.Conf.AddNetworkList(ctx, ours, &libcni.RuntimeConf{ContainerID: fmt.Sprintf("%s%d", prefix, i), NetNS: pod.Path(), IfName: "eth0"})
			return err
		}
	}
	// Warm up both (first exec, block lease, bridge creation).
	addLatencies(t, newPods(t, 2), 1, addOurs("warm"))
	addLatencies(t, newPods(t, 2), 1, func(i int, p *netnstest.NS) error { return addRef(1000+i, p) })

	oursSerial := addLatencies(t, newPods(t, serialN), 1, addOurs("s"))
	refSerial := addLatencies(t, newPods(t, serialN), 1, addRef)
	oursConc := addLatencies(t, newPods(t, concN), conc, addOurs("c"))
	refConc := addLatencies(t, newPods(t, concN), conc, func(i int, p *netnstest.NS) error { return addRef(2000+i, p) })

	fmt.Printf("\nCNI ADD latency (fresh pod namespace each; %d serial, %d with %d at a time)\n", serialN, concN, conc)
	fmt.Printf("%-34s %10s %10s %12s %12s\n", "", "p50", "p99", "p50 (x32)", "p99 (x32)")
	fmt.Printf("%-34s %10s %10s %12s %12s\n", "iotfabric (agent + pkg/overlay)", ms(pct(oursSerial, .5)), ms(pct(oursSerial, .99)), ms(pct(oursConc, .5)), ms(pct(oursConc, .99)))
	fmt.Printf("%-34s %10s %10s %12s %12s\n", "reference bridge + host-local", ms(pct(refSerial, .5)), ms(pct(refSerial, .99)), ms(pct(refConc, .5)), ms(pct(refConc, .99)))
	fmt.Printf("p99 ratio iotfabric/reference: serial %.2f, x32 %.2f\n\n",
		float64(pct(oursSerial, .99))/float64(pct(refSerial, .99)), float64(pct(oursConc, .99))/float64(pct(refConc, .99)))
	refNS.Do(func() error {
		if l, err := netlink.LinkByName(brName); err == nil {
			netlink.LinkDel(l)
		}
		return nil
	})
}

// TestBenchPropagation: 1,000 endpoints admitted over 10 gateways (agents
// with a real controller, no kernel programming); for every endpoint and
// every other gateway, the time from the ADD request on the endpoint's
// gateway to the route being in the other gateway's desired state.
func TestBenchPropagation(t *testing.T) {
	benchOnly(t)
	const gateways, endpoints = 10, 1000
	ctx := context.Background()
	ctl := fabrictest.StartController(t)
	createNetwork(t, ctl.Dial(), "red", "10.16.0.0/16")

	type seen struct {
		mu    sync.Mutex
		at    map[netip.Prefix]time.Time
		want  int
		done  chan struct{}
		match bool
	}
	gws := make([]*fabrictest.Gateway, gateways)
	seens := make([]*seen, gateways)
	for i := range gateways {
		s := &seen{at: map[netip.Prefix]time.Time{}, want: endpoints - endpoints/gateways, done: make(chan struct{})}
		seens[i] = s
		gws[i] = fabrictest.StartGateway(t, fmt.Sprintf("gw-%d", i), netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + i)}), []string{ctl.Addr}, false)
		gws[i].OnState = func(st overlay.State) {
			now := time.Now()
			s.mu.Lock()
			defer s.mu.Unlock()
			for _, n := range st.Networks {
				for _, r := range n.Routes {
					if _, ok := s.at[r.Prefix]; !ok {
						s.at[r.Prefix] = now
					}
				}
			}
			if len(s.at) >= s.want && !s.match {
				s.match = true
				close(s.done)
			}
		}
	}
	// One pod first on every gateway so each follows the network.
	start := map[netip.Prefix]time.Time{}
	owner := map[netip.Prefix]int{}
	// The controller's own route table, to split the latency.
	atCtl := map[netip.Prefix]time.Time{}
	var ctlMu sync.Mutex
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	ws, err := ctl.Dial().Route.WatchRoutes(wctx, &v1.WatchRoutesRequest{Network: "red"})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			ev, err := ws.Recv()
			if err != nil {
				return
			}
			if p, err := netip.ParsePrefix(ev.GetRoute().GetPrefix()); err == nil && ev.GetType() == v1.EventType_EVENT_TYPE_PUT {
				ctlMu.Lock()
				if _, ok := atCtl[p]; !ok {
					atCtl[p] = time.Now()
				}
				ctlMu.Unlock()
			}
		}
	}()
	// One ADD at a time, round robin over the gateways: latency at scale,
	// not a backlog of 1,000 concurrent ADDs.
	for k := range endpoints {
		gi := k % gateways
		cl := &cni.Client{Path: gws[gi].Sock}
		id := fmt.Sprintf("p%d", k)
		t0 := time.Now()
		resp, err := cl.Do(ctx, &cni.Request{Op: cni.OpAdd, ContainerID: id, IfName: "eth0", Network: "red"})
		if err == nil {
			_, err = cl.Do(ctx, &cni.Request{Op: cni.OpAttach, ContainerID: id, IfName: "eth0", MAC: "02:00:00:00:00:01"})
		}
		if err != nil {
			t.Fatal(err)
		}
		a := resp.Endpoint.Addresses[0]
		start[netip.PrefixFrom(a, a.BitLen())], owner[netip.PrefixFrom(a, a.BitLen())] = t0, gi
	}
	for i, s := range seens {
		select {
		case <-s.done:
		case <-time.After(60 * time.Second):
			t.Fatalf("gateway %d saw %d of %d remote routes", i, len(s.at), s.want)
		}
	}
	var lat []time.Duration
	for gi, s := range seens {
		s.mu.Lock()
		for p, t1 := range s.at {
			if owner[p] != gi {
				lat = append(lat, max(0, t1.Sub(start[p])))
			}
		}
		s.mu.Unlock()
	}
	var toCtl []time.Duration
	ctlMu.Lock()
	for p, t0 := range start {
		if t1, ok := atCtl[p]; ok {
			toCtl = append(toCtl, max(0, t1.Sub(t0)))
		}
	}
	ctlMu.Unlock()
	fmt.Printf("\nPropagation, endpoint ADD on one gateway -> route in another gateway's desired state\n")
	fmt.Printf("%d endpoints over %d gateways (%d gateway/route pairs): p50 %s, p99 %s, max %s\n",
		endpoints, gateways, len(lat), ms(pct(lat, .5)), ms(pct(lat, .99)), ms(pct(lat, 1)))
	fmt.Printf("of which ADD -> the controller's route table (%d routes): p50 %s, p99 %s\n\n", len(toCtl), ms(pct(toCtl, .5)), ms(pct(toCtl, .99)))
}
