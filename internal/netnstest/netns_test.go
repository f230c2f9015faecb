package netnstest

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	cnins "github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func TestMain(m *testing.M) {
	ReexecInNewNetns()
	os.Exit(m.Run())
}

func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// threadNS is the namespace inode of the calling (locked) thread. The
// process's /proc/self/ns/net is the main thread's, which may be parked in a
// namespace a throwaway goroutine entered.
func threadNS(t *testing.T) uint64 {
	return nsInode(t, fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()))
}

// The test process runs in a namespace of its own, not the host's.
func TestReexecInNewNetns(t *testing.T) {
	RequireRoot(t)
	if os.Getenv(reexecMarker) == "" {
		t.Fatal("not re-executed")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if threadNS(t) == nsInode(t, fmt.Sprintf("/proc/%d/ns/net", os.Getppid())) {
		t.Fatal("the test process shares its parent's network namespace")
	}
}

func TestNewCleansUp(t *testing.T) {
	RequireRoot(t)
	var name string
	var pid int
	t.Run("inner", func(t *testing.T) {
		n := New(t, "nstest")
		name = n.Name
		if _, err := os.Stat(n.Path()); err != nil {
			t.Fatal(err)
		}
		lo, err := n.Handle().LinkByName("lo")
		if err != nil || lo.Attrs().Flags&(1<<0) == 0 {
			t.Fatalf("lo: %v %v", lo, err)
		}
		if links, _ := n.Handle().LinkList(); len(links) != 1 {
			t.Fatalf("a fresh namespace has %d links, want only lo", len(links))
		}
		cmd := n.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go cmd.Wait()
		pid = cmd.Process.Pid
		// `ip netns exec` enters the namespace, then runs sleep.
		for deadline := time.Now().Add(5 * time.Second); nsInode(t, fmt.Sprintf("/proc/%d/ns/net", pid)) != nsInode(t, n.Path()); {
			if time.Now().After(deadline) {
				t.Fatal("the command does not run inside the namespace")
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	if _, err := os.Stat("/run/netns/" + name); !os.IsNotExist(err) {
		t.Errorf("namespace %s left behind: %v", name, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("process %d left running", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A test that fails half-way (here: in a child process) leaves nothing behind.
func TestCleanupOnFailure(t *testing.T) {
	RequireRoot(t)
	if os.Getenv("NETNSTEST_FAIL") != "" {
		n := New(t, "nsfail")
		Veth(t, n, "a0", New(t, "nsfail"), "b0")
		fmt.Println("namespace", n.Name)
		t.Fatal("failing on purpose")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCleanupOnFailure$", "-test.count=1")
	cmd.Env = append(os.Environ(), "NETNSTEST_FAIL=1")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "failing on purpose") {
		t.Fatalf("child test: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`namespace (nsfail\S+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no namespace name in:\n%s", out)
	}
	if _, err := os.Stat("/run/netns/" + string(m[1])); !os.IsNotExist(err) {
		t.Errorf("namespace %s left behind by a failed test: %v", m[1], err)
	}
}

// Do runs in the namespace; the calling goroutine's thread stays where it was.
func TestDo(t *testing.T) {
	RequireRoot(t)
	n := New(t, "nsdo")
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	var inside uint64
	err = n.Do(func() error {
		var st syscall.Stat_t
		err := syscall.Stat(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()), &st)
		inside = st.Ino
		return err
	})
	if err != nil || inside != nsInode(t, n.Path()) {
		t.Fatalf("Do ran in namespace inode %d (%v), want %d", inside, err, nsInode(t, n.Path()))
	}
	after, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !after.Equal(before) {
		t.Fatal("Do moved the calling thread")
	}
	n.Sysctl(t, "net/ipv4/ip_forward", "1")
	if out := strings.TrimSpace(n.IP(t, "netconf", "show", "dev", "lo")); out == "" {
		t.Fatal("ip -n ... netconf: no output")
	}
	var fwd []byte
	n.Do(func() (err error) { fwd, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward"); return })
	own, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if strings.TrimSpace(string(fwd)) != "1" {
		t.Errorf("ip_forward in the namespace = %q, want 1 (own namespace: %q)", fwd, own)
	}
}

func TestConnectEchoSink(t *testing.T) {
	RequireRoot(t)
	for _, c := range []struct{ a, b string }{{"10.7.0.1/24", "10.7.0.2/24"}, {"fd00:7::1/64", "fd00:7::2/64"}} {
		a, b := New(t, "nsa"), New(t, "nsb")
		l := Connect(t, a, b, netip.MustParsePrefix(c.a), netip.MustParsePrefix(c.b))
		echo := b.Echo(t, l.AddrB)
		if err := a.CheckEcho(echo, "hello "+c.a); err != nil {
			t.Fatalf("echo over %s: %v", c.a, err)
		}
		sink := a.Sink(t, l.AddrA)
		if _, err := b.Transfer(sink, 3<<20+7); err != nil {
			t.Fatalf("transfer over %s: %v", c.b, err)
		}
		conn, err := a.Dial("tcp", echo.String())
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
	}
}

// Self is the test process's own namespace; a link to a named namespace
// carries traffic between the two, and its cleanup removes it.
func TestSelfConnect(t *testing.T) {
	RequireRoot(t)
	var name string
	t.Run("inner", func(t *testing.T) {
		self, peer := Self(t), New(t, "nspeer")
		l := Connect(t, self, peer, netip.MustParsePrefix("10.8.0.1/24"), netip.MustParsePrefix("10.8.0.2/24"))
		name = l.NameA
		if _, err := netlink.LinkByName(l.NameA); err != nil {
			t.Fatalf("link %s not in the process's namespace: %v", l.NameA, err)
		}
		ln, err := self.Listen("tcp", "10.8.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Write([]byte("hi\n"))
				c.Close()
			}
		}()
		c, err := peer.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "hi\n" {
			t.Fatalf("read %q %v", line, err)
		}
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if nsInode(t, self.Path()) != threadNS(t) {
			t.Fatal("Self's Path is not the process's namespace")
		}
	})
	if _, err := netlink.LinkByName(name); err == nil {
		t.Errorf("link %s left behind", name)
	}
}

func TestCNI(t *testing.T) {
	RequireRoot(t)
	n := New(t, "nscni")
	Veth(t, n, "v0", New(t, "nscni"), "v1")
	var names []string
	err := n.CNI(t).Do(func(cnins.NetNS) error {
		links, err := netlink.LinkList()
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return err
	})
	if err != nil || strings.Join(names, " ") != "lo v0" {
		t.Fatalf("links seen through ns.NetNS: %v %v, want lo v0", names, err)
	}
}
