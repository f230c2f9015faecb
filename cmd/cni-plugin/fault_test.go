package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/iotfabric/iotfabric/internal/netnstest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// conflistNet is the plugin's configuration for network.
func (e *env) conflistNet(network string) *libcni.NetworkConfigList {
	e.t.Helper()
	js := fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "iotfabric", "plugins": [
	  {"type": "iotfabric", "socket": %q, "network": %q}]}`, e.sock, network)
	l, err := libcni.NetworkConfFromBytes([]byte(js))
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

func (e *env) rtIf(id, ifName string, pod *netnstest.NS) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: pod.Path(), IfName: ifName}
}

// addIf runs ADD for container id with interface ifName in pod.
func (e *env) addIf(id, ifName string, pod *netnstest.NS) (*current.Result, error) {
	r, err := e.cni.AddNetworkList(context.Background(), e.conflist(""), &libcni.RuntimeConf{ContainerID: id, NetNS: pod.Path(), IfName: ifName})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(r)
}

// invariant checks that every address the agent holds is recorded at the
// controller, for the same endpoint, exactly once; that no two endpoints at
// the controller share an address; and that the controller's IPAM counts as
// many addresses in use as its endpoints hold. It returns what is wrong.
func (e *env) invariant() error {
	ctx := context.Background()
	local, err := e.agent.Core().Endpoints(ctx)
	if err != nil {
		return err
	}
	list, err := e.api.EP.ListEndpoints(ctx, &v1.ListEndpointsRequest{})
	if err != nil {
		return err
	}
	owner := map[string]string{}
	var problems []string
	for _, ep := range list.GetEndpoints() {
		for _, a := range ep.GetAddresses() {
			if o, dup := owner[a]; dup {
				problems = append(problems, fmt.Sprintf("address %s recorded for both %s and %s", a, o, ep.GetId()))
			}
			owner[a] = ep.GetId()
		}
	}
	for _, ep := range local {
		for _, a := range ep.Addresses {
			if o := owner[a.String()]; o != ep.ID {
				problems = append(problems, fmt.Sprintf("gateway address %s of %s is recorded at the controller for %q", a, ep.ID, o))
			}
		}
	}
	conn, err := grpc.NewClient(e.ctl.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ipam, err := v1.NewIpamServiceClient(conn).GetIpam(ctx, &v1.NameRequest{Name: "red"})
	if err == nil {
		var used uint64
		for _, s := range ipam.GetSubnets() {
			used += s.GetUsed()
		}
		if used != uint64(len(owner)) {
			problems = append(problems, fmt.Sprintf("IPAM counts %d addresses in use, the endpoints hold %d", used, len(owner)))
		}
	} else {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// waitInvariant waits until the invariant holds (a reconnecting agent
// reports what it admitted meanwhile).
func (e *env) waitInvariant(timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := e.invariant()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func cniCode(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// The duplicate-address case: an ADD the controller refuses leaves no
// address on the gateway; endpoints created through the API never get an
// address a pod has; the gateway's network keeps admitting ADDs.
func TestFaultRefusedAddKeepsNoAddress(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.api.GW.CreateGateway(ctx, &v1.CreateGatewayRequest{Gateway: &v1.Gateway{Name: "gw-b", UnderlayAddress: "192.0.2.2"}}); err != nil {
		t.Fatal(err)
	}
	pod := netnstest.New(t, "iofpod")

	// 1. An interface name the controller would refuse in an endpoint id is
	// refused by the plugin, before any address is taken.
	_, err := e.addIf("c1", "eth@0", pod)
	if cniCode(err) != types.ErrInvalidEnvironmentVariables || !strings.Contains(err.Error(), "CNI_IFNAME") {
		t.Fatalf("ADD with interface eth@0: %v", err)
	}
	// 2. The controller refuses the endpoint (its id exists on another
	// gateway): the ADD fails with a CNI error and the address is released.
	if _, err := e.api.EP.CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: "c2:eth0", Network: "red", Gateway: "gw-b"}}); err != nil {
		t.Fatal(err)
	}
	_, err = e.addIf("c2", "eth0", pod)
	if cniCode(err) != types.ErrInvalidNetworkConfig || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("ADD of an endpoint the controller refuses: %v", err)
	}
	if l, _ := linkIn(t, pod, "eth0"); l != nil {
		t.Fatal("the refused ADD left eth0 in the pod")
	}
	if err := e.invariant(); err != nil {
		t.Fatal(err)
	}
	// 3. Endpoints created through the API on this gateway take addresses
	// of its block that the agent does not know: ADDs in between get other
	// addresses, and keep succeeding past the first blocks.
	var pods []string
	for i := range 40 {
		id := fmt.Sprintf("p%d", i)
		if _, err := e.addIf(id, "eth0", pod); err != nil {
			t.Fatalf("ADD %s: %v", id, err)
		}
		pods = append(pods, id)
		if err := e.delIfKeep(id, pod); err != nil {
			t.Fatal(err)
		}
		if _, err := e.api.EP.CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: fmt.Sprintf("api-%d", i), Network: "red", Gateway: "gw-a"}}); err != nil {
			t.Fatal(err)
		}
		if err := e.invariant(); err != nil {
			t.Fatalf("after %d ADDs: %v", i+1, err)
		}
	}
	// 4. While no controller is reachable the gateway admits pods from its
	// blocks; meanwhile nobody else can take their addresses through this
	// controller, and once it is back the agent's report reconciles them.
	e.ctl.Stop()
	for i := range 3 {
		id := fmt.Sprintf("h%d", i)
		if _, err := e.addIf(id, "eth0", pod); err != nil {
			t.Fatalf("headless ADD %s: %v", id, err)
		}
		if err := e.delIfKeep(id, pod); err != nil {
			t.Fatal(err)
		}
	}
	e.ctl.Start()
	e.waitInvariant(30 * time.Second)
	// API endpoints created on the gateway now do not collide either.
	for i := range 5 {
		if _, err := e.api.EP.CreateEndpoint(ctx, &v1.CreateEndpointRequest{Endpoint: &v1.Endpoint{Id: fmt.Sprintf("api-late-%d", i), Network: "red", Gateway: "gw-a"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.invariant(); err != nil {
		t.Fatal(err)
	}
	local, _ := e.agent.Core().Endpoints(ctx)
	if len(local) != len(pods)+3 {
		t.Fatalf("the agent holds %d endpoints, want %d", len(local), len(pods)+3)
	}
}

// delIfKeep removes the pod side of an ADD (so that the next ADD in the same
// pod namespace can use the name) without releasing the endpoint: the
// gateway keeps the address as it would for a running pod.
func (e *env) delIfKeep(id string, pod *netnstest.NS) error {
	l, h := linkIn(e.t, pod, "eth0")
	if l == nil {
		return fmt.Errorf("%s: no eth0 in the pod", id)
	}
	defer h.Close()
	return h.LinkDel(l)
}
