package vpn

import (
	"context"

	"github.com/iotfabric/iotfabric/pkg/logkey"
)

// RouteChange is a change of one route of a network, for RouteService watches.
type RouteChange struct {
	Delete bool
	Route  NetRoute
}

// routeWatchBuffer is how many batches of changes a route watcher may have
// unread before it is dropped.
const routeWatchBuffer = 256

// netWatch is the route watchers of one network and what they were sent.
type netWatch struct {
	sent routeMap
	subs map[*routeWatcher]struct{}
}

type routeWatcher struct {
	ch chan []RouteChange
}

// WatchRoutes returns the network's current routes and a channel of later
// changes: per batch of store or peer changes, the routes put or deleted in
// the network (from the table's per-network deltas, received routes
// included; only a change of the network itself recomputes it).
//
// The channel is closed when ctx ends, when the runner stops, or when the
// reader falls behind: the runner never waits for a watcher, and one with
// routeWatchBuffer batches unread is dropped. The reader then tells it apart
// from its own ctx ending and lists again (RouteService answers Unavailable,
// "watch again").
func (r *Runner) WatchRoutes(ctx context.Context, network string) ([]NetRoute, <-chan []RouteChange) {
	w := &routeWatcher{ch: make(chan []RouteChange, routeWatchBuffer)}
	var cur []NetRoute
	err := r.do(ctx, func(s *state) {
		nw := s.nets[network]
		if nw == nil {
			// What the watchers of the network were sent is the table
			// now: the next publication's changes apply to exactly it.
			nw = &netWatch{sent: s.tbl.routeMap(network), subs: map[*routeWatcher]struct{}{}}
			s.nets[network] = nw
		}
		cur = make([]NetRoute, 0, len(nw.sent))
		for _, rt := range nw.sent {
			cur = append(cur, rt)
		}
		nw.subs[w] = struct{}{}
	})
	if err != nil {
		close(w.ch)
		return nil, w.ch
	}
	sortRoutes(cur)
	context.AfterFunc(ctx, func() {
		r.do(context.Background(), func(s *state) { s.dropRouteWatcher(network, w) })
	})
	return cur, w.ch
}

// dropRouteWatcher closes w's channel unless it was already dropped.
func (s *state) dropRouteWatcher(network string, w *routeWatcher) {
	nw := s.nets[network]
	if nw == nil {
		return
	}
	if _, ok := nw.subs[w]; !ok {
		return
	}
	delete(nw.subs, w)
	close(w.ch)
	if len(nw.subs) == 0 {
		delete(s.nets, network)
	}
}

// publishRoutes sends each watched network's changes to its watchers.
func (s *state) publishRoutes(full bool) {
	for n, nw := range s.nets {
		put, del, sent := s.tbl.follow(n, nw.sent, full)
		nw.sent = sent
		if len(put)+len(del) == 0 {
			continue
		}
		batch := make([]RouteChange, 0, len(put)+len(del))
		for _, rt := range put {
			batch = append(batch, RouteChange{Route: rt})
		}
		for _, rt := range del {
			batch = append(batch, RouteChange{Delete: true, Route: rt})
		}
		for w := range nw.subs {
			select {
			case w.ch <- batch:
			default:
				s.r.log.Warn("route watcher fell behind; closing its stream", logkey.Network, n)
				s.dropRouteWatcher(n, w)
			}
		}
	}
}
