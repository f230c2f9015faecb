package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/iqrf/iqrftest"
)

// TestFootprintCollector (make bench-footprint): the collector binary polls
// the simulated coordinator's reference nodes on a pty every 500 ms and
// delivers to a real carbon-cache and mosquitto; its resident set (/proc) and
// Go heap (the live heap of its last GC, GODEBUG=gctrace=1) are printed after
// start and after a minute of polling, with its queue directory's size.
func TestFootprintCollector(t *testing.T) {
	if os.Getenv("IOTFABRIC_FOOTPRINT") == "" {
		t.Skip("benchmark: make bench-footprint")
	}
	bin := buildCollector(t)
	carbon := iqrftest.StartCarbon(t)
	broker := iqrftest.StartMosquitto(t)
	sim := iqrftest.NewSim(iqrftest.ReferenceNodes()...)
	var reads atomic.Int64
	sim.OnRead = func(iqrftest.ReadEvent) { reads.Add(1) }
	pty, err := iqrftest.OpenPTY()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); sim.Serve(ctx, pty.Master, true) }()
	t.Cleanup(func() { cancel(); pty.Close(); <-served })

	dir := t.TempDir()
	logFile, buffer := filepath.Join(dir, "collector.log"), filepath.Join(dir, "buffer")
	lf, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	cmd := exec.Command(bin, "--serial", pty.SlavePath, "--interval", "500ms", "--graphite", carbon.Addr(),
		"--mqtt", broker.URL(), "--prefix", "footprint", "--buffer-dir", buffer, "--log-level", "warn")
	cmd.Env = append(os.Environ(), "GODEBUG=gctrace=1")
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	fmt.Printf("FOOTPRINT %-28s %10s %10s %12s\n", "iqrf-collector", "RSS MiB", "heap MiB", "queue KiB")
	measure := func(what string) {
		fmt.Printf("FOOTPRINT %-28s %10.1f %10s %12.1f\n", what, float64(procRSSKiB(t, cmd.Process.Pid))/1024, gcLiveHeapMiB(t, logFile), float64(treeBytes(buffer))/1024)
	}
	time.Sleep(3 * time.Second)
	measure("after start")
	time.Sleep(60 * time.Second)
	if reads.Load() == 0 {
		b, _ := os.ReadFile(logFile)
		t.Fatalf("the simulator was not polled\n%s", b)
	}
	measure(fmt.Sprintf("after 60 s (%d reads)", reads.Load()))
}

func procRSSKiB(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

var gctraceLine = regexp.MustCompile(`gc \d+ @.* (\d+)->(\d+)->(\d+) MB`)

// gcLiveHeapMiB is the live heap after the last GC the runtime traced (gctrace counts whole MiB).
func gcLiveHeapMiB(t *testing.T, logFile string) string {
	f, err := os.Open(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	last := "no GC yet"
	s := bufio.NewScanner(f)
	for s.Scan() {
		if m := gctraceLine.FindStringSubmatch(s.Text()); m != nil {
			last = m[3] // whole MiB
			if last == "0" {
				last = "<1"
			}
		}
	}
	return last
}

func treeBytes(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, i os.FileInfo, err error) error {
		if err == nil && !i.IsDir() {
			n += i.Size()
		}
		return nil
	})
	return n
}
