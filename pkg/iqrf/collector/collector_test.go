package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/iqrf/cdc"
	"github.com/iotfabric/iotfabric/pkg/iqrf/coord"
	"github.com/iotfabric/iotfabric/pkg/iqrf/dpa"
	"github.com/iotfabric/iotfabric/pkg/iqrf/iqrftest"
	"github.com/iotfabric/iotfabric/pkg/iqrf/uart"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p[:len(p)-1])); return len(p), nil }

// rig is a simulated coordinator on a pty and a collector on its slave side.
type rig struct {
	sim      *iqrftest.Sim
	pty      *iqrftest.PTY
	col      *Collector
	readings chan Reading
	cancel   context.CancelFunc
	done     chan struct{}
}

func startSim(t *testing.T, sim *iqrftest.Sim) *iqrftest.PTY {
	t.Helper()
	pty, err := iqrftest.OpenPTY()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); sim.Serve(ctx, pty.Master, true) }()
	t.Cleanup(func() { cancel(); pty.Close(); <-served })
	return pty
}

func newRig(t *testing.T, sim *iqrftest.Sim, mode PollMode, open func(path string) (coord.Link, error)) *rig {
	t.Helper()
	if sim.Logger == nil {
		sim.Logger = testLogger(t)
	}
	r := &rig{sim: sim, readings: make(chan Reading, 10000), done: make(chan struct{})}
	r.pty = startSim(t, sim)
	path := filepath.Join(t.TempDir(), "ttyIQRF")
	if err := os.Symlink(r.pty.SlavePath, path); err != nil {
		t.Fatal(err)
	}
	if open == nil {
		open = func(p string) (coord.Link, error) { return uart.Open(p, 57600) }
	}
	r.col = New(Config{
		Open:        func() (coord.Link, error) { return open(path) },
		Interval:    150 * time.Millisecond,
		Mode:        mode,
		ReopenDelay: 100 * time.Millisecond,
		Logger:      testLogger(t),
		Deliver: func(rs []Reading) error {
			for _, x := range rs {
				r.readings <- x
			}
			return nil
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { defer close(r.done); r.col.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

// collect gathers readings until every wanted node has delivered the given
// number of rounds (a round of a reference node is its whole set of values).
func (r *rig) collect(t *testing.T, nodes []uint8, rounds int) map[uint8]map[string]float64 {
	t.Helper()
	got := map[uint8]map[string]float64{}
	count := map[uint8]int{}
	deadline := time.After(20 * time.Second)
	for {
		done := true
		for _, n := range nodes {
			perNode := rounds
			if w, ok := wantReference[n]; ok {
				perNode *= len(w)
			}
			if count[n] < perNode {
				done = false
			}
		}
		if done {
			return got
		}
		select {
		case x := <-r.readings:
			if got[x.Node] == nil {
				got[x.Node] = map[string]float64{}
			}
			got[x.Node][x.Metric] = x.Value
			count[x.Node]++
			if time.Since(x.Time) > 5*time.Second || x.Time.After(time.Now()) {
				t.Errorf("reading time %v is not when it was taken", x.Time)
			}
		case <-deadline:
			t.Fatalf("timed out; readings so far %v", got)
		}
	}
}

var wantReference = map[uint8]map[string]float64{
	1: {"altitude": 410.5, "co2": 232, "relative_humidity": 46, "illuminance": 28, "binary_data7": 2,
		"acceleration_6": 9.76953125, "acceleration_7": -0.03515625, "acceleration_8": 0.171875,
		"binary_data30_9": 0, "atmospheric_pressure": 964, "sound_pressure_level": 25, "temperature": 21.625,
		"voc": 6, "extra_low_voltage": 4.422},
	2: {"temperature": 28.5, "co2": 2439},
	3: {"temperature_0": 21, "temperature_1": 22.5, "binary_data7_2": 1, "binary_data7_3": 0},
}

func checkReference(t *testing.T, got map[uint8]map[string]float64) {
	t.Helper()
	for node, metrics := range wantReference {
		if len(got[node]) != len(metrics) {
			t.Errorf("node %d: metrics %v, want %v", node, got[node], metrics)
		}
		for m, v := range metrics {
			if g, ok := got[node][m]; !ok || math.Abs(g-v) > 1e-9 {
				t.Errorf("node %d %s = %v (present %v), want %v", node, m, g, ok, v)
			}
		}
	}
	// Index 4 of node 1 is binary data30 0x80000000: "not available".
	if _, ok := got[1]["binary_data30_4"]; ok {
		t.Error("a not-available value produced a reading")
	}
}

// checkNoLeak fails the test if goroutines started during it are still
// running once its cleanups (registered later, run earlier) are done.
func checkNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Errorf("%d goroutines leaked:\n%s", runtime.NumGoroutine()-before, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func TestPollReadReferenceVectors(t *testing.T) {
	checkNoLeak(t)
	r := newRig(t, iqrftest.NewSim(iqrftest.ReferenceNodes()...), PollRead, nil)
	got := r.collect(t, []uint8{1, 2, 3}, 2)
	checkReference(t, got)
	if n := r.col.Nodes(); len(n) != 3 || n[0].HWPID != 0x1015 {
		t.Errorf("nodes %+v", n)
	}
	m := r.col.Metrics()
	// Node 1's binary data30 at index 4 is "not available" in every round.
	if m.NoValue.Load() == 0 || m.Link.FrameErrors.Load() != 0 {
		t.Errorf("novalue %d frame errors %d", m.NoValue.Load(), m.Link.FrameErrors.Load())
	}
}

func TestPollFRC(t *testing.T) {
	sim := iqrftest.NewSim(iqrftest.ReferenceNodes()...)
	r := newRig(t, sim, PollFRC, nil)
	got := r.collect(t, []uint8{1, 2, 3}, 2)
	checkReference(t, got)
}

func TestPollFRCManyNodesUsesExtraResult(t *testing.T) {
	var nodes []*iqrftest.Node
	for a := uint8(1); a <= 32; a++ {
		nodes = append(nodes, &iqrftest.Node{Addr: a, HWPID: 0x1402,
			Sensors: []iqrftest.Sensor{{Type: 0x01, Raw: []byte{byte(a), 0x01}}, {Type: 0xa1, Raw: []byte{byte(a), 0, 0, 0}}}})
	}
	r := newRig(t, iqrftest.NewSim(nodes...), PollFRC, nil)
	var addrs []uint8
	for a := uint8(1); a <= 32; a++ {
		addrs = append(addrs, a)
	}
	got := r.collect(t, addrs, 1)
	for a := uint8(1); a <= 32; a++ {
		if v := got[a]["temperature"]; v != float64(0x100+int(a))/16 {
			t.Errorf("node %d temperature %v", a, v)
		}
		if v := got[a]["consumption"]; v != float64(a) {
			t.Errorf("node %d consumption %v", a, v)
		}
	}
}

func TestCDCEndToEnd(t *testing.T) {
	sim := iqrftest.NewSim(iqrftest.ReferenceNodes()...)
	sim.Framing = iqrftest.CDC
	r := newRig(t, sim, PollRead, func(p string) (coord.Link, error) { return cdc.Open(p) })
	checkReference(t, r.collect(t, []uint8{1, 2, 3}, 2))
}

func TestBadInputNeverStopsTheLoop(t *testing.T) {
	checkNoLeak(t)
	nodes := iqrftest.ReferenceNodes()
	nodes = append(nodes, &iqrftest.Node{Addr: 7, HWPID: 0x1402, Silent: true})
	sim := iqrftest.NewSim(nodes...)
	r := newRig(t, sim, PollRead, nil)
	r.collect(t, []uint8{1, 2, 3}, 1)
	sim.Inject(iqrftest.FaultCRC, iqrftest.FaultGarble, iqrftest.FaultTruncate, iqrftest.FaultDrop, iqrftest.FaultReset)
	// Drain what is there, then make sure every node still delivers.
	for len(r.readings) > 0 {
		<-r.readings
	}
	got := r.collect(t, []uint8{1, 2, 3}, 3)
	checkReference(t, got)
	m := r.col.Metrics()
	if m.Link.FrameErrors.Load() < 2 {
		t.Errorf("frame errors %d, want the CRC error and the garbled frame", m.Link.FrameErrors.Load())
	}
	if m.BadPayloads.Load() < 1 {
		t.Errorf("bad payloads %d, want the truncated response", m.BadPayloads.Load())
	}
	if m.Link.Timeouts.Load() < 1 || m.PollErrors.Load() < 1 {
		t.Errorf("timeouts %d poll errors %d: the silent node must count", m.Link.Timeouts.Load(), m.PollErrors.Load())
	}
	if m.Link.Resets.Load() < 2 {
		t.Errorf("resets %d, want the start-up one and the injected one", m.Link.Resets.Load())
	}
	if m.Link.Retries.Load() < 3 {
		t.Errorf("retries %d", m.Link.Retries.Load())
	}
}

func TestCoordinatorUnplugged(t *testing.T) {
	checkNoLeak(t)
	sim := iqrftest.NewSim(iqrftest.ReferenceNodes()...)
	r := newRig(t, sim, PollRead, nil)
	r.collect(t, []uint8{2}, 1)
	// Unplug: the pty disappears, the device path dangles.
	r.pty.Close()
	deadline := time.Now().Add(10 * time.Second)
	for r.col.Metrics().LinkFailures.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("link failures %d", r.col.Metrics().LinkFailures.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Plug in again: a new pty behind the same path.
	pty := startSim(t, sim)
	link := filepath.Join(filepath.Dir(r.readlinkPath(t)), "ttyIQRF")
	os.Remove(link)
	if err := os.Symlink(pty.SlavePath, link); err != nil {
		t.Fatal(err)
	}
	for len(r.readings) > 0 {
		<-r.readings
	}
	r.collect(t, []uint8{1, 2, 3}, 1)
	if r.col.Metrics().LinkOpens.Load() < 2 {
		t.Errorf("link opens %d", r.col.Metrics().LinkOpens.Load())
	}
}

// readlinkPath finds the symlink the rig opens (the only one in its
// temporary directory).
func (r *rig) readlinkPath(t *testing.T) string {
	t.Helper()
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), t.Name()+"*", "*", "ttyIQRF"))
	if len(matches) == 0 {
		t.Fatal("no device symlink found")
	}
	return matches[len(matches)-1]
}

func TestBondedNodesIgnoresBitsAbove239(t *testing.T) {
	for _, tc := range []struct {
		hex  string
		want string
	}{
		{"0e" + rep("00", 31), "[1 2 3]"},
		{"0e" + rep("00", 29) + "ffff", "[1 2 3]"},
		{"fe.ff.ff.7f" + rep("00", 26) + "04.00", "[1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30]"},
	} {
		b, err := dpa.ParseDottedHex(tc.hex)
		if err != nil {
			t.Fatal(err)
		}
		got, err := BondedNodes(b)
		if err != nil || fmt.Sprint(got) != tc.want {
			t.Errorf("%s: %v %v, want %s", tc.hex, got, err, tc.want)
		}
	}
	if _, err := BondedNodes(make([]byte, 31)); !errors.Is(err, dpa.ErrMalformed) {
		t.Errorf("short bitmap: %v", err)
	}
}

func rep(s string, n int) string {
	out := ""
	for range n {
		out += s
	}
	return out
}

func TestRecordRoundTrip(t *testing.T) {
	r := Reading{Node: 7, Index: 12, Type: 1, Metric: "temperature_12", Value: -3.5, Time: time.Unix(1765450342, 123456789)}
	got, err := DecodeRecord(r.AppendRecord(nil))
	if err != nil || got.Node != r.Node || got.Index != r.Index || got.Type != r.Type || got.Metric != r.Metric ||
		got.Value != r.Value || !got.Time.Equal(r.Time) {
		t.Fatalf("got %+v %v", got, err)
	}
	if _, err := DecodeRecord([]byte{1, 2, 3}); !errors.Is(err, dpa.ErrMalformed) {
		t.Fatalf("short record: %v", err)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(Reading{Node: 1, Index: 2, Type: 1, Metric: "temperature", Value: 21.625, Time: time.Unix(1, 2)}.AppendRecord(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecord(b)
		if err != nil {
			return
		}
		again, err := DecodeRecord(r.AppendRecord(nil))
		if err != nil || again.Metric != r.Metric || again.Node != r.Node || !again.Time.Equal(r.Time) {
			t.Fatalf("round trip: %+v %+v %v", r, again, err)
		}
	})
}
