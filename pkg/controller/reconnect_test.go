package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/store/etcd"
	"github.com/iotfabric/iotfabric/pkg/store/etcd/etcdtest"
	"github.com/iotfabric/iotfabric/pkg/store/storetest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// What a gateway's agent does when it connects (again) to a controller:
// Register, a full report of its endpoints, and its route stream.

var reconnectAgent = Agent{Architecture: "arm64", Version: "1.2.3", KernelFeatures: []string{"mpls", "vrf"}}

// reconnectNet is the network of the reconnect tests' endpoints.
const reconnectNet = "n"

func reconnectGateway(i int) *v1.Gateway {
	return &v1.Gateway{Name: fmt.Sprint("gw-", i), UnderlayAddress: fmt.Sprintf("192.0.%d.%d", 2+i/250, 1+i%250)}
}

// connectGateway registers gateway i through c for the first time and
// creates its n endpoints in reconnectNet with a full report, as a new
// agent does; it returns the endpoints as the agent then reports them.
func connectGateway(ctx context.Context, c *Controller, i, n int) ([]*v1.AgentEndpoint, error) {
	g := reconnectGateway(i)
	if _, err := c.Register(ctx, g, reconnectAgent); err != nil {
		return nil, err
	}
	var eps []*v1.AgentEndpoint
	for j := range n {
		eps = append(eps, &v1.AgentEndpoint{Id: fmt.Sprintf("%s-pod-%d", g.Name, j), Network: reconnectNet, Label: uint32(100 + j),
			Mac: fmt.Sprintf("02:00:00:%02x:%02x:%02x", i>>8&0xff, i&0xff, j)})
	}
	res, _, err := c.ReportEndpoints(ctx, g.Name, eps, true, nil)
	if err != nil {
		return nil, err
	}
	for j, r := range res {
		if r.Err != nil {
			return nil, r.Err
		}
		eps[j].Addresses = r.Endpoint.Addresses // what the agent holds from now on
	}
	return eps, nil
}

// reconnect is the agent's reconnection of gateway i with the endpoints eps,
// step by step; it returns the registration.
func reconnect(ctx context.Context, c *Controller, i int, eps []*v1.AgentEndpoint, stream string) (Registration, error) {
	g := reconnectGateway(i)
	r, err := c.Register(ctx, g, reconnectAgent)
	if err != nil {
		return r, fmt.Errorf("register: %w", err)
	}
	res, deleted, err := c.ReportEndpoints(ctx, g.Name, eps, true, nil)
	if err != nil {
		return r, fmt.Errorf("report: %w", err)
	}
	for _, x := range res {
		if x.Err != nil {
			return r, fmt.Errorf("report %s: %w", x.ID, x.Err)
		}
	}
	if deleted != 0 {
		return r, fmt.Errorf("report deleted %d endpoints", deleted)
	}
	if err := c.OpenGatewayStream(ctx, g.Name, stream); err != nil {
		return r, fmt.Errorf("stream: %w", err)
	}
	return r, nil
}

func newReconnectNet(t testing.TB, c *Controller) {
	t.Helper()
	must[*v1.VirtualNetwork](t)(c.CreateNetwork(context.Background(), &v1.VirtualNetwork{Name: reconnectNet, Subnets: []string{"10.64.0.0/10"}}))
}

// reconnectCost is what each step of a reconnection of a known gateway with
// 2 unchanged endpoints (one block) costs the store.
var reconnectCost = []struct {
	step string
	want storetest.Ops
}{
	// The gateway once, its block index and its one block.
	{"register", storetest.Ops{Gets: 2, Ranges: 1}},
	// Its label and pending indexes and its 2 endpoints (the gateway is
	// not read: it has endpoints, so it exists).
	{"full report", storetest.Ops{Gets: 2, Ranges: 2}},
	// The gateway, then its marker and its record in one transaction.
	{"stream open", storetest.Ops{Gets: 1, Txns: 1, Writes: 2}},
}

// checkReconnectCost reconnects gateway i through c step by step and checks
// what each step cost the store cs under c.
func checkReconnectCost(t *testing.T, c *Controller, cs *storetest.Counting, i int, eps []*v1.AgentEndpoint, stream string) {
	t.Helper()
	ctx := context.Background()
	g := reconnectGateway(i)
	before := must[*v1.Gateway](t)(c.GetGateway(ctx, g.Name))
	cs.Reset()
	steps := []func() error{
		func() error {
			r, err := c.Register(ctx, g, reconnectAgent)
			if err == nil && (!proto.Equal(r.Gateway, before) || !proto.Equal(r.Prev, before) || len(r.Blocks) != 1) {
				err = fmt.Errorf("registration %v (prev %v, %d blocks), want the gateway as it was, %v, and its block", r.Gateway, r.Prev, len(r.Blocks), before)
			}
			return err
		},
		func() error {
			res, _, err := c.ReportEndpoints(ctx, g.Name, eps, true, nil)
			for _, x := range res {
				if err == nil && (x.Err != nil || x.Endpoint == nil) {
					err = fmt.Errorf("endpoint %s: %v", x.ID, x.Err)
				}
			}
			return err
		},
		func() error { return c.OpenGatewayStream(ctx, g.Name, stream) },
	}
	for k, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("%s: %v", reconnectCost[k].step, err)
		}
		got, trace := cs.Reset()
		if got != reconnectCost[k].want {
			t.Errorf("%s of a known gateway cost %v, want %v:\n\t%s", reconnectCost[k].step, got, reconnectCost[k].want, strings.Join(trace, "\n\t"))
		}
		if k == 0 {
			if n := slices.Index(trace, "get "+keys.Gateway(g.Name)); n < 0 || slices.Contains(trace[n+1:], "get "+keys.Gateway(g.Name)) {
				t.Errorf("register read the gateway's record other than once:\n\t%s", strings.Join(trace, "\n\t"))
			}
		}
	}
	after := must[*v1.Gateway](t)(c.GetGateway(ctx, g.Name))
	if after.State != v1.GatewayState_GATEWAY_STATE_UP || !after.LastSeen.AsTime().After(before.LastSeen.AsTime()) {
		t.Errorf("after its stream opened the gateway is %v, last seen %v (before: %v)", after.State, after.LastSeen.AsTime(), before.LastSeen.AsTime())
	}
}

// A gateway that reconnects with nothing changed costs one read of its
// record and of its blocks to register (no write, last_seen kept), reads
// of its indexes and endpoints only for the full report of its 2 unchanged
// endpoints, and one read and one transaction to open its route stream.
func TestReconnectStoreOps(t *testing.T) {
	cs := storetest.NewCounting(openBolt(t))
	c := New(cs, Config{})
	newReconnectNet(t, c)
	ctx := context.Background()
	eps := must[[]*v1.AgentEndpoint](t)(connectGateway(ctx, c, 1, 2))
	if err := c.OpenGatewayStream(ctx, "gw-1", keys.StreamID("self", 1)); err != nil {
		t.Fatal(err)
	}
	checkReconnectCost(t, c, cs, 1, eps, keys.StreamID("self", 2))

	// A full report for a gateway that does not exist, or with no name (a
	// listing by gateway "" would be every endpoint), is refused and
	// deletes nothing.
	for _, gw := range []string{"", "gw-2", "gw-1/"} {
		if _, n, err := c.ReportEndpoints(ctx, gw, nil, true, nil); !errors.Is(err, model.ErrNotFound) || n != 0 {
			t.Errorf("full report of gateway %q: %d deleted, %v; want not found", gw, n, err)
		}
	}
	if all, _, err := c.ListEndpoints(ctx, "", ""); err != nil || len(all) != 2 {
		t.Errorf("%d endpoints after the refused reports (%v), want 2", len(all), err)
	}
}

// A registration that changes the gateway writes it once, conditionally,
// and says what it replaced: a new underlay address, another agent. A
// gateway that is down stays down (its route stream marks it up) and is
// not written.
func TestRegisterWritesChanges(t *testing.T) {
	cs := storetest.NewCounting(openBolt(t))
	c := New(cs, Config{})
	ctx := context.Background()
	g := reconnectGateway(1)
	r := must[Registration](t)(c.Register(ctx, g, reconnectAgent))
	if r.Prev != nil || r.Gateway.State != v1.GatewayState_GATEWAY_STATE_UP || r.Gateway.LastSeen == nil {
		t.Fatalf("first registration: %v, prev %v", r.Gateway, r.Prev)
	}
	seen := r.Gateway.LastSeen.AsTime()
	register := func(what string, g *v1.Gateway, a Agent) Registration {
		t.Helper()
		cs.Reset()
		r, err := c.Register(ctx, g, a)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ops, trace := cs.Reset(); ops.Txns != 1 || ops.Writes != 1 {
			t.Errorf("%s cost %v, want one write:\n\t%s", what, ops, strings.Join(trace, "\n\t"))
		}
		if !r.Gateway.LastSeen.AsTime().After(seen) {
			t.Errorf("%s: last seen %v, not after %v", what, r.Gateway.LastSeen.AsTime(), seen)
		}
		seen = r.Gateway.LastSeen.AsTime()
		return r
	}
	moved := proto.Clone(g).(*v1.Gateway)
	moved.UnderlayAddress = "198.51.100.7"
	if r := register("new underlay", moved, reconnectAgent); r.Prev.UnderlayAddress != g.UnderlayAddress || r.Gateway.UnderlayAddress != moved.UnderlayAddress {
		t.Errorf("new underlay: %s, was %s", r.Gateway.UnderlayAddress, r.Prev.UnderlayAddress)
	}
	newer := reconnectAgent
	newer.Version = "1.2.4"
	if r := register("new agent version", moved, newer); r.Gateway.AgentVersion != "1.2.4" {
		t.Errorf("agent version %q", r.Gateway.AgentVersion)
	}
	gre := proto.Clone(moved).(*v1.Gateway)
	gre.Encapsulations = []v1.Encapsulation{v1.Encapsulation_ENCAPSULATION_MPLS_O_GRE}
	if r := register("other encapsulations", gre, newer); !slices.Equal(r.Gateway.Encapsulations, gre.Encapsulations) {
		t.Errorf("encapsulations %v", r.Gateway.Encapsulations)
	}
	// Down: its last stream ended.
	if err := c.OpenGatewayStream(ctx, g.Name, "self-1"); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseGatewayStream(ctx, g.Name, "self-1", v1.GatewayLinkReason_GATEWAY_LINK_REASON_STREAM_ENDED); err != nil {
		t.Fatal(err)
	}
	seen = must[*v1.Gateway](t)(c.GetGateway(ctx, g.Name)).LastSeen.AsTime()
	hist, _ := c.GatewayLinks(g.Name)
	cs.Reset()
	r = must[Registration](t)(c.Register(ctx, gre, newer))
	if ops, trace := cs.Reset(); ops.Txns != 0 || r.Gateway.State != v1.GatewayState_GATEWAY_STATE_DOWN || !r.Gateway.LastSeen.AsTime().Equal(seen) {
		t.Errorf("registration of a down gateway: %v, last seen %v (want down, %v kept), cost %v:\n\t%s", r.Gateway.State, r.Gateway.LastSeen.AsTime(), seen, ops, strings.Join(trace, "\n\t"))
	}
	if ev, _ := c.GatewayLinks(g.Name); len(ev) != len(hist) {
		t.Errorf("link history after a down gateway registered: %v (before: %v)", ev, hist)
	}
	// Its stream marks it up.
	if err := c.OpenGatewayStream(ctx, g.Name, "self-2"); err != nil {
		t.Fatal(err)
	}
	if st := must[*v1.Gateway](t)(c.GetGateway(ctx, g.Name)).State; st != v1.GatewayState_GATEWAY_STATE_UP {
		t.Errorf("gateway %v after its stream opened", st)
	}
}

// Two controllers on one etcd: a gateway registering through both at once
// is created once (the other reads it and writes nothing); both register it
// again at once without a write; a controller started again (a new store
// client and controller, as after a SIGKILL) serves the gateway's
// reconnection at the cost measured on bbolt; registrations that change the
// record through both at once each write conditionally and the store ends
// with one of them.
func TestReconnectTwoControllersEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	open := func() (*Controller, *storetest.Counting) {
		st, err := etcd.Open(context.Background(), etcd.Options{Endpoints: []string{srv.Endpoint}, Namespace: "/reconnect/"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		cs := storetest.NewCounting(st)
		return New(cs, Config{}), cs
	}
	a, as := open()
	b, bs := open()
	newReconnectNet(t, a)
	ctx := context.Background()
	g := reconnectGateway(7)
	both := func(what string, ga, gb *v1.Gateway) (Registration, Registration, storetest.Ops) {
		t.Helper()
		as.Reset()
		bs.Reset()
		var ra, rb Registration
		var ea, eb error
		var wg sync.WaitGroup
		wg.Go(func() { ra, ea = a.Register(ctx, ga, reconnectAgent) })
		wg.Go(func() { rb, eb = b.Register(ctx, gb, reconnectAgent) })
		wg.Wait()
		if ea != nil || eb != nil {
			t.Fatalf("%s: %v, %v", what, ea, eb)
		}
		oa, _ := as.Reset()
		ob, _ := bs.Reset()
		return ra, rb, oa.Add(ob)
	}
	ra, rb, ops := both("first registration", g, g)
	if (ra.Prev == nil) == (rb.Prev == nil) || ra.Gateway.Revision != rb.Gateway.Revision {
		t.Errorf("first registration through both: prev %v and %v, revisions %d and %d; want one created, the other reading it", ra.Prev, rb.Prev, ra.Gateway.Revision, rb.Gateway.Revision)
	}
	if ops.Txns-ops.Conflicts != 1 {
		t.Errorf("first registration through both committed %d transactions (%v), want 1 (the create)", ops.Txns-ops.Conflicts, ops)
	}
	rev := ra.Gateway.Revision
	ra, rb, ops = both("registration again", g, g)
	if ops.Txns != 0 || ops.Gets != 2 || ra.Gateway.Revision != rev || rb.Gateway.Revision != rev {
		t.Errorf("registration again through both: %v, revisions %d and %d (want %d); want no write", ops, ra.Gateway.Revision, rb.Gateway.Revision, rev)
	}

	// The gateway's endpoints and a stream from each controller.
	eps := must[[]*v1.AgentEndpoint](t)(connectGateway(ctx, a, 7, 2))
	for i, c := range []*Controller{a, b} {
		if err := c.OpenGatewayStream(ctx, g.Name, keys.StreamID(fmt.Sprint("ctl", i), 1)); err != nil {
			t.Fatal(err)
		}
	}
	// a is killed; started again, it serves the gateway's reconnection.
	a, as = open()
	checkReconnectCost(t, a, as, 7, eps, keys.StreamID("ctl0b", 1))

	// Changes through both at once: each write is conditional, so the
	// later one replaced the earlier one (it read it, or conflicted and
	// read it again), and the store holds the later one.
	ga, gb := proto.Clone(g).(*v1.Gateway), proto.Clone(g).(*v1.Gateway)
	ga.UnderlayAddress, gb.UnderlayAddress = "198.51.100.1", "198.51.100.2"
	ra, rb, ops = both("moved through both", ga, gb)
	cur := must[*v1.Gateway](t)(b.GetGateway(ctx, g.Name))
	first, last := ra, rb
	if ra.Gateway.Revision > rb.Gateway.Revision {
		first, last = rb, ra
	}
	if ops.Txns-ops.Conflicts != 2 || first.Prev.UnderlayAddress != g.UnderlayAddress || last.Prev.Revision != first.Gateway.Revision ||
		last.Gateway.Revision != cur.Revision || last.Gateway.UnderlayAddress != cur.UnderlayAddress {
		t.Errorf("moved through both (%v): first %s replacing %s, then %s at %d replacing %s at %d; the store holds %s at %d",
			ops, first.Gateway.UnderlayAddress, first.Prev.UnderlayAddress, last.Gateway.UnderlayAddress, last.Gateway.Revision,
			last.Prev.UnderlayAddress, last.Prev.Revision, cur.UnderlayAddress, cur.Revision)
	}
}
