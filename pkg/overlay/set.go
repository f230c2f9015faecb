package overlay

import (
	"context"
	"errors"
)

// setLocked makes the kernel match s, one step per kind of object. Adds and
// replacements come first, in the order objects depend on each other
// (interfaces before the rules and routes through them); deletes follow in
// the reverse order, so traffic that stays wanted is never interrupted. A
// failed step is reported and the others still run.
func (m *Manager) setLocked(ctx context.Context, s *State) error {
	d := m.plan(s)
	errs := d.errs
	fail := func(err error) { errs = append(errs, err) }

	m.ensureSysctlsLocked(&d, fail)
	m.ensureFOULocked(&d, fail)
	byName, err := m.linksByNameLocked()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	m.ensureVRFsLocked(&d, byName, fail)
	m.ensureTunnelsLocked(ctx, &d, byName, fail)
	missing := m.ensureEndpointsLocked(&d, byName, fail)
	m.ensureRulesLocked(&d, fail)
	want, wantNH := m.routesLocked(s, byName, missing, fail)
	m.addRoutesLocked(ctx, want, wantNH, fail)
	m.ensureFastPathLocked(s, byName, fail)

	m.removeRoutesLocked(ctx, want, wantNH, fail)
	m.removeRulesLocked(&d, fail)
	m.removeEndpointsLocked(&d, byName)
	m.removeTunnelsLocked(&d, byName, fail)
	m.removeVRFsLocked(&d, byName, fail)
	m.removeFOULocked(&d, fail)
	return errors.Join(errs...)
}
