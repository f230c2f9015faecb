// Package model holds the validation and textual forms shared by the controller,
// its API and the CLI: resource names, route targets, encapsulations, labels;
// and the kinds of the domain's errors (errors.go), which pkg/api maps to gRPC
// codes.
//
// It owns vocabulary only: it does no I/O and may not import the store, the
// transport or any package that uses it.
package model

import (
	"fmt"
	"net"
	"strings"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/encap"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Label bounds (pkg/bgp's): 0-15 are reserved by MPLS; labels are 20 bits.
const (
	MinLabel = bgp.MinLabel
	MaxLabel = bgp.MaxLabel
)

// ValidateName checks a network or gateway name: 1-63 characters of letters,
// digits, '-', '_' and '.', starting with a letter or digit.
func ValidateName(kind, name string) error {
	return validateID(kind+" name", name, 63)
}

// ValidateEndpointID checks an endpoint id (1-253 characters, same alphabet plus ':').
func ValidateEndpointID(id string) error {
	return validateID("endpoint id", id, 253)
}

func validateID(what, s string, max int) error {
	if s == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if len(s) > max {
		return fmt.Errorf("%s %.20q... is %d characters long, the limit is %d", what, s, len(s), max)
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || (i > 0 && strings.ContainsRune("-_.:", r))
		if !ok {
			return fmt.Errorf("%s %q: character %q at position %d is not allowed (use letters, digits, '-', '_', '.', ':', starting with a letter or digit)", what, s, r, i+1)
		}
	}
	return nil
}

// ParseRouteTarget parses and validates a route target: "target:<asn>:<n>"
// (the "target:" prefix is optional). The wire form is pkg/bgp's.
func ParseRouteTarget(s string) (bgp.RouteTarget, error) {
	rt, err := bgp.ParseRouteTarget(s)
	if err != nil {
		return rt, fmt.Errorf("route target %q: want target:<asn>:<number>, where a 4-byte AS number leaves 0-65535 for the number (%w)", s, err)
	}
	return rt, nil
}

// AutoRouteTarget is the route target every network gets: target:<asn>:<8000000+id>.
func AutoRouteTarget(asn uint32, networkID uint32) bgp.RouteTarget {
	return bgp.AutoRouteTarget(asn, networkID)
}

// DefaultEncapsulations is the priority list used when none is given.
var DefaultEncapsulations = []v1.Encapsulation{v1.Encapsulation_ENCAPSULATION_MPLS_O_UDP, v1.Encapsulation_ENCAPSULATION_MPLS_O_GRE}

// EncapName returns the short name of an encapsulation (pkg/encap's).
func EncapName(e v1.Encapsulation) string {
	if x := encap.FromAPI(e); x != encap.Unknown {
		return x.String()
	}
	return fmt.Sprintf("unknown(%d)", int32(e))
}

// ParseEncaps parses a comma-separated list such as "mplsoudp,mplsogre": the
// names of pkg/encap that the API carries.
func ParseEncaps(s string) ([]v1.Encapsulation, error) {
	var out []v1.Encapsulation
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		e, err := encap.Parse(part)
		_, old := encap.Deprecated(part)
		if err != nil || old || e.API() == v1.Encapsulation_ENCAPSULATION_UNSPECIFIED {
			return nil, fmt.Errorf("unknown encapsulation %q: use mplsoudp, mplsogre or vxlan", strings.ToLower(strings.TrimSpace(part)))
		}
		out = append(out, e.API())
	}
	return out, ValidateEncaps(out)
}

// ValidateEncaps checks a priority list: known values, no repeats.
func ValidateEncaps(es []v1.Encapsulation) error {
	seen := map[v1.Encapsulation]bool{}
	for _, e := range es {
		if encap.FromAPI(e) == encap.Unknown {
			return fmt.Errorf("unknown encapsulation %d: use MPLSoUDP, MPLSoGRE or VXLAN", int32(e))
		}
		if seen[e] {
			return fmt.Errorf("encapsulation %s listed twice", EncapName(e))
		}
		seen[e] = true
	}
	return nil
}

// FormatEncaps is the inverse of ParseEncaps.
func FormatEncaps(es []v1.Encapsulation) string {
	names := make([]string, len(es))
	for i, e := range es {
		names[i] = EncapName(e)
	}
	return strings.Join(names, ",")
}

// ValidateLabel checks an MPLS label given for an endpoint (0 means none yet).
func ValidateLabel(l uint32) error {
	if l != 0 && (l < MinLabel || l > MaxLabel) {
		return fmt.Errorf("MPLS label %d out of range: use %d-%d (0-15 are reserved)", l, MinLabel, MaxLabel)
	}
	return nil
}

// ValidateMAC checks a MAC address (empty is allowed).
func ValidateMAC(s string) error {
	if s == "" {
		return nil
	}
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return fmt.Errorf("MAC address %q: want six hexadecimal bytes such as 02:00:00:00:00:01", s)
	}
	return nil
}

// MaxMsgSize is the largest gRPC message of the iotfabric.v1 API, in bytes,
// at both ends: the controller receives and sends no larger message, and
// iotfabricctl accepts none (gRPC's default receive limit, 4 MiB). Lists
// come in pages (at most 5,000 records) and watches send one record per
// message, so no message grows with the size of the tables.
const MaxMsgSize = 4 << 20
