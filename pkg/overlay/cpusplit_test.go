package overlay_test

// Helpers of BenchmarkVMThroughput that split the VM's CPU between the
// sending and the receiving side: each side's namespaces steer their received
// packets to one CPU (RPS) and the side's socket thread is pinned there, so
// the per-CPU counters of /proc/stat tell each side's cost.

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/iotfabric/iotfabric/internal/netnstest"
)

// cpuBusy returns the busy seconds (user, nice, system, irq, softirq, steal:
// all but idle and iowait) of each CPU since boot, from /proc/stat.
func cpuBusy() ([]float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, err
	}
	var busy []float64
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		var ticks uint64
		for i, v := range f[1:9] {
			if i == 3 || i == 4 { // idle, iowait
				continue
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/stat %s: %w", f[0], err)
			}
			ticks += n
		}
		busy = append(busy, float64(ticks)/100) // USER_HZ
	}
	return busy, nil
}

// steerRx makes every link of ns hand its received packets to cpu (RPS:
// /sys/class/net/<link>/queues/rx-*/rps_cpus). sysfs shows the links of the
// namespace of whoever mounts it, so it is mounted afresh on a throwaway
// thread with its own mount namespace.
func steerRx(t testing.TB, ns *netnstest.NS, cpu int) {
	t.Helper()
	links, err := ns.Handle().LinkList()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread goes with the goroutine
		done <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("unshare mount namespace: %w", err)
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return fmt.Errorf("make mounts private: %w", err)
			}
			if err := netns.Set(ns.NsHandle()); err != nil {
				return fmt.Errorf("enter %s: %w", ns.Name, err)
			}
			dir, err := os.MkdirTemp("", "iofsys")
			if err != nil {
				return err
			}
			defer os.Remove(dir)
			if err := unix.Mount("sysfs", dir, "sysfs", 0, ""); err != nil {
				return fmt.Errorf("mount sysfs: %w", err)
			}
			defer unix.Unmount(dir, unix.MNT_DETACH)
			n := 0
			for _, l := range links {
				qs, _ := filepath.Glob(filepath.Join(dir, "class/net", l.Attrs().Name, "queues/rx-*/rps_cpus"))
				for _, q := range qs {
					if err := os.WriteFile(q, []byte(strconv.FormatUint(1<<cpu, 16)), 0); err != nil {
						return fmt.Errorf("%s: %w", q, err)
					}
					n++
				}
			}
			if n == 0 {
				return fmt.Errorf("no rps_cpus file under %s", dir)
			}
			return nil
		}()
	}()
	if err := <-done; err != nil {
		t.Fatalf("steer %s's received packets to CPU %d: %v", ns.Name, cpu, err)
	}
}

// pinThread locks the calling goroutine to its thread and the thread to cpu;
// the thread is never unlocked, so it ends with the goroutine.
func pinThread(cpu int) error {
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	return unix.SchedSetaffinity(0, &set)
}

// pinnedSink is netnstest's Sink with the reading thread pinned to cpu.
func pinnedSink(t testing.TB, ns *netnstest.NS, addr netip.Addr, cpu int) netip.AddrPort {
	t.Helper()
	l, err := ns.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatalf("listen in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if pinThread(cpu) != nil {
					return
				}
				k, _ := io.Copy(io.Discard, c)
				binary.Write(c, binary.BigEndian, uint64(k))
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// transfer sends size bytes from pod ns to a sink and waits for its count,
// writing from a thread pinned to cpu (any CPU when cpu < 0); it allows ten
// minutes, as a slow path on a loaded emulated VM may need.
func transfer(ns *netnstest.NS, to netip.AddrPort, size int64, cpu int) (time.Duration, error) {
	c, err := ns.Dial("tcp", to.String())
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Minute))
	type result struct {
		d   time.Duration
		err error
	}
	done := make(chan result, 1)
	go func() {
		if cpu >= 0 {
			if err := pinThread(cpu); err != nil {
				done <- result{err: fmt.Errorf("pin to CPU %d: %w", cpu, err)}
				return
			}
		}
		start := time.Now()
		buf := make([]byte, 128<<10)
		for sent := int64(0); sent < size; {
			w, err := c.Write(buf[:min(int64(len(buf)), size-sent)])
			sent += int64(w)
			if err != nil {
				done <- result{err: fmt.Errorf("after %d bytes: %w", sent, err)}
				return
			}
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			done <- result{err: err}
			return
		}
		var got uint64
		if err := binary.Read(c, binary.BigEndian, &got); err != nil {
			done <- result{err: err}
			return
		}
		if got != uint64(size) {
			done <- result{err: fmt.Errorf("sink read %d bytes, want %d", got, size)}
			return
		}
		done <- result{d: time.Since(start)}
	}()
	r := <-done
	return r.d, r.err
}
