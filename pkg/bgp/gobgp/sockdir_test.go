package gobgp_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/gobgp"
)

// sockDirs lists the speakers' socket directories in tmp.
func sockDirs(t *testing.T, tmp string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(tmp, "iotfabric-bgp.*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestSocketDirOfKilledSpeaker: a SIGKILLed speaker process cannot remove
// its socket directory; the next speaker that starts does, and keeps the
// directories of live processes and names it did not make.
func TestSocketDirOfKilledSpeaker(t *testing.T) {
	cfg := bgp.Config{ASN: asn, RouterID: mustAddr("10.0.0.1"), ListenPort: -1}
	c := startChild(t, childSpec{Config: cfg})
	if l := c.line(t, 30*time.Second); l != "ready" {
		t.Fatalf("child said %q", l)
	}
	killed := sockDirs(t, c.tmp)
	if len(killed) != 1 || !strings.Contains(filepath.Base(killed[0]), ".") {
		t.Fatalf("socket directories of the running child: %v, want one", killed)
	}
	c.kill()
	if len(sockDirs(t, c.tmp)) != 1 {
		t.Fatal("the killed child's socket directory is gone before any speaker started")
	}
	// Left alone: another name, a live process's directory, a file.
	other := filepath.Join(c.tmp, "iotfabric-bgp-123")
	live := filepath.Join(c.tmp, "iotfabric-bgp.1.456")
	file := filepath.Join(c.tmp, "iotfabric-bgp.999999999.1")
	for _, d := range []string{other, live} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	t.Setenv("TMPDIR", c.tmp)
	s, err := gobgp.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(killed[0]); !os.IsNotExist(err) {
		t.Errorf("the killed speaker's socket directory is still there after a speaker started: %v", err)
	}
	for _, p := range []string{other, live, file} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v (must be kept)", p, err)
		}
	}
	own := sockDirs(t, c.tmp)
	if len(own) != 3 { // live, file and its own
		t.Errorf("socket directories with a speaker running: %v", own)
	}
	s.Stop(context.Background())
	if got := sockDirs(t, c.tmp); len(got) != 2 {
		t.Errorf("after Stop: %v, want only the live process's and the file", got)
	}
}
