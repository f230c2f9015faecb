package controller

import (
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Link history: the transitions of each gateway's link as this controller
// instance saw them (its route streams opening and ending, registrations of
// a gateway that was not up, sweeps that marked it down), kept in memory.
//
// Not in the store: every transition already writes the gateway's record
// (state, last seen) and its stream marker; a history key rewritten with it
// would multiply what each flap writes (and what etcd keeps until it
// compacts) by the size of the history, for a fleet whose LTE links flap
// all day. In memory each controller keeps what it saw itself (an agent
// streams to every controller, so each sees the whole link to itself), at
// most LinkHistoryMax transitions per gateway of 24 bytes each, forgotten
// when the gateway is deleted here or the controller restarts.

// LinkHistoryMax is how many transitions are kept per gateway.
const LinkHistoryMax = 50

// LinkEvent is one transition of a gateway's link.
type LinkEvent struct {
	Time time.Time
	// State is the gateway's state after it (UP, or DOWN when no live
	// controller streams to it any more).
	State  v1.GatewayState
	Reason v1.GatewayLinkReason
	// Stream is the number of the route stream (the n of the stream id
	// <instance>-<n>; 0: none).
	Stream uint64
}

// linkEntry is a LinkEvent as kept: 24 bytes.
type linkEntry struct {
	at     int64 // unix nanoseconds
	stream uint64
	state  int32
	reason int32
}

// linkRing is one gateway's last transitions: a ring once full.
type linkRing struct {
	entries []linkEntry // at most LinkHistoryMax
	next    int         // where the next entry goes once full
	total   int64       // transitions recorded
}

// linkHistory is every gateway's ring.
type linkHistory struct {
	mu    sync.Mutex
	rings map[string]*linkRing // guarded by mu
}

func (h *linkHistory) record(gw string, state v1.GatewayState, reason v1.GatewayLinkReason, stream string) {
	e := linkEntry{at: time.Now().UnixNano(), stream: streamNumber(stream), state: int32(state), reason: int32(reason)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rings == nil {
		h.rings = map[string]*linkRing{}
	}
	r := h.rings[gw]
	if r == nil {
		r = &linkRing{}
		h.rings[gw] = r
	}
	r.total++
	if n := len(r.entries); n < LinkHistoryMax {
		if n == cap(r.entries) { // grow to LinkHistoryMax at most
			r.entries = append(make([]linkEntry, 0, min(max(2*n, 4), LinkHistoryMax)), r.entries...)
		}
		r.entries = append(r.entries, e)
		return
	}
	r.entries[r.next] = e
	r.next = (r.next + 1) % LinkHistoryMax
}

func (h *linkHistory) forget(gw string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.rings, gw)
}

// events returns gw's transitions, newest first, and how many were recorded.
func (h *linkHistory) events(gw string) ([]LinkEvent, int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rings[gw]
	if r == nil {
		return nil, 0
	}
	out := make([]LinkEvent, 0, len(r.entries))
	n := len(r.entries)
	for i := 0; i < n; i++ {
		e := r.entries[(r.next+n-1-i)%n]
		out = append(out, LinkEvent{Time: time.Unix(0, e.at), State: v1.GatewayState(e.state), Reason: v1.GatewayLinkReason(e.reason), Stream: e.stream})
	}
	return out, r.total
}

// streamNumber is the n of a stream id <instance>-<n> (0: none).
func streamNumber(stream string) uint64 {
	n, err := strconv.ParseUint(stream[strings.LastIndexByte(stream, '-')+1:], 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// GatewayLinks returns the transitions of gw's link this controller saw,
// newest first (at most LinkHistoryMax), and how many it saw in all.
func (c *Controller) GatewayLinks(gw string) ([]LinkEvent, int64) { return c.links.events(gw) }
