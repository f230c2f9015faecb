package agent

import (
	"encoding/binary"
	"hash/fnv"
	"net/netip"

	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// A gateway holds tens of thousands of routes, so a route is kept compact:
// its protobuf encoding as received (what the route log persists, the digests
// hash and an update is compared with) and, parsed once, the few fields the
// desired state needs, without pointers. Its key is the start of its
// encoding (the key's fields come first), so keys take no memory of their
// own.

// routeKey identifies a route of a session: its network, prefix and route
// distinguisher as the controller spells them, encoded as v1.Route fields 1
// to 3 are (wireMarshal writes fields in number order, and leaves out empty
// ones).
type routeKey string

// makeKey encodes a key.
func makeKey(network, prefix, rd string) routeKey {
	b := make([]byte, 0, len(network)+len(prefix)+len(rd)+9)
	for i, s := range []string{network, prefix, rd} {
		if s != "" {
			b = binary.AppendUvarint(b, uint64(i+1)<<3|2)
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
	}
	return routeKey(b)
}

// keyOf is the key of a received route (for lookups and deletes: a held
// route's key is route.key's, a part of its encoding).
func keyOf(r *v1.Route) routeKey {
	return makeKey(r.GetNetwork(), r.GetPrefix(), r.GetRouteDistinguisher())
}

// parts decodes the key's network, prefix and route distinguisher (parts of
// the key, not copies).
func (k routeKey) parts() (network, prefix, rd string) {
	_, f := scanKey(string(k))
	return f[0], f[1], f[2]
}

func (k routeKey) network() string { n, _, _ := k.parts(); return n }

func (k routeKey) rd() string { _, _, rd := k.parts(); return rd }

// scanKey reads fields 1 to 3 at the start of an encoded route: their
// strings, and where they end.
func scanKey(b string) (end int, f [3]string) {
	for end < len(b) {
		tag, n := varint(b[end:])
		if n < 0 || tag>>3 < 1 || tag>>3 > 3 || tag&7 != 2 { // past the key, or not a string
			break
		}
		l, m := varint(b[end+n:])
		if m < 0 || uint64(len(b)-end-n-m) < l {
			break
		}
		start := end + n + m
		end = start + int(l)
		f[tag>>3-1] = b[start:end]
	}
	return end, f
}

// wireMarshal encodes routes the way routedigest.Hash does, so that the
// digest of a held route is the hash of its encoding.
var wireMarshal = proto.MarshalOptions{Deterministic: true}

// route is a route from a controller. Routes are never changed in place:
// the route log's writer shares them.
type route struct {
	wire   string // the v1.Route, encoded with wireMarshal
	nh     [4]byte
	label  uint32
	dst4   [4]byte // an IPv4 prefix's address (an IPv6 one is read from the key)
	bits   uint8
	v6     bool
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
func (r *route) prefix() netip.Prefix {
	if r.v6 {
		_, s, _ := r.key().parts()
		p, _ := netip.ParsePrefix(s)
		return p
	}
	return netip.PrefixFrom(netip.AddrFrom4(r.dst4), int(r.bits))
}

// pfx is the route's prefix as the cache keys it (usable routes).
func (r *route) pfx() pfx {
	if r.v6 {
		return pfxOf(r.prefix())
	}
	out := pfx{bits: r.bits}
	copy(out.a[:], r.dst4[:])
	return out
}

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
		return "", nil, err
	}
	out := &route{wire: string(b)}
	k := out.key()
	_, prefix, _ := k.parts()
	p, err := netip.ParsePrefix(prefix)
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
	out.nh, out.label, out.bits, out.v6, out.ok = nh.As4(), r.GetLabel(), uint8(p.Bits()), p.Addr().Is6(), true
	if !out.v6 {
		out.dst4 = p.Addr().As4()
	}
	return k, out, nil
}

// key returns the route's key: the start of its encoding.
func (r *route) key() routeKey {
	end, _ := scanKey(r.wire)
	return routeKey(r.wire[:end])
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
