package fleet

import (
	"context"
	"net/netip"
	"time"

	"github.com/iotfabric/iotfabric/pkg/overlay"
)

// dataPlane is a simulated gateway's data plane. It programs nothing but
// keeps what the fleet measures: the remote routes it holds and when a
// probe route arrived. Like the real one (overlay.Manager, which
// vrouter-agent runs without an apply callback) it takes a whole state
// (Set) and route changes on top of it (UpdateRoutes, agent.RouteUpdater),
// so the agent takes the real gateway's path: route changes are applied
// route by route, and the whole state is built only when they need more
// than routes.
//
// As overlay.Manager does, UpdateRoutes asks for the whole state
// (overlay.ErrNeedSet) before the first Set and when a change needs what
// the last Set did not make: a network, or a tunnel to a remote gateway
// (one per remote underlay with the MPLS encapsulations).
type dataPlane struct {
	g *Gateway
}

// routeSet is the remote routes a gateway holds, per network, and the
// remote underlays its last Set made tunnels to. Guarded by Gateway.mu.
type routeSet struct {
	ok      bool // a Set succeeded
	nets    map[string]map[netip.Prefix]struct{}
	tunnels map[netip.Addr]struct{}
	n       int
}

func (d dataPlane) Set(_ context.Context, st overlay.State) error {
	g := d.g
	probe := g.f.probes()
	rs := routeSet{ok: true, nets: make(map[string]map[netip.Prefix]struct{}, len(st.Networks)), tunnels: map[netip.Addr]struct{}{}}
	hit := false
	for _, nw := range st.Networks {
		m := make(map[netip.Prefix]struct{}, len(nw.Routes))
		for _, r := range nw.Routes {
			m[r.Prefix] = struct{}{}
			rs.tunnels[r.RemoteUnderlay] = struct{}{}
			if probe[r.Prefix] {
				hit = true
			}
		}
		rs.nets[nw.Name] = m
		rs.n += len(m)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.set = rs
	g.recordLocked(hit)
	return nil
}

func (d dataPlane) UpdateRoutes(_ context.Context, changes []overlay.RouteChange) error {
	g := d.g
	probe := g.f.probes()
	g.mu.Lock()
	defer g.mu.Unlock()
	rs := &g.set
	if !rs.ok {
		return overlay.ErrNeedSet
	}
	// Nothing is changed unless all of the changes can be applied.
	for _, c := range changes {
		if _, ok := rs.nets[c.Network]; !ok {
			return overlay.ErrNeedSet
		}
		if _, ok := rs.tunnels[c.Route.RemoteUnderlay]; !c.Remove && !ok {
			return overlay.ErrNeedSet
		}
	}
	hit := false
	for _, c := range changes {
		m := rs.nets[c.Network]
		_, had := m[c.Route.Prefix]
		switch {
		case c.Remove && had:
			delete(m, c.Route.Prefix)
			rs.n--
		case !c.Remove && !had:
			m[c.Route.Prefix] = struct{}{}
			rs.n++
		}
		if !c.Remove && probe[c.Route.Prefix] {
			hit = true
		}
	}
	g.recordLocked(hit)
	return nil
}

// recordLocked records the route count after an apply, and the arrival of
// a probe route (hit).
func (g *Gateway) recordLocked(hit bool) {
	if g.routes != g.set.n {
		g.routes = g.set.n
		g.dirty.Store(true)
	}
	if hit && g.probeAt.IsZero() {
		g.probeAt = time.Now()
		g.dirty.Store(true)
	}
}
