// Package encap names the encapsulations a gateway can use for labelled
// traffic. One Go type for the controller's API, the CLI, the agent's flags,
// the state file and the data plane, with one spelling for users everywhere:
// the API's (mplsoudp, mplsogre, vxlan), plus plain for the data plane's
// unlabelled routes. The package imports only the API's generated types, so
// both the controller side and the gateway side use it without pulling in
// each other (or netlink).
package encap

import (
	"fmt"
	"strings"

	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Encap is an encapsulation. The zero value is Unknown.
type Encap uint8

// Encapsulations. MPLSoUDP uses UDP destination port 6635 (RFC 7510).
const (
	Unknown Encap = iota
	MPLSoUDP
	MPLSoGRE
	VXLAN
	// Plain routes a remote prefix unlabelled via the remote gateway's
	// underlay address. It only makes sense where the underlay itself carries
	// the network (a flat lab network); it is what still works on kernels
	// without MPLS. It is the data plane's only: the API has no value for it.
	Plain
)

var names = [...]string{Unknown: "unknown", MPLSoUDP: "mplsoudp", MPLSoGRE: "mplsogre", VXLAN: "vxlan", Plain: "plain"}

// deprecated are the spellings the state file and the agent's --encaps flag
// used before there was one vocabulary; they are still accepted, with a
// warning.
var deprecated = map[string]Encap{"mpls-udp": MPLSoUDP, "mpls-gre": MPLSoGRE}

// String is the name users write: mplsoudp, mplsogre, vxlan or plain.
func (e Encap) String() string {
	if int(e) < len(names) {
		return names[e]
	}
	return fmt.Sprintf("unknown(%d)", uint8(e))
}

// Parse returns the encapsulation named s (case and surrounding spaces do
// not matter). It also accepts the deprecated spellings (mpls-udp, mpls-gre,
// ...): callers that read what a user wrote check Deprecated and warn.
func Parse(s string) (Encap, error) {
	k := strings.ToLower(strings.TrimSpace(s))
	for e, n := range names {
		if e != int(Unknown) && n == k {
			return Encap(e), nil
		}
	}
	if e, ok := deprecated[k]; ok {
		return e, nil
	}
	return Unknown, fmt.Errorf("unknown encapsulation %q: use mplsoudp, mplsogre, vxlan or plain", s)
}

// Deprecated reports whether s is an old spelling that Parse still accepts,
// and the name to write instead.
func Deprecated(s string) (use string, ok bool) {
	e, ok := deprecated[strings.ToLower(strings.TrimSpace(s))]
	if !ok {
		return "", false
	}
	return e.String(), true
}

// ParseList parses a comma-separated list such as "mplsoudp,mplsogre"
// (empty items are skipped). It returns the deprecated spellings it met, for
// the caller to warn about.
func ParseList(s string) (es []Encap, old []string, err error) {
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		e, err := Parse(part)
		if err != nil {
			return nil, nil, err
		}
		if _, dep := Deprecated(part); dep {
			old = append(old, strings.TrimSpace(part))
		}
		es = append(es, e)
	}
	return es, old, nil
}

// MarshalText writes the name (String).
func (e Encap) MarshalText() ([]byte, error) {
	if e == Unknown || int(e) >= len(names) {
		return nil, fmt.Errorf("encapsulation %d has no name", uint8(e))
	}
	return []byte(e.String()), nil
}

// UnmarshalText reads a name, or a deprecated spelling (see Parse).
func (e *Encap) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*e = v
	return nil
}

// FromAPI converts the API's enum; values the API has no name for give Unknown.
func FromAPI(e v1.Encapsulation) Encap {
	switch e {
	case v1.Encapsulation_ENCAPSULATION_MPLS_O_UDP:
		return MPLSoUDP
	case v1.Encapsulation_ENCAPSULATION_MPLS_O_GRE:
		return MPLSoGRE
	case v1.Encapsulation_ENCAPSULATION_VXLAN:
		return VXLAN
	}
	return Unknown
}

// API converts to the API's enum; Plain and Unknown, which the API does not
// carry, give ENCAPSULATION_UNSPECIFIED.
func (e Encap) API() v1.Encapsulation {
	switch e {
	case MPLSoUDP:
		return v1.Encapsulation_ENCAPSULATION_MPLS_O_UDP
	case MPLSoGRE:
		return v1.Encapsulation_ENCAPSULATION_MPLS_O_GRE
	case VXLAN:
		return v1.Encapsulation_ENCAPSULATION_VXLAN
	}
	return v1.Encapsulation_ENCAPSULATION_UNSPECIFIED
}
