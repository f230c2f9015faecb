// Package overlaytest builds throwaway network topologies for the overlay tests:
// fresh named network namespaces made on locked throwaway OS threads, veth pairs,
// "pods" wired the way the CNI plugin wires them, and a text dump of the kernel
// state iotfabric owns (through iproute2, independent of the code under test).
package overlaytest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NS is a named network namespace that is removed when the test ends.
type NS struct {
	Name   string
	Path   string
	Handle netns.NsHandle
	NL     *netlink.Handle
}

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
}

// NewNS makes a fresh named namespace; the test goroutine never changes namespace.
func NewNS(t testing.TB, prefix string) *NS {
	t.Helper()
	RequireRoot(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := prefix + "-" + hex.EncodeToString(b[:])
	type res struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		h, err := netns.NewNamed(name)
		ch <- res{h, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("new namespace %s: %v", name, r.err)
	}
	n := &NS{Name: name, Path: "/run/netns/" + name, Handle: r.h}
	t.Cleanup(func() {
		if n.NL != nil {
			n.NL.Close()
		}
		r.h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	nl, err := netlink.NewHandleAt(r.h, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	n.NL = nl
	lo, err := nl.LinkByName("lo")
	if err == nil {
		err = nl.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("lo up in %s: %v", name, err)
	}
	return n
}

// Do runs fn on a throwaway OS thread inside the namespace.
func (n *NS) Do(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(n.Handle); err != nil {
			done <- err
			return
		}
		done <- fn()
	}()
	return <-done
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

// TryIP runs `ip -n NAME args...`.
func (n *NS) TryIP(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"-n", n.Name}, args...)...).CombinedOutput()
	return string(out), err
}

// Sysctl writes /proc/sys/<key> inside the namespace.
func (n *NS) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	err := n.Do(func() error { return os.WriteFile("/proc/sys/"+key, []byte(value), 0) })
	if err != nil {
		t.Fatalf("sysctl %s=%s in %s: %v", key, value, n.Name, err)
	}
}

// Veth creates a veth pair: hostName in host, peerName in peer.
func Veth(t testing.TB, host *NS, hostName string, peer *NS, peerName string) {
	t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName}, PeerName: peerName,
		PeerNamespace: netlink.NsFd(int(peer.Handle))}
	if err := host.NL.LinkAdd(v); err != nil {
		t.Fatalf("veth %s/%s: %v", hostName, peerName, err)
	}
	l, err := peer.NL.LinkByName(peerName)
	if err == nil {
		err = peer.NL.LinkSetUp(l)
	}
	if err != nil {
		t.Fatalf("veth peer %s up: %v", peerName, err)
	}
}

// PodMTU is the MTU of test pods: a 1500-byte underlay minus the largest
// overlay overhead (overlay.MaxOverhead).
const PodMTU = 1500 - 32

// Pod makes a namespace wired as the CNI plugin wires a pod: a veth whose host
// side hostIf stays in gw, the pod side eth0 with addr/32, a route to the
// gateway address and a default route via it.
func Pod(t testing.TB, gw *NS, hostIf string, addr, gateway netip.Addr) *NS {
	t.Helper()
	pod := NewNS(t, "iofpod")
	Veth(t, gw, hostIf, pod, "eth0")
	// The CNI plugin gives pods an MTU that leaves room for the overlay headers.
	pod.IP(t, "link", "set", "eth0", "mtu", fmt.Sprint(PodMTU))
	gw.IP(t, "link", "set", hostIf, "mtu", fmt.Sprint(PodMTU))
	pod.IP(t, "addr", "add", netip.PrefixFrom(addr, addr.BitLen()).String(), "dev", "eth0")
	pod.IP(t, "route", "add", gateway.String(), "dev", "eth0", "scope", "link")
	pod.IP(t, "route", "add", "default", "via", gateway.String(), "dev", "eth0")
	return pod
}

// Underlay joins two namespaces with a veth pair addressed a/24 and b/24 (the
// gateways' underlay link); it returns the interface names (u0 in both).
func Underlay(t testing.TB, x *NS, a netip.Addr, y *NS, b netip.Addr) {
	t.Helper()
	Veth(t, x, "u0", y, "u0")
	x.IP(t, "addr", "add", a.String()+"/24", "dev", "u0")
	x.IP(t, "link", "set", "u0", "up")
	y.IP(t, "addr", "add", b.String()+"/24", "dev", "u0")
}

// Dump returns the kernel state iotfabric owns in the namespace as sorted,
// normalised text lines: interfaces with the iof prefix, rules in the iotfabric
// priority range, routes and label routes with the iotfabric protocol.
func (n *NS) Dump(t testing.TB) string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(n.IP(t, "-o", "link", "show"), "\n") {
		f := strings.Fields(l)
		if len(f) > 2 && strings.HasPrefix(f[1], "iof") {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			lines = append(lines, "link "+name)
		}
	}
	for _, fam := range []string{"-4", "-6"} {
		for _, l := range strings.Split(n.IP(t, fam, "rule", "show"), "\n") {
			if strings.HasPrefix(l, "70") && len(l) > 5 && l[4] == ':' {
				lines = append(lines, "rule "+strings.Join(strings.Fields(l), " "))
			}
		}
		for _, l := range strings.Split(n.IP(t, fam, "route", "show", "table", "all", "proto", "165"), "\n") {
			if l = strings.Join(strings.Fields(l), " "); l != "" {
				lines = append(lines, "route "+l)
			}
		}
	}
	if out, err := n.TryIP("nexthop", "show"); err == nil {
		for _, l := range strings.Split(out, "\n") {
			if l = strings.Join(strings.Fields(l), " "); strings.Contains(l, "proto 165") {
				lines = append(lines, "nexthop "+l)
			}
		}
	}
	if out, err := n.TryIP("-f", "mpls", "route", "show"); err == nil {
		for _, l := range strings.Split(out, "\n") {
			if l = strings.Join(strings.Fields(l), " "); l != "" {
				lines = append(lines, "mpls "+l)
			}
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// Dial connects over TCP from inside the namespace and returns an error if the
// connection or the echo of msg fails.
func (n *NS) Dial(addr netip.AddrPort, msg string) error {
	return n.Do(func() error {
		c, err := net.DialTimeout("tcp", addr.String(), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		_ = c.SetReadDeadline(timeNowPlus3s())
		if _, err := ioReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != msg {
			return fmt.Errorf("echo %q, want %q", buf, msg)
		}
		return nil
	})
}

// Echo starts a TCP echo server inside the namespace on addr:0 and returns its
// address; it stops when the test ends.
func (n *NS) Echo(t testing.TB, addr netip.Addr) netip.AddrPort {
	t.Helper()
	var ln net.Listener
	err := n.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", n.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					k, err := c.Read(buf)
					if k > 0 {
						if _, err := c.Write(buf[:k]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

func timeNowPlus3s() time.Time { return time.Now().Add(3 * time.Second) }

func ioReadFull(r io.Reader, b []byte) (int, error) { return io.ReadFull(r, b) }
