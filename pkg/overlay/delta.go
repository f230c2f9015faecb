package overlay

// This file holds UpdateRoutes: remote route changes applied on top of the
// state the last Set applied, in time proportional to the changes.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"

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
	// With the fast path: fastReady holds the tables whose endpoints all have
	// the table's program attached (or that have no endpoints), so routes
	// of theirs can go into the map without attachment work.
	fastReady map[uint32]bool
	// fastRoutes counts the fast-path routes per table and endpoints the
	// endpoints per table, for the per-path counts (FastPathStats).
	fastRoutes, endpoints map[uint32]int
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
	if m.fp != nil {
		b.fastReady = make(map[uint32]bool, len(s.Networks))
		b.fastRoutes = make(map[uint32]int, len(s.Networks))
		b.endpoints = make(map[uint32]int, len(s.Networks))
		for _, n := range s.Networks {
			ready := true
			for _, ep := range n.Endpoints {
				if a, ok := m.fp.attached[ep.Interface]; !ok || a.table != n.Table {
					ready = false
				}
			}
			b.fastReady[n.Table] = ready
			b.endpoints[n.Table] += len(n.Endpoints)
			for _, r := range n.Routes {
				if e, ok := chooseEncap(b.prio, r.Encaps, m.feat); ok && fastPathRoute(e, r.Prefix) {
					b.fastRoutes[n.Table]++
				}
			}
		}
	}
	m.base = b
}

// UpdateRoutes applies route changes on top of the state the last Set (and
// the UpdateRoutes since) applied, writing only the changed routes and
// nexthop objects and, with the BPF fast path, the changed entries of its map
// (the entries Set would write, one underlay lookup per remote gateway). It
// returns ErrNeedSet, having changed nothing, when a change needs more than
// that: a network or tunnel the last Set did not make, an IPv6 route when the
// last state had none, an invalid route, a fast-path route in a network whose
// endpoints do not all have the fast path program attached yet, a failed
// underlay lookup, or no successful Set since the last Resync. Other errors
// are the kernel's refusals; the next call then returns ErrNeedSet until a
// Set succeeds. A prefix changed more than once in changes takes its last
// change. A tunnel whose last route went stays until the next Set, and
// so does the fast path program on the endpoints of a network whose last
// fast-path route went (it finds no entry and passes packets to the kernel
// path). The per-path counts (FastPathStats) are updated by the changes, as
// Set would count them; after a failure they are recounted by the next Set.
func (m *Manager) UpdateRoutes(ctx context.Context, changes []RouteChange) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errClosed
	}
	if !m.base.ok {
		return ErrNeedSet
	}
	type planned struct {
		key   rtnl.RouteKey
		route rtnl.Route // zero: remove
		// The fast path map's key (nil: not an IPv4 route or no fast path)
		// and value (nil: delete the entry).
		fpKey, fpValue []byte
	}
	plan := make([]planned, 0, len(changes))
	// A prefix changed more than once takes its last change.
	at := make(map[rtnl.RouteKey]int, len(changes))
	add := func(p planned) {
		if i, ok := at[p.key]; ok {
			plan[i] = p
			return
		}
		at[p.key] = len(plan)
		plan = append(plan, p)
	}
	newNH := map[rtnl.NexthopKey]rtnl.Nexthop{}
	underlays := map[netip.Addr]underlayRoute{}
	// The path each changed route takes afterwards, for the counts.
	paths := map[rtnl.RouteKey]routePath{}
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
		var fpKey []byte
		if m.fp != nil && rr.Prefix.Addr().Is4() {
			fpKey = fastPathKey{table: table, prefix: rr.Prefix.Masked()}.bytes()
		}
		if c.Remove {
			add(planned{key: key, fpKey: fpKey})
			paths[key] = pathNone
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
		var fpValue []byte
		if fpKey != nil && fastPathRoute(e, rr.Prefix) {
			if !m.base.fastReady[table] {
				return ErrNeedSet // the program is not attached to every endpoint
			}
			if fpKey, fpValue, err = m.fastPathEntryLocked(underlays, m.base.underlay, table, rr, e); err != nil {
				return ErrNeedSet // Set reports it
			}
		}
		paths[key] = m.routePathLocked(r)
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
		add(planned{key: key, route: r, fpKey: fpKey, fpValue: fpValue})
	}
	// New nexthop objects only of routes a later change replaced are not made.
	if len(plan) < len(changes) && len(newNH) > 0 {
		used := map[uint32]bool{}
		for _, p := range plan {
			used[p.route.NhID] = true
		}
		maps.DeleteFunc(newNH, func(_ rtnl.NexthopKey, nh rtnl.Nexthop) bool { return !used[nh.ID] })
	}
	// The counts as they will be, from the record's routes before and the
	// planned ones after.
	counts := m.pathCountsAfterLocked(paths)

	// From here on the kernel changes: a failure leaves the base invalid.
	m.last = lastApplied{} // the Set shortcut compares whole states
	if m.base.nexthops == nil {
		m.base.nexthops = make(map[uint32]nexthopUse, len(m.cur.nexthops))
		for k, n := range m.cur.nexthops {
			m.base.nexthops[n.ID] = nexthopUse{key: k}
		}
		for _, r := range m.cur.routes.all() {
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
		have, had := m.cur.routes.get(p.key)
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
	// The fast path's map between the adds and the deletes, as Set does.
	for _, p := range plan {
		switch {
		case p.fpKey == nil:
		case p.fpValue != nil:
			if err := m.fp.routes.Put(p.fpKey, p.fpValue); err != nil {
				fail(fmt.Errorf("overlay: fast path: map update: %w", err))
			}
		default:
			if err := m.fp.routes.Delete(p.fpKey); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				fail(fmt.Errorf("overlay: fast path: map delete: %w", err))
			}
		}
	}
	m.applyRoutesLocked(ctx, dels, fail)
	// Count the routes per nexthop; remove the objects no route uses.
	ref := func(id uint32, d int32) {
		if u, ok := m.base.nexthops[id]; ok && id != 0 {
			u.refs += d
			m.base.nexthops[id] = u
		}
	}
	unused := map[uint32]bool{}
	for _, op := range adds {
		k := op.Route.Key()
		if r, _ := m.cur.routes.get(k); r != op.Route {
			continue // refused (reported)
		}
		ref(op.Route.NhID, 1)
		if o, ok := old[k]; ok {
			ref(o.NhID, -1)
			unused[o.NhID] = true
		}
	}
	for _, op := range dels {
		if _, still := m.cur.routes.get(op.Route.Key()); !still {
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
	m.statMu.Lock()
	m.paths = counts
	m.statMu.Unlock()
	return nil
}

// routePath is the path an MPLS route takes, as the per-path counts see it.
type routePath uint8

const (
	pathNone   routePath = iota // no route, or not an MPLS one
	pathKernel                  // MPLSoUDP/MPLSoGRE through the kernel only
	pathFast                    // encapsulated by the fast path
)

// routePathLocked classifies a kernel route of a remote route: an MPLS
// route pushes a label (itself or through its nexthop object); IPv4 ones are
// the fast path's when it is in use.
func (m *Manager) routePathLocked(r rtnl.Route) routePath {
	switch {
	case r.Family == 0 || r.NhID == 0 && r.Encap == 0:
		return pathNone
	case m.fp != nil && r.Family == rtnl.AFInet:
		return pathFast
	default:
		return pathKernel
	}
}

// pathCountsAfterLocked returns the per-path counts once the changed routes
// take paths (by key; the record holds what they take now), updating the
// base's fast-path routes per table. Endpoints count as the fast path's in a
// table that has fast-path routes, as countPathsLocked counts them.
func (m *Manager) pathCountsAfterLocked(paths map[rtnl.RouteKey]routePath) pathCounts {
	m.statMu.Lock()
	c := m.paths
	m.statMu.Unlock()
	for k, after := range paths {
		r, _ := m.cur.routes.get(k)
		before := m.routePathLocked(r)
		if before == after {
			continue
		}
		for _, p := range []struct {
			path routePath
			d    int
		}{{before, -1}, {after, 1}} {
			switch p.path {
			case pathKernel:
				c.routesKernel += p.d
			case pathFast:
				c.routesFast += p.d
				n := m.base.fastRoutes[k.Table]
				m.base.fastRoutes[k.Table] = n + p.d
				if eps := m.base.endpoints[k.Table]; n == 0 && p.d > 0 || n == 1 && p.d < 0 {
					c.endpointsFast += p.d * eps
					c.endpointsKernel -= p.d * eps
				}
			}
		}
	}
	return c
}

// nexthopUse is a nexthop object of the record and how many routes use it.
type nexthopUse struct {
	key  rtnl.NexthopKey
	refs int32
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
