package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotfabric/iotfabric/pkg/iqrf/iqrftest"
	"github.com/iotfabric/iotfabric/pkg/iqrf/mqtt"
)

func TestFlags(t *testing.T) {
	for _, bad := range [][]string{
		{"--graphite", "127.0.0.1:2003"},
		{"--serial", "/dev/ttyS0", "--cdc", "/dev/ttyACM0", "--graphite", "127.0.0.1:2003"},
		{"--serial", "/dev/ttyS0"},
		{"--serial", "/dev/ttyS0", "--graphite", "nohostport"},
		{"--serial", "/dev/ttyS0", "--mqtt", "tcp://x:1", "--interval", "0s"},
		{"--serial", "/dev/ttyS0", "--mqtt", "tcp://x:1", "--buffer-size", "100XB"},
		{"--serial", "/dev/ttyS0", "--mqtt", "tcp://x:1", "--buffer-size", "0"},
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	o, err := parseFlags([]string{"--cdc", "/dev/ttyACM0", "--mqtt", "tcp://127.0.0.1:1883", "--prefix", "iotfabric.site1"}, io.Discard)
	if err != nil || o.mqttTopic != "iotfabric/site1" || o.interval != 10*time.Second || o.poll != "read" || o.bufferSize != 100<<20 {
		t.Errorf("%+v %v", o, err)
	}
	o, err = parseFlags([]string{"--cdc", "/dev/ttyACM0", "--mqtt", "tcp://127.0.0.1:1883", "--buffer-size", "100MB"}, io.Discard)
	if err != nil || o.bufferSize != 100_000_000 {
		t.Errorf("--buffer-size 100MB: %+v %v", o, err)
	}
}

// TestFlagsDocumented checks flag by flag that --help explains every flag
// and that docs/iqrf.md and the README list it.
func TestFlagsDocumented(t *testing.T) {
	var help strings.Builder
	if _, err := parseFlags([]string{"--help"}, &help); err != flag.ErrHelp {
		t.Fatalf("--help: %v", err)
	}
	docs, err := os.ReadFile("../../docs/iqrf.md")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	newFlagSet(&options{}).VisitAll(func(f *flag.Flag) {
		n++
		if len(f.Usage) < 20 {
			t.Errorf("--%s: usage %q explains too little", f.Name, f.Usage)
		}
		if !regexp.MustCompile(`(?m)^  -` + regexp.QuoteMeta(f.Name) + `( |$)`).MatchString(help.String()) {
			t.Errorf("--%s missing from --help", f.Name)
		}
		if !regexp.MustCompile("(?m)^\\| `--"+regexp.QuoteMeta(f.Name)+"[ `]").Match(docs) &&
			!regexp.MustCompile("(?m)^\\| .*/ `--"+regexp.QuoteMeta(f.Name)+"[ `]").Match(docs) {
			t.Errorf("--%s missing from the flag table of docs/iqrf.md", f.Name)
		}
		if !regexp.MustCompile(`--` + regexp.QuoteMeta(f.Name) + `[ =\]]`).Match(readme) {
			t.Errorf("--%s missing from README.md", f.Name)
		}
	})
	if n < 19 {
		t.Errorf("only %d flags", n)
	}
}

// buildCollector builds this command into a temporary directory.
func buildCollector(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "iqrf-collector")
	// go test puts its own GOROOT/bin first in PATH.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go command: %v", err)
	}
	cmd := exec.Command(goBin, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// proc is a running collector process.
type proc struct {
	cmd     *exec.Cmd
	done    chan struct{}
	metrics chan string
}

func startCollector(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), metrics: make(chan string, 1)}
	logPath := filepath.Join(t.TempDir(), "collector.log")
	logf, _ := os.Create(logPath)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("collector log:\n%s", b)
		}
	})
	re := regexp.MustCompile(`msg="serving metrics" addr=(\S+)`)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				p.metrics <- m[1]
			}
		}
		io.Copy(io.Discard, stderr)
		logf.Close()
	}()
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill(syscall.SIGKILL) })
	return p
}

func (p *proc) kill(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	<-p.done
}

// readingsTotal reads iqrf_readings_total from the metrics endpoint.
func readingsTotal(t *testing.T, addr string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var n int
		if _, err := fmt.Sscanf(sc.Text(), "iqrf_readings_total %d", &n); err == nil {
			return n
		}
	}
	t.Fatal("no iqrf_readings_total in the metrics")
	return 0
}

type readEvent struct {
	sent, at time.Time
	value    float64
}

// TestStoreAndForwardWithRealCarbonAndMosquitto runs the collector binary
// against the simulated coordinator on a pty, a real carbon-cache and a real
// mosquitto. Carbon is stopped for a stretch of polls and the collector is
// killed with SIGKILL during that gap and started again; every reading taken
// must still reach carbon with its original timestamp, and MQTT.
func TestStoreAndForwardWithRealCarbonAndMosquitto(t *testing.T) {
	bin := buildCollector(t)
	carbon := iqrftest.StartCarbon(t)
	broker := iqrftest.StartMosquitto(t)

	// Node 2's temperature rises by 1/16 °C on every read, so each reading
	// is a distinct value; the simulator notes when it answered each.
	sim := iqrftest.NewSim(iqrftest.ReferenceNodes()...)
	var mu sync.Mutex
	var events []readEvent
	reads := make(chan struct{}, 100)
	sim.BeforeRead = func(n *iqrftest.Node) {
		if n.Addr == 2 {
			binary.LittleEndian.PutUint16(n.Sensors[0].Raw, uint16(0x01c8+n.Reads))
		}
	}
	sim.OnRead = func(e iqrftest.ReadEvent) {
		if e.Addr != 2 {
			return
		}
		mu.Lock()
		// BeforeRead ran before Reads was incremented.
		events = append(events, readEvent{sent: e.Sent, at: e.Time, value: float64(0x01c8+e.Reads-1) / 16})
		mu.Unlock()
		select {
		case reads <- struct{}{}:
		default:
		}
	}
	pty, err := iqrftest.OpenPTY()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); sim.Serve(ctx, pty.Master, true) }()
	t.Cleanup(func() { cancel(); pty.Close(); <-served })

	// MQTT subscriber for node 2's temperature.
	var mqttMu sync.Mutex
	mqttValues := map[float64]int64{}
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(broker.URL()).SetClientID("test-sub"))
	if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sub.Disconnect(100)
	sub.Subscribe("test/site/2/temperature", 1, func(_ paho.Client, m paho.Message) {
		var rm mqtt.ReadingMessage
		if json.Unmarshal(m.Payload(), &rm) == nil {
			mqttMu.Lock()
			mqttValues[rm.Value] = rm.UnixTime
			mqttMu.Unlock()
		}
	}).Wait()

	buffer := filepath.Join(t.TempDir(), "buffer")
	args := []string{"--serial", pty.SlavePath, "--interval", "1500ms", "--graphite", carbon.Addr(), "--graphite-confirm", "1s",
		"--mqtt", broker.URL(), "--prefix", "test.site", "--buffer-dir", buffer, "--metrics", "127.0.0.1:0"}
	waitReads := func(n int) {
		t.Helper()
		for range n {
			select {
			case <-reads:
			case <-time.After(15 * time.Second):
				t.Fatal("the simulator was not polled")
			}
		}
	}
	col := startCollector(t, bin, args...)
	metricsAddr := <-col.metrics
	waitReads(2)
	// Uplink down for a stretch of polls.
	carbon.Stop()
	waitReads(2)
	// Killed during the gap, once the last read has been stored: each round
	// stores 14 readings of node 1, then 2 of node 2, then 4 of node 3.
	mu.Lock()
	k := len(events)
	mu.Unlock()
	deadline := time.Now().Add(15 * time.Second)
	for readingsTotal(t, metricsAddr) < 20*k-4 {
		if time.Now().After(deadline) {
			t.Fatalf("the collector did not store node 2's read %d", k)
		}
		time.Sleep(20 * time.Millisecond)
	}
	storedBefore := time.Now()
	col.kill(syscall.SIGKILL)
	restartedAt := time.Now()
	col = startCollector(t, bin, args...)
	metricsAddr = <-col.metrics
	waitReads(2)
	carbon.Start()
	waitReads(2)

	mu.Lock()
	// Every read stored before the kill, and every one after the restart,
	// must arrive. A read the killed process had asked for may be answered
	// after its death: no reading was taken.
	var want []readEvent
	for _, e := range events {
		if e.at.Before(storedBefore) || e.sent.After(restartedAt) {
			want = append(want, e)
		}
	}
	mu.Unlock()
	if len(want) < 7 {
		t.Fatalf("only %d reads to check", len(want))
	}
	from, until := want[0].at.Unix()-5, time.Now().Unix()+5
	// Whisper keeps one value per second: two readings taken in the same
	// second (the killed process's last and the new one's first) share a slot,
	// and either may be the one kept.
	perSecond := map[int64][]float64{}
	for _, e := range want {
		perSecond[e.at.Unix()] = append(perSecond[e.at.Unix()], e.value)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		points, err := carbon.Fetch("test.site.node2.temperature", from, until)
		missing := []string{}
		for _, e := range want {
			ok := false
			for ts, v := range points {
				if math.Abs(v-e.value) < 1e-9 && math.Abs(float64(ts)-float64(e.at.UnixMilli())/1000) <= 1.0 {
					ok = true
				}
			}
			if shared := perSecond[e.at.Unix()]; !ok && len(shared) > 1 {
				if v, in := points[e.at.Unix()]; in && slices.ContainsFunc(shared, func(x float64) bool { return math.Abs(x-v) < 1e-9 }) {
					ok = true
				}
			}
			if !ok {
				missing = append(missing, fmt.Sprintf("%v@%s", e.value, e.at.Format("15:04:05.000")))
			}
		}
		if err == nil && len(missing) == 0 {
			t.Logf("all %d readings of node 2 in carbon with their original timestamps (gap with carbon down and a SIGKILL)", len(want))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("missing in carbon: %v (err %v); carbon has %v", missing, err, points)
		}
		time.Sleep(300 * time.Millisecond)
	}
	// MQTT carried the same readings.
	deadline = time.Now().Add(15 * time.Second)
	for {
		mqttMu.Lock()
		var missing []string
		for _, e := range want {
			if ts, ok := mqttValues[e.value]; !ok || math.Abs(float64(ts)-float64(e.at.UnixMilli())/1000) > 1 {
				missing = append(missing, fmt.Sprintf("%v@%s", e.value, e.at.Format("15:04:05.000")))
			}
		}
		got := fmt.Sprint(mqttValues)
		mqttMu.Unlock()
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("missing on MQTT: %v; got %s", missing, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The metrics endpoint reports the work.
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"iqrf_polls_total ", "iqrf_timeouts_total ", `iqrf_buffer_depth{sink="graphite"}`, "iqrf_readings_total "} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	col.kill(syscall.SIGTERM)
}
