// Package etcdtest starts a real etcd server (Debian's etcd-server package) on
// loopback in a temporary directory, for tests.
package etcdtest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/internal/syncbuf"
)

// Server is a running etcd.
type Server struct {
	Endpoint string // http://127.0.0.1:PORT
	cmd      *exec.Cmd
	log      *syncbuf.Buffer
	exited   chan struct{}
}

// Binary returns the etcd binary path, or "" when it is not installed.
func Binary() string {
	for _, p := range []string{"etcd", "/usr/bin/etcd"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	return ""
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start runs etcd until the test ends. It fails the test when etcd is missing:
// run `make deps` (package etcd-server) first.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		t.Fatal("etcd not installed: run `make deps` as root (Debian package etcd-server)")
	}
	dir := t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		client, peer := freePort(t), freePort(t)
		s := &Server{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", client), log: &syncbuf.Buffer{}, exited: make(chan struct{})}
		data := filepath.Join(dir, fmt.Sprintf("data%d", attempt))
		s.cmd = exec.Command(bin,
			"--name", "test",
			"--data-dir", data,
			"--listen-client-urls", s.Endpoint,
			"--advertise-client-urls", s.Endpoint,
			"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peer),
			"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peer),
			"--initial-cluster", fmt.Sprintf("test=http://127.0.0.1:%d", peer),
			"--log-level", "warn",
		)
		s.cmd.Env = append(os.Environ(), "ETCD_UNSUPPORTED_ARCH="+goarchEnv())
		s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
		// Pdeathsig fires when the thread that forked exits, not the process:
		// fork from a thread locked for etcd's whole life, so that a thread
		// retired by some other test helper never takes etcd with it.
		s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		started := make(chan error, 1)
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			err := s.cmd.Start()
			started <- err
			if err == nil {
				s.cmd.Wait()
				close(s.exited)
			}
		}()
		if err := <-started; err != nil {
			t.Fatalf("start etcd: %v", err)
		}
		t.Cleanup(s.stop)
		if lastErr = s.waitHealthy(15 * time.Second); lastErr == nil {
			return s
		}
		s.stop()
	}
	t.Fatalf("etcd did not become healthy: %v", lastErr)
	return nil
}

func goarchEnv() string {
	out, _ := exec.Command("uname", "-m").Output()
	if strings.TrimSpace(string(out)) == "aarch64" {
		return "arm64"
	}
	return ""
}

func (s *Server) waitHealthy(d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("etcd exited: %s", s.log.String())
		default:
		}
		resp, err := http.Get(s.Endpoint + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("timeout after %v: %s", d, s.log.String())
}

func (s *Server) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
}
