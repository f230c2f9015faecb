package api

import (
	"strings"

	"github.com/iotfabric/iotfabric/pkg/vpn"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// ConditionNotAdvertised is the endpoint condition of routes the controller
// does not advertise (no route could be made, or the BGP speaker refused it).
const ConditionNotAdvertised = "NotAdvertised"

// withNetworkConditions adds the route table's conditions to networks (the
// table keeps them in memory; the store has none).
func withNetworkConditions(r *vpn.Runner, ns ...*v1.VirtualNetwork) {
	if r == nil {
		return
	}
	for _, n := range ns {
		if n == nil {
			continue
		}
		for _, c := range r.NetworkStatus(n.Name) {
			n.Conditions = append(n.Conditions, &v1.Condition{Type: c.Type, Message: c.Message})
		}
	}
}

// withEndpointConditions adds "not advertised: <reason>" to endpoints whose
// routes the controller does not advertise.
func withEndpointConditions(r *vpn.Runner, es ...*v1.Endpoint) {
	if r == nil || len(es) == 0 {
		return
	}
	ids := make([]string, 0, len(es))
	for _, e := range es {
		if e != nil {
			ids = append(ids, e.Id)
		}
	}
	why := r.EndpointStatus(ids)
	if len(why) == 0 {
		return
	}
	for _, e := range es {
		if e == nil {
			continue
		}
		if m, ok := why[e.Id]; ok {
			if !strings.HasPrefix(m, "not advertised") {
				m = "not advertised: " + m
			}
			e.Conditions = append(e.Conditions, &v1.Condition{Type: ConditionNotAdvertised, Message: m})
		}
	}
}
