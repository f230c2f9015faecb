// Package netnstest gives privileged tests throwaway network namespaces.
//
// Each namespace is fresh per test, made on a throwaway locked OS thread and
// reached through handles (a netlink handle, an nsfs file descriptor): the
// test goroutine never changes namespace. Work that needs a thread inside the
// namespace (sockets, /proc/sys) runs through Do on another throwaway thread.
// Everything a helper makes is removed by t.Cleanup, also when the test fails:
// processes left in a namespace are killed, then the namespace is deleted.
// The helpers need root; RequireRoot skips a test otherwise.
package netnstest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	cnins "github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/iotfabric/iotfabric/internal/testenv"
)

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t, "network namespaces")
}

// NS is a named network namespace (/run/netns/<Name>) made for a test, or
// the process's own namespace (Self; Name is then "").
type NS struct {
	// Name is the namespace's name for iproute2 (`ip -n Name`, `ip netns exec Name`).
	Name string

	nl *netlink.Handle
	fd netns.NsHandle
}

var seq atomic.Uint32

// uniqueName is unique across the test processes running at the same time.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s%d-%d", prefix, os.Getpid()%100000, seq.Add(1))
}

// New makes a fresh named network namespace with loopback up; prefix starts
// its name. t.Cleanup kills the processes left in it and deletes it.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	RequireRoot(t)
	name := uniqueName(prefix)
	fd, err := newNamed(name)
	if err != nil {
		t.Fatalf("netnstest: new namespace %s: %v", name, err)
	}
	n := &NS{Name: name, fd: fd}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("netnstest: %v", err)
		}
	})
	if n.nl, err = netlink.NewHandleAt(fd, unix.NETLINK_ROUTE); err != nil {
		t.Fatalf("netnstest: netlink handle in %s: %v", name, err)
	}
	lo, err := n.nl.LinkByName("lo")
	if err == nil {
		err = n.nl.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("netnstest: loopback up in %s: %v", name, err)
	}
	return n
}

// newNamed makes the namespace on a locked thread that is never unlocked: it
// ends with its goroutine, and the runtime discards it with the namespace.
func newNamed(name string) (netns.NsHandle, error) {
	type result struct {
		fd  netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := netns.NewNamed(name)
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

// Self returns the process's own network namespace, for the side of a link
// where code under test runs in the test process. Run the test binary in a
// namespace of its own first (ReexecInNewNetns), so that what is made there
// vanishes with the process.
func Self(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	// Any thread that runs goroutines is in the process's namespace: this
	// package moves only throwaway locked threads, which the runtime ends (or
	// parks, for the main thread) when their goroutine ends.
	runtime.LockOSThread()
	fd, err := netns.Get()
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatalf("netnstest: own namespace: %v", err)
	}
	t.Cleanup(func() { fd.Close() })
	h, err := netlink.NewHandleAt(fd, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("netnstest: netlink handle: %v", err)
	}
	t.Cleanup(h.Close)
	return &NS{nl: h, fd: fd}
}

// Path is the namespace's nsfs path, for tools and APIs that take one (CNI's
// CNI_NETNS, setns by path).
func (n *NS) Path() string {
	if n.Name == "" {
		return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(n.fd))
	}
	return "/run/netns/" + n.Name
}

// Handle is the namespace's netlink handle (NETLINK_ROUTE).
func (n *NS) Handle() *netlink.Handle { return n.nl }

// NsHandle is an open file descriptor of the namespace (for setns, or
// netlink.NsFd to create a link's peer inside it).
func (n *NS) NsHandle() netns.NsHandle { return n.fd }

// CNI returns the namespace as containernetworking's ns.NetNS (for libcni
// and the plugin helpers); t.Cleanup closes it.
func (n *NS) CNI(t testing.TB) cnins.NetNS {
	t.Helper()
	c, err := cnins.GetNS(n.Path())
	if err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Do runs fn on a throwaway locked OS thread inside the namespace and
// returns its error. The thread is never unlocked, so the runtime discards
// it afterwards instead of reusing it in the wrong namespace.
func (n *NS) Do(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(n.fd); err != nil {
			done <- fmt.Errorf("enter namespace %s: %w", n.Name, err)
			return
		}
		done <- fn()
	}()
	return <-done
}

// Command returns a command that runs inside the namespace (through `ip
// netns exec`); for Self it runs the program directly.
func (n *NS) Command(name string, args ...string) *exec.Cmd {
	if n.Name == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// TryIP runs `ip -n NAME args...` and returns its combined output.
func (n *NS) TryIP(args ...string) (string, error) {
	if n.Name != "" {
		args = append([]string{"-n", n.Name}, args...)
	}
	out, err := exec.Command("ip", args...).CombinedOutput()
	return string(out), err
}

// IP runs `ip -n NAME args...` and returns its output; it fails the test on error.
func (n *NS) IP(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.TryIP(args...)
	if err != nil {
		t.Fatalf("ip -n %s %s: %v\n%s", n.Name, strings.Join(args, " "), err, out)
	}
	return out
}

// Sysctl writes /proc/sys/<key> (key with slashes, e.g. net/ipv4/ip_forward)
// inside the namespace; it fails the test on error.
func (n *NS) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	err := n.Do(func() error { return os.WriteFile("/proc/sys/"+key, []byte(value), 0) })
	if err != nil {
		t.Fatalf("sysctl %s=%s in %s: %v", key, value, n.Name, err)
	}
}

// Listen opens a listener inside the namespace.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// Dial opens a connection from inside the namespace.
func (n *NS) Dial(network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var err error
		c, err = net.Dial(network, addr)
		return err
	})
	return c, err
}

// Close kills the processes still in the namespace and deletes it. New's
// cleanup calls it; it does nothing for Self or a second time.
func (n *NS) Close() error {
	if n.Name == "" || n.fd < 0 {
		return nil
	}
	if out, err := exec.Command("ip", "netns", "pids", n.Name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			// Our own process can be listed: a locked goroutine that ended
			// on the main thread leaves that thread parked in the namespace.
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if n.nl != nil {
		n.nl.Close()
		n.nl = nil
	}
	n.fd.Close()
	n.fd = -1
	if err := netns.DeleteNamed(n.Name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete namespace %s: %w", n.Name, err)
	}
	return nil
}

// Veth makes a veth pair, nameA in a and nameB in b, both ends up. The pair
// goes when either namespace is deleted; for Self on both sides t.Cleanup
// removes it.
func Veth(t testing.TB, a *NS, nameA string, b *NS, nameB string) {
	t.Helper()
	if err := veth(a, nameA, b, nameB); err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	if a.Name == "" && b.Name == "" {
		t.Cleanup(func() { deleteLink(a, nameA) })
	}
}

func veth(a *NS, nameA string, b *NS, nameB string) error {
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: nameA}, PeerName: nameB,
		PeerNamespace: netlink.NsFd(int(b.fd))}
	if err := a.nl.LinkAdd(v); err != nil {
		return fmt.Errorf("add veth %s/%s: %w", nameA, nameB, err)
	}
	for _, side := range []struct {
		ns   *NS
		name string
	}{{a, nameA}, {b, nameB}} {
		l, err := side.ns.nl.LinkByName(side.name)
		if err == nil {
			err = side.ns.nl.LinkSetUp(l)
		}
		if err != nil {
			return fmt.Errorf("veth end %s up: %w", side.name, err)
		}
	}
	return nil
}

func deleteLink(n *NS, name string) {
	if l, err := n.nl.LinkByName(name); err == nil {
		n.nl.LinkDel(l)
	}
}

// Link is a veth pair between two namespaces with one address on each end.
type Link struct {
	A, B         *NS
	AddrA, AddrB netip.Addr
	NameA, NameB string
}

// Connect joins a and b with a veth pair of unique names and gives the ends
// addrA and addrB (same prefix, e.g. 10.0.0.1/24 and 10.0.0.2/24; IPv6
// without duplicate address detection). t.Cleanup removes the pair.
func Connect(t testing.TB, a, b *NS, addrA, addrB netip.Prefix) *Link {
	t.Helper()
	// Unique across processes too: tests of several packages may add links
	// to the same (host) namespace at the same time.
	k, pid := seq.Add(1), os.Getpid()%100000
	l := &Link{A: a, B: b, AddrA: addrA.Addr(), AddrB: addrB.Addr(),
		NameA: fmt.Sprintf("ifa%d.%d", pid, k), NameB: fmt.Sprintf("ifz%d.%d", pid, k)}
	if err := veth(a, l.NameA, b, l.NameB); err != nil {
		t.Fatalf("netnstest: connect: %v", err)
	}
	t.Cleanup(func() { deleteLink(a, l.NameA) })
	for _, side := range []struct {
		ns   *NS
		name string
		addr netip.Prefix
	}{{a, l.NameA, addrA}, {b, l.NameB, addrB}} {
		if err := addAddr(side.ns, side.name, side.addr); err != nil {
			t.Fatalf("netnstest: connect: %v", err)
		}
	}
	return l
}

func addAddr(n *NS, link string, p netip.Prefix) error {
	l, err := n.nl.LinkByName(link)
	if err != nil {
		return fmt.Errorf("find %s: %w", link, err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := n.nl.AddrAdd(l, a); err != nil {
		return fmt.Errorf("address %s on %s: %w", p, link, err)
	}
	return nil
}

// reexecMarker tells the re-executed test binary that it is the child.
const reexecMarker = "IOTFABRIC_NETNSTEST_CHILD"

// ReexecInNewNetns makes the test binary run in a fresh network namespace
// of its own: call it first in TestMain. As root, outside such a namespace,
// it runs the same binary again with CLONE_NEWNET and exits with its
// status; in the child (or when not root) it returns, with loopback up.
// Code under test that runs in the test process then lives in a namespace
// nobody else uses, and everything made there vanishes with the process.
func ReexecInNewNetns() {
	if os.Geteuid() != 0 {
		return
	}
	if os.Getenv(reexecMarker) == "" {
		cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), reexecMarker+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			os.Exit(ee.ExitCode())
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "netnstest: re-exec in a new network namespace:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	if lo, err := netlink.LinkByName("lo"); err == nil {
		netlink.LinkSetUp(lo)
	}
}
