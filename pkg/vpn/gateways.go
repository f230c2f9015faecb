package vpn

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"github.com/iotfabric/iotfabric/pkg/logkey"
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

// gatewayStreamBuffer is how many updates a gateway stream may have unread
// before it is closed.
const gatewayStreamBuffer = 64

// gwSession is what a gateway was last sent, per network; it outlives the
// stream so that a reconnecting agent gets only the difference.
type gwSession struct {
	gateway string
	sent    map[string]routeMap // network -> routes
	rev     int64
	ch      chan GatewayUpdate // nil while no stream is attached
	ctx     context.Context    // the attached stream's
}

// ID identifies this runner instance: gateway route revisions are only
// meaningful to the instance that issued them.
func (r *Runner) ID() string { return r.id }

func newID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// gatewayNets returns the networks with an endpoint on gw.
func (s *state) gatewayNets(gw string) map[string]bool {
	nets := map[string]bool{}
	for id := range s.tbl.byGw[gw] {
		if e := s.tbl.eps[id]; e != nil {
			nets[e.Network] = true
		}
	}
	return nets
}

func withNetwork(out []GatewayRoute, n string, rs []NetRoute) []GatewayRoute {
	for _, rt := range rs {
		out = append(out, GatewayRoute{Network: n, NetRoute: rt})
	}
	return out
}

// WatchGateway streams the routes of gw's networks: a snapshot (or, when
// fromRev is the revision this runner last sent to gw, only what changed
// since), then changes, from the table's per-network deltas.
//
// The channel closes when ctx ends, when another stream for the same gateway
// replaces this one, when the runner stops, or when the reader falls behind:
// the runner never waits for a stream, and one with gatewayStreamBuffer
// updates unread is closed and its revision forgotten, so the agent's
// reconnection gets a snapshot.
func (r *Runner) WatchGateway(ctx context.Context, gw string, fromRev int64, runnerID string) <-chan GatewayUpdate {
	ch := make(chan GatewayUpdate, gatewayStreamBuffer)
	err := r.do(ctx, func(s *state) { s.attachGateway(ctx, gw, fromRev, runnerID, ch) })
	if err != nil {
		close(ch)
		return ch
	}
	context.AfterFunc(ctx, func() {
		r.do(context.Background(), func(s *state) { s.detachGateway(gw, ch) })
	})
	return ch
}

// attachGateway makes ch gw's stream and sends it its first update.
func (s *state) attachGateway(ctx context.Context, gw string, fromRev int64, runnerID string, ch chan GatewayUpdate) {
	g := s.gws[gw]
	if g == nil {
		g = &gwSession{gateway: gw}
		s.gws[gw] = g
	}
	if g.ch != nil {
		close(g.ch) // a newer stream for the same gateway wins
	}
	cur := map[string]routeMap{}
	for n := range s.gatewayNets(gw) {
		cur[n] = s.gatewayRoutes(n)
	}
	s.seq++
	first := GatewayUpdate{Revision: s.seq}
	resume := runnerID == s.r.id && fromRev != 0 && fromRev == g.rev && g.sent != nil
	for n, rs := range cur {
		old := routeMap{}
		if resume {
			old = g.sent[n]
		}
		put, del := diff(old, rs)
		first.Put, first.Delete = withNetwork(first.Put, n, put), withNetwork(first.Delete, n, del)
	}
	if resume {
		for n, rs := range g.sent {
			if _, still := cur[n]; !still {
				_, del := diff(rs, routeMap{})
				first.Delete = withNetwork(first.Delete, n, del)
			}
		}
	}
	first.Snapshot = !resume
	g.sent, g.rev, g.ch, g.ctx = cur, s.seq, ch, ctx
	ch <- first // the channel is new and has room
}

// detachGateway closes ch if it is still gw's stream.
func (s *state) detachGateway(gw string, ch chan GatewayUpdate) {
	if g := s.gws[gw]; g != nil && g.ch == ch {
		close(ch)
		g.ch, g.ctx = nil, nil
	}
}

// publishGateways sends each attached gateway what changed in its networks
// (Table.follow: the last Flush's deltas, or a recomputation when full is
// set, the delta says so, or the gateway just joined the network).
func (s *state) publishGateways(full bool) {
	for _, g := range s.gws {
		if g.ch == nil {
			continue
		}
		if g.ctx.Err() != nil {
			// Ended, and its detachment is on its way: send it nothing, so
			// that a reconnection resumes from what it received.
			s.detachGateway(g.gateway, g.ch)
			continue
		}
		nets := s.gatewayNets(g.gateway)
		var u GatewayUpdate
		for n := range nets {
			put, del, sent := s.gatewayFollow(n, g.sent[n], full)
			g.sent[n] = sent
			u.Put, u.Delete = withNetwork(u.Put, n, put), withNetwork(u.Delete, n, del)
		}
		for n, old := range g.sent {
			if !nets[n] {
				_, del := diff(old, routeMap{})
				u.Delete = withNetwork(u.Delete, n, del)
				delete(g.sent, n)
			}
		}
		if len(u.Put)+len(u.Delete) == 0 {
			continue
		}
		s.seq++
		u.Revision = s.seq
		select {
		case g.ch <- u:
			g.rev = s.seq
		default:
			// g.sent already holds what this update carried: a resume from
			// g.rev would miss it, so forget the revision (the agent gets a
			// snapshot when it reconnects).
			s.r.log.Warn("gateway route stream fell behind; closing it (the agent reconnects)", logkey.Gateway, g.gateway)
			g.rev = -1
			close(g.ch)
			g.ch = nil
		}
	}
}
