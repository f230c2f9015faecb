package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/internal/syncbuf"
	"github.com/iotfabric/iotfabric/pkg/cni"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	"github.com/iotfabric/iotfabric/pkg/overlay/overlaytest"
)

func TestHelpAndBadFlags(t *testing.T) {
	var out bytes.Buffer
	if rc := run([]string{"--help"}, &out); rc != 0 {
		t.Fatalf("--help exit %d", rc)
	}
	for _, want := range []string{"--state", "--cleanup", "protocol 165", "SIGTERM"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not explain %q", want)
		}
	}
	if rc := run(nil, &out); rc != 2 {
		t.Errorf("no --state nor --cleanup: exit %d, want 2", rc)
	}
	if rc := run([]string{"--state", "x", "--log-level", "loud"}, &out); rc != 2 {
		t.Errorf("bad log level: exit %d, want 2", rc)
	}
}

func TestOnceAndCleanupInNamespace(t *testing.T) {
	gw := netnstest.New(t, "iofagent")
	overlaytest.Pod(t, gw, "veth1", netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("169.254.1.1"))
	state := filepath.Join(t.TempDir(), "state.yaml")
	err := os.WriteFile(state, []byte(`
networks:
- name: red
  table: 7001
  endpoints:
  - {interface: veth1, address: 10.1.0.1, label: 1001}
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	if rc := run([]string{"--state", state, "--once", "--netns", gw.Path()}, &log); rc != 0 {
		t.Fatalf("--once exit %d:\n%s", rc, log.String())
	}
	if d := overlaytest.Dump(t, gw); !strings.Contains(d, "route 10.1.0.1 dev veth1 table 7001 scope link") ||
		!strings.Contains(d, "rule 7000: from all iif veth1 lookup 7001 proto 165") {
		t.Fatalf("after --once:\n%s\nlog:\n%s", d, log.String())
	}
	if rc := run([]string{"--cleanup", "--netns", gw.Path()}, &log); rc != 0 {
		t.Fatalf("--cleanup exit %d:\n%s", rc, log.String())
	}
	if d := overlaytest.Dump(t, gw); d != "" {
		t.Fatalf("after --cleanup:\n%s", d)
	}
}

func TestSIGTERMLeavesDataPlane(t *testing.T) {
	gw := netnstest.New(t, "iofagent")
	overlaytest.Pod(t, gw, "veth1", netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("169.254.1.1"))
	state := filepath.Join(t.TempDir(), "state.yaml")
	doc := "networks:\n- name: red\n  table: 7001\n  endpoints:\n  - {interface: veth1, address: 10.1.0.1, label: 1001}\n"
	if err := os.WriteFile(state, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	var log syncbuf.Buffer
	rc := make(chan int, 1)
	go func() { rc <- run([]string{"--state", state, "--netns", gw.Path()}, &log) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(log.String(), "state applied") {
		if time.Now().After(deadline) {
			t.Fatalf("agent did not apply the state:\n%s", log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The agent's signal handler is installed before it applies anything.
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-rc:
		if code != 0 {
			t.Fatalf("exit %d after SIGTERM:\n%s", code, log.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not stop on SIGTERM")
	}
	if d := overlaytest.Dump(t, gw); !strings.Contains(d, "route 10.1.0.1 dev veth1 table 7001 scope link") {
		t.Fatalf("data plane gone after SIGTERM:\n%s", d)
	}
}

// TestCleanupRemovesPodVeths: the pods' host-side veths carry iotfabric's
// interface mark (cni.HostIfPrefix, under overlay.IfPrefix). The data plane
// programs them as endpoints and otherwise leaves them alone (a pod being set
// up is not a stray), veths named with the old prefix keep working as
// endpoints, and --cleanup removes both kinds and nothing else.
func TestCleanupRemovesPodVeths(t *testing.T) {
	if !strings.HasPrefix(cni.HostIfPrefix, overlay.IfPrefix) || cni.HostIfPrefix != overlay.EndpointIfPrefix ||
		cni.LegacyHostIfPrefix != overlay.LegacyEndpointIfPrefix {
		t.Fatalf("veth prefixes differ: cni %q/%q, overlay %q/%q/%q", cni.HostIfPrefix, cni.LegacyHostIfPrefix,
			overlay.IfPrefix, overlay.EndpointIfPrefix, overlay.LegacyEndpointIfPrefix)
	}
	gw := netnstest.New(t, "iofagent")
	podGW := netip.MustParseAddr("169.254.1.1")
	current, legacy := cni.HostIfName("c1:eth0"), cni.LegacyHostIfName("c2:eth0")
	overlaytest.Pod(t, gw, current, netip.MustParseAddr("10.1.0.1"), podGW)
	overlaytest.Pod(t, gw, legacy, netip.MustParseAddr("10.1.0.2"), podGW)
	pending := cni.HostIfName("c3:eth0") // a pod the plugin is still setting up
	gw.IP(t, "link", "add", pending, "type", "veth", "peer", "name", "pend0")
	gw.IP(t, "link", "add", "veth9", "type", "veth", "peer", "name", "veth9p") // the operator's
	state := filepath.Join(t.TempDir(), "state.yaml")
	doc := fmt.Sprintf("networks:\n- name: red\n  table: 7001\n  endpoints:\n  - {interface: %s, address: 10.1.0.1, label: 1001}\n  - {interface: %s, address: 10.1.0.2, label: 1002}\n", current, legacy)
	if err := os.WriteFile(state, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	for range 2 { // the second run adopts what the first made
		if rc := run([]string{"--state", state, "--once", "--netns", gw.Path()}, &log); rc != 0 {
			t.Fatalf("--once exit %d:\n%s", rc, log.String())
		}
	}
	d := overlaytest.Dump(t, gw)
	for _, want := range []string{"route 10.1.0.1 dev " + current + " table 7001 scope link", "route 10.1.0.2 dev " + legacy + " table 7001 scope link", "link " + pending} {
		if !strings.Contains(d, want) {
			t.Errorf("after --once, missing %q:\n%s", want, d)
		}
	}
	if rc := run([]string{"--cleanup", "--netns", gw.Path()}, &log); rc != 0 {
		t.Fatalf("--cleanup exit %d:\n%s", rc, log.String())
	}
	if d := overlaytest.Dump(t, gw); d != "" {
		t.Fatalf("after --cleanup:\n%s", d)
	}
	links := gw.IP(t, "-o", "link", "show")
	for _, gone := range []string{current, legacy, pending} {
		if strings.Contains(links, gone) {
			t.Errorf("--cleanup left veth %s:\n%s", gone, links)
		}
	}
	if !strings.Contains(links, "veth9") {
		t.Errorf("--cleanup removed the operator's veth9:\n%s", links)
	}
}
