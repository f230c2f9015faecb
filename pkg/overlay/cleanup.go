package overlay

// This file removes everything iotfabric owns (vrouter-agent --cleanup).

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/overlay/internal/rtnl"
)

// Cleanup removes everything iotfabric owns in the namespace, whatever the
// manager's record says: routes and label routes with its protocol, rules in its
// priority range, interfaces with its prefix (the pods' host-side veths among
// them, also those named with LegacyEndpointIfPrefix), the FOU port, and the
// pods' gateway address on former endpoint interfaces.
func (m *Manager) Cleanup(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errClosed
	}
	if err := m.resyncLocked(ctx); err != nil {
		m.log.Warn("cleanup: reading kernel state", logkey.Err, err)
	}
	var errs []error
	fail := func(err error) { errs = append(errs, err) }
	var dels []rtnl.Op
	for _, r := range m.cur.routes.all() {
		dels = append(dels, rtnl.Op{Del: true, Route: r})
	}
	m.applyRoutesLocked(ctx, dels, fail)
	var nhDels []rtnl.Op
	for k, n := range m.cur.nexthops {
		nhDels = append(nhDels, rtnl.Op{Del: true, Nexthop: true, NH: n, NHKey: k})
	}
	m.applyRoutesLocked(ctx, nhDels, fail)
	links, err := m.listLinksLocked()
	if err != nil {
		errs = append(errs, fmt.Errorf("overlay: list links: %w", err))
	}
	byName := map[string]netlink.Link{}
	for _, l := range links {
		byName[l.Attrs().Name] = l
	}
	errs = append(errs, m.cleanupFastPathLocked(links)...)
	for k := range m.cur.rules {
		if err := m.delRuleLocked(k); err != nil {
			errs = append(errs, err)
			continue
		}
		if l, ok := byName[k.Iif]; ok && k.Family == netlink.FAMILY_V4 {
			m.unconfigureEndpointLocked(l, endpointSpec{PodGateway: m.cfg.PodGatewayAddr})
		}
		delete(m.cur.rules, k)
	}
	for name, l := range byName {
		_, veth := l.(*netlink.Veth)
		if !strings.HasPrefix(name, IfPrefix) && !(veth && strings.HasPrefix(name, LegacyEndpointIfPrefix)) {
			continue
		}
		if err := m.h.LinkDel(l); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("overlay: remove %s: %w", name, err))
		}
	}
	if m.feat.FOU {
		err := m.h.FouDel(netlink.Fou{Family: netlink.FAMILY_V4, Port: MPLSoUDPPort})
		if err != nil && !isGone(err) && !errors.Is(err, syscall.EINVAL) {
			errs = append(errs, fmt.Errorf("overlay: remove fou port: %w", err))
		}
	}
	m.cur, m.nhIDs = newKstate(), nil
	m.last.ok = false
	return errors.Join(errs...)
}
