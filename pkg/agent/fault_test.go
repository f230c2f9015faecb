package agent_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/pkg/cni"
)

// agentProc is an agent running as a child process of the test binary.
type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startAgentProc(t *testing.T, cc childConfig) *agentProc {
	t.Helper()
	js, _ := json.Marshal(cc)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(js))
	cmd.Stderr = os.Stderr
	// No Pdeathsig: it fires when the forking OS thread exits, and the
	// namespace helpers retire threads. t.Cleanup kills the process.
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &agentProc{cmd: cmd, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				close(ready)
			}
		}
		cmd.Wait()
	}()
	t.Cleanup(p.kill)
	select {
	case <-ready:
	case <-p.done:
		t.Fatal("agent process exited before it was ready")
	case <-time.After(30 * time.Second):
		t.Fatal("agent process not ready within 30s")
	}
	return p
}

func (p *agentProc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// killExec runs plugins like libcni does, and SIGKILLs the iotfabric plugin
// after a delay when one is set.
type killExec struct {
	invoke.RawExec
	version.PluginDecoder
	mu    sync.Mutex
	delay time.Duration
}

func (k *killExec) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	k.mu.Lock()
	delay := k.delay
	k.mu.Unlock()
	if delay == 0 || filepath.Base(path) != "iotfabric" {
		return k.RawExec.ExecPlugin(ctx, path, stdin, environ)
	}
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = environ
	cmd.Stdin = strings.NewReader(string(stdin))
	var out strings.Builder
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	t := time.AfterFunc(delay, func() { cmd.Process.Signal(syscall.SIGKILL) })
	defer t.Stop()
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("plugin: %w (stdout %q)", err, out.String())
	}
	return []byte(out.String()), nil
}

func faultRounds() int {
	if n, err := strconv.Atoi(os.Getenv("IOTFABRIC_FAULT_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 200
}

// TestSIGKILLDuringAdd kills the plugin or the agent at a random moment of
// an ADD, many times (IOTFABRIC_FAULT_ROUNDS, default 200), restarting the agent after each kill of it. The runtime's view
// (ADDs that succeeded) is then given to GC: afterwards no address, label or
// veth is leaked, none is held twice, and every surviving pod has the
// address the agent holds for it.
func TestSIGKILLDuringAdd(t *testing.T) {
	netnstest.RequireRoot(t)
	ctx := context.Background()
	ctl := fabrictest.StartController(t)
	api := ctl.Dial()
	createNetwork(t, api, "red", "10.2.0.0/16")
	gwNS := netnstest.New(t, "iofgw")
	dir := t.TempDir()
	cc := childConfig{Gateway: "gw-f", Underlay: "192.0.2.9", StateDir: filepath.Join(dir, "state"), Netns: gwNS.Path(),
		Socket: filepath.Join(dir, "cni.sock"), Controllers: []string{ctl.Addr}}
	proc := startAgentProc(t, cc)

	kx := &killExec{}
	conf := libcni.NewCNIConfigWithCacheDir([]string{pluginDir}, filepath.Join(dir, "cache"), kx)
	list, err := libcni.NetworkConfFromBytes(fmt.Appendf(nil, `{"cniVersion": "1.1.0", "name": "iotfabric", "plugins": [
	  {"type": "iotfabric", "socket": %q, "network": "red", "timeoutSeconds": 5}]}`, cc.Socket))
	if err != nil {
		t.Fatal(err)
	}
	type pod struct {
		id  string
		ns  *netnstest.NS
		res *current.Result
	}
	var valid []pod
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(time.Now().UnixNano())))
	rounds := faultRounds()
	var agentKills, pluginKills, survived int
	for i := range rounds {
		p := pod{id: fmt.Sprintf("f%d", i), ns: netnstest.New(t, "iofpod")}
		rt := &libcni.RuntimeConf{ContainerID: p.id, NetNS: p.ns.Path(), IfName: "eth0"}
		delay := time.Duration(rng.IntN(25000)) * time.Microsecond
		killAgent := rng.IntN(2) == 0
		var r types.Result
		if killAgent {
			done := make(chan error, 1)
			go func() {
				var err error
				r, err = conf.AddNetworkList(ctx, list, rt)
				done <- err
			}()
			time.Sleep(delay) // the kill lands at a random point of the ADD
			proc.kill()
			agentKills++
			err = <-done
			proc = startAgentProc(t, cc)
		} else {
			kx.mu.Lock()
			kx.delay = delay + time.Microsecond
			kx.mu.Unlock()
			r, err = conf.AddNetworkList(ctx, list, rt)
			kx.mu.Lock()
			kx.delay = 0
			kx.mu.Unlock()
			pluginKills++
		}
		if err == nil {
			survived++
			p.res, _ = current.NewResultFromResult(r)
			valid = append(valid, p)
		} else if rng.IntN(2) == 0 {
			// A runtime usually calls DEL after a failed ADD; sometimes it
			// does not (it crashed too): GC must cover that.
			if err := conf.DelNetworkList(ctx, list, rt); err != nil {
				t.Fatalf("DEL after a failed ADD: %v", err)
			}
		}
	}
	t.Logf("%d rounds: %d agent kills, %d plugin kills, %d ADDs completed anyway", rounds, agentKills, pluginKills, survived)

	var gc libcni.GCArgs
	for _, p := range valid {
		gc.ValidAttachments = append(gc.ValidAttachments, types.GCAttachment{ContainerID: p.id, IfName: "eth0"})
	}
	if err := conf.GCNetworkList(ctx, list, &gc); err != nil {
		t.Fatalf("GC: %v", err)
	}

	// The agent holds exactly the valid pods, each with a distinct address
	// and label, the one the pod has.
	client := &cni.Client{Path: cc.Socket}
	held := map[string]string{}
	labels := map[uint32]string{}
	var hostIfs []string
	for _, p := range valid {
		resp, err := client.Do(ctx, &cni.Request{Op: cni.OpCheck, ContainerID: p.id, IfName: "eth0"})
		if err != nil {
			t.Fatalf("valid pod %s unknown to the agent after GC: %v", p.id, err)
		}
		ep := resp.Endpoint
		for _, a := range ep.Addresses {
			if other, dup := held[a.String()]; dup {
				t.Fatalf("address %s held by %s and %s", a, other, p.id)
			}
			held[a.String()] = p.id
		}
		if other, dup := labels[ep.Label]; dup {
			t.Fatalf("label %d held by %s and %s", ep.Label, other, p.id)
		}
		labels[ep.Label] = p.id
		if got := p.res.IPs[0].Address.IP.String(); got != ep.Addresses[0].String() {
			t.Fatalf("pod %s has %s, the agent holds %s", p.id, got, ep.Addresses[0])
		}
		hostIfs = append(hostIfs, ep.HostIf)
	}
	gcResp, err := client.Do(ctx, &cni.Request{Op: cni.OpGC, Valid: gc2cni(gc)})
	if err != nil {
		t.Fatal(err)
	}
	if len(gcResp.Released) != 0 || len(gcResp.Kept) != len(valid) {
		t.Fatalf("after GC the agent still had %d endpoints to release and keeps %d, want 0 and %d", len(gcResp.Released), len(gcResp.Kept), len(valid))
	}
	// No veth is left in the gateway but the valid pods'.
	links, _ := gwNS.Handle().LinkList()
	var left []string
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, cni.HostIfPrefix) {
			left = append(left, l.Attrs().Name)
		}
	}
	slices.Sort(left)
	slices.Sort(hostIfs)
	if !slices.Equal(left, hostIfs) {
		t.Fatalf("veths in the gateway %v, want the valid pods' %v", left, hostIfs)
	}
}

func gc2cni(gc libcni.GCArgs) []cni.Attachment {
	var out []cni.Attachment
	for _, a := range gc.ValidAttachments {
		out = append(out, cni.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	return out
}
