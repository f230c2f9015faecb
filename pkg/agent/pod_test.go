package agent

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/iotfabric/iotfabric/pkg/cni"
)

// TestCorePodRef: the Kubernetes pod of an ADD (CNI_ARGS) is kept with the
// endpoint, survives a restart and is reported to the controllers; a pod
// re-created under the same name (new sandbox, new UID) is another endpoint,
// which the old sandbox's DEL leaves alone.
func TestCorePodRef(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	ctx := context.Background()
	c, stop := runCore(t, dir)
	if err := c.SetNetwork(ctx, "red", NetInfo{Subnets: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}, BlockV4: 28}); err != nil {
		t.Fatal(err)
	}
	if err := c.AddBlocks(ctx, []Block{{Network: "red", Prefix: netip.MustParsePrefix("10.1.0.0/28")}}); err != nil {
		t.Fatal(err)
	}
	add := func(container, uid string) {
		if _, err := c.Add(ctx, &cni.Request{Op: cni.OpAdd, ContainerID: container, IfName: "eth0", Network: "red",
			PodNamespace: "db", PodName: "pg-0", PodUID: uid}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Attach(ctx, container+":eth0", "02:00:00:00:00:01"); err != nil {
			t.Fatal(err)
		}
	}
	add("sandbox-1", "uid-1")
	stop()
	c, stop = runCore(t, dir)
	defer stop()
	add("sandbox-2", "uid-2") // the StatefulSet pod made again, before the old DEL
	if _, ok, err := c.Del(ctx, "sandbox-1:eth0"); err != nil || !ok {
		t.Fatalf("old DEL: %v %v", ok, err)
	}
	b, err := c.nextReport(ctx, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.endpoints) != 1 {
		t.Fatalf("reported %v", b.endpoints)
	}
	p := b.endpoints[0].GetPod()
	if p.GetNamespace() != "db" || p.GetName() != "pg-0" || p.GetUid() != "uid-2" || p.GetContainerId() != "sandbox-2" {
		t.Fatalf("pod %v", p)
	}
}
