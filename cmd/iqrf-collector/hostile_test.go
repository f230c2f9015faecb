package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/iqrf/iqrftest"
)

// hostileSeconds is how long a hostile run lasts: $IOTFABRIC_HOSTILE_SECONDS
// (make hostile-logs: 600), else 10.
func hostileSeconds() time.Duration {
	if n, err := strconv.Atoi(os.Getenv("IOTFABRIC_HOSTILE_SECONDS")); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return 10 * time.Second
}

// Serial noise on the coordinator's line (random bytes, flags included, at
// about 100 KB/s) makes a bounded log: the bad-frame warnings are summarised
// per interval with their count and first reasons, and every bad frame is
// still counted in iqrf_bad_frames_total. It prints the log's bytes per
// minute; the bound is 1 MB/minute (10 MB in 10 minutes).
func TestSerialNoiseLogBounded(t *testing.T) {
	bin := buildCollector(t)
	pty, err := iqrftest.OpenPTY()
	if err != nil {
		t.Fatal(err)
	}
	defer pty.Close()
	// The sink: a TCP listener that reads and discards (no reading is taken anyway).
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(io.Discard, c) }()
		}
	}()
	cmd := exec.Command(bin, "--serial", pty.SlavePath, "--interval", "1s", "--graphite", lis.Addr().String(),
		"--buffer-dir", t.TempDir(), "--metrics", "127.0.0.1:0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var logBytes atomic.Int64
	var mu sync.Mutex
	var summary string
	metricsAddr := make(chan string, 1)
	re := regexp.MustCompile(`msg="serving metrics" addr=(\S+)`)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			l := sc.Text()
			logBytes.Add(int64(len(l) + 1))
			if m := re.FindStringSubmatch(l); m != nil {
				metricsAddr <- m[1]
			}
			if strings.Contains(l, "bad frame") && strings.Contains(l, "suppressed=") {
				mu.Lock()
				summary = l
				mu.Unlock()
			}
		}
	}()
	var addr string
	select {
	case addr = <-metricsAddr:
	case <-time.After(30 * time.Second):
		t.Fatal("the collector did not start")
	}
	d := hostileSeconds()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start, startBytes := time.Now(), logBytes.Load()
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1000)
	sent := 0
	for t0 := time.Now(); ctx.Err() == nil; {
		for i := range buf {
			buf[i] = byte(rng.Uint32())
			if rng.IntN(40) == 0 {
				buf[i] = 0x7e // frame flags, so that the noise makes frames
			}
		}
		if n, err := pty.Master.Write(buf); err == nil {
			sent += n
		}
		// About 100 KB/s (a 115,200 baud line carries about 11.5 KB/s).
		if ahead := time.Duration(sent/100)*time.Millisecond - time.Since(t0); ahead > 0 {
			time.Sleep(ahead)
		}
	}
	time.Sleep(11 * time.Second) // the last interval's summaries
	took := time.Since(start)
	written := logBytes.Load() - startBytes
	perMinute := float64(written) / took.Minutes()
	bad := metric(t, addr, "iqrf_bad_frames_total")
	t.Logf("serial noise: %d bytes of noise in %s, %d bad frames counted; the collector wrote %d bytes of log: %.0f bytes/minute, %.2f MB per 10 minutes",
		sent, d, bad, written, perMinute, perMinute*10/1e6)
	if bad < 100 {
		t.Fatalf("only %d bad frames: the noise did not reach the collector", bad)
	}
	if perMinute > 1e6 {
		t.Errorf("%.0f bytes of log per minute, want at most 1 MB", perMinute)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(summary, "examples=") {
		t.Errorf("no summary of bad frames with examples; last: %q", summary)
	}
}

// metric reads one counter without labels from the metrics endpoint.
func metric(t *testing.T, addr, name string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var n int
		if _, err := fmt.Sscanf(sc.Text(), name+" %d", &n); err == nil {
			return n
		}
	}
	t.Fatalf("no %s in the metrics", name)
	return 0
}
