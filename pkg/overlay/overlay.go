package overlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// VRFMode chooses between VRF devices and plain policy tables.
type VRFMode string

// VRF modes.
const (
	VRFAuto VRFMode = "auto" // VRF devices when the kernel has them
	VRFOn   VRFMode = "on"   // VRF devices; fail when the kernel lacks them
	VRFOff  VRFMode = "off"  // policy tables only
)

// DefaultGatewayAddress is the address of every endpoint's host-side interface:
// pods route their default via it (`default via 169.254.1.1`).
var DefaultGatewayAddress = netip.MustParseAddr("169.254.1.1")

// Config configures a Manager.
type Config struct {
	// NetNS is the path of the network namespace to program ("" = the caller's).
	NetNS string
	// Logger receives the manager's log; nil discards.
	Logger *slog.Logger
	// GatewayAddress is put on endpoint interfaces (default DefaultGatewayAddress).
	GatewayAddress netip.Addr
	// VRF selects VRF devices or policy tables (default VRFAuto).
	VRF VRFMode
}

type tunnelSpec struct {
	Encap  Encap
	Local  netip.Addr
	Remote netip.Addr
}

type endpointSpec struct {
	Master  string     // VRF device, "" for policy tables
	Gateway netip.Addr // address put on the interface (invalid: none)
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
	routes    map[rkey]kroute
	nexthops  map[nhKey]knexthop
	sysctls   map[string]string
}

func newKstate() kstate {
	return kstate{
		tunnels:   map[string]tunnelSpec{},
		vrfs:      map[string]uint32{},
		endpoints: map[string]endpointSpec{},
		rules:     map[ruleKey]bool{},
		routes:    map[rkey]kroute{},
		nexthops:  map[nhKey]knexthop{},
		sysctls:   map[string]string{},
	}
}

// Manager owns the overlay objects in one network namespace.
type Manager struct {
	log  *slog.Logger
	cfg  Config
	feat Features

	// mu serialises Set, Resync and Cleanup and guards the fields below.
	mu       sync.Mutex
	ns       netns.NsHandle
	h        *netlink.Handle
	rt       *rtnl
	cur      kstate
	last     lastApplied
	nextNH   uint32          // next nexthop id to try
	nhIDs    map[uint32]bool // ids in use, valid while nhIDsFor matches
	nhIDsFor int
	closed   bool
}

// New opens netlink in the configured namespace, detects the kernel's features,
// and adopts what iotfabric already owns there (nothing is changed until Set).
func New(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if !cfg.GatewayAddress.IsValid() {
		cfg.GatewayAddress = DefaultGatewayAddress
	}
	switch cfg.VRF {
	case "":
		cfg.VRF = VRFAuto
	case VRFAuto, VRFOn, VRFOff:
	default:
		return nil, fmt.Errorf("overlay: unknown VRF mode %q", cfg.VRF)
	}
	m := &Manager{log: cfg.Logger, cfg: cfg, ns: netns.None(), cur: newKstate(), nextNH: NexthopIDFirst}
	if cfg.NetNS != "" {
		ns, err := netns.GetFromPath(cfg.NetNS)
		if err != nil {
			return nil, fmt.Errorf("overlay: open network namespace %s: %w", cfg.NetNS, err)
		}
		m.ns = ns
	}
	var err error
	// Only route and generic netlink: the default set includes XFRM, which
	// kernels without it refuse.
	m.h, err = netlink.NewHandleAt(m.ns, unix.NETLINK_ROUTE, unix.NETLINK_GENERIC)
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("overlay: netlink handle: %w", err)
	}
	if err := m.h.SetStrictCheck(true); err != nil {
		m.Close()
		return nil, fmt.Errorf("overlay: netlink strict checking: %w", err)
	}
	if m.rt, err = openRtnl(m.ns); err != nil {
		m.Close()
		return nil, fmt.Errorf("overlay: %w", err)
	}
	m.feat = m.detectFeatures()
	if msg := m.feat.Summary(); msg != "" {
		m.log.Warn("overlay: "+msg, "missing", m.feat.Missing())
	}
	if cfg.VRF == VRFOn && !m.feat.VRF {
		m.Close()
		return nil, errors.New("overlay: VRF devices requested but the kernel has no vrf module")
	}
	if err := m.Resync(ctx); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// Features returns the detected kernel features.
func (m *Manager) Features() Features { return m.feat }

func (m *Manager) useVRF() bool { return m.feat.VRF && m.cfg.VRF != VRFOff }

// Close releases the netlink sockets; kernel state stays as it is.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	if m.h != nil {
		m.h.Close()
		m.h = nil
	}
	if m.rt != nil {
		m.rt.Close()
		m.rt = nil
	}
	if m.ns.IsOpen() {
		m.ns.Close()
		m.ns = netns.None()
	}
}

var errClosed = errors.New("overlay: manager closed")

// Resync re-reads from the kernel everything iotfabric owns, replacing the
// manager's record. The next Set then removes orphans and repairs drift.
func (m *Manager) Resync(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errClosed
	}
	return m.resyncLocked(ctx)
}

func (m *Manager) resyncLocked(ctx context.Context) error {
	m.last.ok = false
	cur := newKstate()
	cur.sysctls = m.cur.sysctls
	cur.endpoints = m.cur.endpoints // not readable back; re-ensured when they differ
	var errs []error
	links, err := m.h.LinkList()
	if err != nil {
		return fmt.Errorf("overlay: list links: %w", err)
	}
	for _, l := range links {
		name := l.Attrs().Name
		if !strings.HasPrefix(name, IfPrefix) {
			continue
		}
		switch t := l.(type) {
		case *netlink.Iptun:
			if strings.HasPrefix(name, IfPrefix+"u") {
				cur.tunnels[name] = tunnelSpec{Encap: EncapMPLSoUDP, Local: ipAddr(t.Local), Remote: ipAddr(t.Remote)}
				continue
			}
		case *netlink.Gretun:
			if strings.HasPrefix(name, IfPrefix+"g") {
				cur.tunnels[name] = tunnelSpec{Encap: EncapMPLSoGRE, Local: ipAddr(t.Local), Remote: ipAddr(t.Remote)}
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
		rules, err := m.rt.dumpRules(uint8(fam))
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
	fams := []uint8{afInet}
	if m.feat.IPv6 {
		fams = append(fams, afInet6)
	}
	if m.feat.MPLS {
		fams = append(fams, afMPLS)
	}
	for _, fam := range fams {
		if err := ctx.Err(); err != nil {
			return err
		}
		routes, err := m.rt.dump(fam, RouteProtocol)
		if err != nil {
			errs = append(errs, fmt.Errorf("overlay: list routes (family %d): %w", fam, err))
			continue
		}
		for _, r := range routes {
			cur.routes[r.key()] = r
		}
	}
	if m.feat.Nexthops {
		nhs, err := m.rt.dumpNexthops(RouteProtocol)
		if err != nil {
			errs = append(errs, fmt.Errorf("overlay: list nexthops: %w", err))
		}
		for _, n := range nhs {
			if _, dup := cur.nexthops[n.key()]; dup || n.ID < NexthopIDFirst || n.ID > NexthopIDLast {
				// A duplicate or out-of-range object is an orphan: keep it
				// under a key no wanted nexthop has, so Set removes it.
				cur.nexthops[nhKey{Oif: -int32(n.ID), Encap: n.Encap}] = n
				continue
			}
			cur.nexthops[n.key()] = n
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
	m.cur = cur
	m.log.Info("overlay: adopted kernel state", "tunnels", len(cur.tunnels), "vrfs", len(cur.vrfs),
		"rules", len(cur.rules), "routes", len(cur.routes), "nexthops", len(cur.nexthops), "fou", cur.fou)
	return errors.Join(errs...)
}

func ipAddr(ip net.IP) netip.Addr {
	if ip4 := ip.To4(); ip4 != nil {
		return netip.AddrFrom4([4]byte(ip4))
	}
	a, _ := netip.AddrFromSlice(ip)
	return a
}

func isGone(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ESRCH) ||
		errors.Is(err, syscall.ENODEV) || errors.As(err, new(netlink.LinkNotFoundError))
}

func isExist(err error) bool { return errors.Is(err, syscall.EEXIST) }

// sameRoute tells whether the kernel's route have is what want asks for. A want
// without an output interface (plain via gateway) accepts whatever interface
// the kernel resolved.
func sameRoute(want, have kroute) bool {
	if want.Oif == 0 {
		have.Oif = 0
	}
	if want.NhID != 0 {
		// The kernel reports the nexthop's encapsulation with the route.
		have.Encap, have.EncapMore = 0, false
	}
	return want == have
}

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
				spec.Gateway = m.cfg.GatewayAddress
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
			if e == EncapMPLSoUDP || e == EncapMPLSoGRE {
				d.tunnels[tunnelName(e, r.Gateway)] = tunnelSpec{Encap: e, Local: s.Underlay, Remote: r.Gateway}
			}
			if r.Prefix.Addr().Is6() {
				d.ipv6 = true
			}
		}
	}
	d.fou = m.feat.Supports(EncapMPLSoUDP) && slices.Contains(prio, EncapMPLSoUDP)
	return d
}

// Set makes the kernel match s: it adds and replaces first, then deletes what is
// no longer wanted, and reports every failure joined. Calling it again with the
// same state does nothing.
func (m *Manager) Set(ctx context.Context, s State) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errClosed
	}
	// Fast path: the state last applied without error, and the interfaces it
	// depends on unchanged. Resync drops this shortcut, so drift made behind
	// the manager's back is repaired on the next Set after it.
	if m.last.ok && sameState(&s, &m.last.state) {
		fp, err := m.linkFingerprintLocked(&s)
		if err == nil && maps.Equal(fp, m.last.links) {
			return nil
		}
	}
	m.last.ok = false
	if err := s.Validate(); err != nil {
		return err
	}
	err := m.setLocked(ctx, &s)
	if err == nil {
		if fp, ferr := m.linkFingerprintLocked(&s); ferr == nil {
			m.last = lastApplied{ok: true, state: s.Clone(), links: fp}
		}
	}
	return err
}

// lastApplied is the state last applied without error and the interfaces it
// depended on at that moment.
type lastApplied struct {
	ok    bool
	state State
	links map[string]linkFingerprint
}

type linkFingerprint struct {
	Index, Master int
	Up            bool
}

// linkFingerprintLocked records the endpoint interfaces of s and the
// interfaces iotfabric owns.
func (m *Manager) linkFingerprintLocked(s *State) (map[string]linkFingerprint, error) {
	links, err := m.h.LinkList()
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, n := range s.Networks {
		for _, ep := range n.Endpoints {
			want[ep.Interface] = true
		}
	}
	fp := map[string]linkFingerprint{}
	for _, l := range links {
		a := l.Attrs()
		if want[a.Name] || strings.HasPrefix(a.Name, IfPrefix) {
			fp[a.Name] = linkFingerprint{Index: a.Index, Master: a.MasterIndex, Up: a.Flags&net.FlagUp != 0}
		}
	}
	return fp, nil
}

func sameState(a, b *State) bool {
	if a.Underlay != b.Underlay || !slices.Equal(a.EncapPriority, b.EncapPriority) || len(a.Networks) != len(b.Networks) {
		return false
	}
	for i := range a.Networks {
		x, y := &a.Networks[i], &b.Networks[i]
		if x.Name != y.Name || x.Table != y.Table || !slices.Equal(x.Endpoints, y.Endpoints) || len(x.Routes) != len(y.Routes) {
			return false
		}
		for j := range x.Routes {
			r, q := &x.Routes[j], &y.Routes[j]
			if r.Prefix != q.Prefix || r.Label != q.Label || r.Gateway != q.Gateway || !slices.Equal(r.Encaps, q.Encaps) {
				return false
			}
		}
	}
	return true
}

func (m *Manager) setLocked(ctx context.Context, s *State) error {
	d := m.plan(s)
	errs := d.errs
	fail := func(err error) { errs = append(errs, err) }

	// Sysctls: forwarding, MPLS label space.
	m.ensureSysctlLocked("net/ipv4/ip_forward", "1", fail)
	if d.ipv6 && m.feat.IPv6 {
		m.ensureSysctlLocked("net/ipv6/conf/all/forwarding", "1", fail)
	}
	if m.feat.MPLS && d.maxLabel > 0 {
		m.ensurePlatformLabelsLocked(d.maxLabel, fail)
	}

	// FOU receive port.
	if d.fou && !m.cur.fou {
		err := m.h.FouAdd(netlink.Fou{Family: netlink.FAMILY_V4, Port: MPLSoUDPPort, Protocol: ipprotoMPLS, EncapType: netlink.FOU_ENCAP_DIRECT})
		if err != nil && !isExist(err) {
			fail(fmt.Errorf("overlay: fou port %d: %w", MPLSoUDPPort, err))
		} else {
			m.cur.fou = true
		}
	}

	links, err := m.h.LinkList()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("overlay: list links: %w", err))...)
	}
	byName := make(map[string]netlink.Link, len(links))
	for _, l := range links {
		byName[l.Attrs().Name] = l
	}

	// VRF devices.
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

	// Tunnels.
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
			// replace it; its routes are re-added below. They are removed
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

	// Endpoint interfaces.
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

	// Rules.
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

	// Routes, now that every interface index is known.
	want, wantNH := m.routesLocked(s, d, byName, missing, fail)
	var nhAdds []routeOp
	for k, n := range wantNH {
		if have, ok := m.cur.nexthops[k]; ok && have == n {
			continue
		}
		nhAdds = append(nhAdds, routeOp{Nexthop: true, NH: n})
	}
	errs = append(errs, m.applyRoutesLocked(ctx, nhAdds)...)
	var adds []routeOp
	for k, r := range want {
		if r.NhID != 0 {
			if n, ok := m.cur.nexthops[nhKey{Oif: r.Oif, Encap: r.Encap}]; !ok || n.ID != r.NhID {
				continue // its nexthop failed; reported above
			}
			r.Oif, r.Encap = 0, 0
			want[k] = r
		}
		if have, ok := m.cur.routes[k]; ok && sameRoute(r, have) {
			continue
		}
		adds = append(adds, routeOp{Route: r})
	}
	errs = append(errs, m.applyRoutesLocked(ctx, adds)...)

	// Deletes: routes, rules, endpoints, tunnels, VRFs, FOU.
	var dels []routeOp
	for k, r := range m.cur.routes {
		if _, ok := want[k]; !ok {
			dels = append(dels, routeOp{Del: true, Route: r})
		}
	}
	errs = append(errs, m.applyRoutesLocked(ctx, dels)...)
	var nhDels []routeOp
	for k, n := range m.cur.nexthops {
		if w, ok := wantNH[k]; !ok || w.ID != n.ID {
			nhDels = append(nhDels, routeOp{Del: true, Nexthop: true, NH: n, NHKey: k})
		}
	}
	errs = append(errs, m.applyRoutesLocked(ctx, nhDels)...)
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
	for name, spec := range m.cur.endpoints {
		if _, ok := d.endpoints[name]; ok {
			continue
		}
		if l, ok := byName[name]; ok {
			m.unconfigureEndpointLocked(l, spec)
		}
		delete(m.cur.endpoints, name)
	}
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
	if m.cur.fou && !d.fou {
		err := m.h.FouDel(netlink.Fou{Family: netlink.FAMILY_V4, Port: MPLSoUDPPort})
		if err != nil && !isGone(err) {
			fail(fmt.Errorf("overlay: remove fou port: %w", err))
		} else {
			m.cur.fou = false
		}
	}
	return errors.Join(errs...)
}

// routesLocked builds the wanted routes: host routes and label routes to local
// endpoints, and remote prefixes.
//
// Remote prefixes through a tunnel use shared nexthop objects when the kernel
// has them; the returned routes then carry NhID and, until the nexthop is
// known to be in place, the nexthop's Oif and Encap.
func (m *Manager) routesLocked(s *State, d desired, byName map[string]netlink.Link, missing map[string]bool, fail func(error)) (map[rkey]kroute, map[nhKey]knexthop) {
	prio := s.EncapPriority
	if len(prio) == 0 {
		prio = DefaultEncapPriority
	}
	n := 0
	for _, nw := range s.Networks {
		n += 2*len(nw.Endpoints) + len(nw.Routes)
	}
	want := make(map[rkey]kroute, n)
	wantNH := map[nhKey]knexthop{}
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
			fam, scope := uint8(afInet), uint8(rtScopeLink)
			if ep.Address.Is6() {
				fam, scope = afInet6, rtScopeUniv
			}
			r := kroute{Family: fam, Table: nw.Table, Dst: netip.PrefixFrom(ep.Address, ep.Address.BitLen()),
				Oif: idx, Protocol: RouteProtocol, Scope: scope, Type: rtnUnicast}
			want[r.key()] = r
			if m.feat.MPLS {
				lr := kroute{Family: afMPLS, Label: ep.Label, Via: ep.Address, Oif: idx,
					Protocol: RouteProtocol, Type: rtnUnicast}
				want[lr.key()] = lr
			}
		}
		for _, rr := range nw.Routes {
			e, ok := chooseEncap(prio, rr.Encaps, m.feat)
			if !ok {
				continue // reported by plan
			}
			r := kroute{Family: afInet, Table: nw.Table, Dst: rr.Prefix, Protocol: RouteProtocol, Type: rtnUnicast}
			if rr.Prefix.Addr().Is6() {
				r.Family = afInet6
			}
			switch e {
			case EncapPlain:
				r.Gw = rr.Gateway
				if r.Family == afInet6 {
					r.Gw = netip.Addr{}
					fail(fmt.Errorf("overlay: network %q route %s: plain IPv6 routes via an IPv4 gateway are not supported", nw.Name, rr.Prefix))
					continue
				}
			default:
				name := tunnelName(e, rr.Gateway)
				l, ok := byName[name]
				if !ok {
					continue // the tunnel failed; reported above
				}
				r.Oif = int32(l.Attrs().Index)
				r.Encap = rr.Label
				if m.feat.Nexthops {
					k := nhKey{Oif: r.Oif, Encap: r.Encap}
					nh, ok := wantNH[k]
					if !ok {
						nh = m.cur.nexthops[k]
						if nh.ID == 0 {
							nh = knexthop{ID: m.allocNexthopIDLocked(wantNH), Oif: r.Oif, Encap: r.Encap, Protocol: RouteProtocol}
						}
						wantNH[k] = nh
					}
					r.NhID = nh.ID
				} else if r.Family == afInet {
					r.Scope = rtScopeLink
				}
			}
			want[r.key()] = r
		}
	}
	return want, wantNH
}

// allocNexthopIDLocked returns a nexthop id that neither the kernel record
// nor the nexthops planned so far use.
func (m *Manager) allocNexthopIDLocked(planned map[nhKey]knexthop) uint32 {
	if len(m.nhIDs) == 0 || m.nhIDsFor != len(m.cur.nexthops)+len(planned) {
		// Rebuild the used set lazily (only when allocating).
		m.nhIDs = make(map[uint32]bool, len(m.cur.nexthops)+len(planned))
		for _, n := range m.cur.nexthops {
			m.nhIDs[n.ID] = true
		}
		for _, n := range planned {
			m.nhIDs[n.ID] = true
		}
	}
	for {
		id := m.nextNH
		m.nextNH++
		if m.nextNH > NexthopIDLast {
			m.nextNH = NexthopIDFirst
		}
		if !m.nhIDs[id] {
			m.nhIDs[id] = true
			m.nhIDsFor = len(m.cur.nexthops) + len(planned) + 1
			return id
		}
	}
}

// applyRoutesLocked writes ops in batches and records what the kernel accepted.
func (m *Manager) applyRoutesLocked(ctx context.Context, ops []routeOp) []error {
	var errs []error
	const chunk = 20000 // check the context between chunks
	for len(ops) > 0 {
		if err := ctx.Err(); err != nil {
			return append(errs, fmt.Errorf("overlay: routes: %w", err))
		}
		n := min(chunk, len(ops))
		res := m.rt.apply(ops[:n])
		for i, err := range res {
			op := ops[i]
			if op.Nexthop {
				switch {
				case op.Del && (err == nil || isGone(err)):
					if m.cur.nexthops[op.NHKey].ID == op.NH.ID {
						delete(m.cur.nexthops, op.NHKey)
					}
					continue
				case !op.Del && err == nil:
					m.cur.nexthops[op.NH.key()] = op.NH
					continue
				}
				errs = append(errs, fmt.Errorf("overlay: %w", err))
				continue
			}
			if op.Del {
				if err == nil || isGone(err) {
					delete(m.cur.routes, op.Route.key())
					continue
				}
			} else if err == nil {
				m.cur.routes[op.Route.key()] = op.Route
				continue
			}
			errs = append(errs, fmt.Errorf("overlay: %w", err))
		}
		ops = ops[n:]
	}
	return errs
}

// flushViaLocked removes the routes and nexthops through an interface, routes
// first, in batches.
func (m *Manager) flushViaLocked(ctx context.Context, ifindex int, fail func(error)) {
	nhs := map[uint32]bool{}
	var nhDels, dels []routeOp
	for k, n := range m.cur.nexthops {
		if n.Oif == int32(ifindex) {
			nhs[n.ID] = true
			nhDels = append(nhDels, routeOp{Del: true, Nexthop: true, NH: n, NHKey: k})
		}
	}
	for _, r := range m.cur.routes {
		if r.Oif == int32(ifindex) || r.NhID != 0 && nhs[r.NhID] {
			dels = append(dels, routeOp{Del: true, Route: r})
		}
	}
	for _, err := range m.applyRoutesLocked(ctx, dels) {
		fail(err)
	}
	for _, err := range m.applyRoutesLocked(ctx, nhDels) {
		fail(err)
	}
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
	for k, r := range m.cur.routes {
		if r.Oif == int32(ifindex) || r.NhID != 0 && gone[r.NhID] {
			delete(m.cur.routes, k)
		}
	}
}

func (m *Manager) addTunnelLocked(name string, spec tunnelSpec) (netlink.Link, error) {
	var l netlink.Link
	local, remote := net.IP(spec.Local.AsSlice()), net.IP(spec.Remote.AsSlice())
	switch spec.Encap {
	case EncapMPLSoUDP:
		l = &netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: name}, Local: local, Remote: remote,
			Proto: ipprotoMPLS, EncapType: 1 /* FOU */, EncapDport: MPLSoUDPPort, PMtuDisc: 1}
	case EncapMPLSoGRE:
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
	m.log.Info("overlay: tunnel added", "interface", name, "encap", spec.Encap, "remote", spec.Remote)
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
	if spec.Gateway.IsValid() {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: spec.Gateway.AsSlice(), Mask: net.CIDRMask(spec.Gateway.BitLen(), spec.Gateway.BitLen())}}
		if err := m.h.AddrReplace(l, addr); err != nil {
			return fmt.Errorf("overlay: endpoint %s address %s: %w", name, spec.Gateway, err)
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
	if spec.Gateway.IsValid() {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: spec.Gateway.AsSlice(), Mask: net.CIDRMask(spec.Gateway.BitLen(), spec.Gateway.BitLen())}}
		_ = m.h.AddrDel(l, addr)
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

// ensureSysctl writes /proc/sys/<key> in the namespace unless it was already
// written with that value by this manager.
func (m *Manager) ensureSysctlLocked(key, value string, fail func(error)) {
	if m.cur.sysctls[key] == value {
		return
	}
	if err := m.writeSysctlLocked(key, value); err != nil {
		fail(err)
		return
	}
	m.cur.sysctls[key] = value
}

func (m *Manager) writeSysctlLocked(key, value string) error {
	err := inNamespace(m.ns, func() error {
		return os.WriteFile("/proc/sys/"+key, []byte(value), 0)
	})
	if err != nil {
		return fmt.Errorf("overlay: sysctl %s=%s: %w", strings.ReplaceAll(key, "/", "."), value, err)
	}
	return nil
}

func (m *Manager) readSysctlLocked(key string) (string, error) {
	var v []byte
	err := inNamespace(m.ns, func() error {
		var err error
		v, err = os.ReadFile("/proc/sys/" + key)
		return err
	})
	return strings.TrimSpace(string(v)), err
}

func (m *Manager) ensurePlatformLabelsLocked(maxLabel uint32, fail func(error)) {
	const key = "net/mpls/platform_labels"
	if v, ok := m.cur.sysctls[key]; ok {
		if n, _ := strconv.ParseUint(v, 10, 32); uint32(n) > maxLabel {
			return
		}
	}
	v, err := m.readSysctlLocked(key)
	if err != nil {
		fail(fmt.Errorf("overlay: read net.mpls.platform_labels: %w", err))
		return
	}
	n, _ := strconv.ParseUint(v, 10, 32)
	if uint32(n) > maxLabel {
		m.cur.sysctls[key] = v
		return
	}
	want := uint32(DefaultPlatformLabels)
	if maxLabel >= want {
		want = maxLabel + 1
	}
	if err := m.writeSysctlLocked(key, strconv.FormatUint(uint64(want), 10)); err != nil {
		fail(err)
		return
	}
	m.cur.sysctls[key] = strconv.FormatUint(uint64(want), 10)
}

// Cleanup removes everything iotfabric owns in the namespace, whatever the
// manager's record says: routes and label routes with its protocol, rules in its
// priority range, interfaces with its prefix, the FOU port, and the gateway
// address on former endpoint interfaces.
func (m *Manager) Cleanup(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errClosed
	}
	if err := m.resyncLocked(ctx); err != nil {
		m.log.Warn("overlay: cleanup: reading kernel state", "error", err)
	}
	var errs []error
	var dels []routeOp
	for _, r := range m.cur.routes {
		dels = append(dels, routeOp{Del: true, Route: r})
	}
	errs = append(errs, m.applyRoutesLocked(ctx, dels)...)
	var nhDels []routeOp
	for k, n := range m.cur.nexthops {
		nhDels = append(nhDels, routeOp{Del: true, Nexthop: true, NH: n, NHKey: k})
	}
	errs = append(errs, m.applyRoutesLocked(ctx, nhDels)...)
	links, err := m.h.LinkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("overlay: list links: %w", err))
	}
	byName := map[string]netlink.Link{}
	for _, l := range links {
		byName[l.Attrs().Name] = l
	}
	for k := range m.cur.rules {
		if err := m.delRuleLocked(k); err != nil {
			errs = append(errs, err)
			continue
		}
		if l, ok := byName[k.Iif]; ok && k.Family == netlink.FAMILY_V4 {
			m.unconfigureEndpointLocked(l, endpointSpec{Gateway: m.cfg.GatewayAddress})
		}
		delete(m.cur.rules, k)
	}
	for name, l := range byName {
		if !strings.HasPrefix(name, IfPrefix) {
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
	m.cur = newKstate()
	m.last.ok = false
	return errors.Join(errs...)
}

func sortedKeys[V any](mp map[string]V) []string {
	keys := make([]string, 0, len(mp))
	for k := range mp {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
