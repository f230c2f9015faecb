package agent_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/agent"
	"github.com/iotfabric/iotfabric/pkg/overlay"
)

// fakeApplier records applied states and fails the first failN calls.
type fakeApplier struct {
	failN   int
	applied chan overlay.State
}

func (f *fakeApplier) Set(ctx context.Context, s overlay.State) error {
	if f.failN > 0 {
		f.failN--
		return errors.New("kernel said no")
	}
	f.applied <- s
	return nil
}

func (f *fakeApplier) Resync(context.Context) error { return nil }

func waitState(t *testing.T, ch chan overlay.State) overlay.State {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no state applied")
	}
	return overlay.State{}
}

const stateV1 = `
underlay: 192.0.2.1
networks:
- name: red
  table: 7001
  endpoints:
  - {interface: veth1, address: 10.1.0.1, label: 1001}
`

const stateV2 = `{"underlay": "192.0.2.1", "networks": [{"name": "red", "table": 7001,
 "routes": [{"prefix": "10.1.0.2/32", "label": 1002, "remoteUnderlay": "192.0.2.2", "encaps": ["mplsoudp", "mplsogre"]}]}]}`

// checkNoLeak fails the test if goroutines started during it are still running
// shortly after it ends.
func checkNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Errorf("goroutines leaked: %d running, %d before\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func TestStateFileAppliesAndFollowsChanges(t *testing.T) {
	checkNoLeak(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "state.yaml")
	if err := os.WriteFile(path, []byte(stateV1), 0o644); err != nil {
		t.Fatal(err)
	}
	fa := &fakeApplier{failN: 2, applied: make(chan overlay.State, 10)}
	ctx, cancel := context.WithCancel(context.Background())
	f, err := agent.OpenStateFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- agent.RunStateFile(ctx, f, fa, nil, time.Hour) }()

	// Two failures, then the retry (after the reconcile loop's backoff) succeeds.
	s := waitState(t, fa.applied)
	if len(s.Networks) != 1 || s.Networks[0].Endpoints[0].Label != 1001 {
		t.Fatalf("applied %+v", s)
	}
	// A broken file is ignored.
	if err := os.WriteFile(path, []byte("networks: [ {table: nope"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Replace by rename (JSON is YAML).
	tmp := filepath.Join(dir, "state.tmp")
	if err := os.WriteFile(tmp, []byte(stateV2), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	s = waitState(t, fa.applied)
	if len(s.Networks[0].Routes) != 1 || s.Networks[0].Routes[0].Label != 1002 {
		t.Fatalf("after rename applied %+v", s)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestStateFileBadAtStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.yaml")
	if err := os.WriteFile(path, []byte("networks:\n- {name: x, table: 5}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := agent.OpenStateFile(path, nil)
	if err == nil {
		t.Fatal("OpenStateFile accepted a state with a table outside the owned range")
	}
	t.Logf("error: %v", err)
}
