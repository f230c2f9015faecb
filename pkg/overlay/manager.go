package overlay

// This file holds the Manager: configuration, opening netlink, and Set's
// fast path; set.go lists Set's steps.

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/overlay/internal/rtnl"
)

// VRFMode chooses between VRF devices and plain policy tables.
type VRFMode string

// VRF modes.
const (
	VRFAuto VRFMode = "auto" // VRF devices when the kernel has them
	VRFOn   VRFMode = "on"   // VRF devices; fail when the kernel lacks them
	VRFOff  VRFMode = "off"  // policy tables only
)

// DefaultPodGatewayAddr is the address of every endpoint's host-side interface:
// pods route their default via it (`default via 169.254.1.1`).
var DefaultPodGatewayAddr = netip.MustParseAddr("169.254.1.1")

// Config configures a Manager.
type Config struct {
	// NetNS is the path of the network namespace to program ("" = the caller's).
	NetNS string
	// Logger receives the manager's log; nil discards.
	Logger *slog.Logger
	// PodGatewayAddr is put on endpoint interfaces (default DefaultPodGatewayAddr).
	PodGatewayAddr netip.Addr
	// VRF selects VRF devices or policy tables (default VRFAuto).
	VRF VRFMode
	// FastPath selects the BPF fast path for MPLSoUDP (default FastPathOff).
	FastPath FastPathMode
}

// Manager owns the overlay objects in one network namespace.
type Manager struct {
	log  *slog.Logger
	cfg  Config
	feat Features

	// mu serialises Set, Resync and Cleanup and guards the fields below.
	mu     sync.Mutex
	ns     netns.NsHandle
	h      *netlink.Handle
	rt     *rtnl.Conn
	cur    kstate
	last   lastApplied
	base   routeBase // what UpdateRoutes builds on
	nextNH uint32    // next nexthop id to try
	// nhIDs are the nexthop ids the record holds and those handed out since
	// (some perhaps never made); nil until the first allocation after a
	// re-read of the kernel.
	nhIDs  map[uint32]struct{}
	fp     *fastPath // nil: MPLSoUDP takes the kernel path only
	closed bool

	// statMu guards paths and the fast path's counters for FastPathStats,
	// which must not wait for a long Set.
	statMu sync.Mutex
	paths  pathCounts
	stats  *ebpf.Map // the fast path's counters (a duplicate descriptor), nil without it
}

// New opens netlink in the configured namespace, detects the kernel's features,
// and adopts what iotfabric already owns there (nothing is changed until Set).
func New(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if !cfg.PodGatewayAddr.IsValid() {
		cfg.PodGatewayAddr = DefaultPodGatewayAddr
	}
	switch cfg.FastPath {
	case "":
		cfg.FastPath = FastPathOff
	case FastPathOff, FastPathAuto, FastPathOn:
	default:
		return nil, fmt.Errorf("overlay: unknown fast path mode %q", cfg.FastPath)
	}
	switch cfg.VRF {
	case "":
		cfg.VRF = VRFAuto
	case VRFAuto, VRFOn, VRFOff:
	default:
		return nil, fmt.Errorf("overlay: unknown VRF mode %q", cfg.VRF)
	}
	m := &Manager{log: cfg.Logger.With(logkey.Component, logkey.ComponentOverlay), cfg: cfg, ns: netns.None(), cur: newKstate(), nextNH: NexthopIDFirst}
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
	if m.rt, err = rtnl.Open(m.ns); err != nil {
		m.Close()
		return nil, fmt.Errorf("overlay: %w", err)
	}
	m.feat = m.detectFeatures()
	if msg := m.feat.Summary(); msg != "" {
		m.log.Warn(""+msg, logkey.Missing, m.feat.Missing())
	}
	if cfg.VRF == VRFOn && !m.feat.VRF {
		m.Close()
		return nil, errors.New("overlay: VRF devices requested but the kernel has no vrf module")
	}
	if err := m.startFastPath(); err != nil {
		m.Close()
		return nil, err
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
	m.statMu.Lock()
	if m.stats != nil {
		m.stats.Close()
		m.stats = nil
	}
	m.statMu.Unlock()
	if m.fp != nil {
		m.fp.close()
		m.fp = nil
	}
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
	digest := stateDigest(&s)
	if m.last.ok && digest == m.last.digest {
		fp, err := m.linkFingerprintLocked(&s)
		if err == nil && maps.Equal(fp, m.last.links) {
			return nil
		}
	}
	m.last.ok = false
	m.base = routeBase{}
	if err := s.Validate(); err != nil {
		return err
	}
	err := m.setLocked(ctx, &s)
	if err == nil {
		if fp, ferr := m.linkFingerprintLocked(&s); ferr == nil {
			m.last = lastApplied{ok: true, digest: digest, links: fp}
			m.setRouteBaseLocked(&s, fp)
		}
	}
	return err
}

// lastApplied is the digest of the state last applied without error and
// the interfaces it depended on at that moment.
type lastApplied struct {
	ok     bool
	digest [sha256.Size]byte
	links  map[string]linkFingerprint
}

type linkFingerprint struct {
	Index, Master int
	Up            bool
}

// linkFingerprintLocked records the endpoint interfaces of s and the
// interfaces iotfabric owns (pods' veths only when they are endpoints of s:
// others come and go with pods being set up).
func (m *Manager) linkFingerprintLocked(s *State) (map[string]linkFingerprint, error) {
	links, err := m.listLinksLocked()
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
		if want[a.Name] || strings.HasPrefix(a.Name, IfPrefix) && !strings.HasPrefix(a.Name, EndpointIfPrefix) {
			fp[a.Name] = linkFingerprint{Index: a.Index, Master: a.MasterIndex, Up: a.Flags&net.FlagUp != 0}
		}
	}
	return fp, nil
}

// stateDigest is the SHA-256 of an unambiguous encoding of s: the Set
// shortcut compares it instead of keeping a copy of the state (a route takes
// about a hundred bytes; a gateway has tens of thousands).
func stateDigest(s *State) [sha256.Size]byte {
	h := sha256.New()
	buf := make([]byte, 0, 4096)
	flush := func() {
		h.Write(buf)
		buf = buf[:0]
	}
	str := func(v string) {
		buf = binary.AppendUvarint(buf, uint64(len(v)))
		buf = append(buf, v...)
	}
	addr := func(a netip.Addr) {
		// Its length (0, 4 or 16 bytes), its bytes, its zone.
		buf = append(buf, byte(a.BitLen()/8))
		if a.Is4() {
			b := a.As4()
			buf = append(buf, b[:]...)
		} else if a.IsValid() {
			b := a.As16()
			buf = append(buf, b[:]...)
		}
		str(a.Zone())
	}
	encaps := func(es []encap.Encap) {
		buf = binary.AppendUvarint(buf, uint64(len(es)))
		for _, e := range es {
			buf = binary.AppendUvarint(buf, uint64(e))
		}
	}
	addr(s.Underlay)
	encaps(s.EncapPriority)
	buf = binary.AppendUvarint(buf, uint64(len(s.Networks)))
	for i := range s.Networks {
		n := &s.Networks[i]
		str(n.Name)
		buf = binary.AppendUvarint(buf, uint64(n.Table))
		buf = binary.AppendUvarint(buf, uint64(len(n.Endpoints)))
		for _, ep := range n.Endpoints {
			str(ep.Interface)
			addr(ep.Address)
			buf = binary.AppendUvarint(buf, uint64(ep.Label))
		}
		buf = binary.AppendUvarint(buf, uint64(len(n.Routes)))
		for j := range n.Routes {
			r := &n.Routes[j]
			addr(r.Prefix.Addr())
			buf = binary.AppendVarint(buf, int64(r.Prefix.Bits()))
			buf = binary.AppendUvarint(buf, uint64(r.Label))
			addr(r.RemoteUnderlay)
			encaps(r.Encaps)
			if len(buf) > cap(buf)-256 {
				flush()
			}
		}
		flush()
	}
	flush()
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
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

func sortedKeys[V any](mp map[string]V) []string {
	keys := make([]string, 0, len(mp))
	for k := range mp {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
