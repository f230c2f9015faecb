// Package overlay programs a gateway's data plane into the Linux kernel through
// netlink: one routing table (or VRF device) per virtual network, local endpoints
// reached over their veth, MPLS label routes that pop an endpoint's label, and
// MPLSoUDP / MPLSoGRE tunnels toward remote gateways.
//
// The interface is declarative: Manager.Set takes the whole desired state of the
// gateway and makes the kernel match it. Everything the package creates is marked
// (route protocol, table range, rule priority, interface-name prefix) so that it
// can adopt what is already there after a restart, remove orphans, and clean up.
//
// With Config.FastPath, a tc BPF program on each endpoint's interface pushes
// the MPLSoUDP/MPLSoGRE headers itself, keeping segmentation offload
// (fastpath.go); the tunnels stay programmed underneath for what it hands
// back. Manager.FastPathStats says which path endpoints and routes take.
package overlay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/logkey"
)

// DefaultEncapPriority is used when State.EncapPriority is empty.
var DefaultEncapPriority = []encap.Encap{encap.MPLSoUDP, encap.MPLSoGRE}

// dataPlaneEncap tells whether the data plane can use e (it has no VXLAN).
func dataPlaneEncap(e encap.Encap) bool {
	return e == encap.MPLSoUDP || e == encap.MPLSoGRE || e == encap.Plain
}

// State is the whole desired data-plane state of one gateway.
type State struct {
	// Underlay is the gateway's own underlay (tunnel source) address. IPv4.
	Underlay netip.Addr `json:"underlay"`
	// EncapPriority lists the encapsulations this gateway uses, most preferred first.
	EncapPriority []encap.Encap `json:"encapPriority,omitempty"`
	// Networks are the virtual networks present on this gateway.
	Networks []Network `json:"networks,omitempty"`
}

// Network is one virtual network on the gateway.
type Network struct {
	// Name identifies the network (used in logs and the VRF device name is derived
	// from Table, not from Name).
	Name string `json:"name"`
	// Table is the kernel routing table of the network; it must lie in
	// [TableFirst, TableLast].
	Table uint32 `json:"table"`
	// Endpoints are the local endpoints (pods, sensors' sidecars) of the network.
	Endpoints []Endpoint `json:"endpoints,omitempty"`
	// Routes are the prefixes of the network reachable through remote gateways.
	Routes []RemoteRoute `json:"routes,omitempty"`
}

// Endpoint is a local endpoint: a host-side interface (usually a veth whose peer
// is inside the pod), the endpoint's address and the MPLS label allocated to it.
type Endpoint struct {
	Interface string     `json:"interface"`
	Address   netip.Addr `json:"address"`
	Label     uint32     `json:"label"`
}

// RemoteRoute is a prefix behind a remote gateway.
type RemoteRoute struct {
	Prefix netip.Prefix `json:"prefix"`
	Label  uint32       `json:"label"`
	// RemoteUnderlay is the remote gateway's underlay address: the tunnel's
	// destination (the route's BGP next hop). State files written before it
	// had this name say "gateway", which is still read.
	RemoteUnderlay netip.Addr `json:"remoteUnderlay"`
	// Encaps are the encapsulations the remote gateway offers.
	Encaps []encap.Encap `json:"encaps"`
}

// UnmarshalJSON reads a route, accepting the old key "gateway" for
// remoteUnderlay. Unknown keys are errors.
func (r *RemoteRoute) UnmarshalJSON(b []byte) error {
	type fields RemoteRoute // without this method
	var v struct {
		fields
		Gateway *netip.Addr `json:"gateway"` // old name of remoteUnderlay
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return err
	}
	if v.Gateway != nil {
		if v.RemoteUnderlay.IsValid() && v.RemoteUnderlay != *v.Gateway {
			return fmt.Errorf("route %s: remoteUnderlay %s and its old name gateway %s differ", v.Prefix, v.RemoteUnderlay, *v.Gateway)
		}
		v.RemoteUnderlay = *v.Gateway
	}
	*r = RemoteRoute(v.fields)
	return nil
}

// MPLS label limits: 0-15 are reserved; labels are 20 bits.
const (
	LabelFirst = 16
	LabelLast  = 1<<20 - 1
)

// ParseState decodes a desired state from YAML or JSON (JSON is YAML) and
// validates it. Deprecated encapsulation spellings (mpls-udp, mpls-gre) and
// the old key "gateway" of routes are accepted, with a warning on log (nil:
// none).
func ParseState(data []byte, log *slog.Logger) (State, error) {
	var s State
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return State{}, fmt.Errorf("overlay: parse state: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return State{}, fmt.Errorf("overlay: decode state: %w", err)
	}
	if err := s.Validate(); err != nil {
		return State{}, err
	}
	if log != nil {
		warnDeprecatedEncaps(js, log)
	}
	return s, nil
}

// warnDeprecatedEncaps logs each old encapsulation spelling a state document
// uses, and the old key "gateway" of routes, once.
func warnDeprecatedEncaps(js []byte, log *slog.Logger) {
	var raw struct {
		EncapPriority []string `json:"encapPriority"`
		Networks      []struct {
			Routes []struct {
				Encaps  []string        `json:"encaps"`
				Gateway json.RawMessage `json:"gateway"`
			} `json:"routes"`
		} `json:"networks"`
	}
	if json.Unmarshal(js, &raw) != nil {
		return
	}
	seen := map[string]bool{}
	warn := func(names []string) {
		for _, n := range names {
			if use, old := encap.Deprecated(n); old && !seen[n] {
				seen[n] = true
				log.Warn("deprecated encapsulation spelling in the state file", logkey.Value, n, logkey.Use, use)
			}
		}
	}
	warn(raw.EncapPriority)
	oldKey := false
	for _, n := range raw.Networks {
		for _, r := range n.Routes {
			warn(r.Encaps)
			oldKey = oldKey || r.Gateway != nil
		}
	}
	if oldKey {
		log.Warn("deprecated key in the state file's routes", logkey.Value, "gateway", logkey.Use, "remoteUnderlay")
	}
}

// Validate reports every problem with the state, joined.
func (s *State) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf("overlay: "+format, a...)) }
	hasContent := false
	for _, n := range s.Networks {
		if len(n.Routes) > 0 {
			hasContent = true
		}
	}
	if hasContent && (!s.Underlay.IsValid() || !s.Underlay.Is4()) {
		bad("underlay %q: an IPv4 underlay address is required when remote routes exist", s.Underlay)
	}
	for _, e := range s.EncapPriority {
		if !dataPlaneEncap(e) {
			bad("encapPriority: encapsulation %v is not one the data plane has (mplsoudp, mplsogre, plain)", e)
		}
	}
	tables := map[uint32]string{}
	labels := map[uint32]string{}
	ifaces := map[string]string{}
	for _, n := range s.Networks {
		if n.Table < TableFirst || n.Table > TableLast {
			bad("network %q: table %d outside the range %d-%d", n.Name, n.Table, TableFirst, TableLast)
		}
		if other, ok := tables[n.Table]; ok {
			bad("network %q: table %d already used by network %q", n.Name, n.Table, other)
		}
		tables[n.Table] = n.Name
		for _, ep := range n.Endpoints {
			if ep.Interface == "" || len(ep.Interface) > 15 || strings.ContainsAny(ep.Interface, "/ \t\n") {
				bad("network %q: endpoint interface %q is not a valid interface name", n.Name, ep.Interface)
			} else if strings.HasPrefix(ep.Interface, IfPrefix) && !strings.HasPrefix(ep.Interface, EndpointIfPrefix) {
				bad("network %q: endpoint interface %q uses the reserved prefix %q (only the pods' veths, %q..., may)", n.Name, ep.Interface, IfPrefix, EndpointIfPrefix)
			}
			if other, ok := ifaces[ep.Interface]; ok {
				bad("network %q: interface %q already an endpoint of network %q", n.Name, ep.Interface, other)
			}
			ifaces[ep.Interface] = n.Name
			if !ep.Address.IsValid() || ep.Address.Zone() != "" {
				bad("network %q: endpoint %q: invalid address %q", n.Name, ep.Interface, ep.Address)
			}
			if ep.Label < LabelFirst || ep.Label > LabelLast {
				bad("network %q: endpoint %q: label %d outside %d-%d", n.Name, ep.Interface, ep.Label, LabelFirst, LabelLast)
			}
			if other, ok := labels[ep.Label]; ok {
				bad("network %q: endpoint %q: label %d already used by %s", n.Name, ep.Interface, ep.Label, other)
			}
			labels[ep.Label] = ep.Interface
		}
		seen := map[netip.Prefix]bool{}
		for _, r := range n.Routes {
			if !r.Prefix.IsValid() || r.Prefix != r.Prefix.Masked() {
				bad("network %q: route %q: invalid or unmasked prefix", n.Name, r.Prefix)
				continue
			}
			if seen[r.Prefix] {
				bad("network %q: route %s listed twice", n.Name, r.Prefix)
			}
			seen[r.Prefix] = true
			if !r.RemoteUnderlay.IsValid() || !r.RemoteUnderlay.Is4() {
				bad("network %q: route %s: remoteUnderlay %q must be an IPv4 address", n.Name, r.Prefix, r.RemoteUnderlay)
			}
			if r.Label < LabelFirst || r.Label > LabelLast {
				bad("network %q: route %s: label %d outside %d-%d", n.Name, r.Prefix, r.Label, LabelFirst, LabelLast)
			}
			if len(r.Encaps) == 0 {
				bad("network %q: route %s: no encapsulation offered", n.Name, r.Prefix)
			}
			for _, e := range r.Encaps {
				if !dataPlaneEncap(e) {
					bad("network %q: route %s: encapsulation %v is not one the data plane has (mplsoudp, mplsogre, plain)", n.Name, r.Prefix, e)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// Clone returns a deep copy of the state.
func (s State) Clone() State {
	c := s
	c.EncapPriority = slices.Clone(s.EncapPriority)
	c.Networks = make([]Network, len(s.Networks))
	for i, n := range s.Networks {
		n.Endpoints = slices.Clone(n.Endpoints)
		rs := make([]RemoteRoute, len(n.Routes))
		for j, r := range n.Routes {
			r.Encaps = slices.Clone(r.Encaps)
			rs[j] = r
		}
		n.Routes = rs
		c.Networks[i] = n
	}
	return c
}
