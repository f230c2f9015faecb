// Package validate is the one validation of every name, address and
// identifier iotfabric accepts from users and from the wire: network and
// gateway names, endpoint ids and the container ids and interface names they
// are made of, subnets, underlay addresses, route targets, MPLS labels, MAC
// addresses, and the limits on everything a user can make big. (No input
// takes a route distinguisher: the controller makes them, type 1
// <underlay>:<network index>, and those of received routes come decoded from
// BGP.) The CNI plugin, the vrouter agent and the controller call the same
// functions, so that nothing one of them accepts is refused by another.
//
// Errors wrap ErrInvalid, or ErrLimit when a documented limit is exceeded;
// they say what to fix and the limit, and never quote more than a short
// prefix of the offending value (Quote). The package is pure: no I/O, no
// state, safe for any input (it is fuzzed).
package validate

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/iotfabric/iotfabric/pkg/bgp"
)

// Error kinds. pkg/model marks both as its ErrInvalid (gRPC InvalidArgument,
// CNI error 7 or 4 for the plugin).
var (
	// ErrInvalid: the value is malformed.
	ErrInvalid = errors.New("invalid value")
	// ErrLimit: the value or the list is larger than its documented limit.
	ErrLimit = errors.New("over the limit")
)

// Limits on what a user can make big. docs/controller.md lists them.
const (
	// MaxNameLen bounds network and gateway names (a DNS label).
	MaxNameLen = 63
	// MaxContainerIDLen bounds CNI_CONTAINERID.
	MaxContainerIDLen = 200
	// MaxIfNameLen is Linux's bound on interface names (IFNAMSIZ - 1).
	MaxIfNameLen = 15
	// MaxEndpointIDLen bounds endpoint ids; a CNI endpoint id
	// (<container id>:<interface>) is at most 216 characters.
	MaxEndpointIDLen = 253
	// MaxSubnets bounds the subnets of one network.
	MaxSubnets = 32
	// MaxRouteTargets bounds each route-target list (import, export) of one
	// network. An endpoint's VPN route carries every export route target,
	// the automatic one and one tunnel-encapsulation community per
	// encapsulation (at most MaxEncapsulations) as 8-byte extended
	// communities; with this bound the largest route (VPNv6, /128, 48-byte
	// next hop, route-reflector attributes) fits one 4096-byte BGP UPDATE
	// (RFC 4271), which pkg/bgp/gobgp's tests check with GoBGP's encoder.
	MaxRouteTargets = 256
	// MaxEncapsulations bounds an encapsulation list (each value once).
	MaxEncapsulations = 3
	// MaxBulk bounds the endpoints of one CreateEndpoints call.
	MaxBulk = 1000
	// MaxRequestBytes is the largest gRPC request the controller accepts
	// (gRPC's default receive limit, stated here so that it is documented).
	MaxRequestBytes = 4 << 20
	// MaxEcho is how many bytes of an offending value an error quotes.
	MaxEcho = 64
)

// Quote quotes s for an error message: whole when short, else its first
// MaxEcho bytes (cut at a character boundary) and its length.
func Quote(s string) string {
	if len(s) <= MaxEcho {
		return fmt.Sprintf("%q", s)
	}
	cut := MaxEcho
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:cut], len(s))
}

func invalid(format string, a ...any) error {
	return &kindErr{ErrInvalid, fmt.Sprintf(format, a...)}
}

func overLimit(format string, a ...any) error {
	return &kindErr{ErrLimit, fmt.Sprintf(format, a...)}
}

// kindErr is a message of one kind; its text is the message alone.
type kindErr struct {
	kind error
	msg  string
}

func (e *kindErr) Error() string { return e.msg }
func (e *kindErr) Unwrap() error { return e.kind }

// idChar reports whether r may appear in an identifier: letters, digits, and
// (not first) '-', '_', '.', and ':' where colon is true.
func idChar(r rune, first, colon bool) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	case first:
		return false
	case r == '-', r == '_', r == '.':
		return true
	}
	return colon && r == ':'
}

func checkID(what, s string, max int, colon bool) error {
	if s == "" {
		return invalid("%s is empty", what)
	}
	if len(s) > max {
		return overLimit("%s %s is too long: the limit is %d characters", what, Quote(s), max)
	}
	for i, r := range s {
		if !idChar(r, i == 0, colon) {
			extra := ""
			if colon {
				extra = ", ':'"
			}
			return invalid("%s %s: character %q at position %d is not allowed (use letters, digits, '-', '_', '.'%s, starting with a letter or digit)", what, Quote(s), r, i+1, extra)
		}
	}
	return nil
}

// Name checks a network or gateway name (kind says which): 1-63 letters,
// digits, '-', '_' and '.', starting with a letter or digit.
func Name(kind, s string) error { return checkID(kind+" name", s, MaxNameLen, false) }

// EndpointID checks an endpoint id: 1-253 letters, digits, '-', '_', '.' and
// ':', starting with a letter or digit. Every id ContainerID and InterfaceName
// accept (EndpointIDOf) is a valid endpoint id.
func EndpointID(s string) error { return checkID("endpoint id", s, MaxEndpointIDLen, true) }

// ContainerID checks CNI_CONTAINERID: 1-200 letters, digits, '-', '_', '.',
// starting with a letter or digit.
func ContainerID(s string) error { return checkID("container id", s, MaxContainerIDLen, false) }

// InterfaceName checks an interface name (CNI_IFNAME): 1-15 letters,
// digits, '-', '_', '.', not "." or "..". Linux allows more; these are
// the characters an endpoint id can carry.
func InterfaceName(s string) error {
	if s == "" {
		return invalid("interface name is empty")
	}
	if len(s) > MaxIfNameLen {
		return overLimit("interface name %s is too long: the limit is %d characters", Quote(s), MaxIfNameLen)
	}
	if s == "." || s == ".." {
		return invalid("interface name %q is not allowed", s)
	}
	for i, r := range s {
		if !idChar(r, false, false) {
			return invalid("interface name %s: character %q at position %d is not allowed (use letters, digits, '-', '_', '.')", Quote(s), r, i+1)
		}
	}
	return nil
}

// EndpointIDOf returns the endpoint id of a CNI attachment after checking
// both parts; the id is then valid for EndpointID.
func EndpointIDOf(containerID, ifName string) (string, error) {
	if err := ContainerID(containerID); err != nil {
		return "", err
	}
	if err := InterfaceName(ifName); err != nil {
		return "", err
	}
	return containerID + ":" + ifName, nil
}

// special are the address ranges that are never an endpoint subnet nor an
// underlay address: they are not unicast addresses of a host on a network,
// or iotfabric uses them itself (169.254.1.1 is the pods' gateway).
var special = []struct {
	p    netip.Prefix
	what string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified (\"this network\")"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local (169.254.1.1 is the pods' gateway)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved (class E) or broadcast"},
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("::ffff:0:0/96"), "IPv4-mapped"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// Subnet parses and checks an endpoint subnet: a CIDR prefix without host
// bits, not default route, unspecified, loopback, link-local, multicast,
// reserved or IPv4-mapped space.
func Subnet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return p, invalid("subnet %s is not a CIDR prefix such as 10.1.0.0/24 or fd00:1::/64", Quote(s))
	}
	if p.Addr().Zone() != "" {
		return p, invalid("subnet %s: a zone is not allowed", Quote(s))
	}
	if p != p.Masked() {
		return p, invalid("subnet %s has host bits set (did you mean %s?)", p, p.Masked())
	}
	if p.Bits() == 0 {
		return p, invalid("subnet %s is the whole address space; use a smaller prefix", p)
	}
	for _, sp := range special {
		if sp.p.Overlaps(p) {
			return p, invalid("subnet %s overlaps %s %s space", p, sp.p, sp.what)
		}
	}
	return p, nil
}

// Subnets checks a network's subnet list: at most MaxSubnets, each valid
// (Subnet), none repeated. Overlaps and block sizes are pkg/ipam's.
func Subnets(list []string) ([]netip.Prefix, error) {
	if len(list) > MaxSubnets {
		return nil, overLimit("%d subnets: the limit is %d per network", len(list), MaxSubnets)
	}
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := Subnet(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Underlay parses and checks a gateway's underlay address: the IPv4 tunnel
// endpoint other gateways and edge routers send to, and the administrator of
// its route distinguishers. Unspecified, loopback, link-local, multicast,
// reserved and broadcast addresses are refused.
func Underlay(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || !a.Is4() {
		return a, invalid("underlay address %s must be an IPv4 address (it is the tunnel endpoint and the route distinguisher's administrator)", Quote(s))
	}
	for _, sp := range special {
		if sp.p.Contains(a) {
			return a, invalid("underlay address %s is %s: use the address other gateways reach this one at", a, sp.what)
		}
	}
	return a, nil
}

// RouteTarget parses and checks a route target "target:<asn>:<n>" (the
// "target:" prefix is optional). AS number 0 is reserved (target:0:<n> is
// refused, target:0:0 included).
func RouteTarget(s string) (bgp.RouteTarget, error) {
	rt, err := bgp.ParseRouteTarget(strings.TrimSpace(s))
	if err != nil || len(s) > MaxEcho {
		return rt, invalid("route target %s: want target:<asn>:<number>, where a 4-byte AS number leaves 0-65535 for the number", Quote(s))
	}
	if rt.ASN == 0 {
		return rt, invalid("route target %s: AS number 0 is reserved", Quote(s))
	}
	return rt, nil
}

// RouteTargets checks a route-target list (kind: "import", "export"): at
// most MaxRouteTargets, each valid; repeats are dropped. It returns the
// canonical forms in order.
func RouteTargets(kind string, list []string) ([]string, error) {
	if len(list) > MaxRouteTargets {
		return nil, overLimit("%d %s route targets: the limit is %d per network (an endpoint's route must fit one BGP UPDATE)", len(list), kind, MaxRouteTargets)
	}
	out := make([]string, 0, len(list))
	for _, s := range list {
		rt, err := RouteTarget(s)
		if err != nil {
			return nil, err
		}
		if c := rt.String(); !contains(out, c) {
			out = append(out, c)
		}
	}
	return out, nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// Label checks an MPLS label given for an endpoint (0 means none yet).
func Label(l uint32) error {
	if l != 0 && (l < bgp.MinLabel || l > bgp.MaxLabel) {
		return invalid("MPLS label %d out of range: use %d-%d (0-15 are reserved)", l, bgp.MinLabel, bgp.MaxLabel)
	}
	return nil
}

// MAC checks a MAC address (empty is allowed): six bytes.
func MAC(s string) error {
	if s == "" {
		return nil
	}
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return invalid("MAC address %s: want six hexadecimal bytes such as 02:00:00:00:00:01", Quote(s))
	}
	return nil
}

// Bulk checks the size of a bulk request of n items (at most MaxBulk).
func Bulk(n int) error {
	if n > MaxBulk {
		return overLimit("%d endpoints in one call: the limit is %d; split the request", n, MaxBulk)
	}
	return nil
}
