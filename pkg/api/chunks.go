package api

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/vpn"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// MaxRouteMessage is the largest GatewayRoutes message the controller sends
// (1 MiB): an update larger than that, or than the agent's
// max_message_bytes, goes in chunks.
const MaxRouteMessage = 1 << 20

// minRouteMessage is the smallest chunk size honoured (an agent asking for
// less gets chunks of this size).
const minRouteMessage = 16 << 10

// chunkOverhead is what a message's fields other than routes and scopes
// take at most (kind, revision, controller id, more).
const chunkOverhead = 128

// sendChunks sends one update of a gateway's route stream as messages of at
// most limit bytes (whole when chunked is false: an agent that takes no
// chunks). Every message has the update's kind and revision; all but the
// last have more set.
func sendChunks(out grpc.ServerStreamingServer[v1.GatewayRoutes], u vpn.GatewayUpdate, controllerID string, limit int, chunked bool) error {
	kind := v1.GatewayRoutes_KIND_CHANGES
	if u.Snapshot {
		kind = v1.GatewayRoutes_KIND_SNAPSHOT
	}
	newMsg := func() *v1.GatewayRoutes {
		return &v1.GatewayRoutes{Kind: kind, Revision: u.Revision, ControllerId: controllerID}
	}
	msg, size := newMsg(), chunkOverhead
	flush := func(more bool) error {
		msg.More = more
		err := out.Send(msg)
		msg, size = newMsg(), chunkOverhead
		return err
	}
	// room makes room for an item of n bytes (its field tag and length
	// prefix included), sending the message when it is full.
	room := func(n int) error {
		n += 1 + protowireSize(n)
		if chunked && size+n > limit && size > chunkOverhead {
			if err := flush(true); err != nil {
				return err
			}
		}
		size += n
		return nil
	}
	for _, sc := range u.Keep {
		s := &v1.RouteScope{Network: sc.Network, BucketCount: uint32(sc.BucketCount)}
		for _, b := range sc.Buckets {
			s.Buckets = append(s.Buckets, uint32(b))
		}
		if err := room(proto.Size(s)); err != nil {
			return err
		}
		msg.Keep = append(msg.Keep, s)
	}
	for _, r := range u.Delete {
		if err := room(proto.Size(r)); err != nil {
			return err
		}
		msg.Delete = append(msg.Delete, r)
	}
	for _, r := range u.Put {
		if err := room(proto.Size(r)); err != nil {
			return err
		}
		msg.Put = append(msg.Put, r)
	}
	return flush(false)
}

func protowireSize(n int) int {
	s := 1
	for n >= 0x80 {
		n >>= 7
		s++
	}
	return s
}

// DefaultMaxFullSyncs is how many gateway full syncs a controller serves at
// once by default.
const DefaultMaxFullSyncs = 64

// DefaultMaxRegisters is how many gateway registrations a controller serves
// at once by default.
const DefaultMaxRegisters = 64

// DefaultFullSyncItems is, by default, the most routes a route stream's first
// update, or endpoints a full report, may carry without counting as a full
// sync: up to about 25 KB, what a few changes cost. A resume that finds
// nothing missed (the log or the digests match) is never one.
const DefaultFullSyncItems = 256

// fullSyncRetry is the shortest retry delay a refused full sync is given.
const fullSyncRetry = time.Second

// maxFullSyncRetry caps the retry delay of a refused full sync, and how far
// ahead an admission reserves returns.
const maxFullSyncRetry = time.Minute

// admissionWait is how long a full sync waits for a slot before it is
// refused: a call that would wait longer, by the time the slots are held on
// average, is refused at once.
const admissionWait = 5 * time.Second

// admission bounds the calls of one kind (full syncs, registrations) served
// at once. A call that finds every slot taken queues for one, unless the
// queue ahead of it is longer than admissionWait, or than half the time its
// caller's deadline leaves; then, or when that wait runs out, it is refused
// with a retry delay. A call refused before its deadline costs its caller a
// retry delay; one that waits past its deadline would cost the work and a
// retry as well.
//
// The retry delays spread the refused calls over the time the slots need to
// serve them (a reservation clock): each refusal is given the next free turn
// after the queue and the calls refused before it, and told to come back
// half its wait before that turn, so that it queues briefly rather than
// finding the slots idle. N calls refused at once thus come back one after
// the other, not together; the clock forgets turns that are past and
// reserves at most maxFullSyncRetry ahead. Turns are half a hold/slots
// apart, twice the rate the slots are measured to serve: the hold measured
// while calls are refused is the busiest (the refused herd makes it so),
// and the work gets faster as the herd thins (a restarted controller past
// its first seconds). A call back too early queues or is refused again with
// a later turn, which costs a refusal; one back too late leaves the slots
// idle, which costs every gateway still waiting. On the bench-admission
// cases, with holds ten or a hundred times shorter after 2 s, turns a whole
// hold/slots apart served all the callers 1.4 to 1.7 times later than half
// apart; with holds that stay long, half apart cost 15-18% more refusals
// and no time.
//
// The hold is a moving average of how long a slot is held, which weighs a
// hold shorter than the average by 1/4 and a longer one by 1/8: when the
// work gets faster (a restarted controller past its busiest seconds) the
// estimate falls within 10% of a hold ten times shorter after 16 releases
// (34 with 1/8), and the delays given follow.
type admission struct {
	what    string // what is served, for the refusal
	slots   chan struct{}
	wait    time.Duration
	waiting atomic.Int64
	hold    atomic.Int64 // how long a slot is held, moving average, ns (0: not known yet)
	// reserve spreads refusals by the reservation clock; false gives each
	// the drain time of the queue it found and the hold a symmetric average
	// (the rule before, kept to be measured against).
	reserve bool

	mu   sync.Mutex // guards next
	next time.Time  // the last turn reserved for a refused call

	admitted, refused atomic.Int64
}

func newAdmission(n int, what string) *admission {
	return &admission{what: what, slots: make(chan struct{}, n), wait: admissionWait, reserve: true}
}

// acquire takes a slot, waiting for one while the queue is short, or
// refuses with a retry delay.
func (a *admission) acquire(ctx context.Context) (release func(), err error) {
	select {
	case a.slots <- struct{}{}:
		return a.taken(), nil
	default:
	}
	q := a.waiting.Add(1)
	defer a.waiting.Add(-1)
	ahead := time.Duration(q) * time.Duration(a.hold.Load()) / time.Duration(cap(a.slots))
	wait := a.wait
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)/2)
	}
	if wait > 0 && ahead <= wait {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case a.slots <- struct{}{}:
			return a.taken(), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	a.refused.Add(1)
	d := min(max(fullSyncRetry, ahead), maxFullSyncRetry)
	if a.reserve {
		// The queue now (the call itself included), after a wait.
		q = a.waiting.Load()
		d = a.retryDelay(time.Now(), q, max(wait, 0))
	}
	return nil, model.Busy(d, "the controller serves %d %s already and %d wait; retry in %s", cap(a.slots), a.what, q-1, d.Round(time.Millisecond))
}

// retryDelay is the delay given to a call refused at now, q calls waiting
// (itself included), which could have waited wait for a slot: the time
// until the next free turn (half a hold/slots after the queue's drain time
// or the last turn reserved, whichever is later), less half of wait, at
// least fullSyncRetry and at most maxFullSyncRetry.
func (a *admission) retryDelay(now time.Time, q int64, wait time.Duration) time.Duration {
	step := time.Duration(a.hold.Load()) / time.Duration(cap(a.slots))
	drain := time.Duration(q) * step
	a.mu.Lock()
	turn := now.Add(drain)
	if a.next.After(turn) {
		turn = a.next // earlier refusals come back first
	}
	turn = turn.Add(step / 2)
	if limit := now.Add(maxFullSyncRetry); turn.After(limit) {
		turn = limit
	}
	a.next = turn
	a.mu.Unlock()
	return min(max(fullSyncRetry, turn.Sub(now)-wait/2), maxFullSyncRetry)
}

// taken returns the release of a slot just taken, which also records how
// long it was held.
func (a *admission) taken() func() {
	a.admitted.Add(1)
	start := time.Now()
	var done bool
	return func() {
		if done {
			return
		}
		done = true
		<-a.slots
		a.held(time.Since(start))
	}
}

// held adds a hold to the moving average (a shorter one weighs more: see
// admission). Concurrent releases may lose a sample, never corrupt it.
func (a *admission) held(took time.Duration) {
	h, t := a.hold.Load(), int64(took)
	switch {
	case h == 0:
		h = t
	case t < h && a.reserve:
		h += (t - h) / 4
	default:
		h += (t - h) / 8
	}
	a.hold.Store(h)
}
