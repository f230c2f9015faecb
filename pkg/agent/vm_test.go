package agent_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/iotfabric/iotfabric/internal/fabrictest"
	"github.com/iotfabric/iotfabric/internal/netnstest"
	"github.com/iotfabric/iotfabric/pkg/overlay"
)

// TestVMPodsPingOverMPLS runs inside the vmtest VM (make vmtest-cni), on a
// kernel with MPLS, FOU and GRE: a controller, two gateways joined by an
// underlay link, each with an agent programming the kernel; one pod on each
// through libcni and the plugin. The pods exchange UDP datagrams, which cross
// the underlay as MPLSoUDP.
func TestVMPodsPingOverMPLS(t *testing.T) {
	if os.Getenv("IOTFABRIC_VMTEST") == "" {
		t.Skip("runs inside the qemu VM: make vmtest-cni")
	}
	// The VM's own loopback starts down; the controller listens on it.
	if lo, err := netlink.LinkByName("lo"); err != nil || netlink.LinkSetUp(lo) != nil {
		t.Fatalf("loopback: %v", err)
	}
	ctx := context.Background()
	ctl := fabrictest.StartController(t)
	createNetwork(t, ctl.Dial(), "red", "10.1.0.0/16")
	uA, uB := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	gwA := fabrictest.StartGateway(t, "gw-a", uA, []string{ctl.Addr}, true)
	gwB := fabrictest.StartGateway(t, "gw-b", uB, []string{ctl.Addr}, true)
	netnstest.Connect(t, gwA.NS, gwB.NS, netip.PrefixFrom(uA, 24), netip.PrefixFrom(uB, 24))

	c := fabrictest.NewCNI(t, pluginDir)
	podA, podB := netnstest.New(t, "iofpod"), netnstest.New(t, "iofpod")
	rA, err := c.Add(ctx, gwA, "red", "pa", podA)
	if err != nil {
		t.Fatal(err)
	}
	rB, err := c.Add(ctx, gwB, "red", "pb", podB)
	if err != nil {
		t.Fatal(err)
	}
	aA, aB := rA.IPs[0].Address.IP, rB.IPs[0].Address.IP
	pfx := func(ip net.IP) netip.Prefix { a, _ := netip.AddrFromSlice(ip.To4()); return netip.PrefixFrom(a, 32) }
	gwA.WaitState(20*time.Second, "route to pb", func(s overlay.State) bool { return fabrictest.HasRoute(s, "red", pfx(aB), uB, 0) })
	gwB.WaitState(20*time.Second, "route to pa", func(s overlay.State) bool { return fabrictest.HasRoute(s, "red", pfx(aA), uA, 0) })

	// UDP echo in pod B, datagrams from pod A (retried while the last
	// applies land).
	var srv *net.UDPConn
	if err := podB.Do(func() error {
		var err error
		srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: aB, Port: 7777})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := srv.ReadFromUDP(buf)
			if err != nil {
				return
			}
			srv.WriteToUDP(buf[:n], from)
		}
	}()
	var cl *net.UDPConn
	if err := podA.Do(func() error {
		var err error
		cl, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: aB, Port: 7777})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	deadline := time.Now().Add(20 * time.Second)
	got := 0
	buf := make([]byte, 64)
	for got < 5 && time.Now().Before(deadline) {
		cl.Write([]byte("iotfabric"))
		cl.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := cl.Read(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		if err == nil && string(buf[:n]) == "iotfabric" {
			got++
		}
	}
	if got < 5 {
		t.Fatalf("pod %s -> pod %s: %d echoes", aA, aB, got)
	}
	// They went through gateway A's MPLSoUDP tunnel.
	var tx uint64
	links, _ := gwA.NS.Handle().LinkList()
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "iofu") && l.Attrs().Statistics != nil {
			tx += l.Attrs().Statistics.TxPackets
		}
	}
	if tx < uint64(got) {
		t.Fatalf("gateway A's MPLSoUDP tunnels sent %d packets, fewer than the %d datagrams", tx, got)
	}
	t.Logf("pod %s (gateway %s) and pod %s (gateway %s) exchanged %d datagrams; gateway A's MPLSoUDP tunnel sent %d packets", aA, uA, aB, uB, got, tx)
}
