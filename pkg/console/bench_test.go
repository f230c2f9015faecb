package console_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// TestBenchConsole (make bench-console): with $IOTFABRIC_BENCH_CONSOLE_GATEWAYS
// gateways and ten times as many endpoints in the store, created through the
// API, headless chromium loads the overview; it prints the time to
// interactive the page itself marks (performance mark console-interactive),
// and the time from a gateway change through the API to the overview
// showing it (p50, p99).
func TestBenchConsole(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("IOTFABRIC_BENCH_CONSOLE_GATEWAYS"))
	if n <= 0 {
		t.Skip("set IOTFABRIC_BENCH_CONSOLE_GATEWAYS (make bench-console)")
	}
	br := startBrowser(t, 1280, 900)
	tune, base := tuneConsole(t, "")
	fc := fabrictest.StartControllerWith(t, &fabrictest.Controller{Tune: tune})
	cl := fc.Dial()
	ctx := context.Background()
	start := time.Now()
	if _, err := cl.Net.CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "bench", Subnets: []string{"10.0.0.0/8"}}}); err != nil {
		t.Fatal(err)
	}
	parallel(t, n, 8, func(i int) error {
		_, err := cl.GW.CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{Name: fmt.Sprintf("gw-%05d", i),
			UnderlayAddress: fmt.Sprintf("100.%d.%d.%d", 64+i>>16, i>>8&255, i&255), State: v1.GatewayState(1 + i%3)}})
		return err
	})
	const batch = 1000
	eps := 10 * n
	parallel(t, (eps+batch-1)/batch, 4, func(b int) error {
		var req v1.CreateEndpointsRequest
		for i := b * batch; i < min(eps, (b+1)*batch); i++ {
			req.Endpoints = append(req.Endpoints, &v1.Endpoint{Id: fmt.Sprintf("ep-%06d", i), Network: "bench", Gateway: fmt.Sprintf("gw-%05d", i%n), Label: uint32(16 + i)})
		}
		resp, err := cl.EP.CreateEndpoints(ctx, &req)
		if err != nil {
			return err
		}
		for _, e := range resp.Errors {
			if e != "" {
				return fmt.Errorf("create endpoints: %s", e)
			}
		}
		return nil
	})
	t.Logf("store filled in %v: %d gateways, %d endpoints", time.Since(start).Round(time.Millisecond), n, eps)

	// Time to interactive: a fresh tab per load (the first warms the caches
	// of the controller, like an operator's second visit).
	var tti []float64
	for range 5 {
		tb := br.newTab(t, base+"/ui/")
		tb.waitJS(30*time.Second, `performance.getEntriesByName('console-interactive').length > 0`)
		var ms float64
		tb.eval(`performance.getEntriesByName('console-interactive')[0].startTime`, &ms)
		var rows int
		tb.eval(`document.querySelectorAll('#overview-gateways tbody tr').length`, &rows)
		if rows == 0 {
			t.Fatal("overview shows no gateways")
		}
		tti = append(tti, ms)
		var res []struct {
			Name     string
			Start    float64
			Duration float64
			Size     float64
		}
		tb.eval(`performance.getEntriesByType('resource').map(e => ({name: e.name.replace(location.origin, ''), start: e.startTime, duration: e.duration, size: e.transferSize}))`, &res)
		for _, r := range res {
			t.Logf("  %-40.40s start %5.0f ms, took %5.0f ms, %7.0f bytes", r.Name, r.Start, r.Duration, r.Size)
		}
		tb.close()
	}
	slices.Sort(tti)
	fmt.Printf("bench-console: %d gateways, %d endpoints: overview interactive in %.0f ms (median of %d loads; min %.0f, max %.0f; goal < 1000 ms)\n",
		n, eps, tti[len(tti)/2], len(tti), tti[0], tti[len(tti)-1])

	// From a change through the API to the page.
	tb := br.newTab(t, base+"/ui/")
	tb.waitJS(30*time.Second, `performance.getEntriesByName('console-interactive').length > 0 && document.getElementById('live').textContent === 'live'`)
	var lat []float64
	for i := range 200 {
		sent := float64(time.Now().UnixNano()) / 1e6
		g, err := cl.GW.UpdateGateway(ctx, &v1.UpdateGatewayRequest{Gateway: &v1.Gateway{Name: fmt.Sprintf("gw-%05d", i), UnderlayAddress: fmt.Sprintf("100.127.%d.%d", i>>8, i&255), State: v1.GatewayState_GATEWAY_STATE_UP}})
		if err != nil {
			t.Fatal(err)
		}
		mark := fmt.Sprintf("console-rev-%d", g.Revision)
		tb.waitJS(10*time.Second, fmt.Sprintf(`performance.getEntriesByName(%q).length > 0`, mark))
		var at float64
		tb.eval(fmt.Sprintf(`performance.timeOrigin + performance.getEntriesByName(%q)[0].startTime`, mark), &at)
		lat = append(lat, at-sent)
		time.Sleep(20 * time.Millisecond)
	}
	slices.Sort(lat)
	fmt.Printf("bench-console: API change to page: p50 %.0f ms, p99 %.0f ms, max %.0f ms over %d gateway updates (goal p99 < 500 ms)\n",
		lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1], len(lat))
	tb.screenshot("bench-overview")
	tb.close()
}

// parallel runs f(0..n-1) on workers goroutines; the first error fails the test.
func parallel(t *testing.T, n, workers int, f func(i int) error) {
	t.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		next = make(chan int)
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d failed, first: %v", len(errs), errs[0])
	}
}
