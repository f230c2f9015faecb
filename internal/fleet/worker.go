package fleet

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/iotfabric/iotfabric/pkg/logkey"
)

// WorkerEnv in a process's environment makes it a fleet worker: a fleet
// split over processes (Config.Processes) runs each slice of its gateways
// in the running executable started again with WorkerEnv set, and that
// executable's main (a test binary's TestMain) must then call ServeWorker
// and exit with its result before doing anything else.
const WorkerEnv = "IOTFABRIC_FLEET_WORKER"

// statusEvery is how often a worker reports the gateways that changed.
// Times measured by polling gateway state across processes (sessions,
// route counts) are late by up to this much; probe arrivals are stamped
// where they happen.
const statusEvery = 100 * time.Millisecond

// workerConfig is a worker's slice of the fleet (the first line on its
// standard input).
type workerConfig struct {
	Controllers []string      `json:"controllers"`
	First       int           `json:"first"`
	Networks    []string      `json:"networks"` // of each gateway of the slice
	Dir         string        `json:"dir"`
	StartRate   int           `json:"startRate"`
	Keepalive   time.Duration `json:"keepalive"`
	Log         bool          `json:"log"`
	LogLevel    slog.Level    `json:"logLevel"` // with Log: the least level logged
}

// command is what a worker is asked after it started (one JSON line each).
type command struct {
	Op       string         `json:"op"` // add, probe, profile, stop
	N        int            `json:"n,omitempty"`
	Conc     int            `json:"conc,omitempty"`
	Prefixes []netip.Prefix `json:"prefixes,omitempty"`
	T0       int64          `json:"t0,omitempty"` // Unix ns
	Path     string         `json:"path,omitempty"`
	Duration time.Duration  `json:"duration,omitempty"`
}

// report is a worker's line on its standard output.
type report struct {
	T   string `json:"t"` // started, done (a command's answer), status
	Op  string `json:"op,omitempty"`
	Err string `json:"err,omitempty"`
	// With status: the bytes of the worker's connections so far, and the
	// gateways that changed since the last status, each as its index,
	// remote routes, probe arrival (Unix ns, 0: none), then per controller
	// whether its session is live (0/1) and how many live sessions ended.
	In  int64     `json:"in,omitempty"`
	Out int64     `json:"out,omitempty"`
	Gws [][]int64 `json:"gws,omitempty"`
}

// ServeWorker runs one slice of a fleet split over processes: it reads
// its slice from in, starts it, reports to out, and runs the commands it
// reads until "stop" or the end of in (the parent went). It returns the
// process's exit code.
func ServeWorker(in io.Reader, out io.Writer) int {
	sc := bufio.NewScanner(in)
	sc.Buffer(nil, 16<<20)
	var wmu sync.Mutex
	enc := json.NewEncoder(out)
	send := func(r report) {
		wmu.Lock()
		defer wmu.Unlock()
		enc.Encode(r)
	}
	if !sc.Scan() {
		return 2
	}
	var wc workerConfig
	if err := json.Unmarshal(sc.Bytes(), &wc); err != nil {
		fmt.Fprintln(os.Stderr, "fleet worker:", err)
		return 2
	}
	cfg := Config{Controllers: wc.Controllers, Gateways: len(wc.Networks), First: wc.First,
		Network: func(i int) string { return wc.Networks[i] }, Dir: wc.Dir, StartRate: wc.StartRate, Keepalive: wc.Keepalive}
	if wc.Log {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: wc.LogLevel}))
	}
	f, err := Start(context.Background(), cfg)
	if err != nil {
		send(report{T: "started", Err: err.Error()})
		return 1
	}
	send(report{T: "started"})
	for _, g := range f.gws {
		g.dirty.Store(true)
	}
	status := func() {
		r := report{T: "status", In: f.BytesIn.Load(), Out: f.BytesOut.Load()}
		for _, g := range f.gws {
			if g.dirty.Swap(false) {
				r.Gws = append(r.Gws, g.snapshot(wc.Controllers))
			}
		}
		send(r)
	}
	stopStatus := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(statusEvery)
		defer t.Stop()
		for {
			select {
			case <-stopStatus:
				return
			case <-t.C:
				status()
			}
		}
	})
	for sc.Scan() {
		var c command
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			fmt.Fprintln(os.Stderr, "fleet worker:", err)
			break
		}
		if c.Op == "stop" {
			break
		}
		var err error
		switch c.Op {
		case "add":
			err = f.AddEndpoints(context.Background(), c.N, c.Conc)
		case "probe":
			f.probeFrom(c.Prefixes, time.Unix(0, c.T0))
		case "profile":
			err = profileSelf(c.Path, c.Duration)
		default:
			err = fmt.Errorf("unknown command %q", c.Op)
		}
		r := report{T: "done", Op: c.Op}
		if err != nil {
			r.Err = err.Error()
		}
		send(r)
	}
	f.Stop()
	close(stopStatus)
	wg.Wait()
	status()
	return 0
}

// profileSelf profiles this process's CPU into path for d, in the
// background.
func profileSelf(path string, d time.Duration) error {
	fh, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(fh); err != nil {
		fh.Close()
		return err
	}
	time.AfterFunc(d, func() { pprof.StopCPUProfile(); fh.Close() })
	return nil
}

// statusFields are a status entry's fields before its controllers' (live,
// downs) pairs: index, routes, probe applied, probe received.
const statusFields = 4

// snapshot is the gateway's state as a status entry.
func (g *Gateway) snapshot(ctls []string) []int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	var probe, recv int64
	if !g.probeAt.IsZero() {
		probe = g.probeAt.UnixNano()
	}
	if !g.recvAt.IsZero() {
		recv = g.recvAt.UnixNano()
	}
	s := make([]int64, 0, statusFields+2*len(ctls))
	s = append(s, int64(g.idx), int64(g.routes), probe, recv)
	for _, c := range ctls {
		live := int64(0)
		if g.live[c] {
			live = 1
		}
		s = append(s, live, int64(g.downs[c]))
	}
	return s
}

// worker is a worker process seen from the fleet that started it.
type worker struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	replies chan report
	exited  chan struct{}
	in, out atomic.Int64
}

// ProcessesFor is how many processes n gateways with a session to each of
// controllers need under this process's open-file limit (1 when they fit
// in this one).
func ProcessesFor(n, controllers int) int {
	per := PerProcess(controllers)
	return max(1, (n+per-1)/per)
}

// PerProcess is how many gateways with a session to each of controllers
// one process holds under this process's open-file limit.
func PerProcess(controllers int) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > 1<<30 {
		return 1 << 30
	}
	return max(1, (int(lim.Cur)-fileMargin)/(controllers+1))
}

// startWorkers starts cfg.Processes workers, each with an even slice of
// the gateways, and returns once every one of them has started its
// gateways; the returned fleet's gateways mirror theirs.
// With logOn, the workers log to their standard error.
func startWorkers(ctx context.Context, cfg Config, logOn bool) (*Fleet, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	f := &Fleet{cfg: cfg, probe: map[netip.Prefix]bool{}}
	for i := range cfg.Gateways {
		f.gws = append(f.gws, newGateway(f, cfg.First+i))
	}
	k := cfg.Processes
	rate := max(1, cfg.StartRate/k)
	var wg sync.WaitGroup
	errs := make([]error, k)
	for w := range k {
		lo, hi := w*cfg.Gateways/k, (w+1)*cfg.Gateways/k
		wc := workerConfig{Controllers: cfg.Controllers, First: cfg.First + lo, Dir: cfg.Dir, StartRate: rate,
			Keepalive: cfg.Keepalive, Log: logOn, LogLevel: logLevel(cfg.Log)}
		for i := lo; i < hi; i++ {
			wc.Networks = append(wc.Networks, cfg.Network(i))
		}
		wk, err := f.spawn(exe, wc, f.gws[lo:hi])
		if err != nil {
			f.Stop()
			return nil, fmt.Errorf("fleet worker %d: %w", w, err)
		}
		f.workers = append(f.workers, wk)
		wg.Go(func() {
			select {
			case r := <-wk.replies:
				if r.Err != "" {
					errs[w] = fmt.Errorf("fleet worker %d: %s", w, r.Err)
				}
			case <-wk.exited:
				errs[w] = fmt.Errorf("fleet worker %d exited while starting", w)
			case <-ctx.Done():
				errs[w] = ctx.Err()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		f.Stop()
		return nil, err
	}
	return f, nil
}

// spawn starts one worker for the gateways gws.
func (f *Fleet) spawn(exe string, wc workerConfig, gws []*Gateway) (*worker, error) {
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), WorkerEnv+"=1")
	cmd.Stderr = os.Stderr
	// The worker is killed when the thread that started it ends (below: the
	// goroutine that waits for it holds its thread), and ends by itself when
	// its standard input does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	wk := &worker{cmd: cmd, stdin: stdin, replies: make(chan report, 4), exited: make(chan struct{})}
	started := make(chan error, 1)
	byIdx := make(map[int64]*Gateway, len(gws))
	for _, g := range gws {
		byIdx[int64(g.idx)] = g
	}
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer close(wk.exited)
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 64<<20)
		for sc.Scan() {
			var r report
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				f.cfg.Log.Error("fleet worker status", logkey.Err, fmt.Errorf("%w: %.200s", err, sc.Text()))
				continue
			}
			if r.T != "status" {
				wk.replies <- r
				continue
			}
			wk.in.Store(r.In)
			wk.out.Store(r.Out)
			f.sumBytes()
			for _, s := range r.Gws {
				if len(s) != statusFields+2*len(f.cfg.Controllers) {
					continue // not this binary's status entry
				}
				if g := byIdx[s[0]]; g != nil {
					g.apply(s, f.cfg.Controllers)
				}
			}
		}
		cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	b, _ := json.Marshal(wc)
	if _, err := stdin.Write(append(b, '\n')); err != nil {
		cmd.Process.Kill()
		<-wk.exited
		return nil, err
	}
	return wk, nil
}

// apply takes a worker's status entry for the gateway.
func (g *Gateway) apply(s []int64, ctls []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.routes = int(s[1])
	g.probeAt, g.recvAt = time.Time{}, time.Time{}
	if s[2] != 0 {
		g.probeAt = time.Unix(0, s[2])
	}
	if s[3] != 0 {
		g.recvAt = time.Unix(0, s[3])
	}
	for i, c := range ctls {
		live := s[statusFields+2*i] == 1
		if live && !g.live[c] {
			g.liveAt = time.Now()
		}
		g.live[c] = live
		g.downs[c] = int(s[statusFields+1+2*i])
	}
}

func (f *Fleet) sumBytes() {
	f.bytesMu.Lock()
	defer f.bytesMu.Unlock()
	var in, out int64
	for _, w := range f.workers {
		in += w.in.Load()
		out += w.out.Load()
	}
	f.BytesIn.Store(in)
	f.BytesOut.Store(out)
}

// ask sends c to every worker and waits for their answers.
func (f *Fleet) ask(c command) error {
	b, _ := json.Marshal(c)
	b = append(b, '\n')
	errs := make([]error, len(f.workers))
	var wg sync.WaitGroup
	for i, w := range f.workers {
		if _, err := w.stdin.Write(b); err != nil {
			errs[i] = fmt.Errorf("fleet worker %d: %w", i, err)
			continue
		}
		wg.Go(func() {
			select {
			case r := <-w.replies:
				if r.Err != "" {
					errs[i] = fmt.Errorf("fleet worker %d: %s", i, r.Err)
				}
			case <-w.exited:
				errs[i] = fmt.Errorf("fleet worker %d exited", i)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// stopWorkers asks every worker to stop its gateways and waits for it, at
// most 30 s; one that did not exit by then is killed.
func (f *Fleet) stopWorkers() {
	b, _ := json.Marshal(command{Op: "stop"})
	for _, w := range f.workers {
		w.stdin.Write(append(b, '\n'))
		w.stdin.Close()
	}
	deadline := time.After(30 * time.Second)
	for _, w := range f.workers {
		select {
		case <-w.exited:
		case <-deadline:
			w.cmd.Process.Kill()
			<-w.exited
		}
	}
}

// CPUProfile profiles the CPU of the fleet's processes for d in the
// background: this process into dir/name.cpu or, when the fleet is split
// over worker processes, each worker into dir/name-N.cpu (go tool pprof
// merges the files it is given).
func (f *Fleet) CPUProfile(dir, name string, d time.Duration) error {
	if len(f.workers) == 0 {
		return profileSelf(filepath.Join(dir, name+".cpu"), d)
	}
	var errs []error
	for i, w := range f.workers {
		b, _ := json.Marshal(command{Op: "profile", Path: filepath.Join(dir, fmt.Sprintf("%s-%d.cpu", name, i)), Duration: d})
		if _, err := w.stdin.Write(append(b, '\n')); err != nil {
			errs = append(errs, err)
			continue
		}
		select {
		case r := <-w.replies:
			if r.Err != "" {
				errs = append(errs, errors.New(r.Err))
			}
		case <-w.exited:
			errs = append(errs, fmt.Errorf("fleet worker %d exited", i))
		}
	}
	return errors.Join(errs...)
}

// logLevel is the least level log logs, for a worker to log the same.
func logLevel(log *slog.Logger) slog.Level {
	for _, l := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn} {
		if log.Enabled(context.Background(), l) {
			return l
		}
	}
	return slog.LevelError
}
