package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/internal/syncbuf"
	"github.com/iotfabric/iotfabric/pkg/agent"
	"github.com/iotfabric/iotfabric/pkg/overlay/overlaytest"
)

// hostileSeconds is how long a hostile run lasts: $IOTFABRIC_HOSTILE_SECONDS
// (make hostile-logs: 600), else 10.
func hostileSeconds() time.Duration {
	if n, err := strconv.Atoi(os.Getenv("IOTFABRIC_HOSTILE_SECONDS")); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return 10 * time.Second
}

// An agent whose desired state holds 5,000 routes it cannot program (their
// encapsulation needs a tunnel the kernel cannot make here, or a label
// route without MPLS) retries with a bounded log: the retry line says how
// many failed and shows the first few, cut short; it is a warning when the
// failures start (and every agent.FailureReminder while they last), a debug
// line at the other retries. It prints the log's bytes per minute at the
// default level (info); the bound is 1 MB/minute (10 MB in 10 minutes).
func TestUnprogrammableRoutesLogBounded(t *testing.T) {
	gw := netnstest.New(t, "iofhostile")
	overlaytest.Pod(t, gw, "veth1", netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("169.254.1.1"))
	var doc strings.Builder
	doc.WriteString("underlay: 192.0.2.1\nnetworks:\n- name: red\n  table: 7001\n  endpoints:\n  - {interface: veth1, address: 10.1.0.1, label: 1001}\n  routes:\n")
	const routes = 5000
	for i := 0; i < routes; i++ {
		fmt.Fprintf(&doc, "  - {prefix: 10.%d.%d.0/24, label: %d, remoteUnderlay: 192.0.%d.%d, encaps: [mplsoudp, mplsogre]}\n",
			2+i/256, i%256, 2000+i, 2+i/250, 1+i%250)
	}
	state := filepath.Join(t.TempDir(), "state.yaml")
	if err := os.WriteFile(state, []byte(doc.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	var log syncbuf.Buffer
	rc := make(chan int, 1)
	start := time.Now()
	go func() { rc <- run([]string{"--state", state, "--netns", gw.Path(), "--log-level", "debug"}, &log) }()
	d := hostileSeconds()
	time.Sleep(d)
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rc:
	case <-time.After(20 * time.Second):
		t.Fatal("agent did not stop on SIGTERM")
	}
	took := time.Since(start)
	// The retries are debug lines: counted, and left out of what the
	// default level writes.
	var b strings.Builder
	retries, warnings, longest := 0, 0, 0
	for _, l := range strings.Split(log.String(), "\n") {
		if strings.Contains(l, "data plane not fully programmed") {
			retries++
		}
		if strings.Contains(l, "level=DEBUG") {
			continue
		}
		if strings.Contains(l, "data plane not fully programmed") {
			warnings++
		}
		if l != "" {
			b.WriteString(l + "\n")
			longest = max(longest, len(l))
		}
	}
	out := b.String()
	perMinute := float64(len(out)) / took.Minutes()
	t.Logf("%d unprogrammable routes for %s: %d retries, %d of them warnings, longest line %d bytes; %d bytes of log: %.0f bytes/minute, %.2f MB per 10 minutes",
		routes, d, retries, warnings, longest, len(out), perMinute, perMinute*10/1e6)
	if retries < 2 {
		t.Fatalf("the agent did not retry:\n%.3000s", log.String())
	}
	if want := 1 + int(took/agent.FailureReminder); warnings < 1 || warnings > want {
		t.Errorf("%d retry warnings in %v, want 1 to %d (one when the failures start, one every %v)", warnings, took.Round(time.Second), want, agent.FailureReminder)
	}
	m := regexp.MustCompile(`failures=(\d+)`).FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, "more") {
		t.Fatalf("retry lines do not count the failures:\n%.3000s", out)
	}
	if n, _ := strconv.Atoi(m[1]); n < routes {
		t.Errorf("a retry line counts %d failures, want at least %d (one per route)", n, routes)
	}
	if longest > 4096 {
		t.Errorf("a line of %d bytes", longest)
	}
	if perMinute > 1e6 {
		t.Errorf("%.0f bytes of log per minute, want at most 1 MB", perMinute)
	}
}
