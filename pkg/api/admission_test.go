package api

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/routedigest"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	"github.com/iotfabric/iotfabric/pkg/vpn"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// instance is one controller instance (a route table and a gRPC server) on
// a store that outlives it.
type instance struct {
	addr   string
	agents *agents
	stop   func()
}

func startInstance(t *testing.T, st store.Store, maxFull, small int) *instance {
	t.Helper()
	c := controller.New(st, controller.Config{})
	r := vpn.NewRunner(st, nil, 64512, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	<-r.Ready()
	a := newAgents(c, r, nil, maxFull, small)
	gs := grpc.NewServer()
	res := &resources{c: c, r: r}
	v1.RegisterNetworkServiceServer(gs, res)
	v1.RegisterAgentServiceServer(gs, a)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	in := &instance{addr: lis.Addr().String(), agents: a}
	var once sync.Once
	in.stop = func() {
		once.Do(func() {
			r.EndGatewayStreams(context.Background())
			gs.Stop()
			cancel()
			<-done
		})
	}
	t.Cleanup(in.stop)
	return in
}

// fakeGateway is a gateway as the agent's session drives one: its own gRPC
// connection, Register, a full report of its endpoint, a route stream, and
// the routes it holds (for digests).
type fakeGateway struct {
	name, network string
	i             int
	rev           int64
	ctlID         string
	routes        map[string]*v1.Route // prefix -> route
	registers     int
}

func (g *fakeGateway) apply(m *v1.GatewayRoutes) {
	if m.GetKind() == v1.GatewayRoutes_KIND_SNAPSHOT {
		kept := map[string]*v1.Route{}
		for _, s := range m.GetKeep() {
			for p, r := range g.routes {
				if r.GetNetwork() != s.GetNetwork() {
					continue
				}
				if n := int(s.GetBucketCount()); n > 0 {
					in := false
					for _, b := range s.GetBuckets() {
						in = in || routedigest.Bucket(r.GetPrefix(), r.GetRouteDistinguisher(), n) == int(b)
					}
					if !in {
						continue
					}
				}
				kept[p] = r
			}
		}
		g.routes = kept
	}
	for _, r := range m.GetDelete() {
		delete(g.routes, r.GetPrefix())
	}
	for _, r := range m.GetPut() {
		g.routes[r.GetPrefix()] = r
	}
	g.rev, g.ctlID = m.GetRevision(), m.GetControllerId()
}

// session runs one session of g against the controller at addr until its
// route stream has want routes, retrying calls refused for load (after the
// retry delay, on the same connection and registration, as the agent
// does); it returns the first update and how many calls were refused.
func (g *fakeGateway) session(ctx context.Context, addr string, want int, digests bool) (*v1.GatewayRoutes, int, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, 0, err
	}
	defer conn.Close()
	cl := v1.NewAgentServiceClient(conn)
	if _, err := cl.Register(ctx, &v1.RegisterRequest{Gateway: &v1.Gateway{Name: g.name, UnderlayAddress: fmt.Sprintf("192.0.%d.%d", 2+g.i/250, 1+g.i%250)}}); err != nil {
		return nil, 0, err
	}
	g.registers++
	refused := 0
	retry := func(call func() error) error {
		for {
			err := call()
			d, ok := retryInfo(err)
			if !ok {
				return err
			}
			refused++
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d):
			}
		}
	}
	err = retry(func() error {
		_, err := cl.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: g.name, FullSync: true,
			Endpoints: []*v1.AgentEndpoint{{Id: g.name + "-pod", Network: g.network, Label: uint32(100 + g.i)}}})
		return err
	})
	if err != nil {
		return nil, refused, fmt.Errorf("report: %w", err)
	}
	var first *v1.GatewayRoutes
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var s grpc.ServerStreamingClient[v1.GatewayRoutes]
	err = retry(func() error {
		req := &v1.WatchGatewayRoutesRequest{Gateway: g.name, MaxMessageBytes: 1 << 20, FromRevision: g.rev, ControllerId: g.ctlID}
		if digests {
			byNet := map[string][]*v1.Route{}
			for _, r := range g.routes {
				byNet[r.GetNetwork()] = append(byNet[r.GetNetwork()], r)
			}
			for n, rs := range byNet {
				d := routedigest.Of(rs)
				req.Digests = append(req.Digests, &v1.RouteDigest{Network: n, Count: uint64(d.Count), Buckets: d.Buckets})
			}
		}
		var err error
		if s, err = cl.WatchGatewayRoutes(sctx, req); err == nil {
			first, err = s.Recv()
		}
		return err
	})
	if err != nil {
		return nil, refused, fmt.Errorf("watch: %w", err)
	}
	g.apply(first)
	for len(g.routes) < want {
		m, err := s.Recv()
		if err != nil {
			return first, refused, fmt.Errorf("watch (%d routes held): %w", len(g.routes), err)
		}
		g.apply(m)
	}
	return first, refused, nil
}

// sessions runs a session of every gateway at once and returns the first
// updates and the refusals.
func sessions(t *testing.T, gws []*fakeGateway, addr string, want int, digests bool) ([]*v1.GatewayRoutes, int, time.Duration) {
	t.Helper()
	// Generous: under qemu-user (make test-arm) on a loaded machine the 200
	// gateways' first sync alone took 20 s; what is checked are counts.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	firsts := make([]*v1.GatewayRoutes, len(gws))
	var refused atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i, g := range gws {
		wg.Go(func() {
			f, n, err := g.session(ctx, addr, want, digests)
			refused.Add(int64(n))
			if err != nil {
				t.Errorf("%s: %v", g.name, err)
			}
			firsts[i] = f
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return firsts, int(refused.Load()), time.Since(start)
}

// TestRestartAdmission: N gateways (20 per network, one endpoint each, so
// 20 routes each, its own included) over real gRPC, each with its own connection, as
// the agent's session drives one (Register, full report, route stream),
// all at once against a controller admitting 4 full syncs at a time.
//
//   - After a restart (a new route table instance on the same store) with
//     nothing missed, every gateway resumes from its digests: its first
//     update keeps its whole network and resends no route, and no call
//     is admitted as a full sync or refused.
//   - When every gateway needs a full sync (every route counted, no
//     digests), the calls that find the slots taken queue instead of being
//     refused: fewer than one in ten is refused, and each refused one gets
//     its snapshot after the retry delay on the same connection, without a
//     new Register. The old rule, a refusal whenever the slots are taken,
//     is measured beside it.
//
// IOTFABRIC_ADMISSION_GATEWAYS sets N (default 200).
func TestRestartAdmission(t *testing.T) {
	n := 200
	if v, err := strconv.Atoi(os.Getenv("IOTFABRIC_ADMISSION_GATEWAYS")); err == nil && v > 0 {
		n = v
	}
	const perNet, maxFull = 20, 4
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()

	first := startInstance(t, st, maxFull, 0)
	conn, err := grpc.NewClient(first.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	nets := v1.NewNetworkServiceClient(conn)
	var gws []*fakeGateway
	for i := range n {
		nw := fmt.Sprintf("n%03d", i/perNet)
		if i%perNet == 0 {
			if _, err := nets.CreateNetwork(ctx, mkNet(nw, fmt.Sprintf("10.%d.0.0/16", 1+i/perNet))); err != nil {
				t.Fatal(err)
			}
		}
		gws = append(gws, &fakeGateway{name: fmt.Sprintf("gw-%04d", i), network: nw, i: i, routes: map[string]*v1.Route{}})
	}
	conn.Close()
	want := perNet // its own endpoint's route too
	_, _, took := sessions(t, gws, first.addr, want, true)
	t.Logf("%d gateways registered and synced in %v (%d admitted as full syncs, %d refused)", n, took, first.agents.full.admitted.Load(), first.agents.full.refused.Load())
	first.stop()

	// A restart with nothing missed: resumes from digests, no full sync.
	second := startInstance(t, st, maxFull, 0)
	firsts, refused, took := sessions(t, gws, second.addr, want, true)
	for i, f := range firsts {
		if f.GetKind() != v1.GatewayRoutes_KIND_SNAPSHOT || len(f.GetPut()) != 0 || len(f.GetDelete()) != 0 ||
			len(f.GetKeep()) != 1 || f.GetKeep()[0].GetNetwork() != gws[i].network || f.GetKeep()[0].GetBucketCount() != 0 {
			t.Fatalf("%s after the restart: kind %v, %d put, %d delete, keep %v; want its whole network kept and nothing sent", gws[i].name, f.GetKind(), len(f.GetPut()), len(f.GetDelete()), f.GetKeep())
		}
	}
	a := second.agents.full
	t.Logf("restart, nothing missed: %d gateways streaming in %v; %d admitted as full syncs, %d refused", n, took, a.admitted.Load(), a.refused.Load())
	if a.admitted.Load() != 0 || a.refused.Load() != 0 || refused != 0 {
		t.Fatalf("restart with nothing missed: %d full syncs admitted, %d refused; want none", a.admitted.Load(), a.refused.Load())
	}
	second.stop()

	// Every gateway needs a full sync: the old rule (refuse whenever the
	// slots are taken), then queueing.
	for _, queue := range []bool{false, true} {
		in := startInstance(t, st, maxFull, -1)
		if !queue {
			in.agents.full.wait = 0
		}
		for _, g := range gws {
			g.routes, g.rev, g.ctlID = map[string]*v1.Route{}, 0, ""
			g.registers = 0
		}
		firsts, refused, took := sessions(t, gws, in.addr, want, false)
		for i, f := range firsts {
			if len(f.GetPut()) != want {
				t.Fatalf("%s: a full sync of %d routes, want %d", gws[i].name, len(f.GetPut()), want)
			}
			if gws[i].registers != 1 {
				t.Fatalf("%s registered %d times", gws[i].name, gws[i].registers)
			}
		}
		a := in.agents.full
		t.Logf("full syncs of %d gateways, %d slots, queueing %v: all streaming in %v; %d admitted, %d refused", n, maxFull, queue, took, a.admitted.Load(), a.refused.Load())
		if int(a.refused.Load()) != refused {
			t.Fatalf("the controller refused %d calls, the gateways saw %d", a.refused.Load(), refused)
		}
		if queue && refused*10 >= n {
			t.Fatalf("%d of %d full syncs refused with queueing; want under one in ten", refused, n)
		}
		in.stop()
	}
}
