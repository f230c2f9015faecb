package agent_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	"github.com/iotfabric/iotfabric/pkg/cni"
	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/server"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// bigRoutesDefault is the size of the table TestBigRouteTable streams in
// `make test`: past the 4 MiB a single gRPC message may carry by default
// (about 49,000 routes). IOTFABRIC_BIG_ROUTES sets another (make
// bench-fleet runs it with 200,000).
const bigRoutesDefault = 60_000

// TestBigRouteTable: a gateway whose network has 60,000 routes (200,000 in
// make bench-fleet) gets them
// all through real gRPC (the snapshot in chunks of at most 1 MiB, applied
// whole), and after a controller restart with one change made while it was
// down the agent holds exactly the new table, without a second snapshot
// (digests: only the buckets that differ are sent).
func TestBigRouteTable(t *testing.T) {
	bigRoutes := bigRoutesDefault
	if v := os.Getenv("IOTFABRIC_BIG_ROUTES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1<<20 {
			t.Fatalf("IOTFABRIC_BIG_ROUTES=%q: want a number of routes up to %d", v, 1<<20)
		}
		bigRoutes = n
	}
	dbPath := filepath.Join(t.TempDir(), "state.db")
	open := func() (store.Store, error) { return bolt.Open(dbPath, bolt.Options{NoSync: true}) }
	// Past the default per-network route limit for gateways: lifted here.
	ctl := fabrictest.StartControllerWith(t, &fabrictest.Controller{Open: open,
		Tune: func(c *server.Config) { c.Routes.MaxPerNetwork = -1 }})
	api := ctl.Dial()
	ctx := context.Background()
	createNetwork(t, api, "big", "10.64.0.0/10")
	if _, err := api.Agent.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: "far", UnderlayAddress: "192.0.2.99"}}); err != nil {
		t.Fatal(err)
	}
	// The remote endpoints go straight into the store while the controller
	// is stopped (200,000 API calls would make the test minutes long).
	ctl.Stop()
	st, err := open()
	if err != nil {
		t.Fatal(err)
	}
	putFar := func(from, to int) {
		for i := from; i < to; i += 2000 {
			var ops []store.Op
			for j := i; j < min(i+2000, to); j++ {
				id := fmt.Sprintf("far-%06d", j)
				a := farAddr(j)
				b, _ := proto.Marshal(&v1.Endpoint{Id: id, Network: "big", Gateway: "far", Addresses: []string{a.String()}, Label: uint32(16 + j)})
				ops = append(ops, store.Put(keys.Endpoint(id), b), store.Put(keys.EndpointIndexKey("big", id), []byte("far")))
			}
			if _, err := st.Txn(ctx, nil, ops); err != nil {
				t.Fatal(err)
			}
		}
	}
	putFar(0, bigRoutes)
	st.Close()
	ctl.Start()

	gw := fabrictest.StartGateway(t, "gw-big", netip.MustParseAddr("192.0.2.98"), []string{ctl.Addr}, false)
	gw.WaitLive(30*time.Second, 1)
	cl := &cni.Client{Path: gw.Sock}
	if _, err := cl.Do(ctx, &cni.Request{Op: cni.OpAdd, ContainerID: "p", IfName: "eth0", Network: "big"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Do(ctx, &cni.Request{Op: cni.OpAttach, ContainerID: "p", IfName: "eth0", MAC: "02:00:00:00:00:01"}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitRoutes(t, gw, bigRoutes, "10.96.0.0")
	t.Logf("%d routes reached the agent in %v", bigRoutes, time.Since(start).Round(time.Millisecond))

	// Restart the controller with one more remote endpoint made meanwhile.
	ctl.Stop()
	if st, err = open(); err != nil {
		t.Fatal(err)
	}
	putFar(bigRoutes, bigRoutes+1)
	st.Close()
	ctl.Start()
	start = time.Now()
	waitRoutes(t, gw, bigRoutes+1, farAddr(bigRoutes).String())
	t.Logf("after the restart the agent had the changed table in %v", time.Since(start).Round(time.Millisecond))
}

// farAddr is the address of the j-th remote endpoint (10.96.0.0/12).
func farAddr(j int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(96 + j>>16), byte(j >> 8), byte(j)})
}

// waitRoutes waits until the gateway's desired state has n remote routes
// of network big, one of them to addr.
func waitRoutes(t *testing.T, gw *fabrictest.Gateway, n int, addr string) {
	t.Helper()
	want := netip.PrefixFrom(netip.MustParseAddr(addr), 32)
	deadline := time.Now().Add(2 * time.Minute)
	got := 0
	for time.Now().Before(deadline) {
		st, _, err := gw.Agent().Core().Desired(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		got = 0
		found := false
		for _, nw := range st.Networks {
			if nw.Name != "big" {
				continue
			}
			got = len(nw.Routes)
			for _, r := range nw.Routes {
				if r.Prefix == want {
					found = true
				}
			}
		}
		if got == n && found {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("the agent holds %d routes of network big, want %d including %s", got, n, addr)
}
