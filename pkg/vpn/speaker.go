package vpn

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/store"
)

// The speaker goroutine makes every call to the bgp.Speaker, one at a time
// and in the order the owner goroutine queued them. The owner never waits
// for it: it keeps a queue (speakerQueue) and hands the head over whenever
// the speaker goroutine is idle. Route changes queued while a call runs are
// merged into one batch, so a slow Announce is followed by one call carrying
// everything that changed meanwhile.

// speakerJob is one unit of work for the speaker goroutine.
type speakerJob struct {
	routes *routeBatch        // withdraw, then announce
	peer   *store.Event       // a peer put or deleted through the API
	sync   bool               // make the API peers equal to peers (after a reload)
	peers  []store.KV         // for sync
	filter *[]bgp.RouteTarget // the import filter to set
}

// routeBatch is a set of route changes, the latest per key.
type routeBatch struct {
	ann map[bgp.RouteKey]bgp.Route
	wd  map[bgp.RouteKey]struct{}
}

func (b *routeBatch) add(ann []bgp.Route, wd []bgp.RouteKey) {
	for _, k := range wd {
		delete(b.ann, k)
		b.wd[k] = struct{}{}
	}
	for _, rt := range ann {
		k := rt.Key()
		delete(b.wd, k)
		b.ann[k] = rt
	}
}

// speakerQueue is the owner's queue of work for the speaker goroutine. Its
// methods do nothing on a nil queue (no BGP).
type speakerQueue struct {
	jobs []speakerJob
}

// routes queues route changes, merged into the last queued batch.
func (q *speakerQueue) routes(ann []bgp.Route, wd []bgp.RouteKey) {
	if q == nil || len(ann)+len(wd) == 0 {
		return
	}
	if n := len(q.jobs); n > 0 && q.jobs[n-1].routes != nil {
		q.jobs[n-1].routes.add(ann, wd)
		return
	}
	b := &routeBatch{ann: make(map[bgp.RouteKey]bgp.Route, len(ann)), wd: make(map[bgp.RouteKey]struct{}, len(wd))}
	b.add(ann, wd)
	q.jobs = append(q.jobs, speakerJob{routes: b})
}

// peer queues a stored peer's change.
func (q *speakerQueue) peer(ev store.Event) {
	if q != nil {
		q.jobs = append(q.jobs, speakerJob{peer: &ev})
	}
}

// syncPeers queues the whole set of stored peers.
func (q *speakerQueue) syncPeers(peers []store.KV) {
	if q != nil {
		q.jobs = append(q.jobs, speakerJob{sync: true, peers: peers})
	}
}

// filter queues a new import filter; a filter still queued is replaced.
func (q *speakerQueue) filter(rts []bgp.RouteTarget) {
	if q == nil {
		return
	}
	for i := range q.jobs {
		if q.jobs[i].filter != nil {
			q.jobs[i].filter = &rts
			return
		}
	}
	q.jobs = append(q.jobs, speakerJob{filter: &rts})
}

func (q *speakerQueue) pop() {
	q.jobs[0] = speakerJob{}
	q.jobs = q.jobs[1:]
}

// speakerLoop is the speaker goroutine as the owner sees it.
type speakerLoop struct {
	jobs    chan speakerJob                // unbuffered: taken only when idle
	started chan (<-chan []bgp.RouteEvent) // the subscription, once started
	errc    chan error                     // a failure that ends Run
	refused chan []RefusedRoute            // routes the speaker would not advertise
	done    chan struct{}
}

// startSpeaker starts the speaker goroutine: it starts the speaker with
// initial, configures the stored peers, subscribes to received routes, then
// runs jobs until ctx ends, and stops the speaker.
func (r *Runner) startSpeaker(ctx context.Context, initial []bgp.Route, filter []bgp.RouteTarget, peers []store.KV) *speakerLoop {
	l := &speakerLoop{jobs: make(chan speakerJob), started: make(chan (<-chan []bgp.RouteEvent), 1),
		errc: make(chan error, 1), refused: make(chan []RefusedRoute), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		if err := r.speak(ctx, l, initial, filter, peers); err != nil && ctx.Err() == nil {
			l.errc <- err
		}
	}()
	return l
}

func (r *Runner) speak(ctx context.Context, l *speakerLoop, initial []bgp.Route, filter []bgp.RouteTarget, peers []store.KV) error {
	t0 := time.Now()
	if err := r.sp.Start(ctx, initial); err != nil {
		return fmt.Errorf("start BGP speaker: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r.sp.Stop(sctx)
	}()
	r.log.Info("BGP speaker started", logkey.Routes, len(initial), logkey.Took, time.Since(t0).Round(time.Millisecond))
	api := map[netip.Addr]bgp.PeerConfig{} // peers configured from the store
	for _, kv := range peers {
		r.peerEvent(ctx, api, store.Event{Type: store.EventPut, Key: kv.Key, Value: kv.Value})
	}
	// The filter is in force before the first received route is delivered.
	if err := r.sp.SetImportFilter(ctx, filter); err != nil {
		return fmt.Errorf("set the import filter: %w", err)
	}
	recv, err := r.sp.Subscribe(ctx)
	if err != nil {
		return fmt.Errorf("subscribe to received routes: %w", err)
	}
	l.started <- recv
	for {
		select {
		case <-ctx.Done():
			return nil
		case j := <-l.jobs:
			switch {
			case j.routes != nil:
				refused, err := r.sendRoutes(ctx, j.routes)
				if err != nil {
					return err
				}
				if len(refused) > 0 {
					select {
					case l.refused <- refused:
					case <-ctx.Done():
						return nil
					}
				}
			case j.filter != nil:
				if err := r.sp.SetImportFilter(ctx, *j.filter); err != nil && ctx.Err() == nil {
					return fmt.Errorf("set the import filter: %w", err)
				}
			case j.peer != nil:
				r.peerEvent(ctx, api, *j.peer)
			case j.sync:
				r.syncPeers(ctx, api, j.peers)
			}
		}
	}
}

// sendRoutes withdraws, then announces, one batch. Routes the speaker
// refuses (bgp.NotAdvertisedError) are returned, not an error: the others
// went out, and the refused ones are reported on their endpoints.
func (r *Runner) sendRoutes(ctx context.Context, b *routeBatch) ([]RefusedRoute, error) {
	if len(b.wd) > 0 {
		wd := make([]bgp.RouteKey, 0, len(b.wd))
		for k := range b.wd {
			wd = append(wd, k)
		}
		if err := r.sp.Withdraw(ctx, wd); err != nil && ctx.Err() == nil {
			return nil, fmt.Errorf("withdraw %d routes: %w", len(wd), err)
		}
	}
	var refused []RefusedRoute
	if len(b.ann) > 0 {
		ann := make([]bgp.Route, 0, len(b.ann))
		for _, rt := range b.ann {
			ann = append(ann, rt)
		}
		err := r.sp.Announce(ctx, ann)
		var na *bgp.NotAdvertisedError
		switch {
		case errors.As(err, &na):
			for _, re := range na.Routes {
				refused = append(refused, RefusedRoute{Route: b.ann[re.Key], Reason: "not advertised: " + re.Err.Error()})
			}
			r.log.Error("routes not advertised: the BGP speaker refused them", logkey.Count, len(na.Routes), logkey.Routes, firstKeys(na.Routes, 3), logkey.Err, na.Routes[0].Err)
		case err != nil && ctx.Err() == nil:
			return nil, fmt.Errorf("announce %d routes: %w", len(ann), err)
		}
	}
	r.log.Debug("routes updated", logkey.Announced, len(b.ann), logkey.Withdrawn, len(b.wd))
	return refused, nil
}

// firstKeys names the first n refused routes (a log line stays short).
func firstKeys(rs []bgp.RouteError, n int) []string {
	out := make([]string, 0, min(n, len(rs)))
	for _, r := range rs[:min(n, len(rs))] {
		out = append(out, r.Key.String())
	}
	return out
}

// peerEvent applies a peer added or removed through the API (stored so that
// every controller sharing the store peers with it, and a restart keeps it).
// api holds the peers configured so far.
func (r *Runner) peerEvent(ctx context.Context, api map[netip.Addr]bgp.PeerConfig, ev store.Event) {
	addr, err := netip.ParseAddr(strings.TrimPrefix(ev.Key, PeerPrefix))
	if err != nil {
		r.log.Error("corrupt peer key", logkey.Key, ev.Key)
		return
	}
	if ev.Type == store.EventDelete {
		if err := r.sp.DeletePeer(ctx, addr); err != nil {
			r.log.Warn("delete peer", logkey.Peer, addr, logkey.Err, err)
		}
		delete(api, addr)
		return
	}
	p, err := DecodePeer(ev.Value)
	if err != nil {
		r.log.Error("corrupt peer record", logkey.Key, ev.Key, logkey.Err, err)
		return
	}
	if _, exists := api[addr]; exists {
		r.sp.DeletePeer(ctx, addr)
	}
	api[addr] = p
	if err := r.sp.AddPeer(ctx, p); err != nil {
		r.log.Warn("add peer", logkey.Peer, addr, logkey.Err, err)
		return
	}
	r.log.Info("peer configured", logkey.Peer, addr, logkey.ASN, p.ASN)
}

// syncPeers makes the API peers equal to the stored ones: removed peers are
// deleted, new or changed ones (re)configured, unchanged ones left alone.
func (r *Runner) syncPeers(ctx context.Context, api map[netip.Addr]bgp.PeerConfig, peers []store.KV) {
	stored := map[netip.Addr]store.KV{}
	for _, kv := range peers {
		if a, err := netip.ParseAddr(strings.TrimPrefix(kv.Key, PeerPrefix)); err == nil {
			stored[a] = kv
		}
	}
	for a := range api {
		if _, ok := stored[a]; !ok {
			r.peerEvent(ctx, api, store.Event{Type: store.EventDelete, Key: PeerPrefix + a.String()})
		}
	}
	for a, kv := range stored {
		if p, err := DecodePeer(kv.Value); err == nil {
			if cur, ok := api[a]; ok && cur == p {
				continue
			}
		}
		r.peerEvent(ctx, api, store.Event{Type: store.EventPut, Key: kv.Key, Value: kv.Value})
	}
}
