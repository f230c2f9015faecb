package controller

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	"github.com/iotfabric/iotfabric/pkg/store/etcd"
	"github.com/iotfabric/iotfabric/pkg/store/etcd/etcdtest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// bulkCount is how many endpoints TestBulkCreateNeverAborted creates:
// IOTFABRIC_BULK_ENDPOINTS, else 5,000 (make bench-controller-bulk: 150,000).
func bulkCount(t *testing.T) int {
	if s := os.Getenv("IOTFABRIC_BULK_ENDPOINTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	return 5000
}

// createBulk creates n endpoints through c's CreateEndpoints in calls of
// 1,000, on the gateways given in turn, and returns the first error (an
// Aborted above all) and the time taken.
func createBulk(c *Controller, prefix string, n int, gateways []string) (time.Duration, error) {
	ctx := context.Background()
	start := time.Now()
	for i := 0; i < n; i += 1000 {
		reqs := make([]*v1.Endpoint, 0, 1000)
		for j := i; j < min(n, i+1000); j++ {
			reqs = append(reqs, &v1.Endpoint{Id: fmt.Sprintf("%s-%d", prefix, j), Network: "n", Gateway: gateways[(j/1000)%len(gateways)]})
		}
		_, errs := c.CreateEndpoints(ctx, reqs)
		for j, err := range errs {
			if err != nil {
				return 0, fmt.Errorf("endpoint %s (aborted: %t): %w", reqs[j].Id, errors.Is(err, model.ErrAborted), err)
			}
		}
	}
	return time.Since(start), nil
}

func bulkSetup(t *testing.T, c *Controller, gateways []string) {
	ctx := context.Background()
	if _, err := c.CreateNetwork(ctx, &v1.VirtualNetwork{Name: "n", Subnets: []string{"10.64.0.0/10", "fd00:64::/48"}}); err != nil && !errors.Is(err, model.ErrExists) {
		t.Fatal(err)
	}
	for i, g := range gateways {
		if _, err := c.CreateGateway(ctx, &v1.Gateway{Name: g, UnderlayAddress: fmt.Sprintf("192.0.2.%d", i+1)}); err != nil && !errors.Is(err, model.ErrExists) {
			t.Fatal(err)
		}
	}
}

// One client alone never sees Aborted: every call of 1,000 endpoints (IPv4
// and IPv6 each) succeeds whole, most of them on one gateway.
func TestBulkCreateNeverAborted(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c := New(st, Config{})
	gws := []string{"gw-1", "gw-1", "gw-2"}
	bulkSetup(t, c, gws)
	n := bulkCount(t)
	took, err := createBulk(c, "ep", n, gws)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d endpoints in calls of 1,000 (bbolt): %.0f endpoints/s, no Aborted", n, float64(n)/took.Seconds())
	checkIPAMCounts(t, c, st, n)
}

// checkIPAMCounts checks that the network's IPAM holds exactly two addresses
// per endpoint.
func checkIPAMCounts(t *testing.T, c *Controller, st store.Store, n int) {
	t.Helper()
	stat, err := c.IpamStatus(context.Background(), "n")
	if err != nil {
		t.Fatal(err)
	}
	var used uint64
	for _, s := range stat.Subnets {
		used += s.Used
	}
	if used != uint64(2*n) {
		t.Fatalf("IPAM counts %d addresses in use, want %d", used, 2*n)
	}
}

// Two controllers on one etcd, two writers each, creating endpoints on the
// same gateways at once: their conflicts are real (the same blocks and
// addresses), and are retried inside; no caller sees Aborted, and the
// store holds every address once.
func TestBulkCreateTwoControllersEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	var ctls []*Controller
	var sts []store.Store
	for range 2 {
		st, err := etcd.Open(context.Background(), etcd.Options{Endpoints: []string{srv.Endpoint}, Namespace: "/bulk/"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		ctls, sts = append(ctls, New(st, Config{})), append(sts, st)
	}
	gws := []string{"gw-1", "gw-2"}
	bulkSetup(t, ctls[0], gws)
	const perWriter = 500
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for w := range 4 {
		wg.Go(func() { _, errs[w] = createBulk(ctls[w%2], fmt.Sprintf("w%d", w), perWriter, gws) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("%d endpoints by 4 writers through 2 controllers on etcd: %.0f endpoints/s, no Aborted", 4*perWriter, float64(4*perWriter)/took.Seconds())
	// Every address once, as the store says (a fresh controller reads it).
	checkIPAMCounts(t, New(sts[0], Config{}), sts[0], 4*perWriter)
	eps, _, err := ctls[1].ListEndpoints(context.Background(), "n", "")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, e := range eps {
		for _, a := range e.Addresses {
			if o, dup := seen[a]; dup {
				t.Fatalf("address %s held by %s and %s", a, o, e.Id)
			}
			seen[a] = e.Id
		}
	}
	if len(eps) != 4*perWriter {
		t.Fatalf("%d endpoints stored, want %d", len(eps), 4*perWriter)
	}
}
