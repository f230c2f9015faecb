package vpn

import (
	"context"
	"errors"
	"iter"

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
	// The snapshot's walk of the shared routes, between pages (the
	// runner's goroutine only).
	next func() ([]NetRoute, bool)
	stop func()
}

// endWalk ends the snapshot's walk, if any.
func (w *routeWatcher) endWalk() {
	if w.stop != nil {
		w.stop()
	}
	w.next, w.stop = nil, nil
}

// RouteWatch is a RouteService watch of one network: its snapshot, read page
// by page (Next) from the routes the network's watchers were sent (shared by
// them), so that no watch holds a copy of the whole table; then its changes.
//
// The snapshot's pages are read at different moments, each from the routes
// as they are then; every change since the watch began is also queued on
// Changes. The reader sends the pages, then the CatchUp first batches of
// Changes (those published before the last page was read): the routes it
// sent are then exactly the table at the last page, whatever changed while
// it paged. The rest of Changes follows.
type RouteWatch struct {
	r       *Runner
	network string
	w       *routeWatcher
	catchUp int
}

// errWatchDropped ends a watch whose reader fell behind (or whose runner
// stopped) while it read the snapshot.
var errWatchDropped = errors.New("route watch dropped")

// WatchRoutes begins a watch of the network's routes; known reports whether
// the network exists. The watch ends, and Changes is closed, when ctx
// ends, when the runner stops, or when the reader falls behind: the runner
// never waits for a watcher, and one with routeWatchBuffer batches unread is
// dropped. The reader then tells it apart from its own ctx ending and lists
// again (RouteService answers Unavailable, "watch again").
//
// Changes come per batch of store or peer changes: the routes put or
// deleted in the network (from the table's per-network deltas, received
// routes included; only a change of the network itself recomputes it).
func (r *Runner) WatchRoutes(ctx context.Context, network string) (wt *RouteWatch, known bool) {
	w := &routeWatcher{ch: make(chan []RouteChange, routeWatchBuffer)}
	err := r.do(ctx, func(s *state) {
		known = s.tbl.HasNetwork(network)
		nw := s.nets[network]
		if nw == nil {
			// What the watchers of the network were sent is the table
			// now: the next publication's changes apply to exactly it.
			nw = &netWatch{sent: s.tbl.routeMap(network), subs: map[*routeWatcher]struct{}{}}
			s.nets[network] = nw
		}
		nw.subs[w] = struct{}{}
	})
	if err != nil {
		close(w.ch)
		return &RouteWatch{r: r, network: network, w: w}, false
	}
	context.AfterFunc(ctx, func() {
		r.do(context.Background(), func(s *state) { s.dropRouteWatcher(network, w) })
	})
	return &RouteWatch{r: r, network: network, w: w}, known
}

// Next returns the snapshot's next page of at most limit routes, in no
// particular order, and whether more pages follow. The snapshot is one walk
// of the watchers' shared routes, suspended between pages: each route is
// read once, as it is when the walk reaches it (a route changed meanwhile
// is also in the changes to catch up on), and the pages cost no more than
// the routes they hold. The first call's limit holds for the whole walk; the
// last page may be empty.
func (wt *RouteWatch) Next(ctx context.Context, limit int) (page []NetRoute, more bool, err error) {
	dropped := false
	if err := wt.r.do(ctx, func(s *state) {
		nw := s.nets[wt.network]
		if nw == nil {
			dropped = true
			return
		}
		w := wt.w
		if _, ok := nw.subs[w]; !ok {
			dropped = true
			return
		}
		if w.next == nil {
			w.next, w.stop = iter.Pull(pages(nw.sent, max(limit, 1))) // a later full recomputation replaces nw.sent: the walk stays on this one
		}
		page, more = w.next()
		if !more {
			w.endWalk()
			wt.catchUp = len(w.ch)
			return
		}
	}); err != nil {
		return nil, false, err
	}
	if dropped {
		return nil, false, errWatchDropped
	}
	return page, more, nil
}

// pages yields the routes of m in pages of limit, in map order; the map
// may change between pages (as a range loop's body may change it).
func pages(m routeMap, limit int) iter.Seq[[]NetRoute] {
	return func(yield func([]NetRoute) bool) {
		page := make([]NetRoute, 0, limit)
		for _, rt := range m {
			if page = append(page, rt); len(page) == limit {
				if !yield(page) {
					return
				}
				page = make([]NetRoute, 0, limit)
			}
		}
		if len(page) > 0 {
			yield(page)
		}
	}
}

// CatchUp is, once Next said no more pages follow, how many batches of
// Changes to apply before the snapshot is current.
func (wt *RouteWatch) CatchUp() int { return wt.catchUp }

// Changes is the watch's channel of changes.
func (wt *RouteWatch) Changes() <-chan []RouteChange { return wt.w.ch }

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
	w.endWalk()
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
