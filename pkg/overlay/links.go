package overlay

// This file holds the steps of Set that handle interfaces: FOU port, VRF
// devices, tunnels and endpoint interfaces.

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"

	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/logkey"
)

func (m *Manager) addTunnelLocked(name string, spec tunnelSpec) (netlink.Link, error) {
	var l netlink.Link
	local, remote := net.IP(spec.Local.AsSlice()), net.IP(spec.Remote.AsSlice())
	switch spec.Encap {
	case encap.MPLSoUDP:
		l = &netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: name}, Local: local, Remote: remote,
			Proto: ipprotoMPLS, EncapType: 1 /* FOU */, EncapDport: MPLSoUDPPort, PMtuDisc: 1}
	case encap.MPLSoGRE:
		l = &netlink.Gretun{LinkAttrs: netlink.LinkAttrs{Name: name}, Local: local, Remote: remote, PMtuDisc: 1}
	default:
		return nil, fmt.Errorf("overlay: tunnel %s: unsupported encapsulation %q", name, spec.Encap)
	}
	if err := m.h.LinkAdd(l); err != nil {
		return nil, fmt.Errorf("overlay: add %s tunnel %s to %s: %w", spec.Encap, name, spec.Remote, err)
	}
	nl, err := m.h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("overlay: tunnel %s: %w", name, err)
	}
	if err := m.h.LinkSetUp(nl); err != nil {
		return nil, fmt.Errorf("overlay: tunnel %s up: %w", name, err)
	}
	m.log.Info("tunnel added", logkey.Interface, name, logkey.Encap, spec.Encap, logkey.Remote, spec.Remote)
	return nl, nil
}

func (m *Manager) endpointLinkOKLocked(l netlink.Link, spec endpointSpec, byName map[string]netlink.Link) bool {
	a := l.Attrs()
	if a.Flags&net.FlagUp == 0 {
		return false
	}
	if spec.Master == "" {
		return true
	}
	master, ok := byName[spec.Master]
	return ok && a.MasterIndex == master.Attrs().Index
}

func (m *Manager) configureEndpointLocked(l netlink.Link, spec endpointSpec, byName map[string]netlink.Link) error {
	name := l.Attrs().Name
	if spec.Master != "" {
		master, ok := byName[spec.Master]
		if !ok {
			return fmt.Errorf("overlay: endpoint %s: vrf %s missing", name, spec.Master)
		}
		if l.Attrs().MasterIndex != master.Attrs().Index {
			if err := m.h.LinkSetMaster(l, master); err != nil {
				return fmt.Errorf("overlay: endpoint %s into vrf %s: %w", name, spec.Master, err)
			}
		}
	}
	if spec.PodGateway.IsValid() {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: spec.PodGateway.AsSlice(), Mask: net.CIDRMask(spec.PodGateway.BitLen(), spec.PodGateway.BitLen())}}
		if err := m.h.AddrReplace(l, addr); err != nil {
			return fmt.Errorf("overlay: endpoint %s address %s: %w", name, spec.PodGateway, err)
		}
	}
	if err := m.h.LinkSetUp(l); err != nil {
		return fmt.Errorf("overlay: endpoint %s up: %w", name, err)
	}
	return nil
}

// unconfigureEndpoint undoes configureEndpoint on an interface that is no
// longer an endpoint (best effort: the interface is usually gone already).
func (m *Manager) unconfigureEndpointLocked(l netlink.Link, spec endpointSpec) {
	if spec.Master != "" && l.Attrs().MasterIndex != 0 {
		_ = m.h.LinkSetNoMaster(l)
	}
	if spec.PodGateway.IsValid() {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: spec.PodGateway.AsSlice(), Mask: net.CIDRMask(spec.PodGateway.BitLen(), spec.PodGateway.BitLen())}}
		_ = m.h.AddrDel(l, addr)
	}
}

// ensureFOULocked opens the MPLSoUDP receive port when it is wanted.
func (m *Manager) ensureFOULocked(d *desired, fail func(error)) {
	if !d.fou || m.cur.fou {
		return
	}
	err := m.h.FouAdd(netlink.Fou{Family: netlink.FAMILY_V4, Port: MPLSoUDPPort, Protocol: ipprotoMPLS, EncapType: netlink.FOU_ENCAP_DIRECT})
	if err != nil && !isExist(err) {
		fail(fmt.Errorf("overlay: fou port %d: %w", MPLSoUDPPort, err))
		return
	}
	m.cur.fou = true
}

// removeFOULocked closes the MPLSoUDP receive port when it is no longer wanted.
func (m *Manager) removeFOULocked(d *desired, fail func(error)) {
	if !m.cur.fou || d.fou {
		return
	}
	err := m.h.FouDel(netlink.Fou{Family: netlink.FAMILY_V4, Port: MPLSoUDPPort})
	if err != nil && !isGone(err) {
		fail(fmt.Errorf("overlay: remove fou port: %w", err))
		return
	}
	m.cur.fou = false
}

// dumpRetries bounds how often a link dump the kernel reports as interrupted
// by a concurrent change (NLM_F_DUMP_INTR, as pods' veths come and go) is
// started again before Set gives up on it.
const dumpRetries = 10

// listLinksLocked lists the namespace's interfaces, restarting the dump when
// it was interrupted: an interrupted dump may miss or repeat interfaces.
func (m *Manager) listLinksLocked() ([]netlink.Link, error) {
	for i := 0; ; i++ {
		links, err := m.h.LinkList()
		if err == nil || !errors.Is(err, netlink.ErrDumpInterrupted) || i == dumpRetries {
			return links, err
		}
	}
}

// linksByNameLocked lists the namespace's interfaces by name.
func (m *Manager) linksByNameLocked() (map[string]netlink.Link, error) {
	links, err := m.listLinksLocked()
	if err != nil {
		return nil, fmt.Errorf("overlay: list links: %w", err)
	}
	byName := make(map[string]netlink.Link, len(links))
	for _, l := range links {
		byName[l.Attrs().Name] = l
	}
	return byName, nil
}

// ensureVRFsLocked adds the wanted VRF devices (replacing one bound to another
// table) and brings them up.
func (m *Manager) ensureVRFsLocked(d *desired, byName map[string]netlink.Link, fail func(error)) {
	for _, name := range sortedKeys(d.vrfs) {
		table := d.vrfs[name]
		if l, ok := byName[name]; ok && m.cur.vrfs[name] == table {
			if l.Attrs().Flags&net.FlagUp == 0 {
				if err := m.h.LinkSetUp(l); err != nil {
					fail(fmt.Errorf("overlay: vrf %s up: %w", name, err))
				}
			}
			continue
		}
		if l, ok := byName[name]; ok {
			_ = m.h.LinkDel(l)
		}
		l := &netlink.Vrf{LinkAttrs: netlink.LinkAttrs{Name: name}, Table: table}
		if err := m.h.LinkAdd(l); err != nil {
			fail(fmt.Errorf("overlay: add vrf %s table %d: %w", name, table, err))
			continue
		}
		if err := m.h.LinkSetUp(l); err != nil {
			fail(fmt.Errorf("overlay: vrf %s up: %w", name, err))
		}
		m.cur.vrfs[name] = table
		if nl, err := m.h.LinkByName(name); err == nil {
			byName[name] = nl
		}
	}
}

// ensureTunnelsLocked adds the wanted tunnels, replaces those whose endpoints
// changed, and lets each accept MPLS.
func (m *Manager) ensureTunnelsLocked(ctx context.Context, d *desired, byName map[string]netlink.Link, fail func(error)) {
	for _, name := range sortedKeys(d.tunnels) {
		spec := d.tunnels[name]
		l, exists := byName[name]
		if exists && m.cur.tunnels[name] == spec {
			if l.Attrs().Flags&net.FlagUp == 0 {
				if err := m.h.LinkSetUp(l); err != nil {
					fail(fmt.Errorf("overlay: tunnel %s up: %w", name, err))
				}
			}
			m.ensureSysctlLocked("net/mpls/conf/"+name+"/input", "1", fail)
			continue
		}
		if exists {
			// Same name, other endpoints (the underlay address changed):
			// replace it; its routes are re-added later. They are removed
			// first, in batches: the kernel removing a device's nexthops
			// walks every table once per nexthop that still has routes.
			m.flushViaLocked(ctx, l.Attrs().Index, fail)
			if err := m.h.LinkDel(l); err != nil && !isGone(err) {
				fail(fmt.Errorf("overlay: replace tunnel %s: %w", name, err))
				continue
			}
			m.forgetRoutesViaLocked(l.Attrs().Index)
			delete(byName, name)
		}
		nl, err := m.addTunnelLocked(name, spec)
		if err != nil {
			fail(err)
			continue
		}
		m.cur.tunnels[name] = spec
		delete(m.cur.sysctls, "net/mpls/conf/"+name+"/input")
		m.ensureSysctlLocked("net/mpls/conf/"+name+"/input", "1", fail)
		byName[name] = nl
	}
}

// ensureEndpointsLocked configures the endpoint interfaces (VRF, pod gateway
// address, up) and returns those that do not exist.
func (m *Manager) ensureEndpointsLocked(d *desired, byName map[string]netlink.Link, fail func(error)) map[string]bool {
	missing := map[string]bool{}
	for _, name := range sortedKeys(d.endpoints) {
		spec := d.endpoints[name]
		l, ok := byName[name]
		if !ok {
			missing[name] = true
			fail(fmt.Errorf("overlay: endpoint interface %s: not found", name))
			delete(m.cur.endpoints, name)
			continue
		}
		if have, ok := m.cur.endpoints[name]; ok && have == spec && m.endpointLinkOKLocked(l, spec, byName) {
			continue
		}
		if err := m.configureEndpointLocked(l, spec, byName); err != nil {
			fail(err)
			continue
		}
		m.cur.endpoints[name] = spec
	}
	return missing
}

// removeEndpointsLocked undoes the configuration of former endpoints.
func (m *Manager) removeEndpointsLocked(d *desired, byName map[string]netlink.Link) {
	for name, spec := range m.cur.endpoints {
		if _, ok := d.endpoints[name]; ok {
			continue
		}
		if l, ok := byName[name]; ok {
			m.unconfigureEndpointLocked(l, spec)
		}
		delete(m.cur.endpoints, name)
	}
}

// removeTunnelsLocked removes the tunnels no longer wanted (the kernel takes
// their remaining routes with them).
func (m *Manager) removeTunnelsLocked(d *desired, byName map[string]netlink.Link, fail func(error)) {
	for name := range m.cur.tunnels {
		if _, ok := d.tunnels[name]; ok {
			continue
		}
		if l, ok := byName[name]; ok {
			if err := m.h.LinkDel(l); err != nil && !isGone(err) {
				fail(fmt.Errorf("overlay: remove tunnel %s: %w", name, err))
				continue
			}
			m.forgetRoutesViaLocked(l.Attrs().Index)
		}
		delete(m.cur.tunnels, name)
		delete(m.cur.sysctls, "net/mpls/conf/"+name+"/input")
	}
}

// removeVRFsLocked removes the VRF devices no longer wanted.
func (m *Manager) removeVRFsLocked(d *desired, byName map[string]netlink.Link, fail func(error)) {
	for name := range m.cur.vrfs {
		if _, ok := d.vrfs[name]; ok {
			continue
		}
		if l, ok := byName[name]; ok {
			if err := m.h.LinkDel(l); err != nil && !isGone(err) {
				fail(fmt.Errorf("overlay: remove vrf %s: %w", name, err))
				continue
			}
		}
		delete(m.cur.vrfs, name)
	}
}
