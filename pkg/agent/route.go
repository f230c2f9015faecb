package agent

import (
	"hash/fnv"
	"net/netip"
	"unique"

	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// A gateway holds tens of thousands of routes, so a route is kept compact:
// its protobuf encoding as received (what the route log persists, the digests
// hash and an update is compared with) and, parsed once, the few fields the
// desired state needs. The key's network and route distinguisher are
// interned (a handful of distinct values); the prefix of a held route's key
// points into its encoding.

// routeKey identifies a route of a session: network, prefix and route
// distinguisher as the controller spells them.
type routeKey struct{ network, prefix, rd string }

// keyOf is the key of a received route, with the message's own strings: for
// lookups and deletes (a held route's key is route.key's).
func keyOf(r *v1.Route) routeKey {
	return routeKey{r.GetNetwork(), r.GetPrefix(), r.GetRouteDistinguisher()}
}

// wireMarshal encodes routes the way routedigest.Hash does, so that the
// digest of a held route is the hash of its encoding.
var wireMarshal = proto.MarshalOptions{Deterministic: true}

// route is a route from a controller. Routes are never changed in place:
// the route log's writer shares them.
type route struct {
	wire   string // the v1.Route, encoded with wireMarshal
	dst    pfx    // the prefix (usable routes)
	nh     [4]byte
	label  uint32
	encaps uint8 // index in encapLists
	ok     bool  // usable: valid prefix, IPv4 next hop, label in range
}

// pfx is a netip.Prefix without pointers (and a third of its size).
type pfx struct {
	a    [16]byte // IPv4 in the first 4 bytes
	bits uint8
	v6   bool
}

func pfxOf(p netip.Prefix) pfx {
	out := pfx{bits: uint8(p.Bits()), v6: p.Addr().Is6()}
	if out.v6 {
		out.a = p.Addr().As16()
	} else {
		a := p.Addr().As4()
		copy(out.a[:], a[:])
	}
	return out
}

func (p pfx) prefix() netip.Prefix {
	if p.v6 {
		return netip.PrefixFrom(netip.AddrFrom16(p.a), int(p.bits))
	}
	return netip.PrefixFrom(netip.AddrFrom4([4]byte(p.a[:4])), int(p.bits))
}

// prefix is the route's prefix (usable routes).
func (r *route) prefix() netip.Prefix { return r.dst.prefix() }

// nextHop is the route's next hop (usable routes).
func (r *route) nextHop() netip.Addr { return netip.AddrFrom4(r.nh) }

// encapLists are the encapsulation lists a usable route can have: the
// supported ones it offers, in its order, without duplicates (the default
// when it offers none). Routes share them; nobody changes them.
var encapLists = [][]encap.Encap{
	{encap.MPLSoUDP, encap.MPLSoGRE}, // overlay.DefaultEncapPriority
	{encap.MPLSoUDP},
	{encap.MPLSoGRE},
	{encap.MPLSoGRE, encap.MPLSoUDP},
}

// newRoute parses and encodes a received route, and returns it with its key
// (pointing into the route's encoding, not into r). It fails only when r
// cannot be encoded (invalid UTF-8, which a decoded message never has).
func newRoute(r *v1.Route) (routeKey, *route, error) {
	b, err := wireMarshal.Marshal(r)
	if err != nil {
		return routeKey{}, nil, err
	}
	out := &route{wire: string(b)}
	k := out.key()
	p, err := netip.ParsePrefix(k.prefix)
	if err != nil || p != p.Masked() {
		return k, out, nil
	}
	nh, err := netip.ParseAddr(r.GetNextHop())
	if err != nil || !nh.Is4() || r.GetLabel() < overlay.LabelFirst || r.GetLabel() > overlay.LabelLast {
		return k, out, nil
	}
	var es []encap.Encap
	for _, e := range r.GetEncapsulations() {
		if oe := encap.FromAPI(e); (oe == encap.MPLSoUDP || oe == encap.MPLSoGRE) && len(es) < 2 && (len(es) == 0 || es[0] != oe) {
			es = append(es, oe)
		}
	}
	switch {
	case len(es) == 0 || len(es) == 2 && es[0] == encap.MPLSoUDP:
		out.encaps = 0
	case len(es) == 1 && es[0] == encap.MPLSoUDP:
		out.encaps = 1
	case len(es) == 1:
		out.encaps = 2
	default:
		out.encaps = 3
	}
	out.dst, out.nh, out.label, out.ok = pfxOf(p), nh.As4(), r.GetLabel(), true
	return k, out, nil
}

// v1.Route's field numbers the key is read from (deterministic encoding
// writes fields in number order).
const (
	fieldNetwork = 1
	fieldPrefix  = 2
	fieldRD      = 3
)

// key returns the route's key: network and route distinguisher interned,
// the prefix a part of the route's encoding.
func (r *route) key() routeKey {
	var k routeKey
	b := r.wire
	for len(b) > 0 {
		tag, n := varint(b)
		if n < 0 || tag>>3 > fieldRD || tag&7 != 2 { // past the key, or not a string
			break
		}
		l, m := varint(b[n:])
		if m < 0 || uint64(len(b)-n-m) < l {
			break
		}
		s := b[n+m : n+m+int(l)]
		switch tag >> 3 {
		case fieldNetwork:
			k.network = unique.Make(s).Value()
		case fieldPrefix:
			k.prefix = s
		case fieldRD:
			k.rd = unique.Make(s).Value()
		}
		b = b[n+m+int(l):]
	}
	return k
}

// varint decodes a protobuf varint at the start of s and returns it with its
// length (-1: malformed).
func varint(s string) (uint64, int) {
	var v uint64
	for i := 0; i < len(s) && i < 10; i++ {
		v |= uint64(s[i]&0x7f) << (7 * i)
		if s[i] < 0x80 {
			return v, i + 1
		}
	}
	return 0, -1
}

// msg decodes the route.
func (r *route) msg() (*v1.Route, error) {
	m := &v1.Route{}
	if err := proto.Unmarshal([]byte(r.wire), m); err != nil {
		return nil, err
	}
	return m, nil
}

// digest is routedigest.Hash of the route: the FNV-1a hash of its encoding.
func (r *route) digest() uint64 {
	h := fnv.New64a()
	h.Write([]byte(r.wire))
	return h.Sum64()
}

// remote is the route as the data plane takes it (usable routes only).
func (r *route) remote() overlay.RemoteRoute {
	return overlay.RemoteRoute{Prefix: r.prefix(), Label: r.label, RemoteUnderlay: r.nextHop(), Encaps: encapLists[r.encaps]}
}
