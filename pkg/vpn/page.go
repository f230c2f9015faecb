package vpn

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
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

// routePages is a network's routes sorted in cursor order, kept while a
// listing pages through them. The first page of a listing walks the table
// keeping only the page (a listing of one page, or an abandoned one, costs
// no more); the second sorts the network's routes once, and the next ones
// find their place by binary search, so a listing of n routes costs
// O(n log n), not O(n) per page. Any change to the table (Flush) drops it,
// and so does the listing's last page.
type routePages struct {
	network string
	routes  []NetRoute // in cursor order
}

func (t *Table) routesPage(network string, after *RouteCursor, limit int) ([]NetRoute, bool) {
	n := t.nets[network]
	if n == nil || limit <= 0 {
		return nil, false
	}
	if after == nil {
		t.pages = nil
		return t.walkPage(n, network, after, limit)
	}
	if t.pages == nil || t.pages.network != network {
		rs := t.routes(network)
		slices.SortFunc(rs, func(a, b NetRoute) int { return compareCursors(a.Cursor(), b.Cursor()) })
		t.pages = &routePages{network: network, routes: rs}
	}
	rs := t.pages.routes
	i := sort.Search(len(rs), func(i int) bool { return after.Less(rs[i].Cursor()) })
	end := min(i+limit, len(rs))
	out := slices.Clone(rs[i:end])
	more := end < len(rs)
	if !more {
		t.pages = nil
	}
	return out, more
}

func compareCursors(a, b RouteCursor) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return 0
}

// walkPage walks the network's routes once, keeping the page in a heap.
func (t *Table) walkPage(n *network, network string, after *RouteCursor, limit int) ([]NetRoute, bool) {
	h := &routeHeap{}
	more := false
	// offer keeps r if it belongs on the page. Most routes of a big table
	// do not: they are told apart by prefix before anything is built.
	offer := func(r *bgp.Route, origin Origin, peer netip.Addr, endpoint string) {
		if after != nil && r.Prefix.Addr().Less(after.Prefix.Addr()) {
			return
		}
		full := len(h.idx) == limit
		if full && h.top().Prefix.Addr().Less(r.Prefix.Addr()) {
			more = true
			return
		}
		c := RouteCursor{Prefix: r.Prefix, RD: r.RD, Origin: origin, Peer: peer, Endpoint: endpoint}
		if after != nil && !after.Less(c) {
			return
		}
		if !full {
			h.push(c, r, origin, peer, endpoint)
			return
		}
		more = true
		if c.Less(*h.top()) {
			h.replaceTop(c, r, origin, peer, endpoint)
		}
	}
	for id := range t.byNet[network] {
		rs := t.local[id]
		for i := range rs {
			offer(&rs[i], Local, netip.Addr{}, id)
		}
	}
	for k, rv := range t.recv {
		if rv.imported(n.imports) {
			r := rv.route(k)
			offer(&r, Imported, rv.peer, "")
		}
	}
	return h.sorted(), more
}

// routeHeap keeps the page: a max-heap (by cursor) of indexes into its
// cursors and routes, so that reordering moves integers, not routes.
type routeHeap struct {
	cs  []RouteCursor
	rs  []bgp.Route
	idx []int32
}

func (h *routeHeap) top() *RouteCursor { return &h.cs[h.idx[0]] }

func (h *routeHeap) less(i, j int) bool { return h.cs[h.idx[j]].Less(h.cs[h.idx[i]]) }

func (h *routeHeap) push(c RouteCursor, r *bgp.Route, _ Origin, _ netip.Addr, _ string) {
	h.cs, h.rs = append(h.cs, c), append(h.rs, *r)
	h.idx = append(h.idx, int32(len(h.cs)-1))
	for i := len(h.idx) - 1; i > 0; {
		p := (i - 1) / 2
		if !h.less(i, p) {
			break
		}
		h.idx[i], h.idx[p] = h.idx[p], h.idx[i]
		i = p
	}
}

func (h *routeHeap) replaceTop(c RouteCursor, r *bgp.Route, _ Origin, _ netip.Addr, _ string) {
	slot := h.idx[0]
	h.cs[slot], h.rs[slot] = c, *r
	for i := 0; ; {
		l := 2*i + 1
		if l >= len(h.idx) {
			return
		}
		m := l
		if r := l + 1; r < len(h.idx) && h.less(r, l) {
			m = r
		}
		if !h.less(m, i) {
			return
		}
		h.idx[i], h.idx[m] = h.idx[m], h.idx[i]
		i = m
	}
}

// sorted returns the page in cursor order.
func (h *routeHeap) sorted() []NetRoute {
	slices.SortFunc(h.idx, func(a, b int32) int { return compareCursors(h.cs[a], h.cs[b]) })
	out := make([]NetRoute, len(h.idx))
	for i, j := range h.idx {
		c := &h.cs[j]
		out[i] = NetRoute{Route: h.rs[j], Origin: c.Origin, Peer: c.Peer, Endpoint: c.Endpoint}
	}
	return out
}
