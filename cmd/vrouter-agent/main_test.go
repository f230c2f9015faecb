package main

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

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

// syncBuffer is a log sink the agent and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestSIGTERMLeavesDataPlane(t *testing.T) {
	gw := overlaytest.NewNS(t, "iofagent")
	overlaytest.Pod(t, gw, "veth1", netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("169.254.1.1"))
	state := filepath.Join(t.TempDir(), "state.yaml")
	doc := "networks:\n- name: red\n  table: 7001\n  endpoints:\n  - {interface: veth1, address: 10.1.0.1, label: 1001}\n"
	if err := os.WriteFile(state, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	var log syncBuffer
	rc := make(chan int, 1)
	go func() { rc <- run([]string{"--state", state, "--netns", gw.Path}, &log) }()
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
	if d := gw.Dump(t); !strings.Contains(d, "route 10.1.0.1 dev veth1 table 7001 scope link") {
		t.Fatalf("data plane gone after SIGTERM:\n%s", d)
	}
}
