package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/store"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Liveness of controller instances, and the sweep of the stream markers that
// dead instances (killed, powered off) left behind.
//
// Each instance rewrites its key controllers/<instance> every interval with
// its heartbeat (one small write, whatever the number of gateways). An
// instance is dead when its heartbeat is older than DeadAfter intervals (its
// own interval, recorded with the heartbeat), or when it has no key at all;
// on a store of its own (bbolt) every other instance is dead. Only the
// stream markers of live instances keep a gateway up.

// DefaultHeartbeatInterval is the liveness interval when none is configured.
const DefaultHeartbeatInterval = 10 * time.Second

// DeadAfter is the number of intervals after which a heartbeat is stale.
const DeadAfter = 3

// heartbeat is the value of a liveness key.
type heartbeat struct {
	Time       time.Time `json:"time"`
	IntervalMS int64     `json:"interval_ms"`
}

// liveStreams is what the controller has open itself: the stream markers it
// wrote and has not removed, so that a clean shutdown (or an instance wrongly
// found dead) can deal with them without listing the store.
type liveStreams struct {
	mu   sync.Mutex
	open map[string]string // stream id -> gateway
}

func (l *liveStreams) add(stream, gw string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open == nil {
		l.open = map[string]string{}
	}
	l.open[stream] = gw
}

func (l *liveStreams) remove(stream string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.open, stream)
}

func (l *liveStreams) snapshot() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]string, len(l.open))
	for s, gw := range l.open {
		out[s] = gw
	}
	return out
}

// liveness tells live instances from dead ones, reading each liveness key
// once (for one transaction attempt).
type liveness struct {
	c    *Controller
	now  time.Time
	self string // an instance taken as alive (the caller's own); "" none
	dead string // an instance taken as dead (the one shutting down); "" none
	seen map[string]livenessKey
}

type livenessKey struct {
	cond  store.Cond // holds while the key is as read
	alive bool
}

func (c *Controller) newLiveness(now time.Time, self, dead string) *liveness {
	return &liveness{c: c, now: now, self: self, dead: dead, seen: map[string]livenessKey{}}
}

// check reads instance's liveness key.
func (l *liveness) check(ctx context.Context, instance string) (livenessKey, error) {
	if k, ok := l.seen[instance]; ok {
		return k, nil
	}
	key := keys.Controller(instance)
	var k livenessKey
	kv, err := l.c.st.Get(ctx, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		k = livenessKey{cond: store.Absent(key)}
	case err != nil:
		return k, err
	default:
		k = livenessKey{cond: store.Unchanged(kv), alive: l.c.fresh(kv, l.now)}
	}
	switch {
	case instance == l.dead:
		k.alive = false
	case instance == l.self:
		k.alive = true
	case l.c.exclusive:
		k.alive = false // the store is this instance's alone
	}
	l.seen[instance] = k
	return k, nil
}

// fresh reports whether a liveness key's heartbeat is recent.
func (c *Controller) fresh(kv store.KV, now time.Time) bool {
	var hb heartbeat
	if err := json.Unmarshal(kv.Value, &hb); err != nil || hb.IntervalMS <= 0 {
		c.log.Warn("corrupt liveness key: the instance is taken as dead", logkey.Key, kv.Key)
		return false
	}
	return now.Sub(hb.Time) <= DeadAfter*time.Duration(hb.IntervalMS)*time.Millisecond
}

// sweepGateway deletes the stream markers on gw of dead instances and, when
// no live instance streams to gw any more, marks it down, in one transaction
// that requires the gateway record, the markers it deletes and the liveness
// keys it relied on unchanged. It returns the number of markers deleted.
func (c *Controller) sweepGateway(ctx context.Context, gw, self, dying string) (int, error) {
	var n int
	err := retry(ctx, func() error {
		n = 0
		streams, _, err := c.st.List(ctx, keys.GatewayStreams(gw))
		if err != nil || len(streams) == 0 {
			return err
		}
		kv, g, err := c.getGatewayKV(ctx, gw)
		if errors.Is(err, model.ErrNotFound) { // deleted: its markers go
			var ops []store.Op
			for _, s := range streams {
				ops = append(ops, store.Delete(s.Key))
			}
			_, err = c.st.Txn(ctx, []store.Cond{store.Absent(keys.Gateway(gw))}, ops)
			if err == nil {
				n = len(ops)
			}
			return err
		}
		if err != nil {
			return err
		}
		live := c.newLiveness(time.Now(), self, dying)
		conds := []store.Cond{store.Unchanged(kv)}
		var ops []store.Op
		up := false
		condOn := map[string]bool{}
		for _, s := range streams {
			_, stream, _ := keys.StreamGateway(s.Key)
			inst := keys.StreamInstance(stream)
			k, err := live.check(ctx, inst)
			if err != nil {
				return err
			}
			if k.alive {
				up = true
				continue
			}
			ops = append(ops, store.Delete(s.Key))
			conds = append(conds, store.Unchanged(s)) // each marker is swept once
			if !condOn[inst] {
				condOn[inst] = true
				conds = append(conds, k.cond)
			}
		}
		if len(ops) == 0 {
			return nil
		}
		markers := len(ops)
		marked := !up && g.State != v1.GatewayState_GATEWAY_STATE_DOWN
		if marked {
			g.State, g.LastSeen, g.Revision = v1.GatewayState_GATEWAY_STATE_DOWN, timestamppb.Now(), 0
			ops = append(ops, store.Put(kv.Key, encode(g)))
		}
		if _, err := c.st.Txn(ctx, conds, ops); err != nil {
			return err
		}
		n = markers
		if !up {
			c.log.Info("gateway down: the controllers streaming to it are gone", logkey.Gateway, gw)
		}
		if marked {
			c.links.record(gw, v1.GatewayState_GATEWAY_STATE_DOWN, v1.GatewayLinkReason_GATEWAY_LINK_REASON_CONTROLLERS_GONE, "")
		}
		return nil
	})
	return n, storeErr(err)
}

// LivenessConfig configures a controller instance's heartbeat and sweeper.
type LivenessConfig struct {
	// Instance is this controller's instance id (its stream ids are
	// <Instance>-<n>).
	Instance string
	// Interval between heartbeats (0: DefaultHeartbeatInterval).
	Interval time.Duration
	// OnSwept is called with the number of stream markers each sweep deleted.
	OnSwept func(n int)
}

// Sweeper keeps a controller instance's heartbeat and sweeps the stream
// markers of dead instances. Start, then Run in one goroutine, then Stop.
type Sweeper struct {
	c   *Controller
	cfg LivenessConfig

	// Owned by Start, Run and Stop (one goroutine at a time).
	last     store.KV  // the liveness key as last written
	lastBeat time.Time // when it was written (or a write last failed)
}

// NewSweeper returns the sweeper of instance cfg.Instance.
func (c *Controller) NewSweeper(cfg LivenessConfig) *Sweeper {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultHeartbeatInterval
	}
	if cfg.OnSwept == nil {
		cfg.OnSwept = func(int) {}
	}
	return &Sweeper{c: c, cfg: cfg}
}

// Start writes the first heartbeat, before the instance writes any stream
// marker.
//
// The markers of dead instances (this controller's previous run's too) are
// swept by Run, at once and in the background; that first sweep lists every
// stream marker, so that markers of instances without a liveness key go too.
// With a controller of 10,000 gateways just killed it is 10,000 conditional
// writes, which, done here, held a restarted controller's API back for 44 s
// while its gateways waited.
func (s *Sweeper) Start(ctx context.Context) error {
	return s.beat(ctx)
}

// Run sweeps the markers of dead instances at once, then beats and sweeps
// every interval until ctx ends.
func (s *Sweeper) Run(ctx context.Context) {
	start := time.Now()
	if err := s.sweep(ctx, true); err != nil && ctx.Err() == nil {
		s.c.log.Warn("stream marker sweep", logkey.Err, err)
	} else if took := time.Since(start); took > time.Second {
		s.c.log.Info("first stream marker sweep done", logkey.Took, took.Round(time.Millisecond))
	}
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.beat(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.c.log.Warn("controller heartbeat", logkey.Err, err)
			continue
		}
		if err := s.sweep(ctx, false); err != nil && ctx.Err() == nil {
			s.c.log.Warn("stream marker sweep", logkey.Err, err)
		}
	}
}

// Stop is the clean shutdown, once the instance's streams have ended: it
// sweeps the markers of streams that did not remove theirs, then deletes the
// instance's liveness key.
func (s *Sweeper) Stop(ctx context.Context) error {
	gws := map[string]bool{}
	for _, gw := range s.c.streams.snapshot() {
		gws[gw] = true
	}
	var errs []error
	for gw := range gws {
		n, err := s.c.sweepGateway(ctx, gw, "", s.cfg.Instance)
		errs = append(errs, err)
		s.cfg.OnSwept(n)
	}
	if err := errors.Join(errs...); err != nil {
		return err // the key stays, to go stale: another instance sweeps
	}
	_, err := s.c.st.Txn(ctx, nil, []store.Op{store.Delete(keys.Controller(s.cfg.Instance))})
	return storeErr(err)
}

// beat rewrites the liveness key. If it was changed by someone else (another
// instance found this one dead, after a long pause), the markers of the
// streams still open here are written again.
func (s *Sweeper) beat(ctx context.Context) error {
	key := keys.Controller(s.cfg.Instance)
	val, err := json.Marshal(heartbeat{Time: time.Now(), IntervalMS: s.cfg.Interval.Milliseconds()})
	if err != nil {
		return err
	}
	cond := store.Absent(key)
	if s.last.Key != "" {
		cond = store.Unchanged(s.last)
	}
	rev, err := s.c.st.Txn(ctx, []store.Cond{cond}, []store.Op{store.Put(key, val)})
	if errors.Is(err, store.ErrConflict) {
		s.c.log.Warn("this controller was found dead by another one (heartbeat late); marking its streams again", logkey.Instance, s.cfg.Instance)
		rev, err = s.c.st.Txn(ctx, nil, []store.Op{store.Put(key, val)})
		if err == nil {
			s.last, s.lastBeat = store.KV{Key: key, Value: val, ModRev: rev}, time.Now()
			s.remark(ctx)
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("liveness key: %w", err)
	}
	s.last, s.lastBeat = store.KV{Key: key, Value: val, ModRev: rev}, time.Now()
	return nil
}

// remark writes again the markers of the streams open here.
func (s *Sweeper) remark(ctx context.Context) {
	for stream, gw := range s.c.streams.snapshot() {
		if err := s.c.OpenGatewayStream(ctx, gw, stream); err != nil {
			s.c.log.Warn("mark gateway stream again", logkey.Gateway, gw, logkey.Err, err)
		}
	}
}

// sweep finds dead instances among the liveness keys and sweeps the markers
// on every gateway that has one of theirs, or, with all, the markers of
// every dead or unknown instance. The markers are listed only then (rare);
// a dead instance's liveness key is deleted once its markers are gone.
func (s *Sweeper) sweep(ctx context.Context, all bool) error {
	ctls, _, err := s.c.st.List(ctx, keys.Controllers)
	if err != nil {
		return err
	}
	now := time.Now()
	var dead []store.KV
	for _, kv := range ctls {
		inst := keys.ControllerInstance(kv.Key)
		if inst != s.cfg.Instance && (s.c.exclusive || !s.c.fresh(kv, now)) {
			dead = append(dead, kv)
		}
	}
	if len(dead) == 0 && !all {
		return nil
	}
	markers, _, err := s.c.st.List(ctx, keys.Streams)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, kv := range ctls {
		known[keys.ControllerInstance(kv.Key)] = true
	}
	for _, kv := range dead {
		known[keys.ControllerInstance(kv.Key)] = false
	}
	gws := map[string]bool{}
	for _, m := range markers {
		gw, stream, ok := keys.StreamGateway(m.Key)
		if !ok {
			continue
		}
		inst := keys.StreamInstance(stream)
		if alive, ok := known[inst]; inst != s.cfg.Instance && (!ok || !alive) {
			gws[gw] = true
		}
	}
	var errs []error
	swept := 0
	for gw := range gws {
		// A long sweep (the 10,000 gateways of a dead controller are
		// 10,000 transactions) must not leave this instance's own
		// heartbeat late: the others would find it dead too.
		// A heartbeat that fails is tried again an interval later, not
		// for every gateway (one warning per interval, not per gateway).
		if !s.lastBeat.IsZero() && time.Since(s.lastBeat) >= s.cfg.Interval {
			if err := s.beat(ctx); err != nil {
				s.lastBeat = time.Now()
				s.c.log.Warn("controller heartbeat", logkey.Err, err)
			}
		}
		n, err := s.c.sweepGateway(ctx, gw, s.cfg.Instance, "")
		swept += n
		errs = append(errs, err)
	}
	s.cfg.OnSwept(swept)
	if swept > 0 {
		s.c.log.Info("swept stream markers of dead controllers", logkey.Markers, swept, logkey.Gateways, len(gws))
	}
	if err := errors.Join(errs...); err != nil {
		return err // the liveness keys stay: the next sweep tries again
	}
	for _, kv := range dead {
		// Only if it is still as found dead.
		if _, err := s.c.st.Txn(ctx, []store.Cond{store.Unchanged(kv)}, []store.Op{store.Delete(kv.Key)}); err != nil && !errors.Is(err, store.ErrConflict) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
