package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/iotfabric/iotfabric/internal/netnstest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// refuser makes the controller refuse, at random, the reports an agent
// sends for one new endpoint (its ADDs): as a quota would
// (RESOURCE_EXHAUSTED), a policy (INVALID_ARGUMENT), or an unreachable
// controller (UNAVAILABLE, which the agent takes for headless operation).
type refuser struct {
	on      atomic.Bool
	refused atomic.Int64

	mu  sync.Mutex // guards rnd (calls are concurrent)
	rnd *rand.Rand
}

func (r *refuser) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if q, ok := req.(*v1.ReportEndpointsRequest); ok && r.on.Load() && len(q.GetEndpoints()) == 1 && !q.GetFullSync() {
		n := r.draw()
		switch {
		case n < 8:
			r.refused.Add(1)
			return nil, status.Error(codes.ResourceExhausted, "endpoint quota of the gateway reached")
		case n < 14:
			r.refused.Add(1)
			return nil, status.Error(codes.InvalidArgument, "refused by policy")
		case n < 20:
			r.refused.Add(1)
			return nil, status.Error(codes.Unavailable, "controller unreachable")
		}
	}
	return h(ctx, req)
}

func (r *refuser) draw() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rnd.IntN(100)
}

// randomOps is how many operations TestRandomizedNoDuplicateAddress runs
// (IOTFABRIC_RANDOM_OPS, default 100).
func randomOps(t *testing.T) int {
	if s := os.Getenv("IOTFABRIC_RANDOM_OPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	return 100
}

// hardInvariant is what holds at every moment: no two endpoints at the
// controller share an address. (An address admitted headless is recorded
// when the agent reports it; until then an endpoint created meanwhile on the
// gateway may hold it, and the first full sync resolves it.)
func (e *env) hardInvariant() error {
	list, err := e.api.EP.ListEndpoints(context.Background(), &v1.ListEndpointsRequest{})
	if err != nil {
		return nil // the controller is stopped
	}
	owner := map[string]string{}
	for _, ep := range list.GetEndpoints() {
		for _, a := range ep.GetAddresses() {
			if o, dup := owner[a]; dup {
				return fmt.Errorf("address %s recorded for both %s and %s", a, o, ep.GetId())
			}
			owner[a] = ep.GetId()
		}
	}
	return nil
}

// Random CNI ADDs and DELs through libcni (random, partly hostile names),
// endpoints created and deleted through the API on the same gateway and on
// another, the controller refusing at random and stopped for a while: at
// every checkpoint every address in use on the gateway is recorded at the
// controller for its endpoint, exactly once, and IPAM counts equal the
// endpoints' addresses.
func TestRandomizedNoDuplicateAddress(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("IOTFABRIC_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (IOTFABRIC_SEED to replay)", seed)
	rnd := rand.New(rand.NewPCG(seed, 1))
	ref := &refuser{rnd: rand.New(rand.NewPCG(seed, 2))}
	e := newEnv(t, grpc.ChainUnaryInterceptor(ref.intercept))
	ctx := context.Background()
	if _, err := e.api.GW.CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{Name: "gw-b", UnderlayAddress: "192.0.2.2"}}); err != nil {
		t.Fatal(err)
	}
	hostileIfNames := []string{"eth@0", "a:b", "..", "é", strings.Repeat("i", 16), "x y", "", "eth0\t"}
	hostileNetworks := []string{"blue", "bad name", strings.Repeat("n", 300), "-x", "a/b"}
	pods := map[string]*netnstest.NS{} // container id -> its namespace
	type att struct{ id, ifn string }
	var added []att
	var apiEPs []string
	counts := map[string]int{}
	ref.on.Store(true)
	stopped := false
	checkpoint := func(i int) {
		t.Helper()
		on := ref.on.Swap(false)
		if stopped {
			e.ctl.Start()
			stopped = false
		}
		e.waitInvariant(30 * time.Second)
		ref.on.Store(on)
		counts["checkpoint"]++
	}
	n := randomOps(t)
	for i := range n {
		switch op := rnd.IntN(100); {
		case op < 45: // ADD
			id := fmt.Sprintf("c%d", rnd.IntN(2*n/3+1))
			if rnd.IntN(12) == 0 {
				id = strings.Repeat("x", 150+rnd.IntN(100)) // over 200 sometimes
			}
			ifn, network := []string{"eth0", "net1"}[rnd.IntN(2)], "red"
			if rnd.IntN(4) == 0 {
				ifn = hostileIfNames[rnd.IntN(len(hostileIfNames))]
			}
			if rnd.IntN(6) == 0 {
				network = hostileNetworks[rnd.IntN(len(hostileNetworks))]
			}
			pod := pods[id]
			if pod == nil {
				pod = netnstest.New(t, "iofpod")
				pods[id] = pod
			}
			l := e.conflistNet(network)
			_, err := e.cni.AddNetworkList(ctx, l, e.rtIf(id, ifn, pod))
			if err == nil {
				added = append(added, att{id, ifn})
				counts["add ok"]++
			} else {
				if cniCode(err) == 0 || len(err.Error()) > 2048 {
					t.Fatalf("ADD %.20s/%q in %.20q: not a short CNI error: %.300v", id, ifn, network, err)
				}
				counts[fmt.Sprintf("add refused %d", cniCode(err))]++
			}
		case op < 65: // DEL of a pod added before
			if len(added) == 0 {
				continue
			}
			k := rnd.IntN(len(added))
			a := added[k]
			if err := e.cni.DelNetworkList(ctx, e.conflistNet("red"), e.rtIf(a.id, a.ifn, pods[a.id])); err != nil {
				if stopped {
					continue
				}
				t.Fatalf("DEL %s/%s: %v", a.id, a.ifn, err)
			}
			added = append(added[:k], added[k+1:]...)
			counts["del"]++
		case op < 85: // API create, on this gateway or another, some ids a pod will want
			if stopped {
				continue
			}
			gw := []string{"gw-a", "gw-b"}[rnd.IntN(2)]
			id := fmt.Sprintf("api-%d", i)
			if rnd.IntN(3) == 0 {
				id = fmt.Sprintf("c%d:eth0", rnd.IntN(2*n/3+1))
			}
			if _, err := e.api.EP.CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: id, Network: "red", Gateway: gw}}); err == nil {
				apiEPs = append(apiEPs, id)
				counts["api create"]++
			}
		case op < 95: // API delete of one it created
			if stopped || len(apiEPs) == 0 {
				continue
			}
			k := rnd.IntN(len(apiEPs))
			e.api.EP.DeleteEndpoint(ctx, &v1.GetEndpointRequest{Id: apiEPs[k]})
			apiEPs = append(apiEPs[:k], apiEPs[k+1:]...)
			counts["api delete"]++
		case op < 97: // the controller goes away for a while
			if !stopped {
				e.ctl.Stop()
				stopped = true
				counts["controller stop"]++
			}
		default:
			checkpoint(i)
		}
		if err := e.hardInvariant(); err != nil {
			t.Fatalf("after operation %d: %v", i, err)
		}
		if i%30 == 29 {
			checkpoint(i)
		}
	}
	ref.on.Store(false)
	checkpoint(n)
	t.Logf("%d operations: %v; %d reports refused at random", n, counts, ref.refused.Load())
}
