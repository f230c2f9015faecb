package api

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	"github.com/iotfabric/iotfabric/pkg/store/etcd"
	"github.com/iotfabric/iotfabric/pkg/store/etcd/etcdtest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// clients are the API as a user sees it: over a real gRPC connection.
type clients struct {
	net v1.NetworkServiceClient
	gw  v1.GatewayServiceClient
	ep  v1.EndpointServiceClient
	ip  v1.IpamServiceClient
	st  store.Store
}

func serveStore(t *testing.T, st store.Store) clients {
	t.Helper()
	ctl := controller.New(st, controller.Config{ASN: 64512})
	if _, err := ctl.LoadNetworks(context.Background()); err != nil {
		t.Fatal(err)
	}
	conn := serveGRPC(t, func(gs *grpc.Server) { Services{Controller: ctl}.Register(gs) })
	return clients{v1.NewNetworkServiceClient(conn), v1.NewGatewayServiceClient(conn), v1.NewEndpointServiceClient(conn), v1.NewIpamServiceClient(conn), st}
}

// serveGRPC serves what register adds on a loopback port until the test ends
// and returns a connection to it.
func serveGRPC(t testing.TB, register func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	gs := grpc.NewServer()
	register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// backends runs fn against a bbolt store and against a real etcd.
func backends(t *testing.T, fn func(t *testing.T, open func(t *testing.T) store.Store)) {
	t.Run("bolt", func(t *testing.T) {
		fn(t, func(t *testing.T) store.Store {
			s, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		})
	})
	t.Run("etcd", func(t *testing.T) {
		srv := etcdtest.Start(t)
		n := 0
		fn(t, func(t *testing.T) store.Store {
			n++
			s, err := etcd.Open(context.Background(), etcd.Options{Endpoints: []string{srv.Endpoint}, Namespace: fmt.Sprintf("/c%d/", n)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		})
	})
}

func wantCode(t *testing.T, err error, code codes.Code, msgPart string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want code %v", err, code)
	}
	if msgPart != "" && !strings.Contains(status.Convert(err).Message(), msgPart) {
		t.Fatalf("message %q does not mention %q", status.Convert(err).Message(), msgPart)
	}
}

func mkNet(name string, subnets ...string) *v1.CreateNetworkRequest {
	return &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: name, Subnets: subnets}}
}

func TestNetworks(t *testing.T) {
	backends(t, func(t *testing.T, open func(*testing.T) store.Store) {
		c := serveStore(t, open(t))
		ctx := context.Background()
		n, err := c.net.CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{
			Name: "sensors", Subnets: []string{"10.1.0.0/24", "fd00:1::/64"}, ExportRouteTargets: []string{"64512:100", "target:64512:100"}}})
		if err != nil {
			t.Fatal(err)
		}
		if n.Id != 1 || n.AutoRouteTarget != "target:64512:8000001" || n.Ipv4BlockSize != 28 || n.Ipv6BlockSize != 124 || len(n.Encapsulations) != 2 {
			t.Fatalf("created %+v", n)
		}
		if len(n.ExportRouteTargets) != 1 || n.ExportRouteTargets[0] != "target:64512:100" {
			t.Fatalf("route targets not normalised: %v", n.ExportRouteTargets)
		}
		n2, _ := c.net.CreateNetwork(ctx, mkNet("cameras", "10.2.0.0/24"))
		if n2.Id != 2 || n2.AutoRouteTarget != "target:64512:8000002" {
			t.Fatalf("second network %+v", n2)
		}
		_, err = c.net.CreateNetwork(ctx, mkNet("sensors", "10.9.0.0/24"))
		wantCode(t, err, codes.AlreadyExists, "sensors")

		for _, tc := range []struct {
			req  *v1.CreateNetworkRequest
			want string
		}{
			{&v1.CreateNetworkRequest{}, "missing"},
			{mkNet("", "10.0.0.0/24"), "empty"},
			{mkNet("bad name", "10.0.0.0/24"), "not allowed"},
			{mkNet("x", "10.0.0.0/33"), "CIDR"},
			{mkNet("x", "banana"), "CIDR"},
			{mkNet("x", "10.0.0.1/24"), "host bits"},
			{mkNet("x", "10.0.0.0/16", "10.0.1.0/24"), "overlap"},
			{mkNet("x"), "at least one subnet"},
			{&v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "x", Subnets: []string{"10.0.0.0/24"}, ImportRouteTargets: []string{"target:1"}}}, "route target"},
			{&v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "x", Subnets: []string{"10.0.0.0/24"}, ExportRouteTargets: []string{"target:70000:70000"}}}, "0-65535"},
			{&v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "x", Subnets: []string{"10.0.0.0/24"}, Encapsulations: []v1.Encapsulation{42}}}, "unknown encapsulation"},
			{&v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: "x", Subnets: []string{"10.0.0.0/24"}, Ipv4BlockSize: 31}}, "block size"},
		} {
			_, err := c.net.CreateNetwork(ctx, tc.req)
			wantCode(t, err, codes.InvalidArgument, tc.want)
		}
		ls, err := c.net.ListNetworks(ctx, &v1.ListNetworksRequest{})
		if err != nil || len(ls.Networks) != 2 {
			t.Fatalf("after invalid creates: %d networks, %v (a bad request left state behind?)", len(ls.Networks), err)
		}

		upd := n2
		upd.Subnets = append(upd.Subnets, "10.3.0.0/24")
		upd.ImportRouteTargets = []string{"65000:7"}
		got, err := c.net.UpdateNetwork(ctx, &v1.UpdateNetworkRequest{Network: upd})
		if err != nil || len(got.Subnets) != 2 || got.ImportRouteTargets[0] != "target:65000:7" || got.Id != 2 {
			t.Fatalf("update: %+v %v", got, err)
		}
		upd.Ipv4BlockSize = 26
		_, err = c.net.UpdateNetwork(ctx, &v1.UpdateNetworkRequest{Network: upd})
		wantCode(t, err, codes.InvalidArgument, "block sizes")

		_, err = c.net.GetNetwork(ctx, &v1.NameRequest{Name: "nope"})
		wantCode(t, err, codes.NotFound, "nope")
		if _, err := c.net.DeleteNetwork(ctx, &v1.NameRequest{Name: "cameras"}); err != nil {
			t.Fatal(err)
		}
		_, err = c.net.DeleteNetwork(ctx, &v1.NameRequest{Name: "cameras"})
		wantCode(t, err, codes.NotFound, "")
		// The freed id is reused; ids of live networks never change.
		n3, _ := c.net.CreateNetwork(ctx, mkNet("meters", "10.4.0.0/24"))
		if n3.Id != 2 {
			t.Fatalf("id %d, want the freed id 2", n3.Id)
		}
		if g, _ := c.net.GetNetwork(ctx, &v1.NameRequest{Name: "sensors"}); g.Id != 1 {
			t.Fatal("existing network's id changed")
		}
	})
}

func setup(t *testing.T, c clients, subnets ...string) {
	t.Helper()
	ctx := context.Background()
	if _, err := c.net.CreateNetwork(ctx, mkNet("net", subnets...)); err != nil {
		t.Fatal(err)
	}
	for i, gw := range []string{"gw1", "gw2"} {
		if _, err := c.gw.CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{Name: gw, UnderlayAddress: fmt.Sprintf("192.0.2.%d", i+1)}}); err != nil {
			t.Fatal(err)
		}
	}
}

func ep(id, gw string) *v1.CreateEndpointRequest {
	return &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: id, Network: "net", Gateway: gw}}
}

func TestEndpointsAndIPAM(t *testing.T) {
	backends(t, func(t *testing.T, open func(*testing.T) store.Store) {
		st := open(t)
		c := serveStore(t, st)
		ctx := context.Background()
		setup(t, c, "10.1.0.0/24", "fd00:1::/120")

		a, err := c.ep.CreateEndpoint(ctx, ep("pod-a", "gw1"))
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(a.Addresses) != "[10.1.0.1 fd00:1::1]" || a.State != v1.EndpointState_ENDPOINT_STATE_PENDING {
			t.Fatalf("pod-a: %+v", a)
		}
		b, _ := c.ep.CreateEndpoint(ctx, ep("pod-b", "gw2"))
		if fmt.Sprint(b.Addresses) != "[10.1.0.16 fd00:1::10]" {
			t.Fatalf("pod-b on another gateway should get the next block: %v", b.Addresses)
		}
		again, err := c.ep.CreateEndpoint(ctx, ep("pod-a", "gw1"))
		if err != nil || fmt.Sprint(again.Addresses) != fmt.Sprint(a.Addresses) || again.Revision != a.Revision {
			t.Fatalf("repeated create: %+v %v", again, err)
		}
		_, err = c.ep.CreateEndpoint(ctx, ep("pod-a", "gw2"))
		wantCode(t, err, codes.AlreadyExists, "gw1")

		vm, err := c.ep.CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: "vm", Network: "net", Gateway: "gw1", Addresses: []string{"10.1.0.200"}, Label: 1000, Mac: "02:00:00:00:00:01"}})
		if err != nil || fmt.Sprint(vm.Addresses) != "[10.1.0.200]" || vm.State != v1.EndpointState_ENDPOINT_STATE_ACTIVE {
			t.Fatalf("explicit address: %+v %v", vm, err)
		}
		for _, tc := range []struct {
			e    *v1.Endpoint
			code codes.Code
			want string
		}{
			{&v1.Endpoint{Id: "x", Network: "net", Gateway: "gw1", Addresses: []string{"10.1.0.200"}}, codes.AlreadyExists, "in use"},
			{&v1.Endpoint{Id: "x", Network: "net", Gateway: "gw2", Addresses: []string{"10.1.0.2"}}, codes.FailedPrecondition, "another gateway"},
			{&v1.Endpoint{Id: "x", Network: "net", Gateway: "gw1", Addresses: []string{"10.9.0.1"}}, codes.InvalidArgument, "not in any subnet"},
			{&v1.Endpoint{Id: "x", Network: "net", Gateway: "gw1", Addresses: []string{"nonsense"}}, codes.InvalidArgument, "not an IP"},
			{&v1.Endpoint{Id: "x", Network: "net", Gateway: "gw1", Label: 5}, codes.InvalidArgument, "reserved"},
			{&v1.Endpoint{Id: "x", Network: "net", Gateway: "gw1", Label: 1000}, codes.AlreadyExists, "label 1000"},
			{&v1.Endpoint{Id: "x", Network: "net", Gateway: "gw1", Mac: "zz"}, codes.InvalidArgument, "MAC"},
			{&v1.Endpoint{Id: "x", Network: "nope", Gateway: "gw1"}, codes.NotFound, "network"},
			{&v1.Endpoint{Id: "x", Network: "net", Gateway: "nope"}, codes.NotFound, "gateway"},
			{&v1.Endpoint{Id: "", Network: "net", Gateway: "gw1"}, codes.InvalidArgument, "empty"},
		} {
			_, err := c.ep.CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: tc.e})
			wantCode(t, err, tc.code, tc.want)
		}
		_, err = c.ep.CreateEndpoint(ctx, &v1.CreateEndpointRequest{})
		wantCode(t, err, codes.InvalidArgument, "")
		// Failed creates wrote nothing and leaked no address.
		if _, err := c.ep.GetEndpoint(ctx, &v1.GetEndpointRequest{Id: "x"}); status.Code(err) != codes.NotFound {
			t.Fatalf("a failed create left endpoint x: %v", err)
		}
		addrs, _, _ := st.List(ctx, "ipam/net/addrs/")
		if len(addrs) != 5 { // pod-a (2), pod-b (2), vm (1)
			t.Fatalf("%d addresses in the store, want 5", len(addrs))
		}

		// Label update moves the label index; state follows the label.
		a.Label = 1000
		_, err = c.ep.UpdateEndpoint(ctx, &v1.UpdateEndpointRequest{Endpoint: a})
		wantCode(t, err, codes.AlreadyExists, "label 1000")
		a.Label = 1001
		ua, err := c.ep.UpdateEndpoint(ctx, &v1.UpdateEndpointRequest{Endpoint: a})
		if err != nil || ua.State != v1.EndpointState_ENDPOINT_STATE_ACTIVE {
			t.Fatalf("label update: %+v %v", ua, err)
		}

		_, err = c.net.DeleteNetwork(ctx, &v1.NameRequest{Name: "net"})
		wantCode(t, err, codes.FailedPrecondition, "endpoints")
		_, err = c.gw.DeleteGateway(ctx, &v1.NameRequest{Name: "gw1"})
		wantCode(t, err, codes.FailedPrecondition, "endpoints")

		ip, _ := c.ip.GetIpam(ctx, &v1.NameRequest{Name: "net"})
		if ip.Subnets[0].Used != 3 || len(ip.Subnets[0].Blocks) != 3 || ip.Subnets[0].Size != 254 {
			t.Fatalf("ipam status: %+v", ip.Subnets[0])
		}

		// Delete frees the address: the next endpoint on gw1 gets it back.
		if _, err := c.ep.DeleteEndpoint(ctx, &v1.GetEndpointRequest{Id: "pod-a"}); err != nil {
			t.Fatal(err)
		}
		_, err = c.ep.DeleteEndpoint(ctx, &v1.GetEndpointRequest{Id: "pod-a"})
		wantCode(t, err, codes.NotFound, "")
		c2, _ := c.ep.CreateEndpoint(ctx, ep("pod-c", "gw1"))
		if c2.Addresses[0] != "10.1.0.1" {
			t.Fatalf("freed address not reused: %v", c2.Addresses)
		}
		// Label 1001 was freed with pod-a.
		c2.Label = 1001
		if _, err := c.ep.UpdateEndpoint(ctx, &v1.UpdateEndpointRequest{Endpoint: c2}); err != nil {
			t.Fatalf("freed label: %v", err)
		}
		for _, id := range []string{"pod-b", "pod-c", "vm"} {
			if _, err := c.ep.DeleteEndpoint(ctx, &v1.GetEndpointRequest{Id: id}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.gw.DeleteGateway(ctx, &v1.NameRequest{Name: "gw1"}); err != nil {
			t.Fatal(err)
		}
		ip, _ = c.ip.GetIpam(ctx, &v1.NameRequest{Name: "net"})
		for _, b := range ip.Subnets[0].Blocks {
			if b.Gateway == "gw1" {
				t.Fatalf("deleted gateway still holds block %s", b.Prefix)
			}
		}
		if _, err := c.net.DeleteNetwork(ctx, &v1.NameRequest{Name: "net"}); err != nil {
			t.Fatal(err)
		}
		left, _, _ := st.List(ctx, "ipam/")
		if len(left) != 0 {
			t.Fatalf("IPAM keys left after the network was deleted: %v", left)
		}
	})
}

func TestPoolExhausted(t *testing.T) {
	backends(t, func(t *testing.T, open func(*testing.T) store.Store) {
		st := open(t)
		c := serveStore(t, st)
		ctx := context.Background()
		setup(t, c, "10.8.0.0/28")
		for i := 0; i < 14; i++ {
			if _, err := c.ep.CreateEndpoint(ctx, ep(fmt.Sprint("e", i), "gw1")); err != nil {
				t.Fatalf("endpoint %d: %v", i, err)
			}
		}
		_, err := c.ep.CreateEndpoint(ctx, ep("one-too-many", "gw1"))
		wantCode(t, err, codes.ResourceExhausted, "no free address")
		_, err = c.ep.CreateEndpoint(ctx, ep("other-gw", "gw2"))
		wantCode(t, err, codes.ResourceExhausted, "")
		if _, err := c.ep.GetEndpoint(ctx, &v1.GetEndpointRequest{Id: "one-too-many"}); status.Code(err) != codes.NotFound {
			t.Fatal("an exhausted create left an endpoint")
		}
	})
}

func TestWatchSnapshotChangesResume(t *testing.T) {
	backends(t, func(t *testing.T, open func(*testing.T) store.Store) {
		c := serveStore(t, open(t))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		setup(t, c, "10.1.0.0/24")
		c.ep.CreateEndpoint(ctx, ep("a", "gw1"))
		stream, err := c.ep.WatchEndpoints(ctx, &v1.WatchRequest{})
		if err != nil {
			t.Fatal(err)
		}
		next := func() *v1.EndpointEvent {
			t.Helper()
			ev, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			return ev
		}
		if ev := next(); ev.Type != v1.EventType_EVENT_TYPE_PUT || ev.Endpoint.Id != "a" {
			t.Fatalf("snapshot: %+v", ev)
		}
		synced := next()
		if synced.Type != v1.EventType_EVENT_TYPE_SYNCED {
			t.Fatalf("want SYNCED after the snapshot, got %+v", synced)
		}
		b, _ := c.ep.CreateEndpoint(ctx, ep("b", "gw2"))
		if ev := next(); ev.Type != v1.EventType_EVENT_TYPE_PUT || ev.Endpoint.Id != "b" || ev.Revision != b.Revision || len(ev.Endpoint.Addresses) != 1 {
			t.Fatalf("change: %+v", ev)
		}
		c.ep.DeleteEndpoint(ctx, &v1.GetEndpointRequest{Id: "a"})
		del := next()
		if del.Type != v1.EventType_EVENT_TYPE_DELETE || del.Endpoint.Id != "a" {
			t.Fatalf("delete: %+v", del)
		}
		// A watcher that saw revision b resumes with exactly the delete.
		resumed, _ := c.ep.WatchEndpoints(ctx, &v1.WatchRequest{FromRevision: b.Revision})
		ev, err := resumed.Recv()
		if err != nil || ev.Type != v1.EventType_EVENT_TYPE_DELETE || ev.Endpoint.Id != "a" || ev.Revision != del.Revision {
			t.Fatalf("resumed: %+v %v", ev, err)
		}
		neg, _ := c.ep.WatchEndpoints(ctx, &v1.WatchRequest{FromRevision: -1})
		_, err = neg.Recv()
		wantCode(t, err, codes.InvalidArgument, "negative")
	})
}

// Two controllers on one etcd: concurrent creates get unique addresses, and
// each sees the other's networks.
func TestTwoControllersShareEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	openEtcd := func() store.Store {
		s, err := etcd.Open(context.Background(), etcd.Options{Endpoints: []string{srv.Endpoint}, Namespace: "/shared/"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	c1, c2 := serveStore(t, openEtcd()), serveStore(t, openEtcd())
	ctx := context.Background()
	setup(t, c1, "10.1.0.0/22")
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]string{}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := c1
			if w%2 == 1 {
				c = c2
			}
			for i := 0; i < 20; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				e, err := c.ep.CreateEndpoint(ctx, ep(id, []string{"gw1", "gw2"}[i%2]))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if o, dup := seen[e.Addresses[0]]; dup {
					t.Errorf("%s given to %s and %s", e.Addresses[0], o, id)
				}
				seen[e.Addresses[0]] = id
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	l1, _ := c1.ep.ListEndpoints(ctx, &v1.ListEndpointsRequest{})
	l2, _ := c2.ep.ListEndpoints(ctx, &v1.ListEndpointsRequest{Network: "net"})
	if len(l1.Endpoints) != 160 || len(l2.Endpoints) != 160 {
		t.Fatalf("controllers see %d and %d endpoints, want 160", len(l1.Endpoints), len(l2.Endpoints))
	}
}

// Random, mostly malformed requests never crash the controller nor leave
// partial state: every endpoint in the store has its addresses and vice versa.
func TestMalformedRequests(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c := serveStore(t, st)
	ctx := context.Background()
	setup(t, c, "10.1.0.0/26", "fd00::/120")
	rng := rand.New(rand.NewPCG(7, 7))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	junk := []string{"", "net", "gw1", "gw2", "x y", strings.Repeat("a", 300), "10.1.0.5", "fd00::5", "::", "10.1.0.0/24", "\x00", "é", "-lead", "a:b"}
	for i := 0; i < 1500; i++ {
		switch rng.IntN(6) {
		case 0:
			c.net.CreateNetwork(ctx, &v1.CreateNetworkRequest{Network: &v1.VirtualNetwork{Name: pick(junk...), Subnets: []string{pick(junk...), pick(junk...)},
				ImportRouteTargets: []string{pick("target:1:2", "x", "1:99999999999")}, Encapsulations: []v1.Encapsulation{v1.Encapsulation(rng.IntN(6))},
				Ipv4BlockSize: uint32(rng.IntN(40)), Ipv6BlockSize: uint32(rng.IntN(140))}})
		case 1, 2:
			c.ep.CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: fmt.Sprint(pick(junk...), rng.IntN(50)), Network: pick("net", "net", "nope", ""),
				Gateway: pick("gw1", "gw2", "", "zz"), Addresses: []string{pick(junk...)}[:rng.IntN(2)], Label: uint32(rng.IntN(40)), Mac: pick("", "02:00:00:00:00:01", "bad")}})
		case 3:
			c.ep.DeleteEndpoint(ctx, &v1.GetEndpointRequest{Id: fmt.Sprint(pick(junk...), rng.IntN(50))})
		case 4:
			c.gw.CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{Name: pick(junk...), UnderlayAddress: pick(junk...), State: v1.GatewayState(rng.IntN(6))}})
		case 5:
			c.ep.UpdateEndpoint(ctx, &v1.UpdateEndpointRequest{Endpoint: &v1.Endpoint{Id: fmt.Sprint(pick(junk...), rng.IntN(50)), Label: uint32(rng.IntN(1 << 21))}})
		}
	}
	eps, err := c.ep.ListEndpoints(ctx, &v1.ListEndpointsRequest{Network: "net"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, e := range eps.Endpoints {
		for _, a := range e.Addresses {
			want[a] = e.Id
		}
	}
	kvs, _, _ := st.List(ctx, "ipam/net/addrs/")
	if len(kvs) != len(want) {
		t.Fatalf("%d addresses in IPAM, %d held by endpoints", len(kvs), len(want))
	}
	for _, kv := range kvs {
		a := strings.TrimPrefix(kv.Key, "ipam/net/addrs/")
		if want[a] != string(kv.Value) {
			t.Fatalf("IPAM says %s belongs to %s, endpoints say %q", a, kv.Value, want[a])
		}
	}
	t.Logf("%d endpoints survived the random requests", len(eps.Endpoints))
}
