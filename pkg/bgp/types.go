// Package bgp is iotfabric's BGP/MPLS L3VPN boundary: domain types for VPN
// routes (route distinguisher, route target, MPLS label, next hop,
// tunnel encapsulation), the speaker configuration, the Speaker interface the
// controller drives, and the pure rules that turn an endpoint into its VPN
// routes. It imports no BGP implementation; the GoBGP adapter lives in
// pkg/bgp/gobgp.
package bgp

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/iotfabric/iotfabric/pkg/encap"
)

// Errors returned by parsers and validators. Callers test them with errors.Is.
var (
	ErrInvalidRD          = errors.New("invalid route distinguisher")
	ErrInvalidRT          = errors.New("invalid route target")
	ErrInvalidLabel       = errors.New("invalid MPLS label")
	ErrInvalidEncap       = errors.New("invalid encapsulation")
	ErrInvalidRoute       = errors.New("invalid route")
	ErrNoEncapsulation    = errors.New("no encapsulation common to network and gateway")
	ErrInvalidConfig      = errors.New("invalid BGP configuration")
	ErrPeerExists         = errors.New("peer already configured")
	ErrPeerNotFound       = errors.New("peer not found")
	ErrNotRunning         = errors.New("speaker not running")
	ErrAlreadyRunning     = errors.New("speaker already running")
	ErrSubscriptionClosed = errors.New("subscription closed")
	ErrNotAdvertised      = errors.New("route not advertised")
	ErrRouteTooLarge      = errors.New("route does not fit in a BGP UPDATE message")
)

// RD is a type 1 route distinguisher: <IPv4 address>:<index>. iotfabric uses
// the gateway's underlay address and the network index (RFC 4364 4.2).
type RD struct {
	Addr  netip.Addr // IPv4
	Index uint16
}

// ParseRD parses "<IPv4>:<index>".
func ParseRD(s string) (RD, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return RD{}, fmt.Errorf("%w %q: want <IPv4>:<index>", ErrInvalidRD, s)
	}
	a, err := netip.ParseAddr(s[:i])
	if err != nil || !a.Is4() {
		return RD{}, fmt.Errorf("%w %q: administrator must be an IPv4 address", ErrInvalidRD, s)
	}
	n, err := strconv.ParseUint(s[i+1:], 10, 16)
	if err != nil {
		return RD{}, fmt.Errorf("%w %q: index must be 0..65535", ErrInvalidRD, s)
	}
	return RD{Addr: a, Index: uint16(n)}, nil
}

// String formats the RD as "<IPv4>:<index>".
func (r RD) String() string { return r.Addr.String() + ":" + strconv.Itoa(int(r.Index)) }

// IsValid reports whether the administrator field is an IPv4 address.
func (r RD) IsValid() bool { return r.Addr.Is4() }

// MarshalText implements encoding.TextMarshaler.
func (r RD) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (r *RD) UnmarshalText(b []byte) error {
	v, err := ParseRD(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// RouteTarget is a route target extended community "target:<asn>:<n>".
// With a 2-byte ASN the value has 4 bytes (type 0x00); with a 4-byte ASN
// (above 65535) the value has 2 bytes (type 0x02).
type RouteTarget struct {
	ASN   uint32
	Value uint32
}

// AutoRouteTargetBase is added to the network id for the automatic route
// target of a network: target:<asn>:<8000000+id>.
const AutoRouteTargetBase = 8000000

// AutoRouteTarget returns the automatic route target of a network.
func AutoRouteTarget(asn uint32, networkID uint32) RouteTarget {
	return RouteTarget{ASN: asn, Value: AutoRouteTargetBase + networkID}
}

// ParseRouteTarget parses "target:<asn>:<n>" (the "target:" prefix is optional).
func ParseRouteTarget(s string) (RouteTarget, error) {
	t := strings.TrimPrefix(s, "target:")
	a, v, ok := strings.Cut(t, ":")
	if !ok {
		return RouteTarget{}, fmt.Errorf("%w %q: want target:<asn>:<n>", ErrInvalidRT, s)
	}
	asn, err := strconv.ParseUint(a, 10, 32)
	if err != nil {
		return RouteTarget{}, fmt.Errorf("%w %q: asn: %w", ErrInvalidRT, s, err)
	}
	val, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return RouteTarget{}, fmt.Errorf("%w %q: value: %w", ErrInvalidRT, s, err)
	}
	rt := RouteTarget{ASN: uint32(asn), Value: uint32(val)}
	if err := rt.Validate(); err != nil {
		return RouteTarget{}, err
	}
	return rt, nil
}

// Validate checks that the route target fits an extended community.
func (t RouteTarget) Validate() error {
	if t.ASN > 0xffff && t.Value > 0xffff {
		return fmt.Errorf("%w %s: a 4-byte ASN leaves 2 bytes for the value (max 65535)", ErrInvalidRT, t)
	}
	return nil
}

// String formats the route target as "target:<asn>:<n>".
func (t RouteTarget) String() string {
	return "target:" + strconv.FormatUint(uint64(t.ASN), 10) + ":" + strconv.FormatUint(uint64(t.Value), 10)
}

// MarshalText implements encoding.TextMarshaler.
func (t RouteTarget) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (t *RouteTarget) UnmarshalText(b []byte) error {
	v, err := ParseRouteTarget(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// MPLS label limits: 0..15 are reserved, labels are 20 bits.
const (
	MinLabel uint32 = 16
	MaxLabel uint32 = 1<<20 - 1
)

// ValidateLabel checks that l is an unreserved 20-bit MPLS label.
func ValidateLabel(l uint32) error {
	if l < MinLabel || l > MaxLabel {
		return fmt.Errorf("%w %d: want %d..%d", ErrInvalidLabel, l, MinLabel, MaxLabel)
	}
	return nil
}

// Encap is a data-plane encapsulation between gateways and edge routers:
// iotfabric's one encapsulation type (pkg/encap), named here for the speaker.
// Plain has no tunnel type and is refused in routes.
type Encap = encap.Encap

// Encapsulations, in the order iotfabric lists them.
const (
	EncapMPLSoUDP = encap.MPLSoUDP
	EncapMPLSoGRE = encap.MPLSoGRE
	EncapVXLAN    = encap.VXLAN
)

// Tunnel types of the tunnel-encapsulation extended community
// (type 0x03, subtype 0x0c, RFC 9012) used on the wire.
const (
	TunnelTypeGRE      uint16 = 2
	TunnelTypeVXLAN    uint16 = 8
	TunnelTypeMPLSoGRE uint16 = 11
	TunnelTypeMPLSoUDP uint16 = 13
)

// MPLSoUDPPort is the UDP destination port of MPLS-in-UDP (RFC 7510).
const MPLSoUDPPort = 6635

// ParseEncap parses an encapsulation name (case-insensitive; see encap.Parse).
func ParseEncap(s string) (Encap, error) {
	e, err := encap.Parse(s)
	if err != nil || TunnelType(e) == 0 {
		return 0, fmt.Errorf("%w %q: want mplsoudp, mplsogre or vxlan", ErrInvalidEncap, s)
	}
	return e, nil
}

// TunnelType is the value sent in the tunnel-encapsulation extended
// community: MPLSoUDP 13, MPLSoGRE 2 (GRE), VXLAN 8; 0 for an encapsulation
// BGP does not carry.
func TunnelType(e Encap) uint16 {
	switch e {
	case EncapMPLSoUDP:
		return TunnelTypeMPLSoUDP
	case EncapMPLSoGRE:
		return TunnelTypeGRE
	case EncapVXLAN:
		return TunnelTypeVXLAN
	}
	return 0
}

// EncapFromTunnelType maps a received tunnel type to an encapsulation:
// 13 MPLSoUDP, 2 and 11 MPLSoGRE, 8 VXLAN. Other values are not ours.
func EncapFromTunnelType(t uint16) (Encap, bool) {
	switch t {
	case TunnelTypeMPLSoUDP:
		return EncapMPLSoUDP, true
	case TunnelTypeGRE, TunnelTypeMPLSoGRE:
		return EncapMPLSoGRE, true
	case TunnelTypeVXLAN:
		return EncapVXLAN, true
	}
	return 0, false
}

// RouteKey identifies a VPN route in the speaker: the same prefix under the
// same RD is one route, whatever its label or attributes.
type RouteKey struct {
	RD     RD
	Prefix netip.Prefix
}

// String formats the key as "<rd>:<prefix>".
func (k RouteKey) String() string { return k.RD.String() + ":" + k.Prefix.String() }

// Route is a VPNv4 (IPv4 prefix) or VPNv6 (IPv6 prefix) route.
type Route struct {
	Prefix       netip.Prefix
	RD           RD
	Label        uint32
	NextHop      netip.Addr // IPv4 (also for VPNv6 routes, sent as ::ffff:a.b.c.d) or IPv6
	RouteTargets []RouteTarget
	Encaps       []Encap
}

// Key returns the route's RD and prefix.
func (r Route) Key() RouteKey { return RouteKey{RD: r.RD, Prefix: r.Prefix} }

// IsIPv6 reports whether the route is a VPNv6 route.
func (r Route) IsIPv6() bool { return r.Prefix.Addr().Is6() }

// Validate checks a route before it is announced.
func (r Route) Validate() error {
	if !r.Prefix.IsValid() || r.Prefix.Addr().Is4In6() || r.Prefix != r.Prefix.Masked() {
		return fmt.Errorf("%w: prefix %s is not a canonical IPv4 or IPv6 prefix", ErrInvalidRoute, r.Prefix)
	}
	if !r.RD.IsValid() {
		return fmt.Errorf("%w %s: %w", ErrInvalidRoute, r.Prefix, ErrInvalidRD)
	}
	if err := ValidateLabel(r.Label); err != nil {
		return fmt.Errorf("%w %s: %w", ErrInvalidRoute, r.Prefix, err)
	}
	if !r.NextHop.IsValid() || r.NextHop.IsUnspecified() || r.NextHop.Is4In6() {
		return fmt.Errorf("%w %s: next hop %s", ErrInvalidRoute, r.Prefix, r.NextHop)
	}
	if !r.IsIPv6() && !r.NextHop.Is4() {
		return fmt.Errorf("%w %s: a VPNv4 route needs an IPv4 next hop, not %s", ErrInvalidRoute, r.Prefix, r.NextHop)
	}
	for _, t := range r.RouteTargets {
		if err := t.Validate(); err != nil {
			return fmt.Errorf("%w %s: %w", ErrInvalidRoute, r.Prefix, err)
		}
	}
	for _, e := range r.Encaps {
		if TunnelType(e) == 0 {
			return fmt.Errorf("%w %s: %w %d", ErrInvalidRoute, r.Prefix, ErrInvalidEncap, e)
		}
	}
	return nil
}

// String is a one-line form for logs.
func (r Route) String() string {
	var b strings.Builder
	b.WriteString(r.RD.String())
	b.WriteByte(' ')
	b.WriteString(r.Prefix.String())
	b.WriteString(" label=" + strconv.FormatUint(uint64(r.Label), 10))
	b.WriteString(" nh=" + r.NextHop.String())
	for _, t := range r.RouteTargets {
		b.WriteString(" " + t.String())
	}
	for _, e := range r.Encaps {
		b.WriteString(" encap=" + e.String())
	}
	return b.String()
}

// Equal reports whether two routes carry the same information (route
// targets and encapsulations compared as sets).
func (r Route) Equal(o Route) bool {
	if r.Prefix != o.Prefix || r.RD != o.RD || r.Label != o.Label || r.NextHop != o.NextHop {
		return false
	}
	return sameSet(r.RouteTargets, o.RouteTargets) && sameSet(r.Encaps, o.Encaps)
}

func sameSet[T comparable](a, b []T) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			return false
		}
	}
	return true
}

// HasAnyRouteTarget reports whether the route carries one of rts: the
// import test a network applies to received routes.
func (r Route) HasAnyRouteTarget(rts []RouteTarget) bool {
	for _, t := range r.RouteTargets {
		if slices.Contains(rts, t) {
			return true
		}
	}
	return false
}
