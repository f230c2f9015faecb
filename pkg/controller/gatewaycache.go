package controller

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/iotfabric/iotfabric/pkg/ipam"
	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/store"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Registrations answered from memory.
//
// A gateway's agent registers at every connection; after a controller
// restart thousands do at once, and almost all of them change nothing. The
// gateway cache keeps what such a registration needs — each gateway's
// record as stored (its encoded value and revision), its block index
// entries, and the owner of every block lease — listed once and then kept
// current by the store's watch. Register answers a gateway it holds whose
// registration changes nothing without a store call (Controller.Register);
// anything else goes to the store as before.
//
// Staleness. The cache is as old as the watch's lag (milliseconds; more on
// an overloaded etcd). It is safe to answer from it because:
//
//   - Its state only ever moves forward through the store's revisions, in
//     order, so an answer is what the store path would have answered at an
//     earlier revision: as if the registration had run just before the
//     changes the watch has not delivered yet.
//   - A registration does not change a gateway's state (its route streams
//     do: OpenGatewayStream marks it up in the transaction of its marker),
//     so the state a stale record shows changes nothing in the answer but
//     the record returned.
//   - Blocks are only ever added by the agent (it merges the blocks of a
//     registration into its own): a block leased meanwhile and missing from
//     the answer is one the agent leased itself or gets at its next
//     registration.
//   - A gateway deleted meanwhile fails at the calls that follow
//     (ReportEndpoints, the route stream's opening), and its agent
//     registers again, which creates it.
//
// This controller's own writes are not left to the watch: every write it
// makes through its store notes the gateways whose keys it touched, with
// the revision it committed at, and such a gateway is answered from memory
// only once the watch has delivered that revision (a lease dropped outright,
// by a network, subnet or gateway deletion, holds every answer back until
// then). So a registration at this controller always sees this controller's
// earlier writes, as the store path does.
//
// What remains is a change made through another controller (or through the
// API of another controller sharing the store) within the watch's lag:
//
//   - an underlay or encapsulation change made through the API there: a
//     registration here that restates the old values is answered
//     "unchanged" and does not write them back; the change stands, as if it
//     had come just after the registration. The agent keeps its own values
//     and restates them at its next registration.
//   - a block released there (its network or subnet removed, the gateway
//     deleted) and even leased to another gateway: the answer may still
//     list it. The agent then holds a block the store does not lease to it,
//     as it would had the release come just after the registration; the
//     addresses it reports from it are refused (ipam.ErrBlockTaken, or the
//     network is gone), and the release reaches the agent as it would have
//     (the network's update or deletion).
//
// Both windows are as long as the watch's lag and are the store path's own
// race with a concurrent change (there the change lands between the
// registration's reads), made wider by that lag.

// unknownRev marks a write whose outcome is not known (it failed other than
// by a condition: it may have committed, at a revision not known here).
const unknownRev = math.MaxInt64

// Backoff between listings of the gateway cache that failed.
const (
	cacheRetryMin = 100 * time.Millisecond
	cacheRetryMax = 5 * time.Second
)

// gatewayCache is what registrations of unchanged gateways are answered from.
// One goroutine (Run) lists and follows the watch and is the only one that
// replaces or applies changes to the state; Register reads it under mu, and
// every write of the controller notes the gateways it touched (wrote).
type gatewayCache struct {
	st  store.Store // listings and the watch (reads only)
	log *slog.Logger

	running atomic.Bool // Run is running: writes are noted

	// Registrations answered from memory and from the store.
	fromMemory, fromStore atomic.Uint64

	mu    sync.RWMutex // guards the fields below
	live  bool         // listed, and following the watch
	rev   int64        // the store revision of the last change applied (or of the listing)
	state cacheState
	// pending holds, per gateway, the revision of this controller's last
	// write to its keys until the state has reached it (unknownRev: until
	// the next change to its keys).
	pending map[string]int64
	// barrier is the revision the state must reach before any answer: a
	// block lease that this controller dropped (whose owner the state may
	// not know yet).
	barrier int64
	batches int // batches applied, for the occasional sweep of pending
}

// cacheState is the gateway cache's content.
type cacheState struct {
	gateways map[string]cachedGateway // by name
	index    map[string][]string      // gateway -> its block index keys, in key order
	owners   map[string]cachedLease   // block lease key -> its owner
}

// cachedGateway is a gateway's record as stored.
type cachedGateway struct {
	value []byte // encoded v1.Gateway
	rev   int64  // its ModRev
}

// cachedLease is a block lease as stored.
type cachedLease struct {
	gateway string
	rev     int64
}

func newGatewayCache(st store.Store, log *slog.Logger) *gatewayCache {
	return &gatewayCache{st: st, log: log, pending: map[string]int64{}}
}

func newCacheState() cacheState {
	return cacheState{gateways: map[string]cachedGateway{}, index: map[string][]string{}, owners: map[string]cachedLease{}}
}

// RunGatewayCache keeps, until ctx ends, the gateway cache that answers the
// registrations of unchanged gateways from memory (gatewaycache.go): it lists
// the gateways, their block indexes and the block leases, then follows the
// store's watch; when the watch fails (its revision compacted) or ends, it
// stops answering and lists again. Call it once per Controller, in a
// goroutine of its own. Without it, every registration reads the store.
func (c *Controller) RunGatewayCache(ctx context.Context) {
	gc := c.gwCache
	gc.running.Store(true)
	defer func() {
		gc.running.Store(false)
		gc.mu.Lock()
		gc.live, gc.state, gc.pending, gc.barrier = false, cacheState{}, map[string]int64{}, 0
		gc.mu.Unlock()
	}()
	wait := cacheRetryMin
	for {
		wasLive, err := gc.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		if wasLive {
			wait = cacheRetryMin
		}
		gc.log.Warn("gateway cache: registrations read the store until it is listed again", logkey.Err, err, logkey.RetryIn, wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, cacheRetryMax)
	}
}

// RegisterCounts returns how many registrations were answered from memory
// (the gateway cache) and how many from the store.
func (c *Controller) RegisterCounts() (memory, fromStore uint64) {
	return c.gwCache.fromMemory.Load(), c.gwCache.fromStore.Load()
}

// follow lists the state, then applies the watch's changes until the watch
// fails or ends (an error) or ctx ends (nil). wasLive says whether the
// listing succeeded.
func (gc *gatewayCache) follow(ctx context.Context) (wasLive bool, err error) {
	start := time.Now()
	state, snaps, from, err := gc.list(ctx)
	if err != nil {
		return false, err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := gc.st.Watch(wctx, "", from)
	gc.mu.Lock()
	gc.state, gc.rev, gc.live = state, from, true
	for gw, rev := range gc.pending {
		if rev <= from {
			delete(gc.pending, gw)
		}
	}
	gc.mu.Unlock()
	defer func() {
		gc.mu.Lock()
		gc.live = false
		gc.mu.Unlock()
	}()
	gc.log.Info("gateway cache listed", logkey.Gateways, len(state.gateways), logkey.Took, time.Since(start).Round(time.Millisecond))
	for {
		select {
		case <-ctx.Done():
			return true, nil
		case b, ok := <-ch:
			if !ok {
				if ctx.Err() != nil {
					return true, nil
				}
				return true, errors.New("the store's change stream ended")
			}
			if b.Err != nil {
				return true, b.Err
			}
			gc.apply(b.Events, snaps)
		}
	}
}

// cacheSnapshots are the pages a listing read, by prefix (see snapshot).
type cacheSnapshots map[string]*snapshot

// list reads the gateways, the block index and every network's block
// leases in pages; it returns the state, the pages' revisions, and the
// revision the watch resumes from (the earliest page's).
func (gc *gatewayCache) list(ctx context.Context) (cacheState, cacheSnapshots, int64, error) {
	state := newCacheState()
	snaps := cacheSnapshots{}
	from := int64(math.MaxInt64)
	read := func(prefix string, put func(store.KV)) error {
		s, err := sendSnapshot(ctx, gc.st, prefix, func(kv store.KV, _ EventType, _ int64) error {
			put(kv)
			return nil
		})
		if err != nil {
			return err
		}
		snaps[prefix] = s
		from = min(from, s.rev())
		return nil
	}
	var nets []string
	err := read(keys.Networks, func(kv store.KV) { nets = append(nets, strings.TrimPrefix(kv.Key, keys.Networks)) })
	if err == nil {
		err = read(keys.Gateways, func(kv store.KV) { state.put(kv.Key, kv.Value, kv.ModRev) })
	}
	if err == nil {
		err = read(keys.GatewayBlockIndex, func(kv store.KV) { state.put(kv.Key, kv.Value, kv.ModRev) })
	}
	for _, n := range nets {
		if err != nil {
			break
		}
		err = read(keys.IPAMBlocks(n), func(kv store.KV) { state.put(kv.Key, kv.Value, kv.ModRev) })
	}
	if err != nil {
		return cacheState{}, nil, 0, err
	}
	return state, snaps, from, nil
}

// seen reports whether the listing already holds the change ev.
func (s cacheSnapshots) seen(ev store.Event) bool {
	prefix := ""
	switch {
	case strings.HasPrefix(ev.Key, keys.Gateways):
		prefix = keys.Gateways
	case strings.HasPrefix(ev.Key, keys.GatewayBlockIndex):
		prefix = keys.GatewayBlockIndex
	default:
		n, _, ok := keys.BlockOf(ev.Key)
		if !ok {
			return false
		}
		prefix = keys.IPAMBlocks(n)
	}
	return s[prefix].seen(ev) // a network listed after: nil, not seen
}

// apply applies a batch of changes (whole revisions, in order).
func (gc *gatewayCache) apply(evs []store.Event, snaps cacheSnapshots) {
	gc.mu.Lock()
	defer gc.mu.Unlock()
	for _, ev := range evs {
		gc.rev = max(gc.rev, ev.Rev)
		if gc.barrier == unknownRev {
			gc.barrier = ev.Rev
		}
		if !cacheKey(ev.Key) || snaps.seen(ev) {
			continue
		}
		var gw string
		if ev.Type == store.EventDelete {
			gw = gc.state.delete(ev.Key)
		} else {
			gw = gc.state.put(ev.Key, ev.Value, ev.Rev)
		}
		if rev, ok := gc.pending[gw]; ok && (rev == unknownRev || rev <= ev.Rev) {
			delete(gc.pending, gw)
		}
	}
	// A write that touched no key the watch reports (the delete of a key
	// already gone) leaves its mark: sweep those now and then.
	if gc.batches++; gc.batches%1024 == 0 {
		for gw, rev := range gc.pending {
			if rev <= gc.rev {
				delete(gc.pending, gw)
			}
		}
	}
}

// cacheKey reports whether key is one the gateway cache keeps.
func cacheKey(key string) bool {
	if strings.HasPrefix(key, keys.Gateways) || strings.HasPrefix(key, keys.GatewayBlockIndex) {
		return true
	}
	_, _, ok := keys.BlockOf(key)
	return ok
}

// put records a gateway, block index entry or block lease and returns the
// gateway it is about ("" for another key).
func (s cacheState) put(key string, value []byte, rev int64) string {
	if gw, ok := strings.CutPrefix(key, keys.Gateways); ok {
		s.gateways[gw] = cachedGateway{value: bytes.Clone(value), rev: rev}
		return gw
	}
	if gw, _, _, ok := keys.GatewayBlockIndexOf(key); ok {
		idx := s.index[gw]
		if i, found := slices.BinarySearch(idx, key); !found {
			s.index[gw] = slices.Insert(idx, i, key)
		}
		return gw
	}
	if _, _, ok := keys.BlockOf(key); ok {
		gw := string(value)
		s.owners[key] = cachedLease{gateway: gw, rev: rev}
		return gw
	}
	return ""
}

// delete forgets a gateway, block index entry or block lease and returns
// the gateway it was about ("" for another key, or a lease not known).
func (s cacheState) delete(key string) string {
	if gw, ok := strings.CutPrefix(key, keys.Gateways); ok {
		delete(s.gateways, gw)
		return gw
	}
	if gw, _, _, ok := keys.GatewayBlockIndexOf(key); ok {
		idx := s.index[gw]
		if i, found := slices.BinarySearch(idx, key); found {
			idx = slices.Delete(idx, i, i+1)
		}
		if len(idx) == 0 {
			delete(s.index, gw)
		} else {
			s.index[gw] = idx
		}
		return gw
	}
	if _, _, ok := keys.BlockOf(key); ok {
		l := s.owners[key]
		delete(s.owners, key)
		return l.gateway
	}
	return ""
}

// lookup returns what a registration of gateway name needs — its record as
// stored and the blocks leased to it, as IndexedGatewayBlocks reads them —
// when the cache is live and confirmed for it (ok false: read the store).
func (gc *gatewayCache) lookup(name string) (cur *v1.Gateway, blocks []ipam.GatewayBlock, ok bool) {
	gc.mu.RLock()
	if !gc.live || gc.rev < gc.barrier {
		gc.mu.RUnlock()
		return nil, nil, false
	}
	if rev, pending := gc.pending[name]; pending && rev > gc.rev {
		gc.mu.RUnlock()
		return nil, nil, false
	}
	g, found := gc.state.gateways[name]
	if !found {
		gc.mu.RUnlock()
		return nil, nil, false
	}
	for _, k := range gc.state.index[name] {
		n, p, ok := keys.GatewayBlockOf(name, k)
		if !ok {
			continue // not stored: put parsed it
		}
		bk := ipam.BlockKey(n, p)
		if l, leased := gc.state.owners[bk]; leased && l.gateway == name {
			blocks = append(blocks, ipam.GatewayBlock{Network: n, Prefix: p, KV: store.KV{Key: bk, Value: []byte(name), ModRev: l.rev}})
		}
	}
	gc.mu.RUnlock()
	cur = &v1.Gateway{}
	if err := proto.Unmarshal(g.value, cur); err != nil {
		return nil, nil, false // the store path reports it
	}
	cur.Revision = g.rev
	return cur, blocks, true
}

// wrote notes a write of this controller: the gateways whose keys it
// touched are answered from memory only once the state has reached its
// revision (err not nil: its outcome is unknown, until the next change to
// their keys).
func (gc *gatewayCache) wrote(ops []store.Op, rev int64, err error) {
	if !gc.running.Load() || errors.Is(err, store.ErrConflict) || !slices.ContainsFunc(ops, func(o store.Op) bool { return cacheKey(o.Key) }) {
		return
	}
	if err != nil {
		rev = unknownRev
	}
	gc.mu.Lock()
	defer gc.mu.Unlock()
	if rev <= gc.rev {
		return // the watch has delivered it already
	}
	mark := func(gw string) {
		if gw != "" {
			gc.pending[gw] = max(gc.pending[gw], rev)
		}
	}
	for _, o := range ops {
		if gw, ok := strings.CutPrefix(o.Key, keys.Gateways); ok {
			mark(gw)
		} else if gw, _, _, ok := keys.GatewayBlockIndexOf(o.Key); ok {
			mark(gw)
		} else if _, _, ok := keys.BlockOf(o.Key); ok {
			if o.Delete {
				gc.barrier = max(gc.barrier, rev)
			} else {
				mark(string(o.Value))
			}
		}
	}
}

// cacheWrites is the store the controller writes through: each write is
// noted by the gateway cache (gatewayCache.wrote) before it returns.
type cacheWrites struct {
	store.Store
	gc *gatewayCache
}

func (s cacheWrites) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, error) {
	rev, err := s.Store.Txn(ctx, conds, ops)
	s.gc.wrote(ops, rev, err)
	return rev, err
}
