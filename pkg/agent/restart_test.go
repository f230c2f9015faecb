package agent_test

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/pkg/cni"
)

// TestAgentRestartKeepsLabelsAndTraffic: two pods on one gateway ping each
// other (through the gateway's per-network table) while the agent is
// SIGKILLed and started again: no reply is lost, and labels and addresses
// stay what they were.
func TestAgentRestartKeepsLabelsAndTraffic(t *testing.T) {
	netnstest.RequireRoot(t)
	ctx := context.Background()
	ctl := fabrictest.StartController(t)
	createNetwork(t, ctl.Dial(), "red", "10.3.0.0/16")
	gwNS := netnstest.New(t, "iofgw")
	dir := t.TempDir()
	cc := childConfig{Gateway: "gw-r", Underlay: "192.0.2.10", StateDir: filepath.Join(dir, "state"), Netns: gwNS.Path(),
		Socket: filepath.Join(dir, "cni.sock"), Controllers: []string{ctl.Addr}}
	proc := startAgentProc(t, cc)
	conf := fabrictest.NewCNI(t, pluginDir).Conf
	list, err := libcni.NetworkConfFromBytes(fmt.Appendf(nil, `{"cniVersion": "1.1.0", "name": "iotfabric", "plugins": [
	  {"type": "iotfabric", "socket": %q, "network": "red"}]}`, cc.Socket))
	if err != nil {
		t.Fatal(err)
	}
	pod1, pod2 := netnstest.New(t, "iofpod"), netnstest.New(t, "iofpod")
	var res [2]*current.Result
	for i, p := range []string{pod1.Path(), pod2.Path()} {
		r, err := conf.AddNetworkList(ctx, list, &libcni.RuntimeConf{ContainerID: fmt.Sprintf("r%d", i), NetNS: p, IfName: "eth0"})
		if err != nil {
			t.Fatal(err)
		}
		res[i], _ = current.NewResultFromResult(r)
	}
	client := &cni.Client{Path: cc.Socket}
	snapshot := func() string {
		var s string
		for i := range 2 {
			resp, err := client.Do(ctx, &cni.Request{Op: cni.OpCheck, ContainerID: fmt.Sprintf("r%d", i), IfName: "eth0"})
			if err != nil {
				t.Fatal(err)
			}
			s += fmt.Sprintf("%s label %d %v; ", resp.Endpoint.ID, resp.Endpoint.Label, resp.Endpoint.Addresses)
		}
		return s
	}
	before := snapshot()

	dst := res[1].IPs[0].Address.IP.String()
	ping := pod1.Command("ping", "-n", "-q", "-c", "150", "-i", "0.01", "-W", "1", dst)
	out := make(chan string, 1)
	go func() { b, _ := ping.CombinedOutput(); out <- string(b) }()
	time.Sleep(300 * time.Millisecond) // the kill lands in the middle of the ping
	proc.kill()
	startAgentProc(t, cc)
	summary := <-out
	m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(summary)
	if m == nil || m[1] != m[2] || m[1] == "0" {
		t.Fatalf("ping across the agent restart: %s", summary)
	}
	if after := snapshot(); after != before {
		t.Fatalf("endpoints changed across the restart:\nbefore %s\nafter  %s", before, after)
	}
	// The restarted agent still serves: a third pod gets a new label.
	pod3 := netnstest.New(t, "iofpod")
	if _, err := conf.AddNetworkList(ctx, list, &libcni.RuntimeConf{ContainerID: "r2", NetNS: pod3.Path(), IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
}
