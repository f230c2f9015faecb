package vpn

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"github.com/iotfabric/iotfabric/pkg/bgp"
)

// gwKey identifies a route across networks.
type gwKey struct {
	network string
	key     bgp.RouteKey
}

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

// gwSession is what a gateway was last sent; it outlives the stream so that
// a reconnecting agent gets only the difference.
type gwSession struct {
	gateway string
	sent    map[gwKey]GatewayRoute
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

// gatewayRoutesLocked returns the routes of every network with an endpoint on gw.
func (r *Runner) gatewayRoutesLocked(gw string) map[gwKey]GatewayRoute {
	nets := map[string]bool{}
	for id := range r.tbl.byGw[gw] {
		if e := r.tbl.eps[id]; e != nil {
			nets[e.Network] = true
		}
	}
	out := map[gwKey]GatewayRoute{}
	for n := range nets {
		for _, rt := range r.tbl.Routes(n) {
			out[gwKey{n, rt.Key()}] = GatewayRoute{Network: n, NetRoute: rt}
		}
	}
	return out
}

func diffGateway(old, cur map[gwKey]GatewayRoute) (put, del []GatewayRoute) {
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
	cur := r.gatewayRoutesLocked(gw)
	r.seq++
	first := GatewayUpdate{Revision: r.seq}
	if runnerID == r.id && fromRev != 0 && fromRev == s.rev && s.sent != nil {
		first.Put, first.Delete = diffGateway(s.sent, cur)
	} else {
		first.Snapshot = true
		for _, rt := range cur {
			first.Put = append(first.Put, rt)
		}
	}
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

// publishGatewaysLocked sends each attached gateway what changed in its networks.
func (r *Runner) publishGatewaysLocked() {
	for _, s := range r.gwSessions {
		if s.ch == nil {
			continue
		}
		cur := r.gatewayRoutesLocked(s.gateway)
		put, del := diffGateway(s.sent, cur)
		if len(put)+len(del) == 0 {
			continue
		}
		r.seq++
		select {
		case s.ch <- GatewayUpdate{Revision: r.seq, Put: put, Delete: del}:
			s.sent, s.rev = cur, r.seq
		default:
			r.log.Warn("gateway route stream fell behind; closing it (the agent reconnects and resumes)", "gateway", s.gateway)
			close(s.ch)
			s.ch = nil
		}
	}
}
