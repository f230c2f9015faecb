package bgp

import (
	"fmt"
	"net/netip"
	"slices"
)

// Endpoint is what EndpointRoutes needs to know about one endpoint.
type Endpoint struct {
	// Addresses of the endpoint: IPv4 ones become VPNv4 /32 routes, IPv6
	// ones VPNv6 /128 routes.
	Addresses []netip.Addr
	// Underlay is the gateway's underlay IPv4 address: RD administrator
	// and next hop.
	Underlay netip.Addr
	// NetworkID is the network index: the RD's assigned number.
	NetworkID uint16
	// ExportRTs are the network's export route targets.
	ExportRTs []RouteTarget
	// Label is the endpoint's MPLS label; 0 means "not allocated yet" and
	// yields no routes.
	Label uint32
	// NetworkEncaps are the encapsulations the network allows, in
	// preference order; GatewayEncaps the ones the gateway supports.
	NetworkEncaps []Encap
	GatewayEncaps []Encap
}

// EndpointRoutes returns the VPN routes that advertise an endpoint:
// one per address, RD <underlay>:<network id>, the network's export route
// targets, the endpoint's label, next hop = the gateway's underlay address,
// and one tunnel-encapsulation community per encapsulation both the network
// allows and the gateway supports. An endpoint without a label has no routes.
func EndpointRoutes(ep Endpoint) ([]Route, error) {
	if ep.Label == 0 {
		return nil, nil
	}
	if err := ValidateLabel(ep.Label); err != nil {
		return nil, err
	}
	if !ep.Underlay.Is4() || ep.Underlay.IsUnspecified() {
		return nil, fmt.Errorf("%w: gateway underlay %q must be an IPv4 address", ErrInvalidRoute, ep.Underlay)
	}
	var encaps []Encap
	for _, e := range ep.NetworkEncaps {
		if TunnelType(e) == 0 {
			return nil, fmt.Errorf("%w %d", ErrInvalidEncap, e)
		}
		if slices.Contains(ep.GatewayEncaps, e) && !slices.Contains(encaps, e) {
			encaps = append(encaps, e)
		}
	}
	if len(encaps) == 0 {
		return nil, fmt.Errorf("network %v, gateway %v: %w", ep.NetworkEncaps, ep.GatewayEncaps, ErrNoEncapsulation)
	}
	var rts []RouteTarget
	for _, t := range ep.ExportRTs {
		if err := t.Validate(); err != nil {
			return nil, err
		}
		if !slices.Contains(rts, t) {
			rts = append(rts, t)
		}
	}
	rd := RD{Addr: ep.Underlay, Index: ep.NetworkID}
	routes := make([]Route, 0, len(ep.Addresses))
	seen := make(map[netip.Addr]bool, len(ep.Addresses))
	for _, a := range ep.Addresses {
		if !a.IsValid() || a.IsUnspecified() || a.Zone() != "" {
			return nil, fmt.Errorf("%w: endpoint address %q", ErrInvalidRoute, a)
		}
		a = a.Unmap()
		if seen[a] {
			continue
		}
		seen[a] = true
		routes = append(routes, Route{
			Prefix:       netip.PrefixFrom(a, a.BitLen()),
			RD:           rd,
			Label:        ep.Label,
			NextHop:      ep.Underlay,
			RouteTargets: rts,
			Encaps:       encaps,
		})
	}
	return routes, nil
}
