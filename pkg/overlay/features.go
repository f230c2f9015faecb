package overlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/overlay/internal/rtnl"
)

// Features are the kernel capabilities detected at start.
type Features struct {
	MPLS       bool `json:"mpls"`       // mpls_router: label routes, net.mpls sysctls
	MPLSTunnel bool `json:"mplsTunnel"` // mpls_iptunnel: MPLS encapsulation on IP routes
	FOU        bool `json:"fou"`        // fou: UDP encapsulation of ipip
	IPIP       bool `json:"ipip"`       // ipip (mode mplsip)
	GRE        bool `json:"gre"`        // ip_gre
	VRF        bool `json:"vrf"`        // vrf devices
	IPv6       bool `json:"ipv6"`       // IPv6 enabled
	Nexthops   bool `json:"nexthops"`   // nexthop objects (Linux 5.3+)
}

// Supports tells whether this kernel can carry encapsulation e.
func (f Features) Supports(e encap.Encap) bool {
	switch e {
	case encap.MPLSoUDP:
		return f.MPLS && f.MPLSTunnel && f.FOU && f.IPIP
	case encap.MPLSoGRE:
		return f.MPLS && f.MPLSTunnel && f.GRE
	case encap.Plain:
		return true
	}
	return false
}

// Missing lists the kernel modules whose absence was detected.
func (f Features) Missing() []string {
	var m []string
	if !f.MPLS {
		m = append(m, "mpls_router")
	}
	if !f.MPLSTunnel {
		m = append(m, "mpls_iptunnel")
	}
	if !f.FOU {
		m = append(m, "fou")
	}
	if !f.IPIP {
		m = append(m, "ipip")
	}
	if !f.GRE {
		m = append(m, "ip_gre")
	}
	if !f.VRF {
		m = append(m, "vrf")
	}
	return m
}

// Summary is the one message about missing modules and what still works; empty
// when everything is there.
func (f Features) Summary() string {
	missing := f.Missing()
	if len(missing) == 0 {
		return ""
	}
	var works []string
	works = append(works, "per-network routing tables, endpoint rules and host routes")
	if f.VRF {
		works = append(works, "VRF devices")
	} else {
		works = append(works, "policy tables instead of VRF devices")
	}
	var lost []string
	for _, e := range []encap.Encap{encap.MPLSoUDP, encap.MPLSoGRE} {
		if f.Supports(e) {
			works = append(works, e.String())
		} else {
			lost = append(lost, e.String())
		}
	}
	if !f.MPLS {
		lost = append(lost, "MPLS label routes to local endpoints")
	}
	works = append(works, "plain routes")
	msg := fmt.Sprintf("kernel lacks modules %s (load them with modprobe); still works: %s",
		strings.Join(missing, ", "), strings.Join(works, ", "))
	if len(lost) > 0 {
		msg += "; unavailable: " + strings.Join(lost, ", ")
	}
	return msg
}

// detectFeatures probes the namespace's kernel. Probes that create objects use
// the reserved probe names and table, and remove them at once.
func (m *Manager) detectFeatures() Features {
	var f Features
	_ = rtnl.InNamespace(m.ns, func() error {
		_, err := os.Stat("/proc/sys/net/mpls/platform_labels")
		f.MPLS = err == nil
		_, err = os.Stat("/proc/sys/net/ipv6")
		f.IPv6 = err == nil
		return nil
	})
	if f.MPLS {
		f.MPLSTunnel = m.probeMPLSTunnel()
	}
	if _, err := m.rt.DumpNexthops(RouteProtocol); err == nil {
		f.Nexthops = true
	}
	if _, err := m.h.GenlFamilyGet("fou"); err == nil {
		f.FOU = true
	}
	// Documentation addresses (RFC 5737): the probes never carry traffic.
	pl, pr := net.IPv4(198, 51, 100, 1), net.IPv4(198, 51, 100, 2)
	f.IPIP = m.probeLink(&netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: IfPrefix + "pipip"}, Local: pl, Remote: pr})
	f.GRE = m.probeLink(&netlink.Gretun{LinkAttrs: netlink.LinkAttrs{Name: IfPrefix + "pgre"}, Local: pl, Remote: pr})
	f.VRF = m.probeLink(&netlink.Vrf{LinkAttrs: netlink.LinkAttrs{Name: IfPrefix + "pvrf"}, Table: probeTable})
	return f
}

func (m *Manager) probeLink(l netlink.Link) bool {
	if err := m.h.LinkAdd(l); err != nil {
		m.log.Debug("probe", logkey.Interface, l.Attrs().Name, logkey.Type, l.Type(), logkey.Err, err)
		return errors.Is(err, os.ErrExist)
	}
	if err := m.h.LinkDel(l); err != nil {
		m.log.Warn("removing probe interface", logkey.Interface, l.Attrs().Name, logkey.Err, err)
	}
	return true
}

// probeMPLSTunnel adds and removes a blackhole route with an MPLS encapsulation
// in the probe table; the kernel loads mpls_iptunnel on demand when it can.
func (m *Manager) probeMPLSTunnel() bool {
	if _, err := os.Stat("/sys/module/mpls_iptunnel"); err == nil {
		return true
	}
	_, dst, _ := net.ParseCIDR("192.0.2.255/32")
	r := &netlink.Route{Dst: dst, Table: probeTable, Type: 6 /* RTN_BLACKHOLE */, Protocol: RouteProtocol,
		Encap: &netlink.MPLSEncap{Labels: []int{LabelFirst}}}
	if err := m.h.RouteAdd(r); err != nil {
		return false
	}
	_ = m.h.RouteDel(r)
	return true
}

// chooseEncap picks the first encapsulation of the local priority list that the
// remote offers and the kernel supports.
func chooseEncap(priority, offered []encap.Encap, f Features) (encap.Encap, bool) {
	for _, e := range priority {
		if slices.Contains(offered, e) && f.Supports(e) {
			return e, true
		}
	}
	return encap.Unknown, false
}

// tunnelName is the interface name of the tunnel of kind e toward remote.
func tunnelName(e encap.Encap, remote netip.Addr) string {
	b := remote.As4()
	kind := "u"
	if e == encap.MPLSoGRE {
		kind = "g"
	}
	return fmt.Sprintf("%s%s%02x%02x%02x%02x", IfPrefix, kind, b[0], b[1], b[2], b[3])
}

// vrfName is the VRF device name of a network table.
func vrfName(table uint32) string { return fmt.Sprintf("%sv%d", IfPrefix, table) }
