package gobgp_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/gobgp"
)

// childEnv carries a childSpec to the test binary started as a separate
// speaker process (for tests that SIGKILL the speaker, and the benchmark).
const childEnv = "IOTFABRIC_BGP_SPEAKER_CHILD"

type childSpec struct {
	Config bgp.Config
	Routes []bgp.Route
	// Generate adds n generated /32 routes after start (benchmark).
	Generate int
	// AddPeersAfterStart starts without peers and adds Config.Peers with
	// AddPeer, as the controller does with peers from its store.
	AddPeersAfterStart bool
}

// speakerChild runs a speaker until stdin closes or it is killed. It
// writes "ready" when started, and for Generate "announced <ns>" when the
// generated routes are handed over, then "rss <before> <after>" bytes.
func speakerChild() int {
	var spec childSpec
	if err := json.Unmarshal([]byte(os.Getenv(childEnv)), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "child spec:", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := spec.Config
	if spec.AddPeersAfterStart {
		cfg.Peers = nil
	}
	s, err := gobgp.New(cfg, logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx := context.Background()
	if err := s.Start(ctx, spec.Routes); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if spec.AddPeersAfterStart {
		for _, p := range spec.Config.Peers {
			if err := s.AddPeer(ctx, p); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
		}
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	if spec.Generate > 0 {
		// "announce": generate and announce; "rss": report memory.
		in.Scan()
		runtime.GC()
		debug.FreeOSMemory()
		rssBefore := rss()
		if path := os.Getenv("IOTFABRIC_BGP_CPUPROFILE"); path != "" {
			if f, err := os.Create(path); err == nil {
				pprof.StartCPUProfile(f)
				defer pprof.StopCPUProfile()
			}
		}
		start := time.Now()
		routes := generateRoutes(spec.Generate)
		if err := s.Announce(ctx, routes); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		routes = nil
		fmt.Printf("announced %d\n", time.Since(start).Nanoseconds())
		in.Scan()
		runtime.GC()
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if path := os.Getenv("IOTFABRIC_BGP_HEAPPROFILE"); path != "" {
			if f, err := os.Create(path); err == nil {
				pprof.WriteHeapProfile(f)
				f.Close()
			}
		}
		fmt.Printf("rss %d %d %d\n", rssBefore, rss(), ms.HeapInuse)
		fmt.Fprintf(os.Stderr, "heap alloc %d inuse %d objects %d\n", ms.HeapAlloc, ms.HeapInuse, ms.HeapObjects)
	}
	for in.Scan() {
	}
	s.Stop(ctx)
	return 0
}

// rss is the process's resident set size in bytes (VmRSS).
func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:")), "%d", &kb)
			return kb * 1024
		}
	}
	return 0
}

// child is a speaker process started by a test.
type child struct {
	cmd   *exec.Cmd
	tmp   string // its TMPDIR
	stdin io.WriteCloser
	lines chan string
	done  chan struct{}
}

func startChild(t *testing.T, spec childSpec) *child {
	t.Helper()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	// TMPDIR: the speaker's socket directory goes into the test's temporary
	// directory, removed even when the process is SIGKILLed.
	tmp := t.TempDir()
	cmd.Env = append(os.Environ(), childEnv+"="+string(b), "TMPDIR="+tmp)
	cmd.Stderr = testWriter{t}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, tmp: tmp, stdin: stdin, lines: make(chan string, 16), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(c.kill)
	return c
}

// line waits for the next line the child prints.
func (c *child) line(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			t.Fatal("speaker process exited")
		}
		return l
	case <-time.After(timeout):
		t.Fatalf("speaker process said nothing in %s", timeout)
	}
	return ""
}

// kill ends the child with SIGKILL: no NOTIFICATION, no TCP close by the speaker.
func (c *child) kill() {
	c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}
