package gobgp

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/iotfabric/iotfabric/pkg/bgp"
)

// The table of received routes keeps each route compactly: its key (peer,
// RD, prefix) and a held value — next hop, label, and a pointer to its
// route targets and encapsulations, interned: the routes of one peer
// mostly share one set, and every route handed on (to the subscriptions,
// and so to the route table) shares the interned slices instead of a copy
// per route.

// held is a received route without its key.
type held struct {
	nextHop netip.Addr
	label   uint32
	attrs   *routeAttrs
}

// routeAttrs is an interned set of route targets and encapsulations.
type routeAttrs struct {
	key    string
	rts    []bgp.RouteTarget
	encaps []bgp.Encap
	refs   int
}

// interner hands out one routeAttrs per distinct set and forgets a set no
// held route uses (a peer cannot grow it beyond the routes it sends).
type interner map[string]*routeAttrs

func attrsKey(rts []bgp.RouteTarget, encaps []bgp.Encap) string {
	var b strings.Builder
	for _, t := range rts {
		b.WriteString(strconv.FormatUint(uint64(t.ASN), 10))
		b.WriteByte(':')
		b.WriteString(strconv.FormatUint(uint64(t.Value), 10))
		b.WriteByte(' ')
	}
	b.WriteByte('|')
	for _, e := range encaps {
		b.WriteString(strconv.Itoa(int(e)))
		b.WriteByte(' ')
	}
	return b.String()
}

// get returns the interned set equal to rts and encaps, with one more reference.
func (in interner) get(rts []bgp.RouteTarget, encaps []bgp.Encap) *routeAttrs {
	k := attrsKey(rts, encaps)
	a := in[k]
	if a == nil {
		a = &routeAttrs{key: k, rts: slices.Clip(slices.Clone(rts)), encaps: slices.Clip(slices.Clone(encaps))}
		in[k] = a
	}
	a.refs++
	return a
}

// put drops one reference.
func (in interner) put(a *routeAttrs) {
	if a == nil {
		return
	}
	if a.refs--; a.refs <= 0 {
		delete(in, a.key)
	}
}

// route rebuilds the route of key k.
func (h held) route(k bgp.RouteKey) bgp.Route {
	r := bgp.Route{Prefix: k.Prefix, RD: k.RD, Label: h.label, NextHop: h.nextHop}
	if h.attrs != nil {
		r.RouteTargets, r.Encaps = h.attrs.rts, h.attrs.encaps
	}
	return r
}

// same reports whether r says what h does (route targets and
// encapsulations in the same order: a peer that reorders them is sent on).
func (h held) same(r bgp.Route) bool {
	return h.nextHop == r.NextHop && h.label == r.Label && h.attrs != nil && h.attrs.key == attrsKey(r.RouteTargets, r.Encaps)
}

// receivedKey is one peer's route for one RD and prefix, in 26 bytes
// rather than bgp.RouteKey's 64 and a netip.Addr's 24: the peer by its
// index (Speaker.peerList), the type 1 RD and the prefix as plain bytes.
type receivedKey struct {
	peer    uint16
	rdIndex uint16
	rdAddr  [4]byte
	addr    [16]byte
	bits    uint8
	v6      bool
}

// keyLocked returns the key of peer's route k (rxMu held).
func (s *Speaker) keyLocked(peer netip.Addr, k bgp.RouteKey) receivedKey {
	i, ok := s.peerIdx[peer]
	if !ok {
		i = uint16(len(s.peerList))
		s.peerIdx[peer] = i
		s.peerList = append(s.peerList, peer)
	}
	a := k.Prefix.Addr()
	return receivedKey{peer: i, rdIndex: k.RD.Index, rdAddr: k.RD.Addr.As4(), addr: a.As16(), bits: uint8(k.Prefix.Bits()), v6: !a.Is4()}
}

// routeKey returns the RD and prefix of k.
func (k receivedKey) routeKey() bgp.RouteKey {
	a := netip.AddrFrom16(k.addr)
	if !k.v6 {
		a = a.Unmap()
	}
	return bgp.RouteKey{RD: bgp.RD{Addr: netip.AddrFrom4(k.rdAddr), Index: k.rdIndex}, Prefix: netip.PrefixFrom(a, int(k.bits))}
}
