package main

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	gw := overlaytest.NewNS(t, "iofagent")
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
	if rc := run([]string{"--state", state, "--once", "--netns", gw.Path}, &log); rc != 0 {
		t.Fatalf("--once exit %d:\n%s", rc, log.String())
	}
	if d := gw.Dump(t); !strings.Contains(d, "route 10.1.0.1 dev veth1 table 7001 scope link") ||
		!strings.Contains(d, "rule 7000: from all iif veth1 lookup 7001 proto 165") {
		t.Fatalf("after --once:\n%s\nlog:\n%s", d, log.String())
	}
	if rc := run([]string{"--cleanup", "--netns", gw.Path}, &log); rc != 0 {
		t.Fatalf("--cleanup exit %d:\n%s", rc, log.String())
	}
	if d := gw.Dump(t); d != "" {
		t.Fatalf("after --cleanup:\n%s", d)
	}
}
