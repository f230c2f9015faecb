package vpn

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"github.com/iotfabric/iotfabric/pkg/bgp"
)

// GatewayUpdate is one message of a gateway's route stream.
type GatewayUpdate struct {
	Snapshot bool // Put is the complete set
	Revision int64
	Put      []GatewayRoute
	Delete   []GatewayRoute
}

// GatewayRoute is a route of one of the gateway's networks.
type GatewayRoute struct {
	Network string
	NetRoute
}

// netRoutes is what a gateway was sent of one network.
type netRoutes map[bgp.RouteKey]GatewayRoute

// gwSession is what a gateway was last sent, per network; it outlives the
// stream so that a reconnecting agent gets only the difference.
type gwSession struct {
	gateway string
	sent    map[string]netRoutes // network -> routes
	rev     int64
	ch      chan GatewayUpdate // nil while no stream is attached
}

// ID identifies this runner instance: gateway route revisions are only
// meaningful to the instance that issued them.
func (r *Runner) ID() string { return r.id }

func newID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// gatewayNetsLocked returns the networks with an endpoint on gw.
func (r *Runner) gatewayNetsLocked(gw string) map[string]bool {
	nets := map[string]bool{}
	for id := range r.tbl.byGw[gw] {
		if e := r.tbl.eps[id]; e != nil {
			nets[e.Network] = true
		}
	}
	return nets
}

func (r *Runner) netRoutesLocked(n string) netRoutes {
	out := netRoutes{}
	for _, rt := range r.tbl.routes(n) {
		out[rt.Key()] = GatewayRoute{Network: n, NetRoute: rt}
	}
	return out
}

func diffNet(old, cur netRoutes) (put, del []GatewayRoute) {
	for k, rt := range cur {
		if o, ok := old[k]; !ok || !o.Equal(rt.Route) || o.Origin != rt.Origin || o.Endpoint != rt.Endpoint {
			put = append(put, rt)
		}
	}
	for k, rt := range old {
		if _, ok := cur[k]; !ok {
			del = append(del, rt)
		}
	}
	return put, del
}

// WatchGateway streams the routes of gw's networks: a snapshot (or, when
// fromRev is the revision this runner last sent to gw, only what changed
// since), then changes. The channel closes when ctx ends, when another stream
// for the same gateway replaces this one, or when the reader falls behind.
func (r *Runner) WatchGateway(ctx context.Context, gw string, fromRev int64, runnerID string) <-chan GatewayUpdate {
	ch := make(chan GatewayUpdate, 64)
	r.mu.Lock()
	s := r.gwSessions[gw]
	if s == nil {
		s = &gwSession{gateway: gw}
		r.gwSessions[gw] = s
	}
	if s.ch != nil {
		close(s.ch) // a newer stream for the same gateway wins
	}
	cur := map[string]netRoutes{}
	for n := range r.gatewayNetsLocked(gw) {
		cur[n] = r.netRoutesLocked(n)
	}
	r.seq++
	first := GatewayUpdate{Revision: r.seq}
	resume := runnerID == r.id && fromRev != 0 && fromRev == s.rev && s.sent != nil
	for n, rs := range cur {
		if resume {
			put, del := diffNet(s.sent[n], rs)
			first.Put, first.Delete = append(first.Put, put...), append(first.Delete, del...)
		} else {
			for _, rt := range rs {
				first.Put = append(first.Put, rt)
			}
		}
	}
	if resume {
		for n, rs := range s.sent {
			if _, still := cur[n]; !still {
				_, del := diffNet(rs, nil)
				first.Delete = append(first.Delete, del...)
			}
		}
	}
	first.Snapshot = !resume
	s.sent, s.rev, s.ch = cur, r.seq, ch
	ch <- first
	r.mu.Unlock()
	go func() {
		<-ctx.Done()
		r.mu.Lock()
		defer r.mu.Unlock()
		if s.ch == ch {
			close(ch)
			s.ch = nil
		}
	}()
	return ch
}

// publishGatewaysLocked sends each attached gateway what changed in its
// networks: from the last Flush's deltas (only the routes that changed), or by
// recomputing a network when dirty is nil, the delta says so, or the gateway
// just joined it.
func (r *Runner) publishGatewaysLocked(dirty map[string]bool) {
	deltas := r.tbl.Deltas()
	for _, s := range r.gwSessions {
		if s.ch == nil {
			continue
		}
		nets := r.gatewayNetsLocked(s.gateway)
		var u GatewayUpdate
		for n := range nets {
			sent, had := s.sent[n]
			d, changed := deltas[n]
			switch {
			case had && dirty != nil && (!dirty[n] || !changed):
				continue
			case had && dirty != nil && !d.Full:
				for _, rt := range d.Put {
					g := GatewayRoute{Network: n, NetRoute: rt}
					if o, ok := sent[rt.Key()]; !ok || !o.Equal(rt.Route) || o.Endpoint != rt.Endpoint || o.Origin != rt.Origin {
						u.Put = append(u.Put, g)
						sent[rt.Key()] = g
					}
				}
				for _, k := range d.Del {
					if o, ok := sent[k]; ok && o.Origin == Local {
						u.Delete = append(u.Delete, o)
						delete(sent, k)
					}
				}
				continue
			}
			cur := r.netRoutesLocked(n)
			put, del := diffNet(sent, cur)
			u.Put, u.Delete = append(u.Put, put...), append(u.Delete, del...)
			s.sent[n] = cur
		}
		for n, old := range s.sent {
			if !nets[n] {
				_, del := diffNet(old, nil)
				u.Delete = append(u.Delete, del...)
				delete(s.sent, n)
			}
		}
		if len(u.Put)+len(u.Delete) == 0 {
			continue
		}
		r.seq++
		u.Revision = r.seq
		select {
		case s.ch <- u:
			s.rev = r.seq
		default:
			// s.sent already holds what this update carried: a resume from
			// s.rev would miss it, so forget the revision (the agent gets a
			// snapshot when it reconnects).
			r.log.Warn("gateway route stream fell behind; closing it (the agent reconnects)", "gateway", s.gateway)
			s.rev = -1
			close(s.ch)
			s.ch = nil
		}
	}
}
