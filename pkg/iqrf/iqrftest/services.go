package iqrftest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// FreePort returns a loopback TCP port that was free a moment ago, for
// daemons that cannot listen on port 0 and report the port back.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitListening dials addr until it answers, the process exits, or the
// deadline passes.
func waitListening(addr string, exited <-chan struct{}, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("exited before listening on %s", addr)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listening on %s after %v: %w", addr, limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Carbon is a carbon-cache (Debian graphite-carbon) of its own: storage
// and configuration in a temporary directory, a plaintext receiver on a
// loopback port, 1-second retention.
type Carbon struct {
	Dir  string
	Port int
	t    testing.TB
	cmd  *exec.Cmd
	done chan struct{}
}

// Addr is the plaintext receiver's address.
func (c *Carbon) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port)) }

// StartCarbon starts carbon-cache; it is stopped at cleanup.
func StartCarbon(t testing.TB) *Carbon {
	t.Helper()
	if _, err := exec.LookPath("carbon-cache"); err != nil {
		t.Fatal("carbon-cache not installed (Debian graphite-carbon; scripts/install-deps.sh)")
	}
	dir := t.TempDir()
	c := &Carbon{Dir: dir, Port: FreePort(t), t: t}
	for _, d := range []string{"conf", "storage/whisper", "storage/lists", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf(`[cache]
STORAGE_DIR = %[1]s/storage
LOCAL_DATA_DIR = %[1]s/storage/whisper
WHITELISTS_DIR = %[1]s/storage/lists
CONF_DIR = %[1]s/conf
LOG_DIR = %[1]s/log
PID_DIR = %[1]s
ENABLE_LOGROTATION = False
USER =
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = 100000
MAX_CREATES_PER_MINUTE = inf
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = %[2]d
ENABLE_UDP_LISTENER = False
PICKLE_RECEIVER_PORT = 0
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = 0
`, dir, c.Port)
	schemas := "[all]\npattern = .*\nretentions = 1s:6h\n"
	for name, body := range map[string]string{"carbon.conf": conf, "storage-schemas.conf": schemas} {
		if err := os.WriteFile(filepath.Join(dir, "conf", name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c.Start()
	t.Cleanup(c.Stop)
	return c
}

// Start starts carbon-cache (again) on the same port and storage.
func (c *Carbon) Start() {
	c.t.Helper()
	if c.cmd != nil {
		c.t.Fatal("carbon already running")
	}
	out, err := os.OpenFile(filepath.Join(c.Dir, "log", "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command("carbon-cache", "--config="+filepath.Join(c.Dir, "conf", "carbon.conf"),
		"--pidfile="+filepath.Join(c.Dir, "carbon.pid"), "--debug", "start")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.cmd, c.done = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(c.done)
	if err := waitListening(c.Addr(), c.done, 30*time.Second); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.Dir, "log", "console.log"))
		c.Stop()
		c.t.Fatalf("carbon-cache: %v\n%s", err, log)
	}
}

// Stop stops carbon-cache (SIGTERM, then SIGKILL) and waits for it.
func (c *Carbon) Stop() {
	if c.cmd == nil {
		return
	}
	syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
	c.cmd = nil
}

// WhisperPath is the file carbon stores a metric in.
func (c *Carbon) WhisperPath(metric string) string {
	return filepath.Join(c.Dir, "storage", "whisper", strings.ReplaceAll(metric, ".", "/")+".wsp")
}

// Fetch reads a metric's points between from and until (unix seconds) with
// whisper-fetch (Debian python3-whisper); missing points are left out.
func (c *Carbon) Fetch(metric string, from, until int64) (map[int64]float64, error) {
	p := c.WhisperPath(metric)
	if _, err := os.Stat(p); err != nil {
		return nil, err
	}
	out, err := exec.Command("whisper-fetch", "--from="+strconv.FormatInt(from, 10), "--until="+strconv.FormatInt(until, 10), p).Output()
	if err != nil {
		return nil, fmt.Errorf("whisper-fetch %s: %w", p, err)
	}
	points := map[int64]float64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || f[1] == "None" {
			continue
		}
		ts, err1 := strconv.ParseInt(f[0], 10, 64)
		v, err2 := strconv.ParseFloat(f[1], 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("whisper-fetch line %q", sc.Text())
		}
		points[ts] = v
	}
	return points, nil
}

// Mosquitto is a mosquitto broker of its own on a loopback port, with
// persistence in a temporary directory (sessions survive a restart).
type Mosquitto struct {
	Port int
	bin  string
	dir  string
	t    testing.TB
	cmd  *exec.Cmd
	done chan struct{}
}

// URL is the broker's address for MQTT clients.
func (m *Mosquitto) URL() string { return fmt.Sprintf("tcp://127.0.0.1:%d", m.Port) }

// StartMosquitto starts a broker; it is stopped at cleanup.
func StartMosquitto(t testing.TB) *Mosquitto {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, e := os.Stat("/usr/sbin/mosquitto"); e != nil {
			t.Fatal("mosquitto not installed (Debian mosquitto; scripts/install-deps.sh)")
		}
		bin = "/usr/sbin/mosquitto"
	}
	m := &Mosquitto{Port: FreePort(t), bin: bin, dir: t.TempDir(), t: t}
	user := ""
	if os.Geteuid() == 0 {
		// Keep root so the broker can write its state in the test's directory.
		user = "user root\n"
	}
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\n%slog_dest stdout\n", m.Port, m.dir, user)
	if err := os.WriteFile(filepath.Join(m.dir, "mosquitto.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	m.Start()
	t.Cleanup(m.Stop)
	return m
}

// Start starts the broker (again) on the same port.
func (m *Mosquitto) Start() {
	m.t.Helper()
	logf, err := os.OpenFile(filepath.Join(m.dir, "mosquitto.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		m.t.Fatal(err)
	}
	defer logf.Close()
	m.cmd = exec.Command(m.bin, "-c", filepath.Join(m.dir, "mosquitto.conf"))
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	done := make(chan struct{})
	m.done = done
	cmd := m.cmd
	go func() { cmd.Wait(); close(done) }()
	if err := waitListening(fmt.Sprintf("127.0.0.1:%d", m.Port), m.done, 15*time.Second); err != nil {
		log, _ := os.ReadFile(filepath.Join(m.dir, "mosquitto.log"))
		m.Stop()
		m.t.Fatalf("mosquitto: %v\n%s", err, log)
	}
}

// Stop stops the broker (SIGTERM: it saves its state) and waits for it.
func (m *Mosquitto) Stop() {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		m.cmd.Process.Kill()
		<-m.done
	}
	m.cmd = nil
}
