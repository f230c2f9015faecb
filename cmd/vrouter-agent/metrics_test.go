package main

import (
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/internal/syncbuf"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	"github.com/iotfabric/iotfabric/pkg/overlay/overlaytest"
)

func TestFormatMetrics(t *testing.T) {
	got := formatMetrics(overlay.FastPathStats{Enabled: true, EndpointsFast: 3, EndpointsKernel: 1, RoutesFast: 7, RoutesKernel: 2,
		Encapsulated: 1234, ToKernel: 5})
	for _, want := range []string{
		"iotfabric_agent_fast_path_enabled 1\n",
		"iotfabric_agent_endpoints{path=\"bpf\"} 3\n", "iotfabric_agent_endpoints{path=\"kernel\"} 1\n",
		"iotfabric_agent_mpls_routes{path=\"bpf\"} 7\n", "iotfabric_agent_mpls_routes{path=\"kernel\"} 2\n",
		"iotfabric_agent_fast_path_packets_total{result=\"encapsulated\"} 1234\n",
		"iotfabric_agent_fast_path_packets_total{result=\"kernel\"} 5\n",
		"# TYPE iotfabric_agent_fast_path_packets_total counter\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("metrics lack %q:\n%s", want, got)
		}
	}
}

// TestMetricsServed: the agent started with its defaults takes the BPF fast
// path where the kernel allows it (--fast-path auto), says so once in its
// log, and serves the path and counters on --metrics.
func TestMetricsServed(t *testing.T) {
	gw := netnstest.New(t, "iofagent")
	overlaytest.Pod(t, gw, "veth1", netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("169.254.1.1"))
	state := filepath.Join(t.TempDir(), "state.yaml")
	doc := "networks:\n- name: red\n  table: 7001\n  endpoints:\n  - {interface: veth1, address: 10.1.0.1, label: 1001}\n"
	if err := os.WriteFile(state, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	var log syncbuf.Buffer
	rc := make(chan int, 1)
	go func() { rc <- run([]string{"--state", state, "--netns", gw.Path(), "--metrics", "127.0.0.1:0"}, &log) }()
	addr := regexp.MustCompile(`msg="serving metrics".*addr=(\S+)`)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(log.String(), "state applied") || addr.FindStringSubmatch(log.String()) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("agent did not apply the state and serve metrics:\n%s", log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer func() {
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		select {
		case <-rc:
		case <-time.After(10 * time.Second):
			t.Error("agent did not stop on SIGTERM")
		}
	}()
	if n := strings.Count(log.String(), "MPLSoUDP encapsulation"); n != 1 || !strings.Contains(log.String(), "path=bpf") {
		t.Errorf("want one start line saying path=bpf (the host kernel has the helpers), got %d:\n%s", n, log.String())
	}
	resp, err := http.Get("http://" + addr.FindStringSubmatch(log.String())[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{"iotfabric_agent_fast_path_enabled 1\n", "iotfabric_agent_endpoints{path=\"kernel\"} 1\n",
		"iotfabric_agent_fast_path_packets_total{result=\"kernel\"} 0\n"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
}
