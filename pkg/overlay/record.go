package overlay

// This file holds the manager's record of the routes it owns in the kernel,
// kept compact: a gateway holds tens of thousands, and rtnl.Route with its
// key takes 160 bytes (with pointers the collector scans) where the record
// takes 36 for an IPv4 route with an IPv4 or no gateway, 64 for others
// (without). A route has a gateway (inet) or a via (MPLS) address; the rare
// one with both is kept whole in a map of its own.

import (
	"iter"
	"net/netip"

	"github.com/iotfabric/iotfabric/pkg/overlay/internal/rtnl"
)

// routeRecord maps route keys to routes, like map[rtnl.RouteKey]rtnl.Route.
type routeRecord struct {
	m4   map[recKey4]recRoute4 // IPv4 routes with an IPv4 or no address (nearly all)
	m    map[recKey]recRoute
	both map[rtnl.RouteKey]rtnl.Route // routes with a gateway and a via
}

func newRouteRecord() routeRecord {
	return routeRecord{m4: map[recKey4]recRoute4{}, m: map[recKey]recRoute{}, both: map[rtnl.RouteKey]rtnl.Route{}}
}

// len is the number of routes recorded.
func (rr routeRecord) len() int { return len(rr.m4) + len(rr.m) + len(rr.both) }

// recKey4 is the key of an IPv4 route (family inet, no label).
type recKey4 struct {
	table uint32
	dst   [4]byte
	bits  uint8
}

// recRoute4 is a recRoute with an IPv4 address, or none.
type recRoute4 struct {
	hop                        [4]byte
	hasHop, isVia, encapMore   bool
	protocol, scope, routeType uint8
	oif                        int32
	encap, nhID                uint32
}

// short returns v as a recRoute4 when it is one.
func (v recRoute) short() (recRoute4, bool) {
	if v.hop.kind == 6 {
		return recRoute4{}, false
	}
	return recRoute4{hop: [4]byte(v.hop.a[:4]), hasHop: v.hop.kind == 4, isVia: v.isVia, encapMore: v.encapMore,
		protocol: v.protocol, scope: v.scope, routeType: v.routeType, oif: v.oif, encap: v.encap, nhID: v.nhID}, true
}

func (v recRoute4) long() recRoute {
	out := recRoute{isVia: v.isVia, encapMore: v.encapMore, protocol: v.protocol, scope: v.scope, routeType: v.routeType,
		oif: v.oif, encap: v.encap, nhID: v.nhID}
	if v.hasHop {
		out.hop.kind = 4
		copy(out.hop.a[:], v.hop[:])
	}
	return out
}

// key4 returns k as a recKey4 when it is one.
func key4(k rtnl.RouteKey) (recKey4, bool) {
	if k.Family != rtnl.AFInet || k.Label != 0 || !k.Dst.IsValid() || !k.Dst.Addr().Is4() {
		return recKey4{}, false
	}
	return recKey4{table: k.Table, dst: k.Dst.Addr().As4(), bits: uint8(k.Dst.Bits())}, true
}

func (k recKey4) key() rtnl.RouteKey {
	return rtnl.RouteKey{Family: rtnl.AFInet, Table: k.table, Dst: netip.PrefixFrom(netip.AddrFrom4(k.dst), int(k.bits))}
}

// recAddr is a zone-less netip.Addr without pointers: kind 0 (invalid), 4 or 6.
type recAddr struct {
	kind uint8
	a    [16]byte
}

func packAddr(a netip.Addr) recAddr {
	switch {
	case a.Is4():
		r := recAddr{kind: 4}
		b := a.As4()
		copy(r.a[:], b[:])
		return r
	case a.IsValid():
		return recAddr{kind: 6, a: a.As16()}
	}
	return recAddr{}
}

func (r recAddr) addr() netip.Addr {
	switch r.kind {
	case 4:
		return netip.AddrFrom4([4]byte(r.a[:4]))
	case 6:
		return netip.AddrFrom16(r.a)
	}
	return netip.Addr{}
}

// recKey is an rtnl.RouteKey.
type recKey struct {
	family uint8
	bits   uint8 // the prefix length plus one; 0: no prefix
	dst    recAddr
	table  uint32
	label  uint32
}

// recRoute is the rest of an rtnl.Route.
type recRoute struct {
	hop                        recAddr // the gateway, or with isVia the via
	isVia                      bool
	encapMore                  bool
	protocol, scope, routeType uint8
	oif                        int32
	encap, nhID                uint32
}

func packKey(k rtnl.RouteKey) recKey {
	var bits uint8
	if k.Dst.IsValid() {
		bits = uint8(k.Dst.Bits() + 1)
	}
	return recKey{family: k.Family, bits: bits, dst: packAddr(k.Dst.Addr()), table: k.Table, label: k.Label}
}

func (k recKey) key() rtnl.RouteKey {
	var dst netip.Prefix
	if k.bits > 0 {
		dst = netip.PrefixFrom(k.dst.addr(), int(k.bits)-1)
	}
	return rtnl.RouteKey{Family: k.family, Table: k.table, Dst: dst, Label: k.label}
}

func (k recKey) route(v recRoute) rtnl.Route { return v.route(k.key()) }

func (v recRoute) route(rk rtnl.RouteKey) rtnl.Route {
	r := rtnl.Route{Family: rk.Family, Table: rk.Table, Dst: rk.Dst, Label: rk.Label, Oif: v.oif,
		Encap: v.encap, EncapMore: v.encapMore, NhID: v.nhID, Protocol: v.protocol, Scope: v.scope, Type: v.routeType}
	if v.isVia {
		r.Via = v.hop.addr()
	} else {
		r.Gw = v.hop.addr()
	}
	return r
}

// get returns the route recorded under k.
func (rr routeRecord) get(k rtnl.RouteKey) (rtnl.Route, bool) {
	if r, ok := rr.both[k]; ok {
		return r, true
	}
	if k4, ok := key4(k); ok {
		if v, ok := rr.m4[k4]; ok {
			return v.long().route(k), true
		}
	}
	pk := packKey(k)
	v, ok := rr.m[pk]
	if !ok {
		return rtnl.Route{}, false
	}
	return pk.route(v), true
}

// put records r under its key.
func (rr routeRecord) put(r rtnl.Route) {
	rr.del(r.Key())
	if r.Gw.IsValid() && r.Via.IsValid() {
		rr.both[r.Key()] = r
		return
	}
	v := recRoute{hop: packAddr(r.Gw), oif: r.Oif, encap: r.Encap, nhID: r.NhID,
		encapMore: r.EncapMore, protocol: r.Protocol, scope: r.Scope, routeType: r.Type}
	if r.Via.IsValid() {
		v.hop, v.isVia = packAddr(r.Via), true
	}
	if k4, ok := key4(r.Key()); ok {
		if v4, ok := v.short(); ok {
			rr.m4[k4] = v4
			return
		}
	}
	rr.m[packKey(r.Key())] = v
}

// del forgets the route under k.
func (rr routeRecord) del(k rtnl.RouteKey) {
	if k4, ok := key4(k); ok {
		delete(rr.m4, k4)
	}
	delete(rr.m, packKey(k))
	delete(rr.both, k)
}

// all yields the recorded routes with their keys (the record may be changed
// meanwhile, as a map may be while it is ranged over).
func (rr routeRecord) all() iter.Seq2[rtnl.RouteKey, rtnl.Route] {
	return func(yield func(rtnl.RouteKey, rtnl.Route) bool) {
		for k, v := range rr.m4 {
			rk := k.key()
			if !yield(rk, v.long().route(rk)) {
				return
			}
		}
		for k, v := range rr.m {
			r := k.route(v)
			if !yield(r.Key(), r) {
				return
			}
		}
		for k, r := range rr.both {
			if !yield(k, r) {
				return
			}
		}
	}
}
