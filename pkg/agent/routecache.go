package agent

import (
	"context"
	"net/netip"
	"strings"

	"github.com/iotfabric/iotfabric/pkg/overlay"
)

// The remote routes of the desired state are kept route by route between
// two whole builds (Core.Desired), so that one route change from a
// controller costs work proportional to the change: the core records which
// prefixes' chosen route changed, and the reconcile loop hands just those to
// the data plane (overlay.Manager.UpdateRoutes). Anything else that changes
// the desired state (endpoints, tables, a session going live or down, a
// snapshot) invalidates the cache, and the loop applies the whole state
// again. With several controllers live, a change is noted as the change of
// the route in force (the first live controller's that holds the key, as
// effectiveRoutes takes them): a change on one controller that another,
// earlier one holds as well changes nothing.

// pfxKey is a network's prefix (as buildDesired groups routes).
type pfxKey struct {
	network string
	prefix  pfx
}

// chosenRoute is the route in force for a prefix: the usable one with the
// lowest route distinguisher (as buildDesired picks; its key says which),
// and how many usable routes the prefix has.
type chosenRoute struct {
	r *route
	n int32
}

// prefixTable is a network's chosen routes by prefix: IPv4 prefixes (nearly
// all) under a 5-byte key, the others under pfx.
type prefixTable struct {
	v4 map[pfx4]chosenRoute
	v6 map[pfx]chosenRoute
}

type pfx4 struct {
	a    [4]byte
	bits uint8
}

func newPrefixTable(n int) *prefixTable {
	return &prefixTable{v4: make(map[pfx4]chosenRoute, n), v6: map[pfx]chosenRoute{}}
}

func (t *prefixTable) get(p pfx) (chosenRoute, bool) {
	if t == nil {
		return chosenRoute{}, false
	}
	if p.v6 {
		c, ok := t.v6[p]
		return c, ok
	}
	c, ok := t.v4[pfx4{[4]byte(p.a[:4]), p.bits}]
	return c, ok
}

func (t *prefixTable) set(p pfx, c chosenRoute) {
	if p.v6 {
		t.v6[p] = c
	} else {
		t.v4[pfx4{[4]byte(p.a[:4]), p.bits}] = c
	}
}

func (t *prefixTable) del(p pfx) {
	if p.v6 {
		delete(t.v6, p)
	} else {
		delete(t.v4, pfx4{[4]byte(p.a[:4]), p.bits})
	}
}

// desiredRoutes is the cache, owned by the core goroutine.
type desiredRoutes struct {
	valid   bool
	local   map[string]map[pfx]bool // per network: own endpoints' addresses
	chosen  map[string]*prefixTable
	changed map[pfxKey]bool // since the last DesiredChanges or Desired
}

// usable tells whether buildDesired would program r.
func (d *desiredRoutes) usable(underlay netip.Addr, k routeKey, r *route) bool {
	return r != nil && r.ok && r.nextHop() != underlay && !d.local[k.network()][r.pfx()]
}

// rebuild fills the cache from the routes in force when a controller is
// live, and invalidates it otherwise.
func (d *desiredRoutes) rebuild(s *coreState, underlay netip.Addr, routes map[routeKey]*route) {
	*d = desiredRoutes{}
	live := 0
	for _, sr := range s.sessions {
		if sr.live {
			live++
		}
	}
	if live == 0 {
		return
	}
	d.valid = true
	d.local = map[string]map[pfx]bool{}
	for _, e := range s.eps {
		if _, ok := s.p.Tables[e.Network]; !ok || !e.Attached {
			continue
		}
		if d.local[e.Network] == nil {
			d.local[e.Network] = map[pfx]bool{}
		}
		for _, a := range e.Addresses {
			d.local[e.Network][pfxOf(netip.PrefixFrom(a, a.BitLen()))] = true
		}
	}
	// One map per network, sized for its usable routes.
	count := map[string]int{}
	for k, r := range routes {
		if d.usable(underlay, k, r) {
			count[k.network()]++
		}
	}
	d.chosen = make(map[string]*prefixTable, len(count))
	for n, c := range count {
		d.chosen[strings.Clone(n)] = newPrefixTable(c) // not a part of a route's encoding
	}
	d.changed = map[pfxKey]bool{}
	for k, r := range routes {
		if !d.usable(underlay, k, r) {
			continue
		}
		byPfx := d.chosen[k.network()]
		dst := r.pfx()
		c, _ := byPfx.get(dst)
		c.n++
		if c.r == nil || strings.Compare(k.rd(), c.r.key().rd()) < 0 {
			c.r = r
		}
		byPfx.set(dst, c)
	}
}

// invalidate drops the cache until the next whole build.
func (d *desiredRoutes) invalidate() { *d = desiredRoutes{} }

// note records that the route under k went from old to r (either nil: absent).
func (d *desiredRoutes) note(underlay netip.Addr, k routeKey, old, r *route) {
	if !d.valid {
		return
	}
	wasUsable, isUsable := d.usable(underlay, k, old), d.usable(underlay, k, r)
	if !wasUsable && !isUsable {
		return
	}
	network, _, krd := k.parts()
	p := pfxKey{network: network}
	if isUsable {
		p.prefix = r.pfx()
	} else {
		p.prefix = old.pfx()
	}
	byPfx := d.chosen[network]
	if byPfx == nil {
		byPfx = newPrefixTable(0)
		d.chosen[strings.Clone(network)] = byPfx
	}
	c, _ := byPfx.get(p.prefix)
	if wasUsable {
		c.n--
	}
	if isUsable {
		c.n++
	}
	var rd string
	if c.r != nil {
		rd = c.r.key().rd()
	}
	switch {
	case isUsable && (c.r == nil || strings.Compare(krd, rd) <= 0):
		c.r = r
		d.changed[p] = true
	case c.r != nil && rd == krd && c.n == 0:
		// The prefix's only route went.
		byPfx.del(p.prefix)
		d.changed[p] = true
		return
	case c.r != nil && rd == krd:
		// The chosen route went and others remain: which one is next needs
		// a look at every route.
		d.invalidate()
		return
	}
	byPfx.set(p.prefix, c)
}

// takeChanges returns the changed prefixes' routes and forgets them.
func (d *desiredRoutes) takeChanges() []overlay.RouteChange {
	out := make([]overlay.RouteChange, 0, len(d.changed))
	for p := range d.changed {
		if c, ok := d.chosen[p.network].get(p.prefix); ok {
			out = append(out, overlay.RouteChange{Network: p.network, Route: c.r.remote()})
		} else {
			out = append(out, overlay.RouteChange{Network: p.network, Remove: true, Route: overlay.RemoteRoute{Prefix: p.prefix.prefix()}})
		}
	}
	clear(d.changed)
	return out
}

// RouteChanges is what changed in the desired state since the source's last
// Desired or DesiredChanges, when that was routes only.
type RouteChanges struct {
	// OK is false when more than routes changed: apply Desired whole.
	OK      bool
	Changes []overlay.RouteChange
	// Gen is the generation the changes bring the state to.
	Gen uint64
	// State is the whole state at Gen, when asked for.
	State overlay.State
}

// DesiredChanges returns the route changes since the last Desired or
// DesiredChanges (and with whole, the whole state they lead to).
func (c *Core) DesiredChanges(ctx context.Context, whole bool) (RouteChanges, error) {
	var out RouteChanges
	err := c.do(ctx, func(s *coreState) {
		if !s.routesCache.valid {
			return
		}
		out = RouteChanges{OK: true, Changes: s.routesCache.takeChanges(), Gen: s.desiredGen}
		if whole {
			out.State = buildDesired(c.cfg.Underlay, c.cfg.Encaps, s.p.Tables, s.eps, effectiveRoutes(s))
		}
	})
	return out, err
}
