package gobgp

// Conversions between iotfabric's VPN routes and GoBGP's native BGP types
// and API paths. Every GoBGP protobuf/anypb detail of the project stays in
// this package.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	gbgp "github.com/osrg/gobgp/v3/pkg/packet/bgp"

	"github.com/iotfabric/iotfabric/pkg/bgp"
)

var (
	familyVPNv4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_MPLS_VPN}
	familyVPNv6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_MPLS_VPN}
)

// errNotVPN marks a path of a family other than VPNv4/VPNv6.
var errNotVPN = errors.New("not a VPNv4/VPNv6 path")

func nativeRD(rd bgp.RD) gbgp.RouteDistinguisherInterface {
	return gbgp.NewRouteDistinguisherIPAddressAS(rd.Addr.String(), rd.Index)
}

// nativeNLRI builds the labeled VPN NLRI of a route (label ignored for withdrawals).
func nativeNLRI(k bgp.RouteKey, label uint32) (gbgp.AddrPrefixInterface, error) {
	if !k.RD.IsValid() || !k.Prefix.IsValid() {
		return nil, fmt.Errorf("%w: %s", bgp.ErrInvalidRoute, k)
	}
	stack := *gbgp.NewMPLSLabelStack(label)
	bits := uint8(k.Prefix.Bits())
	addr := k.Prefix.Addr().String()
	if k.Prefix.Addr().Is4() {
		return gbgp.NewLabeledVPNIPAddrPrefix(bits, addr, stack, nativeRD(k.RD)), nil
	}
	return gbgp.NewLabeledVPNIPv6AddrPrefix(bits, addr, stack, nativeRD(k.RD)), nil
}

// extCommunities builds the route targets and tunnel-encapsulation communities.
func extCommunities(r bgp.Route) []gbgp.ExtendedCommunityInterface {
	ecs := make([]gbgp.ExtendedCommunityInterface, 0, len(r.RouteTargets)+len(r.Encaps))
	for _, t := range r.RouteTargets {
		if t.ASN <= 0xffff {
			ecs = append(ecs, gbgp.NewTwoOctetAsSpecificExtended(gbgp.EC_SUBTYPE_ROUTE_TARGET, uint16(t.ASN), t.Value, true))
		} else {
			ecs = append(ecs, gbgp.NewFourOctetAsSpecificExtended(gbgp.EC_SUBTYPE_ROUTE_TARGET, t.ASN, uint16(t.Value), true))
		}
	}
	for _, e := range r.Encaps {
		ecs = append(ecs, gbgp.NewEncapExtended(gbgp.TunnelType(bgp.TunnelType(e))))
	}
	return ecs
}

// attrCache serializes path attributes once per distinct next hop, route
// targets and encapsulations: a batch of routes of one gateway shares them.
//
// The next hop travels as a NEXT_HOP attribute; GoBGP builds the
// MP_REACH_NLRI from it and the NLRI when the path enters its table (an
// IPv4 next hop of a VPNv6 route becomes IPv4-mapped, RFC 4659). LOCAL_PREF
// is left to GoBGP, which adds 100 toward iBGP peers.
type attrCache map[string]*attrEntry

// attrEntry is one distinct attribute set: its wire form, and the size of
// the UPDATE that carries it to an iBGP peer, NLRI excepted (or the reason
// no UPDATE can carry it).
type attrEntry struct {
	attrs   [][]byte
	size    int
	tooLong error
}

// maxMessage is the largest BGP message (RFC 4271; GoBGP v3 negotiates no
// extended messages, RFC 8654).
const maxMessage = gbgp.BGP_MAX_MESSAGE_LENGTH

// updateSize returns the size of the UPDATE GoBGP sends an iBGP peer for r
// (ORIGIN, empty AS_PATH, LOCAL_PREF, MP_REACH_NLRI with the next hop and
// nlri, EXTENDED_COMMUNITIES), header included.
func updateSize(r bgp.Route, nlri gbgp.AddrPrefixInterface) (int, error) {
	nh := r.NextHop.String()
	if r.IsIPv6() && r.NextHop.Is4() {
		nh = "::ffff:" + nh
	}
	attrs := []gbgp.PathAttributeInterface{
		gbgp.NewPathAttributeOrigin(gbgp.BGP_ORIGIN_ATTR_TYPE_IGP),
		gbgp.NewPathAttributeAsPath(nil),
		gbgp.NewPathAttributeLocalPref(100),
		gbgp.NewPathAttributeMpReachNLRI(nh, []gbgp.AddrPrefixInterface{nlri}),
	}
	if ecs := extCommunities(r); len(ecs) > 0 {
		attrs = append(attrs, gbgp.NewPathAttributeExtendedCommunities(ecs))
	}
	b, err := gbgp.NewBGPUpdateMessage(nil, attrs, nil).Body.Serialize()
	if err != nil {
		return 0, err
	}
	return gbgp.BGP_HEADER_LENGTH + len(b), nil
}

// entry returns the attribute set of r; nlri (if given) sizes the UPDATE.
func (c attrCache) entry(r bgp.Route, nlri gbgp.AddrPrefixInterface) (*attrEntry, error) {
	var kb strings.Builder
	kb.WriteString(r.NextHop.String())
	for _, t := range r.RouteTargets {
		kb.WriteByte(' ')
		kb.WriteString(t.String())
	}
	for _, e := range r.Encaps {
		kb.WriteByte(' ')
		kb.WriteString(e.String())
	}
	if r.IsIPv6() {
		kb.WriteString(" v6")
	}
	key := kb.String()
	if e, ok := c[key]; ok {
		return e, nil
	}
	attrs := []gbgp.PathAttributeInterface{
		gbgp.NewPathAttributeNextHop(r.NextHop.String()),
		gbgp.NewPathAttributeOrigin(gbgp.BGP_ORIGIN_ATTR_TYPE_IGP),
	}
	if ecs := extCommunities(r); len(ecs) > 0 {
		attrs = append(attrs, gbgp.NewPathAttributeExtendedCommunities(ecs))
	}
	out := make([][]byte, 0, len(attrs))
	for _, a := range attrs {
		b, err := a.Serialize()
		if err != nil {
			return nil, fmt.Errorf("serialize %s: %w", a.GetType(), err)
		}
		out = append(out, b)
	}
	e := &attrEntry{attrs: out}
	if nlri != nil {
		n, err := updateSize(r, nlri)
		if err != nil {
			e.tooLong = fmt.Errorf("%w: %d extended communities: %v", bgp.ErrRouteTooLarge, len(r.RouteTargets)+len(r.Encaps), err)
		} else {
			e.size = n - nlri.Len()
		}
	}
	c[key] = e
	return e, nil
}

// apiPath converts a route into a GoBGP API path in the binary encoding
// (wire-format NLRI and attributes, no anypb), ready for AddPathStream.
func (c attrCache) apiPath(r bgp.Route) (*api.Path, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	nlri, err := nativeNLRI(r.Key(), r.Label)
	if err != nil {
		return nil, err
	}
	nb, err := nlri.Serialize()
	if err != nil {
		return nil, fmt.Errorf("serialize NLRI %s: %w", r.Key(), err)
	}
	e, err := c.entry(r, nlri)
	if err != nil {
		return nil, err
	}
	if e.tooLong != nil {
		return nil, e.tooLong
	}
	if n := e.size + len(nb); n > maxMessage {
		return nil, fmt.Errorf("%w: its UPDATE would take %d bytes (at most %d; %d extended communities)", bgp.ErrRouteTooLarge, n, maxMessage, len(r.RouteTargets)+len(r.Encaps))
	}
	attrs := e.attrs
	fam := familyVPNv4
	if r.IsIPv6() {
		fam = familyVPNv6
	}
	return &api.Path{Family: fam, NlriBinary: nb, PattrsBinary: attrs}, nil
}

// apiWithdrawal converts a route key into a GoBGP API withdrawal.
func apiWithdrawal(k bgp.RouteKey) (*api.Path, error) {
	nlri, err := nativeNLRI(k, 0)
	if err != nil {
		return nil, err
	}
	nb, err := nlri.Serialize()
	if err != nil {
		return nil, fmt.Errorf("serialize NLRI %s: %w", k, err)
	}
	fam := familyVPNv4
	if k.Prefix.Addr().Is6() {
		fam = familyVPNv6
	}
	return &api.Path{Family: fam, NlriBinary: nb, IsWithdraw: true}, nil
}

// routeFromNative converts a received VPN NLRI and its attributes into a route.
func routeFromNative(nlri gbgp.AddrPrefixInterface, attrs []gbgp.PathAttributeInterface) (bgp.Route, error) {
	var (
		r      bgp.Route
		rd     gbgp.RouteDistinguisherInterface
		labels []uint32
		prefix string
	)
	switch n := nlri.(type) {
	case *gbgp.LabeledVPNIPAddrPrefix:
		rd, labels, prefix = n.RD, n.Labels.Labels, n.IPPrefix()
	case *gbgp.LabeledVPNIPv6AddrPrefix:
		rd, labels, prefix = n.RD, n.Labels.Labels, n.IPPrefix()
	default:
		return r, fmt.Errorf("%w: %T", errNotVPN, nlri)
	}
	p, err := netip.ParsePrefix(prefix)
	if err != nil {
		return r, fmt.Errorf("%w: prefix %q: %w", bgp.ErrInvalidRoute, prefix, err)
	}
	r.Prefix = p.Masked()
	rdv, ok := rd.(*gbgp.RouteDistinguisherIPAddressAS)
	if !ok || rdv == nil {
		return r, fmt.Errorf("%w: %s: RD %v is not type 1", bgp.ErrInvalidRD, prefix, rd)
	}
	a, ok := netip.AddrFromSlice(rdv.Admin.To4())
	if !ok {
		return r, fmt.Errorf("%w: %s: RD administrator %v", bgp.ErrInvalidRD, prefix, rdv.Admin)
	}
	r.RD = bgp.RD{Addr: a, Index: rdv.Assigned}
	if len(labels) > 0 {
		r.Label = labels[0]
	}
	for _, attr := range attrs {
		switch v := attr.(type) {
		case *gbgp.PathAttributeMpReachNLRI:
			r.NextHop = addrFromIP(v.Nexthop)
		case *gbgp.PathAttributeNextHop:
			if !r.NextHop.IsValid() {
				r.NextHop = addrFromIP(v.Value)
			}
		case *gbgp.PathAttributeExtendedCommunities:
			for _, ec := range v.Value {
				switch c := ec.(type) {
				case *gbgp.TwoOctetAsSpecificExtended:
					if c.SubType == gbgp.EC_SUBTYPE_ROUTE_TARGET {
						r.RouteTargets = append(r.RouteTargets, bgp.RouteTarget{ASN: uint32(c.AS), Value: c.LocalAdmin})
					}
				case *gbgp.FourOctetAsSpecificExtended:
					if c.SubType == gbgp.EC_SUBTYPE_ROUTE_TARGET {
						r.RouteTargets = append(r.RouteTargets, bgp.RouteTarget{ASN: c.AS, Value: uint32(c.LocalAdmin)})
					}
				case *gbgp.EncapExtended:
					if e, ok := bgp.EncapFromTunnelType(uint16(c.TunnelType)); ok && !containsEncap(r.Encaps, e) {
						r.Encaps = append(r.Encaps, e)
					}
				}
			}
		}
	}
	return r, nil
}

func containsEncap(l []bgp.Encap, e bgp.Encap) bool {
	for _, x := range l {
		if x == e {
			return true
		}
	}
	return false
}

// addrFromIP converts a next hop, unmapping IPv4-mapped IPv6 addresses.
func addrFromIP(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

// decodePath is routeFromAPI that turns a panic in a decoder into an
// error: a path nobody could decode must not end the process.
func decodePath(p *api.Path) (r bgp.Route, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%w: decoder panic: %v", bgp.ErrInvalidRoute, v)
		}
	}()
	return routeFromAPI(p)
}

// routeFromAPI converts a path reported by GoBGP's watch into a route.
func routeFromAPI(p *api.Path) (bgp.Route, error) {
	if p.GetFamily() == nil {
		return bgp.Route{}, fmt.Errorf("%w: no family", errNotVPN)
	}
	rf := apiutil.ToRouteFamily(p.Family)
	if rf != gbgp.RF_IPv4_VPN && rf != gbgp.RF_IPv6_VPN {
		return bgp.Route{}, fmt.Errorf("%w: %s", errNotVPN, rf)
	}
	nlri, err := apiutil.GetNativeNlri(p)
	if err != nil {
		return bgp.Route{}, fmt.Errorf("decode NLRI: %w", err)
	}
	attrs, err := apiutil.GetNativePathAttributes(p)
	if err != nil {
		return bgp.Route{}, fmt.Errorf("decode path attributes: %w", err)
	}
	return routeFromNative(nlri, attrs)
}
