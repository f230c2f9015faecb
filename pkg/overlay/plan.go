package overlay

// This file computes the wanted kernel state from a State (plan).

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/overlay/internal/rtnl"
)

// desired is the kernel state computed from a State, before interface indices
// are known for routes.
type desired struct {
	kstate
	maxLabel uint32
	ipv6     bool
	errs     []error
}

func (m *Manager) plan(s *State) desired {
	d := desired{kstate: newKstate()}
	prio := s.EncapPriority
	if len(prio) == 0 {
		prio = DefaultEncapPriority
	}
	vrf := m.useVRF()
	for _, n := range s.Networks {
		master := ""
		if vrf {
			master = vrfName(n.Table)
			d.vrfs[master] = n.Table
		}
		for _, ep := range n.Endpoints {
			spec := endpointSpec{Master: master}
			fam := netlink.FAMILY_V4
			if ep.Address.Is4() {
				spec.PodGateway = m.cfg.PodGatewayAddr
			} else {
				fam = netlink.FAMILY_V6
				d.ipv6 = true
			}
			d.endpoints[ep.Interface] = spec
			d.rules[ruleKey{Family: fam, Iif: ep.Interface, Table: n.Table, Priority: RulePriority}] = true
			d.maxLabel = max(d.maxLabel, ep.Label)
		}
		for _, r := range n.Routes {
			e, ok := chooseEncap(prio, r.Encaps, m.feat)
			if !ok {
				d.errs = append(d.errs, fmt.Errorf("overlay: network %q route %s: no encapsulation both ends support (offered %v, local %v, kernel lacks %v)",
					n.Name, r.Prefix, r.Encaps, prio, m.feat.Missing()))
				continue
			}
			if e == encap.MPLSoUDP || e == encap.MPLSoGRE {
				d.tunnels[tunnelName(e, r.RemoteUnderlay)] = tunnelSpec{Encap: e, Local: s.Underlay, Remote: r.RemoteUnderlay}
			}
			if r.Prefix.Addr().Is6() {
				d.ipv6 = true
			}
		}
	}
	d.fou = m.feat.Supports(encap.MPLSoUDP) && slices.Contains(prio, encap.MPLSoUDP)
	return d
}

// routesLocked builds the wanted routes: host routes and label routes to local
// endpoints, and remote prefixes.
//
// Remote prefixes through a tunnel use shared nexthop objects when the kernel
// has them; the returned routes then carry NhID and, until the nexthop is
// known to be in place, the nexthop's Oif and Encap.
func (m *Manager) routesLocked(s *State, byName map[string]netlink.Link, missing map[string]bool, fail func(error)) (map[rtnl.RouteKey]rtnl.Route, map[rtnl.NexthopKey]rtnl.Nexthop) {
	prio := s.EncapPriority
	if len(prio) == 0 {
		prio = DefaultEncapPriority
	}
	n := 0
	for _, nw := range s.Networks {
		n += 2*len(nw.Endpoints) + len(nw.Routes)
	}
	want := make(map[rtnl.RouteKey]rtnl.Route, n)
	wantNH := map[rtnl.NexthopKey]rtnl.Nexthop{}
	for _, nw := range s.Networks {
		for _, ep := range nw.Endpoints {
			if missing[ep.Interface] {
				continue
			}
			l, ok := byName[ep.Interface]
			if !ok {
				continue
			}
			idx := int32(l.Attrs().Index)
			fam, scope := uint8(rtnl.AFInet), uint8(rtnl.ScopeLink)
			if ep.Address.Is6() {
				fam, scope = rtnl.AFInet6, rtnl.ScopeUniverse
			}
			r := rtnl.Route{Family: fam, Table: nw.Table, Dst: netip.PrefixFrom(ep.Address, ep.Address.BitLen()),
				Oif: idx, Protocol: RouteProtocol, Scope: scope, Type: rtnl.TypeUnicast}
			want[r.Key()] = r
			if m.feat.MPLS {
				lr := rtnl.Route{Family: rtnl.AFMPLS, Label: ep.Label, Via: ep.Address, Oif: idx,
					Protocol: RouteProtocol, Type: rtnl.TypeUnicast}
				want[lr.Key()] = lr
			}
		}
		for _, rr := range nw.Routes {
			e, ok := chooseEncap(prio, rr.Encaps, m.feat)
			if !ok {
				continue // reported by plan
			}
			var oif int32
			if e != encap.Plain {
				l, ok := byName[tunnelName(e, rr.RemoteUnderlay)]
				if !ok {
					continue // the tunnel failed; reported above
				}
				oif = int32(l.Attrs().Index)
			}
			r, err := remoteKernelRoute(nw.Table, rr, e, oif)
			if err != nil {
				fail(fmt.Errorf("overlay: network %q route %s: %w", nw.Name, rr.Prefix, err))
				continue
			}
			if e != encap.Plain {
				// Nexthop objects here are IPv4 (the tunnel's family): the
				// kernel refuses them for IPv6 routes, which take the
				// encapsulation inline.
				if m.feat.Nexthops && r.Family == rtnl.AFInet {
					k := rtnl.NexthopKey{Oif: r.Oif, Encap: r.Encap}
					nh, ok := wantNH[k]
					if !ok {
						nh = m.cur.nexthops[k]
						if nh.ID == 0 {
							nh = rtnl.Nexthop{ID: m.allocNexthopIDLocked(wantNH), Oif: r.Oif, Encap: r.Encap, Protocol: RouteProtocol}
						}
						wantNH[k] = nh
					}
					r.NhID = nh.ID
				} else if r.Family == rtnl.AFInet {
					r.Scope = rtnl.ScopeLink
				}
			}
			want[r.Key()] = r
		}
	}
	return want, wantNH
}

// sameRoute tells whether the kernel's route have is what want asks for. A want
// without an output interface (plain via gateway) accepts whatever interface
// the kernel resolved.
func sameRoute(want, have rtnl.Route) bool {
	if want.Oif == 0 {
		have.Oif = 0
	}
	if want.NhID != 0 {
		// The kernel reports the nexthop's encapsulation with the route.
		have.Encap, have.EncapMore = 0, false
	}
	return want == have
}

// allocNexthopIDLocked returns a nexthop id that neither the kernel record
// nor the nexthops planned so far use. The ids in use are kept up to date
// with the record (recordOpLocked), so an allocation costs the same however
// many nexthops there are; they are rebuilt after a re-read of the kernel,
// and once ids handed out but never made (a failed or abandoned change)
// outnumber those in use.
func (m *Manager) allocNexthopIDLocked(planned map[rtnl.NexthopKey]rtnl.Nexthop) uint32 {
	if m.nhIDs == nil || len(m.nhIDs) > 2*(len(m.cur.nexthops)+len(planned))+64 {
		m.nhIDs = make(map[uint32]struct{}, len(m.cur.nexthops)+len(planned))
		for _, n := range m.cur.nexthops {
			m.nhIDs[n.ID] = struct{}{}
		}
		for _, n := range planned {
			m.nhIDs[n.ID] = struct{}{}
		}
	}
	for {
		id := m.nextNH
		m.nextNH++
		if m.nextNH > NexthopIDLast {
			m.nextNH = NexthopIDFirst
		}
		if _, used := m.nhIDs[id]; !used {
			m.nhIDs[id] = struct{}{}
			return id
		}
	}
}
