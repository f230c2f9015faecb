// Package bgptest runs real BGP peers — FRR 8.4, BIRD 2 and gobgpd from
// Debian — in fresh network namespaces for iotfabric's interop tests,
// end-to-end tests and demo. Everything a helper starts is stopped, and
// every namespace and link it makes is removed, by t.Cleanup, also when the
// test fails. The helpers need root.
package bgptest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netns is a named network namespace (/run/netns/<Name>) made for a test,
// or the calling process's own namespace (Name == "").
type Netns struct {
	Name   string
	handle *netlink.Handle
	ns     netns.NsHandle
}

var seq atomic.Uint32

func uniqueName(prefix string) string {
	return fmt.Sprintf("%s%d-%d", prefix, os.Getpid()%100000, seq.Add(1))
}

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, real BGP daemons)")
	}
}

// NewNetns makes a fresh named network namespace with loopback up. It is
// made on a throwaway locked OS thread and configured through a netlink
// handle; the test goroutine never changes namespace. t.Cleanup kills every
// process left in it and deletes it.
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	RequireRoot(t)
	n, err := newNamed(uniqueName("ifb"))
	if err != nil {
		t.Fatalf("bgptest: new netns: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func newNamed(name string) (*Netns, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread is never unlocked: it ends with this goroutine and
		// takes the new namespace with it.
		runtime.LockOSThread()
		ns, err := netns.NewNamed(name)
		ch <- result{ns, err}
	}()
	r := <-ch
	if r.err != nil {
		return nil, fmt.Errorf("create %s: %w", name, r.err)
	}
	h, err := netlink.NewHandleAt(r.ns, unix.NETLINK_ROUTE)
	if err != nil {
		r.ns.Close()
		netns.DeleteNamed(name)
		return nil, fmt.Errorf("netlink handle in %s: %w", name, err)
	}
	n := &Netns{Name: name, handle: h, ns: r.ns}
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("loopback up in %s: %w", name, err)
	}
	return n, nil
}

// Self returns the calling process's own namespace (for the side of a link
// where an in-process speaker runs). Run the test binary in a fresh
// namespace first (see ReexecInNewNetns), so links and addresses made
// there vanish with the process.
func Self(t testing.TB) *Netns {
	t.Helper()
	RequireRoot(t)
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("bgptest: netlink handle: %v", err)
	}
	t.Cleanup(h.Close)
	return &Netns{handle: h, ns: -1}
}

// Handle is the namespace's netlink handle.
func (n *Netns) Handle() *netlink.Handle { return n.handle }

// Command returns a command that runs inside the namespace
// (`ip netns exec`); for Self it runs the program directly.
func (n *Netns) Command(name string, args ...string) *exec.Cmd {
	if n.Name == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Listen opens a TCP listener inside the namespace (the socket is made on
// a throwaway thread that enters the namespace).
func (n *Netns) Listen(network, addr string) (net.Listener, error) {
	if n.Name == "" {
		return net.Listen(network, addr)
	}
	type result struct {
		l   net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is discarded
		if err := netns.Set(n.ns); err != nil {
			ch <- result{nil, fmt.Errorf("enter %s: %w", n.Name, err)}
			return
		}
		l, err := net.Listen(network, addr)
		ch <- result{l, err}
	}()
	r := <-ch
	return r.l, r.err
}

// Dial opens a TCP connection from inside the namespace.
func (n *Netns) Dial(network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if n.Name != "" {
			if err := netns.Set(n.ns); err != nil {
				ch <- result{nil, fmt.Errorf("enter %s: %w", n.Name, err)}
				return
			}
		}
		c, err := net.Dial(network, addr)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// Close kills the processes still in the namespace and deletes it.
func (n *Netns) Close() error {
	if n.Name == "" {
		return nil
	}
	var errs []error
	if out, err := exec.Command("ip", "netns", "pids", n.Name).Output(); err == nil {
		for _, f := range splitFields(string(out)) {
			// Our own process can be listed: a locked goroutine that
			// ended on the main thread leaves that thread parked in the
			// namespace it entered.
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if n.handle != nil {
		n.handle.Close()
	}
	n.ns.Close()
	if err := netns.DeleteNamed(n.Name); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("delete netns %s: %w", n.Name, err))
	}
	return errors.Join(errs...)
}

func splitFields(s string) []string {
	var out []string
	start := -1
	for i, c := range s {
		if c == ' ' || c == '\n' || c == '\t' {
			if start >= 0 {
				out = append(out, s[start:i])
				start = -1
			}
		} else if start < 0 {
			start = i
		}
	}
	if start >= 0 {
		out = append(out, s[start:])
	}
	return out
}

// Link is a veth pair between two namespaces, with one address on each end.
type Link struct {
	A, B         *Netns
	AddrA, AddrB netip.Addr
	NameA, NameB string
}

// Connect joins a and b with a veth pair and gives the ends addrA and addrB
// (same prefix, e.g. 10.0.0.1/24 and 10.0.0.2/24). t.Cleanup removes it.
func Connect(t testing.TB, a, b *Netns, addrA, addrB netip.Prefix) *Link {
	t.Helper()
	l, err := connect(a, b, addrA, addrB)
	if err != nil {
		t.Fatalf("bgptest: connect: %v", err)
	}
	t.Cleanup(func() {
		if link, err := a.handle.LinkByName(l.NameA); err == nil {
			a.handle.LinkDel(link)
		}
	})
	return l
}

func connect(a, b *Netns, addrA, addrB netip.Prefix) (*Link, error) {
	// Unique across processes too: tests of several packages may add links
	// to the same (host) namespace at the same time.
	n := seq.Add(1)
	pid := os.Getpid() % 100000
	nameA, nameB := fmt.Sprintf("ifa%d.%d", pid, n), fmt.Sprintf("ifz%d.%d", pid, n)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: nameA}, PeerName: nameB}
	if err := a.handle.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("add veth %s: %w", nameA, err)
	}
	peer, err := a.handle.LinkByName(nameB)
	if err != nil {
		return nil, fmt.Errorf("veth peer %s: %w", nameB, err)
	}
	if err := a.handle.LinkSetNsFd(peer, int(b.nsFd())); err != nil {
		return nil, fmt.Errorf("move %s: %w", nameB, err)
	}
	for _, side := range []struct {
		h    *netlink.Handle
		name string
		addr netip.Prefix
	}{{a.handle, nameA, addrA}, {b.handle, nameB, addrB}} {
		link, err := side.h.LinkByName(side.name)
		if err != nil {
			return nil, fmt.Errorf("find %s: %w", side.name, err)
		}
		ip := net.IP(side.addr.Addr().AsSlice())
		nl := &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(side.addr.Bits(), side.addr.Addr().BitLen())}}
		if side.addr.Addr().Is6() {
			nl.Flags = unix.IFA_F_NODAD
		}
		if err := side.h.AddrAdd(link, nl); err != nil {
			return nil, fmt.Errorf("address %s on %s: %w", side.addr, side.name, err)
		}
		if err := side.h.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("up %s: %w", side.name, err)
		}
	}
	return &Link{A: a, B: b, AddrA: addrA.Addr(), AddrB: addrB.Addr(), NameA: nameA, NameB: nameB}, nil
}

func (n *Netns) nsFd() netns.NsHandle {
	if n.Name == "" && n.ns < 0 {
		runtime.LockOSThread()
		h, err := netns.Get()
		runtime.UnlockOSThread()
		if err == nil {
			n.ns = h
		}
	}
	return n.ns
}

// ReexecInNewNetns makes the test binary run in a fresh network namespace
// of its own: call it first in TestMain. As root, outside such a
// namespace, it runs the same binary again with CLONE_NEWNET and exits with
// its status; in the child (or when not root) it returns, with loopback up.
// An in-process speaker then lives in a namespace nobody else uses.
func ReexecInNewNetns() {
	const marker = "IOTFABRIC_BGPTEST_NETNS"
	if os.Geteuid() != 0 {
		return
	}
	if os.Getenv(marker) == "" {
		cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), marker+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			os.Exit(ee.ExitCode())
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bgptest: re-exec in a new network namespace:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	if lo, err := netlink.LinkByName("lo"); err == nil {
		netlink.LinkSetUp(lo)
	}
}
