package overlay

// This file reads back from the kernel what iotfabric owns (adopt, resync).

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/overlay/internal/rtnl"
)

type tunnelSpec struct {
	Encap  encap.Encap
	Local  netip.Addr
	Remote netip.Addr
}

type endpointSpec struct {
	Master     string     // VRF device, "" for policy tables
	PodGateway netip.Addr // the pods' default-route address, put on the interface (invalid: none)
}

type ruleKey struct {
	Family   int
	Iif      string
	Table    uint32
	Priority int
}

// kstate is the kernel state iotfabric owns, as last programmed or adopted.
type kstate struct {
	fou       bool
	tunnels   map[string]tunnelSpec
	vrfs      map[string]uint32
	endpoints map[string]endpointSpec
	rules     map[ruleKey]bool
	routes    routeRecord
	nexthops  map[rtnl.NexthopKey]rtnl.Nexthop
	sysctls   map[string]string
}

func newKstate() kstate {
	return kstate{
		tunnels:   map[string]tunnelSpec{},
		vrfs:      map[string]uint32{},
		endpoints: map[string]endpointSpec{},
		rules:     map[ruleKey]bool{},
		routes:    newRouteRecord(),
		nexthops:  map[rtnl.NexthopKey]rtnl.Nexthop{},
		sysctls:   map[string]string{},
	}
}

func (m *Manager) resyncLocked(ctx context.Context) error {
	m.last.ok = false
	m.base = routeBase{}
	cur := newKstate()
	cur.sysctls = m.cur.sysctls
	cur.endpoints = m.cur.endpoints // not readable back; re-ensured when they differ
	var errs []error
	links, err := m.listLinksLocked()
	if err != nil {
		return fmt.Errorf("overlay: list links: %w", err)
	}
	for _, l := range links {
		name := l.Attrs().Name
		if !strings.HasPrefix(name, IfPrefix) || strings.HasPrefix(name, EndpointIfPrefix) {
			continue // not ours, or a pod's veth (the CNI plugin's)
		}
		switch t := l.(type) {
		case *netlink.Iptun:
			if strings.HasPrefix(name, IfPrefix+"u") {
				cur.tunnels[name] = tunnelSpec{Encap: encap.MPLSoUDP, Local: ipAddr(t.Local), Remote: ipAddr(t.Remote)}
				continue
			}
		case *netlink.Gretun:
			if strings.HasPrefix(name, IfPrefix+"g") {
				cur.tunnels[name] = tunnelSpec{Encap: encap.MPLSoGRE, Local: ipAddr(t.Local), Remote: ipAddr(t.Remote)}
				continue
			}
		case *netlink.Vrf:
			if strings.HasPrefix(name, IfPrefix+"v") {
				cur.vrfs[name] = t.Table
				continue
			}
		}
		// Leftover probe or an interface of a kind we never make under our
		// prefix: remove it now.
		if err := m.h.LinkDel(l); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("overlay: remove stray interface %s: %w", name, err))
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		if fam == netlink.FAMILY_V6 && !m.feat.IPv6 {
			continue
		}
		rules, err := m.rt.DumpRules(uint8(fam))
		if err != nil {
			errs = append(errs, fmt.Errorf("overlay: list rules: %w", err))
			continue
		}
		for _, r := range rules {
			if r.Priority >= RulePriority && r.Priority <= RulePriorityLast {
				cur.rules[ruleKey{Family: fam, Iif: r.Iif, Table: r.Table, Priority: int(r.Priority)}] = true
			}
		}
	}
	fams := []uint8{rtnl.AFInet}
	if m.feat.IPv6 {
		fams = append(fams, rtnl.AFInet6)
	}
	if m.feat.MPLS {
		fams = append(fams, rtnl.AFMPLS)
	}
	for _, fam := range fams {
		if err := ctx.Err(); err != nil {
			return err
		}
		routes, err := m.rt.DumpRoutes(fam, RouteProtocol)
		if err != nil {
			errs = append(errs, fmt.Errorf("overlay: list routes (family %d): %w", fam, err))
			continue
		}
		for _, r := range routes {
			cur.routes.put(r)
		}
	}
	if m.feat.Nexthops {
		nhs, err := m.rt.DumpNexthops(RouteProtocol)
		if err != nil {
			errs = append(errs, fmt.Errorf("overlay: list nexthops: %w", err))
		}
		for _, n := range nhs {
			if _, dup := cur.nexthops[n.Key()]; dup || n.ID < NexthopIDFirst || n.ID > NexthopIDLast {
				// A duplicate or out-of-range object is an orphan: keep it
				// under a key no wanted nexthop has, so Set removes it.
				cur.nexthops[rtnl.NexthopKey{Oif: -int32(n.ID), Encap: n.Encap}] = n
				continue
			}
			cur.nexthops[n.Key()] = n
		}
	}
	if m.feat.FOU {
		fous, err := m.h.FouList(netlink.FAMILY_V4)
		if err != nil {
			errs = append(errs, fmt.Errorf("overlay: list fou ports: %w", err))
		}
		for _, f := range fous {
			if f.Port == MPLSoUDPPort {
				cur.fou = true
			}
		}
	}
	m.cur, m.nhIDs = cur, nil
	m.log.Info("adopted kernel state", logkey.Tunnels, len(cur.tunnels), logkey.VRFs, len(cur.vrfs),
		logkey.Rules, len(cur.rules), logkey.Routes, cur.routes.len(), logkey.Nexthops, len(cur.nexthops), logkey.FOU, cur.fou)
	return errors.Join(errs...)
}
