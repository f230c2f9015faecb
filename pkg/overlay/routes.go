package overlay

// This file holds the steps of Set that handle rules, routes and nexthop
// objects, written in batches through the raw rtnetlink socket.

import (
	"context"
	"fmt"

	"github.com/vishvananda/netlink"

	"github.com/iotfabric/iotfabric/pkg/overlay/internal/rtnl"
)

// applyRoutesLocked writes ops in batches, records what the kernel accepted
// and reports what it refused.
func (m *Manager) applyRoutesLocked(ctx context.Context, ops []rtnl.Op, fail func(error)) {
	const chunk = 20000 // check the context between chunks
	for len(ops) > 0 {
		if err := ctx.Err(); err != nil {
			fail(fmt.Errorf("overlay: routes: %w", err))
			return
		}
		n := min(chunk, len(ops))
		for i, err := range m.rt.Apply(ops[:n]) {
			if err = m.recordOpLocked(ops[i], err); err != nil {
				fail(fmt.Errorf("overlay: %w", err))
			}
		}
		ops = ops[n:]
	}
}

// recordOpLocked updates the record with the kernel's answer to op and
// returns the answer when it is a failure.
func (m *Manager) recordOpLocked(op rtnl.Op, err error) error {
	switch {
	case op.Nexthop && op.Del && (err == nil || isGone(err)):
		if m.cur.nexthops[op.NHKey].ID == op.NH.ID {
			delete(m.cur.nexthops, op.NHKey)
			delete(m.nhIDs, op.NH.ID)
		}
		return nil
	case op.Nexthop && !op.Del && err == nil:
		m.cur.nexthops[op.NH.Key()] = op.NH
		if m.nhIDs != nil {
			m.nhIDs[op.NH.ID] = struct{}{}
		}
		return nil
	case op.Nexthop:
		return err
	case op.Del && (err == nil || isGone(err)):
		m.cur.routes.del(op.Route.Key())
		return nil
	case !op.Del && err == nil:
		m.cur.routes.put(op.Route)
		return nil
	}
	return err
}

// flushViaLocked removes the routes and nexthops through an interface, routes
// first, in batches.
func (m *Manager) flushViaLocked(ctx context.Context, ifindex int, fail func(error)) {
	nhs := map[uint32]bool{}
	var nhDels, dels []rtnl.Op
	for k, n := range m.cur.nexthops {
		if n.Oif == int32(ifindex) {
			nhs[n.ID] = true
			nhDels = append(nhDels, rtnl.Op{Del: true, Nexthop: true, NH: n, NHKey: k})
		}
	}
	for _, r := range m.cur.routes.all() {
		if r.Oif == int32(ifindex) || r.NhID != 0 && nhs[r.NhID] {
			dels = append(dels, rtnl.Op{Del: true, Route: r})
		}
	}
	m.applyRoutesLocked(ctx, dels, fail)
	m.applyRoutesLocked(ctx, nhDels, fail)
}

// forgetRoutesViaLocked drops the records of routes through an interface the
// kernel just removed (it removes the routes with it).
func (m *Manager) forgetRoutesViaLocked(ifindex int) {
	gone := map[uint32]bool{}
	for k, n := range m.cur.nexthops {
		if n.Oif == int32(ifindex) {
			gone[n.ID] = true
			delete(m.cur.nexthops, k)
		}
	}
	for k, r := range m.cur.routes.all() {
		if r.Oif == int32(ifindex) || r.NhID != 0 && gone[r.NhID] {
			m.cur.routes.del(k)
		}
	}
}

func (m *Manager) delRuleLocked(k ruleKey) error {
	r := netlink.NewRule()
	r.Family, r.Priority, r.Table, r.IifName = k.Family, k.Priority, int(k.Table), k.Iif
	if err := m.h.RuleDel(r); err != nil && !isGone(err) {
		return fmt.Errorf("overlay: remove rule %d iif %s lookup %d: %w", k.Priority, k.Iif, k.Table, err)
	}
	return nil
}

// ensureRulesLocked adds the per-endpoint `ip rule iif X lookup T`.
func (m *Manager) ensureRulesLocked(d *desired, fail func(error)) {
	for k := range d.rules {
		if m.cur.rules[k] {
			continue
		}
		r := netlink.NewRule()
		r.Family, r.Priority, r.Table, r.IifName, r.Protocol = k.Family, k.Priority, int(k.Table), k.Iif, RouteProtocol
		if err := m.h.RuleAdd(r); err != nil && !isExist(err) {
			fail(fmt.Errorf("overlay: add rule iif %s lookup %d: %w", k.Iif, k.Table, err))
			continue
		}
		m.cur.rules[k] = true
	}
}

// removeRulesLocked removes the rules of former endpoints.
func (m *Manager) removeRulesLocked(d *desired, fail func(error)) {
	for k := range m.cur.rules {
		if d.rules[k] {
			continue
		}
		if err := m.delRuleLocked(k); err != nil {
			fail(err)
			continue
		}
		delete(m.cur.rules, k)
	}
}

// addRoutesLocked writes the nexthop objects, then the routes, that differ
// from the record. A route whose nexthop failed is skipped (the failure is
// already reported); the others are rewritten to use the nexthop by id.
func (m *Manager) addRoutesLocked(ctx context.Context, want map[rtnl.RouteKey]rtnl.Route, wantNH map[rtnl.NexthopKey]rtnl.Nexthop, fail func(error)) {
	var nhAdds []rtnl.Op
	for k, n := range wantNH {
		if have, ok := m.cur.nexthops[k]; ok && have == n {
			continue
		}
		nhAdds = append(nhAdds, rtnl.Op{Nexthop: true, NH: n})
	}
	m.applyRoutesLocked(ctx, nhAdds, fail)
	var adds []rtnl.Op
	for k, r := range want {
		if r.NhID != 0 {
			if n, ok := m.cur.nexthops[rtnl.NexthopKey{Oif: r.Oif, Encap: r.Encap}]; !ok || n.ID != r.NhID {
				continue // its nexthop failed; reported above
			}
			r.Oif, r.Encap = 0, 0
			want[k] = r
		}
		if have, ok := m.cur.routes.get(k); ok && sameRoute(r, have) {
			continue
		}
		adds = append(adds, rtnl.Op{Route: r})
	}
	m.applyRoutesLocked(ctx, adds, fail)
}

// removeRoutesLocked deletes the routes, then the nexthop objects, that are
// no longer wanted.
func (m *Manager) removeRoutesLocked(ctx context.Context, want map[rtnl.RouteKey]rtnl.Route, wantNH map[rtnl.NexthopKey]rtnl.Nexthop, fail func(error)) {
	var dels []rtnl.Op
	for k, r := range m.cur.routes.all() {
		if _, ok := want[k]; !ok {
			dels = append(dels, rtnl.Op{Del: true, Route: r})
		}
	}
	m.applyRoutesLocked(ctx, dels, fail)
	var nhDels []rtnl.Op
	for k, n := range m.cur.nexthops {
		if w, ok := wantNH[k]; !ok || w.ID != n.ID {
			nhDels = append(nhDels, rtnl.Op{Del: true, Nexthop: true, NH: n, NHKey: k})
		}
	}
	m.applyRoutesLocked(ctx, nhDels, fail)
}
