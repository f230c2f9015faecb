package overlay

// This file holds UpdateRoutes: remote route changes applied on top of the
// state the last Set applied, in time proportional to the changes.

import (
	"context"
	"errors"
	"net/netip"
	"slices"

	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/overlay/internal/rtnl"
)

// RouteChange is one remote route of a network that changed: Route is now
// the network's route to Route.Prefix or, with Remove, the network has no
// remote route to Route.Prefix any more.
type RouteChange struct {
	Network string
	Remove  bool
	Route   RemoteRoute
}

// ErrNeedSet is UpdateRoutes's answer when the changes need more than routes
// (or no Set succeeded since the manager last re-read the kernel): nothing
// was changed, and the caller applies its whole state with Set.
var ErrNeedSet = errors.New("overlay: the change needs the whole state (Set)")

// routeBase is what UpdateRoutes builds on: the parts of the state the last
// successful Set applied that routes depend on. Valid while ok; a Resync or
// a failed Set or UpdateRoutes invalidates it until the next successful Set.
type routeBase struct {
	ok       bool
	underlay netip.Addr
	prio     []encap.Encap
	ipv6     bool
	tables   map[string]uint32 // network name → table
	tunnels  map[string]int32  // tunnel name → interface index
	// nexthops are the nexthop objects of the record by id, with the
	// number of routes using each; built on the first UpdateRoutes after a
	// Set, then kept by UpdateRoutes.
	nexthops map[uint32]nexthopUse
}

// setRouteBaseLocked records the base after s was applied without error;
// links are the interfaces iotfabric owns at that moment.
func (m *Manager) setRouteBaseLocked(s *State, links map[string]linkFingerprint) {
	b := routeBase{ok: true, underlay: s.Underlay, prio: slices.Clone(s.EncapPriority),
		tables: make(map[string]uint32, len(s.Networks)), tunnels: map[string]int32{}}
	if len(b.prio) == 0 {
		b.prio = DefaultEncapPriority
	}
	for _, n := range s.Networks {
		b.tables[n.Name] = n.Table
		for _, r := range n.Routes {
			if r.Prefix.Addr().Is6() {
				b.ipv6 = true
			}
		}
		for _, ep := range n.Endpoints {
			if ep.Address.Is6() {
				b.ipv6 = true
			}
		}
	}
	for name := range m.cur.tunnels {
		if l, ok := links[name]; ok {
			b.tunnels[name] = int32(l.Index)
		}
	}
	m.base = b
}

// UpdateRoutes applies route changes on top of the state the last Set (and
// the UpdateRoutes since) applied, writing only the changed routes and
// nexthop objects. It returns ErrNeedSet, having changed nothing, when a
// change needs more than that: a network or tunnel the last Set did not
// make, an IPv6 route when the last state had none, an invalid route, the BPF
// fast path in use, or no successful Set since the last Resync. Other errors
// are the kernel's refusals; the next call then returns ErrNeedSet until a
// Set succeeds. A tunnel whose last route went stays until the next Set.
func (m *Manager) UpdateRoutes(ctx context.Context, changes []RouteChange) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errClosed
	}
	if !m.base.ok || m.fp != nil {
		return ErrNeedSet
	}
	type planned struct {
		key   rtnl.RouteKey
		route rtnl.Route // zero: remove
	}
	plan := make([]planned, 0, len(changes))
	newNH := map[rtnl.NexthopKey]rtnl.Nexthop{}
	for _, c := range changes {
		table, ok := m.base.tables[c.Network]
		if !ok {
			return ErrNeedSet
		}
		rr := c.Route
		fam := uint8(rtnl.AFInet)
		if rr.Prefix.Addr().Is6() {
			fam = rtnl.AFInet6
		}
		key := rtnl.RouteKey{Family: fam, Table: table, Dst: rr.Prefix}
		if c.Remove {
			plan = append(plan, planned{key: key})
			continue
		}
		if !validRemoteRoute(rr) || fam == rtnl.AFInet6 && !m.base.ipv6 || !m.base.underlay.Is4() {
			return ErrNeedSet
		}
		e, ok := chooseEncap(m.base.prio, rr.Encaps, m.feat)
		if !ok {
			return ErrNeedSet // Set reports it
		}
		var oif int32
		if e != encap.Plain {
			if oif, ok = m.base.tunnels[tunnelName(e, rr.RemoteUnderlay)]; !ok {
				return ErrNeedSet
			}
		}
		r, err := remoteKernelRoute(table, rr, e, oif)
		if err != nil {
			return ErrNeedSet
		}
		if e != encap.Plain && m.feat.Nexthops && r.Family == rtnl.AFInet {
			k := rtnl.NexthopKey{Oif: r.Oif, Encap: r.Encap}
			nh, ok := m.cur.nexthops[k]
			if !ok {
				if nh, ok = newNH[k]; !ok {
					nh = rtnl.Nexthop{ID: m.allocNexthopIDLocked(newNH), Oif: r.Oif, Encap: r.Encap, Protocol: RouteProtocol}
					newNH[k] = nh
				}
			}
			r.NhID, r.Oif, r.Encap = nh.ID, 0, 0
		} else if e != encap.Plain && r.Family == rtnl.AFInet {
			r.Scope = rtnl.ScopeLink
		}
		plan = append(plan, planned{key: key, route: r})
	}

	// From here on the kernel changes: a failure leaves the base invalid.
	m.last = lastApplied{} // the Set shortcut compares whole states
	if m.base.nexthops == nil {
		m.base.nexthops = make(map[uint32]nexthopUse, len(m.cur.nexthops))
		for k, n := range m.cur.nexthops {
			m.base.nexthops[n.ID] = nexthopUse{key: k}
		}
		for _, r := range m.cur.routes {
			if u, ok := m.base.nexthops[r.NhID]; ok && r.NhID != 0 {
				u.refs++
				m.base.nexthops[r.NhID] = u
			}
		}
	}
	var errs []error
	fail := func(err error) { errs = append(errs, err) }
	var nhAdds []rtnl.Op
	for _, nh := range newNH {
		nhAdds = append(nhAdds, rtnl.Op{Nexthop: true, NH: nh})
	}
	m.applyRoutesLocked(ctx, nhAdds, fail)
	for k, nh := range newNH {
		if m.cur.nexthops[k].ID == nh.ID {
			m.base.nexthops[nh.ID] = nexthopUse{key: k}
		}
	}
	var adds, dels []rtnl.Op
	old := map[rtnl.RouteKey]rtnl.Route{}
	for _, p := range plan {
		have, had := m.cur.routes[p.key]
		if had {
			old[p.key] = have
		}
		switch {
		case p.route.Family == 0:
			if had {
				dels = append(dels, rtnl.Op{Del: true, Route: have})
			}
		case had && sameRoute(p.route, have):
		case p.route.NhID != 0 && m.base.nexthops[p.route.NhID].key == (rtnl.NexthopKey{}):
			// Its nexthop object failed (reported above).
		default:
			adds = append(adds, rtnl.Op{Route: p.route})
		}
	}
	m.applyRoutesLocked(ctx, adds, fail)
	m.applyRoutesLocked(ctx, dels, fail)
	// Count the routes per nexthop; remove the objects no route uses.
	ref := func(id uint32, d int) {
		if u, ok := m.base.nexthops[id]; ok && id != 0 {
			u.refs += d
			m.base.nexthops[id] = u
		}
	}
	unused := map[uint32]bool{}
	for _, op := range adds {
		k := op.Route.Key()
		if m.cur.routes[k] != op.Route {
			continue // refused (reported)
		}
		ref(op.Route.NhID, 1)
		if o, ok := old[k]; ok {
			ref(o.NhID, -1)
			unused[o.NhID] = true
		}
	}
	for _, op := range dels {
		if _, still := m.cur.routes[op.Route.Key()]; !still {
			ref(op.Route.NhID, -1)
			unused[op.Route.NhID] = true
		}
	}
	var nhDels []rtnl.Op
	for id := range unused {
		if u, ok := m.base.nexthops[id]; ok && u.refs <= 0 && m.cur.nexthops[u.key].ID == id {
			nhDels = append(nhDels, rtnl.Op{Del: true, Nexthop: true, NH: m.cur.nexthops[u.key], NHKey: u.key})
		}
	}
	m.applyRoutesLocked(ctx, nhDels, fail)
	for _, op := range nhDels {
		if m.cur.nexthops[op.NHKey].ID != op.NH.ID {
			delete(m.base.nexthops, op.NH.ID)
		}
	}
	if len(errs) > 0 {
		m.base.ok = false
		return errors.Join(errs...)
	}
	return nil
}

// nexthopUse is a nexthop object of the record and how many routes use it.
type nexthopUse struct {
	key  rtnl.NexthopKey
	refs int
}

// validRemoteRoute is State.Validate's check of one remote route.
func validRemoteRoute(r RemoteRoute) bool {
	if !r.Prefix.IsValid() || r.Prefix != r.Prefix.Masked() || !r.RemoteUnderlay.IsValid() || !r.RemoteUnderlay.Is4() ||
		r.Label < LabelFirst || r.Label > LabelLast || len(r.Encaps) == 0 {
		return false
	}
	for _, e := range r.Encaps {
		if !dataPlaneEncap(e) {
			return false
		}
	}
	return true
}

var errPlainIPv6 = errors.New("plain IPv6 routes via an IPv4 gateway are not supported")

// remoteKernelRoute is the kernel route of rr in table through encapsulation
// e; oif is the tunnel's interface index (MPLSoUDP, MPLSoGRE). With nexthop
// objects the caller moves Oif and Encap into one.
func remoteKernelRoute(table uint32, rr RemoteRoute, e encap.Encap, oif int32) (rtnl.Route, error) {
	r := rtnl.Route{Family: rtnl.AFInet, Table: table, Dst: rr.Prefix, Protocol: RouteProtocol, Type: rtnl.TypeUnicast}
	if rr.Prefix.Addr().Is6() {
		r.Family = rtnl.AFInet6
	}
	if e == encap.Plain {
		if r.Family == rtnl.AFInet6 {
			return rtnl.Route{}, errPlainIPv6
		}
		r.Gw = rr.RemoteUnderlay
		return r, nil
	}
	r.Oif, r.Encap = oif, rr.Label
	return r, nil
}
