// Command vminit is the /init of the vmtest initramfs: it mounts the pseudo
// file systems, loads the kernel modules listed in /modules/order, runs the
// commands in /vmtest.args (one argument a line; a line ";" ends a command and
// starts the next, and every command runs), prints the first non-zero exit
// code (or 0) as "VMTEST-EXIT <code>" on the console and powers the VM off.
// Each command's duration and the time since the kernel started are printed
// as "VMTEST-TIME ...".
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	code := run()
	fmt.Printf("\nVMTEST-EXIT %d\n", code)
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

func run() int {
	for _, m := range []struct{ src, dst, typ string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/run", "tmpfs"}, {"tmpfs", "/tmp", "tmpfs"},
	} {
		_ = os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.typ, 0, ""); err != nil {
			fmt.Printf("vminit: mount %s: %v\n", m.dst, err)
			return 120
		}
	}
	order, err := os.ReadFile("/modules/order")
	if err != nil {
		fmt.Printf("vminit: %v\n", err)
		return 121
	}
	for _, name := range strings.Fields(string(order)) {
		if err := loadModule(filepath.Join("/modules", name+".ko")); err != nil {
			fmt.Printf("vminit: load %s: %v\n", name, err)
			return 122
		}
	}
	args, err := readLines("/vmtest.args")
	if err != nil || len(args) == 0 {
		fmt.Printf("vminit: /vmtest.args: %v\n", err)
		return 123
	}
	code := 0
	for len(args) > 0 {
		n := slices.Index(args, ";")
		if n < 0 {
			n = len(args)
		}
		if n > 0 {
			start := time.Now()
			c := runOne(args[:n])
			fmt.Printf("VMTEST-TIME %s: %.1f s (uptime %s s)\n", filepath.Base(args[0]), time.Since(start).Seconds(), uptime())
			if code == 0 {
				code = c
			}
		}
		args = args[min(n+1, len(args)):]
	}
	return code
}

// uptime is the seconds since the kernel started, from /proc/uptime.
func uptime() string {
	b, _ := os.ReadFile("/proc/uptime")
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

func runOne(args []string) int {
	fmt.Printf("VMTEST-TIME start: uptime %s s\n", uptime())
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Dir = "/tmp"
	cmd.Env = []string{"PATH=/bin:/sbin:/usr/bin:/usr/sbin", "HOME=/tmp", "TMPDIR=/tmp", "IOTFABRIC_VMTEST=1"}
	if v, err := os.ReadFile("/vmtest.env"); err == nil {
		cmd.Env = append(cmd.Env, strings.Fields(string(v))...)
	}
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Printf("vminit: run %v: %v\n", args, err)
		return 124
	}
	return 0
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && err != unix.EEXIST {
		return err
	}
	return nil
}

func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if l := strings.TrimSpace(s.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out, s.Err()
}
