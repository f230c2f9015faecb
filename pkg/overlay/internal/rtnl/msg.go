package rtnl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// This file encodes and decodes the rtnetlink route messages iotfabric writes
// in bulk (RTM_NEWROUTE / RTM_DELROUTE for IPv4, IPv6 and MPLS). It is pure:
// no I/O, so the decoder can be fuzzed.

// Address families, scopes and the route type the package's callers set.
const (
	AFInet  = 2
	AFInet6 = 10
	AFMPLS  = 28

	ScopeUniverse = 0
	TypeUnicast   = 1

	// LabelMax is the largest MPLS label (20 bits).
	LabelMax = 1<<20 - 1
)

const (
	nlmsgHdrLen = 16
	rtmsgLen    = 12

	nlmsgError = 2
	nlmsgDone  = 3

	rtmNewRoute = 24
	rtmDelRoute = 25
	rtmGetRoute = 26

	nlmFRequest = 0x1
	nlmFMulti   = 0x2
	nlmFAck     = 0x4
	nlmFDumpInt = 0x10
	nlmFRoot    = 0x100
	nlmFMatch   = 0x200
	nlmFDump    = nlmFRoot | nlmFMatch
	nlmFReplace = 0x100
	nlmFCreate  = 0x400

	rtaDst       = 1
	rtaOif       = 4
	rtaGateway   = 5
	rtaTable     = 15
	rtaVia       = 18
	rtaNewDst    = 19
	rtaEncapType = 21
	rtaEncap     = 22
	rtaNhID      = 30

	rtmNewNexthop = 104
	rtmDelNexthop = 105
	rtmGetNexthop = 106
	nhmsgLen      = 8
	nhaID         = 1
	nhaOif        = 5
	nhaEncapType  = 7
	nhaEncap      = 8

	lwtunnelEncapMPLS = 1
	mplsIPTunnelDst   = 1

	ScopeLink      = 253
	rtScopeNowhere = 255
	rtTableUnspec  = 0
	rtTableCompat  = 252
	rtTableMain    = 254
	nlaTypeMask    = 0x3fff
	nlaFNested     = 0x8000
	mplsBOS        = 0x100
	mplsLabelShift = 12
)

// Route is one route as iotfabric programs it: an IPv4/IPv6 route in a network
// table (host route to an endpoint, or remote prefix with an MPLS label through a
// tunnel, or plain via a gateway), or an MPLS label route that pops the label and
// delivers to an endpoint. It is comparable: two routes are the same kernel state
// when they are ==.
type Route struct {
	Family uint8
	Table  uint32       // inet only; MPLS routes live in the single MPLS table
	Dst    netip.Prefix // inet
	Label  uint32       // MPLS: incoming label
	Oif    int32
	Gw     netip.Addr // inet next hop
	Via    netip.Addr // MPLS next hop
	// Encap is the single MPLS label pushed (inet) or swapped to (MPLS);
	// 0 means none. EncapMore is set when the kernel holds a longer stack.
	Encap     uint32
	EncapMore bool
	// NhID is the nexthop object the route uses (inet); the kernel reports the
	// nexthop's interface and encapsulation alongside it.
	NhID     uint32
	Protocol uint8
	Scope    uint8
	Type     uint8
}

func (r Route) String() string {
	if r.Family == AFMPLS {
		s := fmt.Sprintf("mpls %d via %s oif %d", r.Label, r.Via, r.Oif)
		if r.Encap != 0 {
			s += fmt.Sprintf(" swap %d", r.Encap)
		}
		return s
	}
	s := fmt.Sprintf("table %d %s", r.Table, r.Dst)
	if r.NhID != 0 {
		s += fmt.Sprintf(" nhid %d", r.NhID)
	}
	if r.Encap != 0 {
		s += fmt.Sprintf(" encap mpls %d", r.Encap)
	}
	if r.Gw.IsValid() {
		s += " via " + r.Gw.String()
	}
	if r.Oif != 0 {
		s += fmt.Sprintf(" oif %d", r.Oif)
	}
	return s
}

// RouteKey identifies a route in the kernel (what RTM_DELROUTE needs).
type RouteKey struct {
	Family uint8
	Table  uint32
	Dst    netip.Prefix
	Label  uint32
}

// Key is the route's RouteKey.
func (r Route) Key() RouteKey {
	return RouteKey{Family: r.Family, Table: r.Table, Dst: r.Dst, Label: r.Label}
}

func mplsEntry(label uint32, bos bool) []byte {
	v := label << mplsLabelShift
	if bos {
		v |= mplsBOS
	}
	return binary.BigEndian.AppendUint32(nil, v)
}

func appendAttr(b []byte, typ uint16, data []byte) []byte {
	l := 4 + len(data)
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for l%4 != 0 {
		b = append(b, 0)
		l++
	}
	return b
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// appendRouteMsg appends one complete netlink message (header included) for the
// route to b. typ is rtmNewRoute or rtmDelRoute.
func appendRouteMsg(b []byte, typ uint16, flags uint16, seq uint32, r Route) ([]byte, error) {
	start := len(b)
	b = append(b, make([]byte, nlmsgHdrLen)...)
	var dstLen uint8
	var dst []byte
	switch r.Family {
	case AFInet, AFInet6:
		if !r.Dst.IsValid() || (r.Family == AFInet) != r.Dst.Addr().Is4() {
			return b[:start], fmt.Errorf("route %v: destination does not match family", r)
		}
		dstLen = uint8(r.Dst.Bits())
		dst = r.Dst.Addr().AsSlice()
	case AFMPLS:
		if r.Label > LabelMax {
			return b[:start], fmt.Errorf("route %v: label out of range", r)
		}
		dstLen = 20
		dst = mplsEntry(r.Label, true)
	default:
		return b[:start], fmt.Errorf("route %v: unsupported family %d", r, r.Family)
	}
	table := uint8(rtTableCompat)
	tableAttr := r.Table
	if r.Family == AFMPLS {
		table, tableAttr = rtTableMain, 0
	} else if r.Table < 256 {
		table = uint8(r.Table)
	}
	typeByte := r.Type
	if typeByte == 0 && typ == rtmNewRoute {
		typeByte = TypeUnicast
	}
	scope := r.Scope
	switch {
	case r.Family == AFMPLS:
		// MPLS accepts only universe scope and unicast type, deletes included.
		scope, typeByte = ScopeUniverse, TypeUnicast
	case typ == rtmDelRoute:
		scope = rtScopeNowhere // match any scope
	}
	b = append(b, r.Family, dstLen, 0, 0, table, r.Protocol, scope, typeByte, 0, 0, 0, 0)
	b = appendAttr(b, rtaDst, dst)
	if tableAttr != 0 {
		b = appendAttr(b, rtaTable, u32(tableAttr))
	}
	if typ == rtmNewRoute {
		if r.NhID != 0 {
			b = appendAttr(b, rtaNhID, u32(r.NhID))
		}
		if r.Oif != 0 {
			b = appendAttr(b, rtaOif, u32(uint32(r.Oif)))
		}
		if r.Gw.IsValid() {
			b = appendAttr(b, rtaGateway, r.Gw.AsSlice())
		}
		if r.Via.IsValid() {
			fam := uint16(AFInet)
			if r.Via.Is6() {
				fam = AFInet6
			}
			via := binary.NativeEndian.AppendUint16(nil, fam)
			b = appendAttr(b, rtaVia, append(via, r.Via.AsSlice()...))
		}
		if r.Encap != 0 {
			if r.Family == AFMPLS {
				b = appendAttr(b, rtaNewDst, mplsEntry(r.Encap, true))
			} else {
				b = appendAttr(b, rtaEncapType, binary.NativeEndian.AppendUint16(nil, lwtunnelEncapMPLS))
				b = appendAttr(b, rtaEncap, appendAttr(nil, mplsIPTunnelDst, mplsEntry(r.Encap, true)))
			}
		}
	}
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	binary.NativeEndian.PutUint16(b[start+4:], typ)
	binary.NativeEndian.PutUint16(b[start+6:], flags)
	binary.NativeEndian.PutUint32(b[start+8:], seq)
	return b, nil
}

// appendDumpRequest appends an RTM_GETROUTE dump request for one family,
// filtered (with NETLINK_GET_STRICT_CHK) to one route protocol.
func appendDumpRequest(b []byte, seq uint32, family, protocol uint8) []byte {
	start := len(b)
	b = append(b, make([]byte, nlmsgHdrLen)...)
	b = append(b, family, 0, 0, 0, rtTableUnspec, protocol, 0, 0, 0, 0, 0, 0)
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	binary.NativeEndian.PutUint16(b[start+4:], rtmGetRoute)
	binary.NativeEndian.PutUint16(b[start+6:], nlmFRequest|nlmFDump)
	binary.NativeEndian.PutUint32(b[start+8:], seq)
	return b
}

// nlmsg is one netlink message split out of a receive buffer.
type nlmsg struct {
	Type  uint16
	Flags uint16
	Seq   uint32
	Data  []byte
}

var errTruncated = errors.New("truncated netlink message")

// splitMessages splits a buffer received from a netlink socket into messages.
func splitMessages(b []byte) ([]nlmsg, error) {
	var out []nlmsg
	for len(b) > 0 {
		if len(b) < nlmsgHdrLen {
			return out, errTruncated
		}
		l := binary.NativeEndian.Uint32(b)
		if l < nlmsgHdrLen || uint64(l) > uint64(len(b)) {
			return out, fmt.Errorf("netlink message length %d: %w", l, errTruncated)
		}
		out = append(out, nlmsg{
			Type:  binary.NativeEndian.Uint16(b[4:]),
			Flags: binary.NativeEndian.Uint16(b[6:]),
			Seq:   binary.NativeEndian.Uint32(b[8:]),
			Data:  b[nlmsgHdrLen:l],
		})
		al := (l + 3) &^ 3
		if uint64(al) > uint64(len(b)) {
			al = uint32(len(b))
		}
		b = b[al:]
	}
	return out, nil
}

// errnoOf decodes the error code of an NLMSG_ERROR payload (0 is an ack).
func errnoOf(data []byte) (int32, error) {
	if len(data) < 4 {
		return 0, errTruncated
	}
	return -int32(binary.NativeEndian.Uint32(data)), nil
}

const (
	nlmFCapped      = 0x100
	nlmFAckTLVs     = 0x200
	nlmsgerrAttrMsg = 1
)

// extAckMessage returns the kernel's extended-ack text of an NLMSG_ERROR
// message ("" when there is none).
func extAckMessage(m nlmsg) string {
	if m.Flags&nlmFAckTLVs == 0 || len(m.Data) < 4+nlmsgHdrLen {
		return ""
	}
	rest := m.Data[4:]
	if m.Flags&nlmFCapped != 0 {
		rest = rest[nlmsgHdrLen:]
	} else {
		// uint64: on 32-bit platforms int(uint32) can be negative and l+3 overflow.
		l := uint64(binary.NativeEndian.Uint32(rest))
		if l < nlmsgHdrLen || (l+3)&^3 > uint64(len(rest)) {
			return ""
		}
		rest = rest[(l+3)&^3:]
	}
	msg := ""
	_ = forEachAttr(rest, func(typ uint16, v []byte) error {
		if typ == nlmsgerrAttrMsg {
			msg = strings.TrimRight(string(v), "\x00")
		}
		return nil
	})
	return msg
}

// forEachAttr calls fn for each rtattr in b.
func forEachAttr(b []byte, fn func(typ uint16, data []byte) error) error {
	for len(b) > 0 {
		if len(b) < 4 {
			return fmt.Errorf("attribute header: %w", errTruncated)
		}
		l := int(binary.NativeEndian.Uint16(b))
		typ := binary.NativeEndian.Uint16(b[2:]) & nlaTypeMask
		if l < 4 || l > len(b) {
			return fmt.Errorf("attribute %d length %d: %w", typ, l, errTruncated)
		}
		if err := fn(typ, b[4:l]); err != nil {
			return err
		}
		al := (l + 3) &^ 3
		if al > len(b) {
			al = len(b)
		}
		b = b[al:]
	}
	return nil
}

func decodeLabels(b []byte) (first uint32, more bool, err error) {
	if len(b) < 4 || len(b)%4 != 0 {
		return 0, false, fmt.Errorf("mpls label stack of %d bytes: %w", len(b), errTruncated)
	}
	first = binary.BigEndian.Uint32(b) >> mplsLabelShift
	return first, len(b) > 4, nil
}

// decodeRoute decodes the payload of an RTM_NEWROUTE message (rtmsg and attributes).
func decodeRoute(data []byte) (Route, error) {
	var r Route
	if len(data) < rtmsgLen {
		return r, fmt.Errorf("rtmsg: %w", errTruncated)
	}
	r.Family = data[0]
	dstLen := data[1]
	r.Table = uint32(data[4])
	r.Protocol = data[5]
	r.Scope = data[6]
	r.Type = data[7]
	var dst []byte
	err := forEachAttr(data[rtmsgLen:], func(typ uint16, v []byte) error {
		switch typ {
		case rtaDst:
			dst = v
		case rtaTable:
			if len(v) != 4 {
				return fmt.Errorf("RTA_TABLE: %w", errTruncated)
			}
			r.Table = binary.NativeEndian.Uint32(v)
		case rtaNhID:
			if len(v) != 4 {
				return fmt.Errorf("RTA_NH_ID: %w", errTruncated)
			}
			r.NhID = binary.NativeEndian.Uint32(v)
		case rtaOif:
			if len(v) != 4 {
				return fmt.Errorf("RTA_OIF: %w", errTruncated)
			}
			r.Oif = int32(binary.NativeEndian.Uint32(v))
		case rtaGateway:
			a, ok := netip.AddrFromSlice(v)
			if !ok {
				return fmt.Errorf("RTA_GATEWAY of %d bytes: %w", len(v), errTruncated)
			}
			r.Gw = a
		case rtaVia:
			if len(v) < 2 {
				return fmt.Errorf("RTA_VIA: %w", errTruncated)
			}
			a, ok := netip.AddrFromSlice(v[2:])
			if !ok {
				return fmt.Errorf("RTA_VIA of %d bytes: %w", len(v), errTruncated)
			}
			r.Via = a
		case rtaNewDst:
			l, more, err := decodeLabels(v)
			if err != nil {
				return err
			}
			r.Encap, r.EncapMore = l, more
		case rtaEncap:
			return forEachAttr(v, func(t uint16, lv []byte) error {
				if t != mplsIPTunnelDst {
					return nil
				}
				l, more, err := decodeLabels(lv)
				if err != nil {
					return err
				}
				r.Encap, r.EncapMore = l, more
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	switch r.Family {
	case AFInet, AFInet6:
		r.Dst, err = decodePrefix(r.Family, dst, dstLen)
		if err != nil {
			return r, err
		}
	case AFMPLS:
		if len(dst) != 4 {
			return r, fmt.Errorf("mpls route destination of %d bytes: %w", len(dst), errTruncated)
		}
		r.Label = binary.BigEndian.Uint32(dst) >> mplsLabelShift
		r.Table = 0
	}
	return r, nil
}

func decodePrefix(family uint8, dst []byte, bits uint8) (netip.Prefix, error) {
	size := 4
	if family == AFInet6 {
		size = 16
	}
	if int(bits) > size*8 {
		return netip.Prefix{}, fmt.Errorf("prefix length %d for family %d", bits, family)
	}
	if dst == nil {
		dst = make([]byte, size)
	}
	a, ok := netip.AddrFromSlice(dst)
	if !ok || len(dst) != size {
		return netip.Prefix{}, fmt.Errorf("destination of %d bytes for family %d: %w", len(dst), family, errTruncated)
	}
	return netip.PrefixFrom(a, int(bits)), nil
}

// Nexthop is a nexthop object: an MPLS label pushed on packets sent through a
// tunnel. Routes to remote prefixes share them by (tunnel, label), which keeps
// the kernel's route insertion linear: routes with an inline encapsulation all
// hash to one fib_info chain when they share an interface.
type Nexthop struct {
	ID       uint32
	Oif      int32
	Encap    uint32
	Protocol uint8
}

// NexthopKey identifies what a nexthop does (not its id).
type NexthopKey struct {
	Oif   int32
	Encap uint32
}

// Key is the nexthop's NexthopKey.
func (n Nexthop) Key() NexthopKey { return NexthopKey{Oif: n.Oif, Encap: n.Encap} }

// appendNexthopMsg appends an RTM_NEWNEXTHOP or RTM_DELNEXTHOP message.
func appendNexthopMsg(b []byte, typ uint16, flags uint16, seq uint32, n Nexthop) []byte {
	start := len(b)
	b = append(b, make([]byte, nlmsgHdrLen)...)
	fam, proto := uint8(AFInet), n.Protocol
	if typ == rtmDelNexthop {
		fam, proto = 0, 0 // deletes must leave the header empty but for the id
	}
	b = append(b, fam, 0, proto, 0, 0, 0, 0, 0)
	b = appendAttr(b, nhaID, u32(n.ID))
	if typ == rtmNewNexthop {
		b = appendAttr(b, nhaOif, u32(uint32(n.Oif)))
		if n.Encap != 0 {
			b = appendAttr(b, nhaEncapType, binary.NativeEndian.AppendUint16(nil, lwtunnelEncapMPLS))
			// The nexthop API parses strictly: nested attributes need NLA_F_NESTED.
			b = appendAttr(b, nhaEncap|nlaFNested, appendAttr(nil, mplsIPTunnelDst, mplsEntry(n.Encap, true)))
		}
	}
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	binary.NativeEndian.PutUint16(b[start+4:], typ)
	binary.NativeEndian.PutUint16(b[start+6:], flags)
	binary.NativeEndian.PutUint32(b[start+8:], seq)
	return b
}

// decodeNexthop decodes the payload of an RTM_NEWNEXTHOP message.
func decodeNexthop(data []byte) (Nexthop, error) {
	var n Nexthop
	if len(data) < nhmsgLen {
		return n, fmt.Errorf("nhmsg: %w", errTruncated)
	}
	n.Protocol = data[2]
	err := forEachAttr(data[nhmsgLen:], func(typ uint16, v []byte) error {
		switch typ {
		case nhaID, nhaOif:
			if len(v) != 4 {
				return fmt.Errorf("nexthop attribute %d: %w", typ, errTruncated)
			}
			if typ == nhaID {
				n.ID = binary.NativeEndian.Uint32(v)
			} else {
				n.Oif = int32(binary.NativeEndian.Uint32(v))
			}
		case nhaEncap:
			return forEachAttr(v, func(t uint16, lv []byte) error {
				if t != mplsIPTunnelDst {
					return nil
				}
				l, _, err := decodeLabels(lv)
				n.Encap = l
				return err
			})
		}
		return nil
	})
	return n, err
}

const (
	rtmGetRule    = 34
	rtmNewRule    = 32
	fibRuleHdrLen = 12
	fraIifname    = 3
	fraPriority   = 6
	fraTable      = 15
	fraProtocol   = 21
)

// Rule is the part of a policy rule iotfabric looks at.
type Rule struct {
	Family   uint8
	Priority uint32
	Table    uint32
	Iif      string
	Protocol uint8
}

// appendRuleDumpRequest appends an RTM_GETRULE dump request for one family; the
// header is left empty as strict checking requires.
func appendRuleDumpRequest(b []byte, seq uint32, family uint8) []byte {
	start := len(b)
	b = append(b, make([]byte, nlmsgHdrLen)...)
	b = append(b, family, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	binary.NativeEndian.PutUint16(b[start+4:], rtmGetRule)
	binary.NativeEndian.PutUint16(b[start+6:], nlmFRequest|nlmFDump)
	binary.NativeEndian.PutUint32(b[start+8:], seq)
	return b
}

// decodeRule decodes the payload of an RTM_NEWRULE message.
func decodeRule(data []byte) (Rule, error) {
	var r Rule
	if len(data) < fibRuleHdrLen {
		return r, fmt.Errorf("fib_rule_hdr: %w", errTruncated)
	}
	r.Family = data[0]
	r.Table = uint32(data[4])
	err := forEachAttr(data[fibRuleHdrLen:], func(typ uint16, v []byte) error {
		switch typ {
		case fraPriority, fraTable:
			if len(v) != 4 {
				return fmt.Errorf("rule attribute %d: %w", typ, errTruncated)
			}
			if typ == fraPriority {
				r.Priority = binary.NativeEndian.Uint32(v)
			} else {
				r.Table = binary.NativeEndian.Uint32(v)
			}
		case fraIifname:
			r.Iif = strings.TrimRight(string(v), "\x00")
		case fraProtocol:
			if len(v) != 1 {
				return fmt.Errorf("FRA_PROTOCOL: %w", errTruncated)
			}
			r.Protocol = v[0]
		}
		return nil
	})
	return r, err
}
