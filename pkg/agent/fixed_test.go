package agent

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	"github.com/iotfabric/iotfabric/pkg/cni"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// TestCoreFixedAddress: a pod's fixed address (iotfabric.io/ip) is taken
// from the gateway's block when it lies there; outside the network, or held
// by another endpoint, it is refused with CNI error 7. In a block the
// gateway does not hold: error 11 while no controller is live; with one, the
// block is taken tentatively, dropped again when the controller refuses the
// endpoint, and kept (persisted) once the endpoint is attached.
func TestCoreFixedAddress(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	ctx := context.Background()
	c, stop := runCore(t, dir)
	if err := c.SetNetwork(ctx, "red", NetInfo{Subnets: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}, BlockV4: 28}); err != nil {
		t.Fatal(err)
	}
	if err := c.AddBlocks(ctx, []Block{{Network: "red", Prefix: netip.MustParsePrefix("10.1.0.0/28")}}); err != nil {
		t.Fatal(err)
	}
	add := func(container, addr string) (cni.Endpoint, error) {
		return c.AddFixed(ctx, &cni.Request{Op: cni.OpAdd, ContainerID: container, IfName: "eth0", Network: "red",
			PodNamespace: "plant", PodName: container}, netip.MustParseAddr(addr))
	}
	code := func(err error) uint {
		var ce *cni.Error
		if errors.As(err, &ce) {
			return ce.Code
		}
		return 0
	}
	blocks := func() []Block {
		var out []Block
		_ = c.do(ctx, func(s *coreState) { out = slices.Clone(s.p.Blocks) })
		return out
	}

	ep, err := add("a", "10.1.0.9")
	if err != nil || len(ep.Addresses) != 1 || ep.Addresses[0] != netip.MustParseAddr("10.1.0.9") {
		t.Fatalf("fixed address in the gateway's block: %v %v", ep.Addresses, err)
	}
	if _, err := add("b", "10.1.0.9"); code(err) != cni.CodeInvalidNetworkConf {
		t.Fatalf("address held by another endpoint: %v", err)
	}
	if _, err := add("b", "10.2.0.1"); code(err) != cni.CodeInvalidNetworkConf {
		t.Fatalf("address outside the network: %v", err)
	}
	if _, err := add("b", "10.1.0.0"); code(err) != cni.CodeInvalidNetworkConf {
		t.Fatalf("the subnet's network address: %v", err)
	}
	if _, err := add("b", "10.1.0.40"); code(err) != cni.CodeTryAgainLater {
		t.Fatalf("another block with no controller live: %v", err)
	}
	if n := len(blocks()); n != 1 {
		t.Fatalf("blocks after the refusals: %v", blocks())
	}
	// A controller's stream is live: the block is taken tentatively.
	if err := c.applyRoutes(ctx, "ctl", &v1.GatewayRoutes{Kind: v1.GatewayRoutes_KIND_SNAPSHOT, Revision: 1}); err != nil {
		t.Fatal(err)
	}
	ep, err = add("b", "10.1.0.40")
	if err != nil || ep.Addresses[0] != netip.MustParseAddr("10.1.0.40") {
		t.Fatalf("fixed address in a block the controller may lease: %v %v", ep.Addresses, err)
	}
	if bs := blocks(); len(bs) != 2 || bs[1].Prefix != netip.MustParsePrefix("10.1.0.32/28") {
		t.Fatalf("blocks with the tentative one: %v", bs)
	}
	if ok, err := c.Refuse(ctx, "b:eth0", ep.Addresses, nil); err != nil || !ok {
		t.Fatalf("refuse: %v %v", ok, err)
	}
	if bs := blocks(); len(bs) != 1 {
		t.Fatalf("the refused endpoint's tentative block is still held: %v", bs)
	}
	ep, err = add("c", "10.1.0.41")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Attach(ctx, "c:eth0", "02:00:00:00:00:03"); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.Refuse(ctx, "c:eth0", ep.Addresses, nil); err != nil || !ok {
		t.Fatalf("refuse after attach: %v %v", ok, err)
	}
	if bs := blocks(); len(bs) != 2 {
		t.Fatalf("a block leased with an attached endpoint was dropped: %v", bs)
	}
	stop()
	c, stop = runCore(t, dir)
	defer stop()
	if bs := blocks(); len(bs) != 2 {
		t.Fatalf("blocks after a restart: %v", bs)
	}
}
