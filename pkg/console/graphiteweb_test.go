package console_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/iotfabric/iotfabric/internal/testenv"
	"github.com/iotfabric/iotfabric/pkg/iqrf/iqrftest"
)

// graphiteWeb is a graphite-web (Debian graphite-web, Django's development
// server) of its own on a loopback port, reading the whisper files of a
// carbon-cache of iqrftest.
type graphiteWeb struct {
	URL string
	dir string
	cmd *exec.Cmd
}

// startGraphiteWeb starts graphite-web over carbon's storage; it is stopped
// at the end of the test.
func startGraphiteWeb(t testing.TB, carbon *iqrftest.Carbon) *graphiteWeb {
	t.Helper()
	testenv.RequireFile(t, "/usr/lib/python3/dist-packages/graphite/settings.py", "graphite-web")
	// Debian's python3 (the packages' modules are its own, not another python's).
	python := "/usr/bin/python3"
	testenv.RequireFile(t, python, "python3")
	dir := t.TempDir()
	storage := filepath.Join(carbon.Dir, "storage")
	local := fmt.Sprintf(`STORAGE_DIR = %[1]q
WHISPER_DIR = %[2]q
LOG_DIR = %[3]q
INDEX_FILE = %[4]q
SECRET_KEY = 'iotfabric-console-test'
ALLOWED_HOSTS = ['127.0.0.1']
DEFAULT_XFILES_FACTOR = 0
DATABASES = {'default': {'NAME': %[5]q, 'ENGINE': 'django.db.backends.sqlite3'}}
`, storage, filepath.Join(storage, "whisper"), dir, filepath.Join(dir, "index"), filepath.Join(dir, "graphite.db"))
	if err := os.WriteFile(filepath.Join(dir, "iotfabric_graphite_local.py"), []byte(local), 0o644); err != nil {
		t.Fatal(err)
	}
	port := iqrftest.FreePort(t)
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
	cmd := exec.Command(python, "-m", "django", "runserver", "--noreload", addr)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PYTHONPATH="+dir, "DJANGO_SETTINGS_MODULE=graphite.settings",
		"GRAPHITE_SETTINGS_MODULE=iotfabric_graphite_local", "PYTHONDONTWRITEBYTECODE=1")
	logf, err := os.Create(filepath.Join(dir, "graphite-web.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	g := &graphiteWeb{URL: "http://" + addr, dir: dir, cmd: cmd}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	// Ready when the render API answers.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+"/render?target=none&format=json", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return g
			}
		}
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(dir, "graphite-web.log"))
			t.Fatalf("graphite-web exited:\n%s", log)
		case <-ctx.Done():
			log, _ := os.ReadFile(filepath.Join(dir, "graphite-web.log"))
			t.Fatalf("graphite-web did not answer: %v\n%s", err, log)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// startCollector builds cmd/iqrf-collector and runs it against a simulated
// coordinator (the reference nodes) on a pty, sending to carbon with prefix.
func startCollector(t testing.TB, carbon *iqrftest.Carbon, prefix string) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	bin := filepath.Join(t.TempDir(), "iqrf-collector")
	goBin, err := exec.LookPath("go") // go test puts its own toolchain first in PATH
	if err != nil {
		t.Fatal(err)
	}
	build := exec.Command(goBin, "build", "-o", bin, "./cmd/iqrf-collector")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the collector: %v\n%s", err, out)
	}
	sim := iqrftest.NewSim(iqrftest.ReferenceNodes()...)
	// Node 2's temperature rises on every read: the chart has a slope.
	sim.BeforeRead = func(n *iqrftest.Node) {
		if n.Addr == 2 {
			v := uint16(0x01c8 + 4*n.Reads)
			n.Sensors[0].Raw[0], n.Sensors[0].Raw[1] = byte(v), byte(v>>8)
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
	cmd := exec.Command(bin, "--serial", pty.SlavePath, "--interval", "500ms", "--graphite", carbon.Addr(), "--graphite-confirm", "300ms",
		"--prefix", prefix, "--buffer-dir", filepath.Join(t.TempDir(), "buffer"), "--mqtt-api=false", "--log-level", "warn")
	logPath := filepath.Join(t.TempDir(), "collector.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("collector log:\n%s", b)
		}
	})
}
