package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/api"
	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	"github.com/iotfabric/iotfabric/pkg/vpn"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Sizes of BenchmarkListAtScale (make bench-list); $IOTFABRIC_LIST_SCALE
// divides them (for a quick run).
var (
	scaleEndpoints = 300000
	scaleRoutes    = 200000 // endpoints with a label: one (IPv4) route each
	scaleGateways  = 100
)

func init() {
	if d, err := strconv.Atoi(os.Getenv("IOTFABRIC_LIST_SCALE")); err == nil && d > 1 {
		scaleEndpoints, scaleRoutes = scaleEndpoints/d, scaleRoutes/d
	}
}

// measure runs fn twice: once timed, with the garbage collector as it is,
// and once with GOGC=10 while sampling the live heap (what the last
// collection found reachable), and returns the time and the live heap's peak
// above what it held before. GOGC=10 makes collections frequent, so that a
// listing's peak is what it holds, not garbage not yet collected.
func measure(fn func() error) (time.Duration, uint64, error) {
	runtime.GC()
	t0 := time.Now()
	if err := fn(); err != nil {
		return 0, 0, err
	}
	d := time.Since(t0)
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	runtime.GC()
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	read := func() uint64 { metrics.Read(sample); return sample[0].Value.Uint64() }
	base := read()
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			if h := read(); h > peak.Load() {
				peak.Store(h)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	err := fn()
	close(stop)
	<-done
	if p := peak.Load(); p > base {
		return d, p - base, err
	}
	return d, 0, err
}

type lineCounter struct{ n, bytes int }

func (w *lineCounter) Write(b []byte) (int, error) {
	w.n += bytes.Count(b, []byte{'\n'})
	w.bytes += len(b)
	return len(b), nil
}

// BenchmarkListAtScale proves the listings at 300,000 endpoints and 200,000
// routes, through real gRPC with the controller's 4 MiB message limit at both
// ends: the API paged through, and iotfabricctl's endpoint and route lists.
// It prints each listing's time and its peak heap, next to a peer measured in
// the same run: the whole listing read and encoded as one message, as List
// RPCs answered before pagination (which the message limit now refuses).
// The network and gateways are made through the controller; the endpoints
// are written straight to the store (bbolt without fsync) with the records
// and index keys the controller writes, in transactions of 10,000 keys, so
// that seeding takes seconds (IPAM's address keys are left out: listing does
// not read them).
func BenchmarkListAtScale(b *testing.B) {
	ctx := context.Background()
	st, err := bolt.Open(filepath.Join(b.TempDir(), "state.db"), bolt.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctl := controller.New(st, controller.Config{})
	t0 := time.Now()
	if _, err := ctl.CreateNetwork(ctx, &v1.VirtualNetwork{Name: "big", Subnets: []string{"10.0.0.0/8"}}); err != nil {
		b.Fatal(err)
	}
	for g := 0; g < scaleGateways; g++ {
		gw := fmt.Sprintf("gw%03d", g)
		if _, err := ctl.CreateGateway(ctx, &v1.Gateway{Name: gw, UnderlayAddress: fmt.Sprintf("192.0.2.%d", g+1)}); err != nil {
			b.Fatal(err)
		}
	}
	seedStore(b, st)
	b.Logf("seeded %d endpoints (%d with a label) in %s", scaleEndpoints, scaleRoutes, time.Since(t0).Round(time.Millisecond))

	r := vpn.NewRunner(st, nil, controller.DefaultASN, nil)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go r.Run(rctx)
	<-r.Ready()
	for deadline := time.Now().Add(5 * time.Minute); r.Stats().Announced < scaleRoutes; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("%d routes, want %d", r.Stats().Announced, scaleRoutes)
		}
	}
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(model.MaxMsgSize), grpc.MaxSendMsgSize(model.MaxMsgSize))
	api.Services{Controller: ctl, Routes: r}.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go gs.Serve(lis)
	defer gs.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(model.MaxMsgSize)))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	srv := lis.Addr().String()

	report := func(what string, n, want int, d time.Duration, peak uint64, err error) {
		if err != nil {
			b.Fatalf("%s: %v", what, err)
		}
		if n != want {
			b.Fatalf("%s: %d records, want %d", what, n, want)
		}
		b.Logf("%-44s %7d records in %7.2f s (%6.0f/s), peak live heap +%4d MiB", what, n, d.Seconds(), float64(n)/d.Seconds(), peak>>20)
	}
	for i := 0; i < b.N; i++ {
		// Peer: the unpaged answer, one message.
		var one int
		d, peak, err := measure(func() error {
			eps, _, err := ctl.ListEndpoints(ctx, "", "")
			if err != nil {
				return err
			}
			m, err := proto.Marshal(&v1.ListEndpointsResponse{Endpoints: eps})
			one = len(m)
			_ = eps
			return err
		})
		report(fmt.Sprintf("peer: unpaged, one %d MiB message", one>>20), scaleEndpoints, scaleEndpoints, d, peak, err)
		unpagedPeak := peak

		// The API, paged through with the largest pages.
		var n int
		d, peak, err = measure(func() error {
			n = 0
			c := v1.NewEndpointServiceClient(conn)
			req := &v1.ListEndpointsRequest{PageSize: api.MaxPageSize}
			for {
				p, err := c.ListEndpoints(ctx, req)
				if err != nil {
					return err
				}
				n += len(p.Endpoints)
				if req.PageToken = p.NextPageToken; req.PageToken == "" {
					return nil
				}
			}
		})
		report("API ListEndpoints, paged", n, scaleEndpoints, d, peak, err)
		b.ReportMetric(d.Seconds(), "s/endpoint-list")
		b.ReportMetric(float64(peak>>20), "MiB-peak/endpoint-list")
		b.ReportMetric(float64(unpagedPeak)/float64(max(peak, 1)), "x-less-heap-than-unpaged")

		d, peak, err = measure(func() error {
			n = 0
			c := v1.NewRouteServiceClient(conn)
			req := &v1.ListRoutesRequest{Network: "big", PageSize: api.MaxPageSize}
			for {
				p, err := c.ListRoutes(ctx, req)
				if err != nil {
					return err
				}
				n += len(p.Routes)
				if req.PageToken = p.NextPageToken; req.PageToken == "" {
					return nil
				}
			}
		})
		report("API ListRoutes, paged", n, scaleRoutes, d, peak, err)
		b.ReportMetric(d.Seconds(), "s/route-list")

		for _, c := range []struct {
			what string
			args []string
			want int
		}{
			{"iotfabricctl endpoint list", []string{"endpoint", "list"}, scaleEndpoints},
			{"iotfabricctl endpoint list --gateway gw007", []string{"endpoint", "list", "--gateway", "gw007"}, scaleEndpoints / scaleGateways},
			{"iotfabricctl -o json endpoint list", []string{"-o", "json", "endpoint", "list"}, scaleEndpoints},
			{"iotfabricctl route list", []string{"route", "list", "--network", "big"}, scaleRoutes},
		} {
			var out lineCounter
			var errb bytes.Buffer
			d, peak, err := measure(func() error {
				out = lineCounter{}
				if rc := run(append([]string{"--server", srv}, c.args...), &out, &errb); rc != 0 {
					return fmt.Errorf("exit %d: %s", rc, errb.String())
				}
				return nil
			})
			report(c.what, out.n-1 /* the header, or the array's brackets */, c.want+jsonExtra(c.args), d, peak, err)
		}
	}
	_ = io.Discard
}

// jsonExtra is the lines a JSON listing has beyond one per record and the
// table's header: "[" and "]" where a table has one header.
func jsonExtra(args []string) int {
	if args[0] == "-o" {
		return 1
	}
	return 0
}

// seedStore writes the endpoints as the controller stores them: the record,
// the network's index key, and the gateway's label key (or pending key).
func seedStore(b *testing.B, st store.Store) {
	var ops []store.Op
	flush := func() {
		if _, err := st.Txn(context.Background(), nil, ops); err != nil {
			b.Fatal(err)
		}
		ops = ops[:0]
	}
	for i := 0; i < scaleEndpoints; i++ {
		e := &v1.Endpoint{Id: fmt.Sprintf("pod-%06d", i), Network: "big", Gateway: fmt.Sprintf("gw%03d", i%scaleGateways),
			Addresses: []string{fmt.Sprintf("10.%d.%d.%d", 1+i>>16, i>>8&255, i&255)}, State: v1.EndpointState_ENDPOINT_STATE_PENDING}
		if i < scaleRoutes {
			e.Label, e.State = model.MinLabel+uint32(i/scaleGateways), v1.EndpointState_ENDPOINT_STATE_ACTIVE
		}
		rec, err := proto.Marshal(e)
		if err != nil {
			b.Fatal(err)
		}
		ops = append(ops, store.Put(keys.Endpoint(e.Id), rec), store.Put(keys.EndpointIndexKey(e.Network, e.Id), []byte(e.Gateway)))
		if e.Label != 0 {
			ops = append(ops, store.Put(keys.Label(e.Gateway, e.Label), []byte(e.Id)))
		} else {
			ops = append(ops, store.Put(keys.PendingEndpoint(e.Gateway, e.Id), nil))
		}
		if len(ops) >= 10000 {
			flush()
		}
	}
	if len(ops) > 0 {
		flush()
	}
}
