package vpn

import (
	"container/heap"
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/iotfabric/iotfabric/pkg/bgp"
)

// RouteCursor is a route's place in the order of a network's paged route
// listing: prefix (address, then length), route distinguisher, origin, then
// peer or endpoint. Every route of a network has its own cursor.
type RouteCursor struct {
	Prefix   netip.Prefix
	RD       bgp.RD
	Origin   Origin
	Peer     netip.Addr
	Endpoint string
}

// Cursor returns the route's cursor.
func (r NetRoute) Cursor() RouteCursor {
	return RouteCursor{Prefix: r.Prefix, RD: r.RD, Origin: r.Origin, Peer: r.Peer, Endpoint: r.Endpoint}
}

// String encodes the cursor; ParseRouteCursor reads it back.
func (c RouteCursor) String() string {
	peer := ""
	if c.Peer.IsValid() {
		peer = c.Peer.String()
	}
	return strings.Join([]string{c.Prefix.String(), c.RD.String(), strconv.Itoa(int(c.Origin)), peer, c.Endpoint}, "|")
}

// ParseRouteCursor reads a cursor written by String.
func ParseRouteCursor(s string) (RouteCursor, error) {
	f := strings.SplitN(s, "|", 5)
	if len(f) != 5 {
		return RouteCursor{}, fmt.Errorf("route cursor has %d fields, want 5", len(f))
	}
	var c RouteCursor
	var err error
	if c.Prefix, err = netip.ParsePrefix(f[0]); err != nil {
		return RouteCursor{}, fmt.Errorf("route cursor: %w", err)
	}
	if c.RD, err = bgp.ParseRD(f[1]); err != nil {
		return RouteCursor{}, fmt.Errorf("route cursor: %w", err)
	}
	o, err := strconv.ParseUint(f[2], 10, 8)
	if err != nil {
		return RouteCursor{}, fmt.Errorf("route cursor: origin: %w", err)
	}
	c.Origin = Origin(o)
	if f[3] != "" {
		if c.Peer, err = netip.ParseAddr(f[3]); err != nil {
			return RouteCursor{}, fmt.Errorf("route cursor: %w", err)
		}
	}
	c.Endpoint = f[4]
	return c, nil
}

// Less orders cursors.
func (c RouteCursor) Less(d RouteCursor) bool {
	if c.Prefix.Addr() != d.Prefix.Addr() {
		return c.Prefix.Addr().Less(d.Prefix.Addr())
	}
	if c.Prefix.Bits() != d.Prefix.Bits() {
		return c.Prefix.Bits() < d.Prefix.Bits()
	}
	if c.RD != d.RD {
		if c.RD.Addr != d.RD.Addr {
			return c.RD.Addr.Less(d.RD.Addr)
		}
		return c.RD.Index < d.RD.Index
	}
	if c.Origin != d.Origin {
		return c.Origin < d.Origin
	}
	if c.Peer != d.Peer {
		return c.Peer.Less(d.Peer)
	}
	return c.Endpoint < d.Endpoint
}

// RoutesPage returns at most limit routes of the network that come after
// after (nil: from the first) in cursor order, whether more follow, and
// whether the network is known. It walks the network's routes once and keeps
// only the page (a heap of limit routes), so a page costs memory for what it
// returns, whatever the size of the table.
func (r *Runner) RoutesPage(network string, after *RouteCursor, limit int) (routes []NetRoute, more, ok bool) {
	r.do(context.Background(), func(s *state) {
		if ok = s.tbl.HasNetwork(network); ok {
			routes, more = s.tbl.routesPage(network, after, limit)
		}
	})
	return routes, more, ok
}

func (t *Table) routesPage(network string, after *RouteCursor, limit int) ([]NetRoute, bool) {
	n := t.nets[network]
	if n == nil || limit <= 0 {
		return nil, false
	}
	h := &routeHeap{}
	more := false
	offer := func(nr NetRoute) {
		c := nr.Cursor()
		if after != nil && !after.Less(c) {
			return
		}
		if h.Len() < limit {
			heap.Push(h, pagedRoute{c, nr})
			return
		}
		more = true
		if c.Less((*h)[0].c) {
			(*h)[0] = pagedRoute{c, nr}
			heap.Fix(h, 0)
		}
	}
	for id := range t.byNet[network] {
		for _, rt := range t.local[id] {
			offer(NetRoute{Route: rt, Origin: Local, Endpoint: id})
		}
	}
	for _, rv := range t.recv {
		if rv.route.HasAnyRouteTarget(n.imports) {
			offer(NetRoute{Route: rv.route, Origin: Imported, Peer: rv.peer})
		}
	}
	out := make([]NetRoute, h.Len())
	for i := len(out) - 1; i >= 0; i-- {
		out[i] = heap.Pop(h).(pagedRoute).r
	}
	return out, more
}

type pagedRoute struct {
	c RouteCursor
	r NetRoute
}

// routeHeap is a max-heap by cursor: its top is the last route of the page.
type routeHeap []pagedRoute

func (h routeHeap) Len() int           { return len(h) }
func (h routeHeap) Less(i, j int) bool { return h[j].c.Less(h[i].c) }
func (h routeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *routeHeap) Push(x any)        { *h = append(*h, x.(pagedRoute)) }
func (h *routeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
