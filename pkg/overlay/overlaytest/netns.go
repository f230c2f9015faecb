// Package overlaytest builds throwaway network topologies for the overlay
// tests on top of internal/netnstest's namespaces: "pods" wired the way the
// CNI plugin wires them, a gateways' underlay link, ICMP pings, packet
// capture, and a text dump of the kernel state iotfabric owns (through
// iproute2, independent of the code under test).
package overlaytest

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/iotfabric/iotfabric/internal/netnstest"
)

// PodMTU is the MTU of test pods: a 1500-byte underlay minus the largest
// overlay overhead (overlay.MaxOverhead).
const PodMTU = 1500 - 32

// Pod makes a namespace wired as the CNI plugin wires a pod: a veth whose host
// side hostIf stays in gw, the pod side eth0 with addr/32, a route to the
// gateway address and a default route via it.
func Pod(t testing.TB, gw *netnstest.NS, hostIf string, addr, gateway netip.Addr) *netnstest.NS {
	t.Helper()
	pod := netnstest.New(t, "iofpod")
	netnstest.Veth(t, gw, hostIf, pod, "eth0")
	// The CNI plugin gives pods an MTU that leaves room for the overlay headers.
	pod.IP(t, "link", "set", "eth0", "mtu", fmt.Sprint(PodMTU))
	gw.IP(t, "link", "set", hostIf, "mtu", fmt.Sprint(PodMTU))
	pod.IP(t, "addr", "add", netip.PrefixFrom(addr, addr.BitLen()).String(), "dev", "eth0")
	pod.IP(t, "route", "add", gateway.String(), "dev", "eth0", "scope", "link")
	pod.IP(t, "route", "add", "default", "via", gateway.String(), "dev", "eth0")
	return pod
}

// Underlay joins two namespaces with a veth pair named u0 on both sides,
// addressed a/24 in x and b/24 in y (the gateways' underlay link).
func Underlay(t testing.TB, x *netnstest.NS, a netip.Addr, y *netnstest.NS, b netip.Addr) {
	t.Helper()
	netnstest.Veth(t, x, "u0", y, "u0")
	x.IP(t, "addr", "add", a.String()+"/24", "dev", "u0")
	y.IP(t, "addr", "add", b.String()+"/24", "dev", "u0")
}

// Dump returns the kernel state iotfabric owns in the namespace as sorted,
// normalised text lines: interfaces with the iof prefix, rules in the iotfabric
// priority range, routes and label routes with the iotfabric protocol.
func Dump(t testing.TB, n *netnstest.NS) string {
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
