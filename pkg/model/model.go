// Package model holds the validation and textual forms shared by the controller,
// its API and the CLI: resource names, route targets, encapsulations, labels;
// and the kinds of the domain's errors (errors.go), which pkg/api maps to gRPC
// codes.
//
// The validation of names, addresses and identifiers is pkg/validate's, shared
// with the CNI plugin and the agent; the Validate functions here delegate to it.
//
// It owns vocabulary only: it does no I/O and may not import the store, the
// transport or any package that uses it.
package model

import (
	"fmt"
	"strings"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/validate"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Label bounds (pkg/bgp's): 0-15 are reserved by MPLS; labels are 20 bits.
const (
	MinLabel = bgp.MinLabel
	MaxLabel = bgp.MaxLabel
)

// ValidateName checks a network or gateway name (pkg/validate's Name): 1-63
// characters of letters, digits, '-', '_' and '.', starting with a letter or
// digit.
func ValidateName(kind, name string) error { return validate.Name(kind, name) }

// ValidateEndpointID checks an endpoint id (pkg/validate's EndpointID).
func ValidateEndpointID(id string) error { return validate.EndpointID(id) }

// ParseRouteTarget parses a route target: "target:<asn>:<n>" (the "target:"
// prefix is optional). The wire form is pkg/bgp's. It reads stored records;
// what users give is checked by pkg/validate's RouteTarget, which is stricter.
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
func ValidateLabel(l uint32) error { return validate.Label(l) }

// ValidateMAC checks a MAC address (empty is allowed).
func ValidateMAC(s string) error { return validate.MAC(s) }

// MaxMsgSize is the largest gRPC message of the iotfabric.v1 API, in bytes,
// at both ends: the controller receives and sends no larger message, and
// iotfabricctl accepts none (gRPC's default receive limit, 4 MiB). Lists
// come in pages (at most 5,000 records) and watches send one record per
// message, so no message grows with the size of the tables.
const MaxMsgSize = 4 << 20
