// Package collector reads the sensors of an IQRF network through its
// coordinator: it learns the bonded nodes, enumerates and caches each
// node's sensors, and polls them either node by node (Read Sensors With
// Types) or across all nodes at once (sensor FRC).
package collector

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotfabric/iotfabric/pkg/iqrf/coord"
	"github.com/iotfabric/iotfabric/pkg/iqrf/dpa"
	"github.com/iotfabric/iotfabric/pkg/iqrf/sensor"
	"github.com/iotfabric/iotfabric/pkg/logkey"
)

// Reading is one sensor value.
type Reading struct {
	Node  uint8
	Index int // sensor index on the node
	Type  uint8
	// Metric is the snake_case quantity name, with "_<index>" added when
	// the node has more than one sensor of that quantity.
	Metric string
	Value  float64
	// Time is when the response carrying the value arrived.
	Time time.Time
}

// PollMode selects how sensors are read.
type PollMode int

const (
	// PollRead reads each node with Read Sensors With Types.
	PollRead PollMode = iota
	// PollFRC reads each sensor across all nodes with a sensor FRC, and
	// falls back to PollRead for types that have no FRC.
	PollFRC
)

// ParsePollMode parses "read" or "frc".
func ParsePollMode(s string) (PollMode, error) {
	switch s {
	case "read":
		return PollRead, nil
	case "frc":
		return PollFRC, nil
	}
	return 0, fmt.Errorf("poll mode %q: want read or frc", s)
}

// Metrics counts what the collector did. Fields are updated atomically.
type Metrics struct {
	Polls        atomic.Uint64 // poll requests sent (per node, or per FRC)
	PollErrors   atomic.Uint64 // poll requests that failed (timeouts included)
	Readings     atomic.Uint64 // readings taken and handed to Deliver without error
	NoValue      atomic.Uint64 // values "not available": no reading
	BadPayloads  atomic.Uint64 // responses that did not decode
	LinkOpens    atomic.Uint64
	LinkFailures atomic.Uint64 // failed opens and lost links
	Link         coord.Stats
}

// Config configures a Collector.
type Config struct {
	// Open opens the link to the coordinator; it is called again after the
	// link is lost.
	Open func() (coord.Link, error)
	// Interval between poll rounds (default 10 s).
	Interval time.Duration
	Mode     PollMode
	// Deliver receives the readings of each poll request; an error is
	// logged (the loop goes on).
	Deliver func([]Reading) error
	// ReopenDelay is the wait before reopening a lost link (default 1 s).
	ReopenDelay time.Duration
	// Coord tunes the transactions.
	Coord   coord.Config
	Logger  *slog.Logger
	Metrics *Metrics
}

// NodeInfo is what the collector knows about a bonded node.
type NodeInfo struct {
	Addr  uint8
	HWPID uint16
	Types []uint8 // nil until enumerated
	// Metrics holds the metric name of each sensor index.
	Metrics []string
	// Failures counts consecutive failed requests; after two, the node is
	// skipped for a backoff that doubles up to MaxBackoff, so a node that
	// never answers does not slow the others down.
	Failures int
	NextTry  time.Time
}

// MaxBackoff bounds the wait before a failing node is tried again.
const MaxBackoff = 5 * time.Minute

func (c *Collector) failed(n *NodeInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n.Failures++
	if n.Failures < 2 {
		return
	}
	d := c.cfg.Interval << min(n.Failures-1, 16)
	if d > MaxBackoff || d <= 0 {
		d = MaxBackoff
	}
	n.NextTry = time.Now().Add(d)
}

func (c *Collector) succeeded(n *NodeInfo) {
	c.mu.Lock()
	n.Failures, n.NextTry = 0, time.Time{}
	c.mu.Unlock()
}

// Collector polls an IQRF network.
type Collector struct {
	cfg Config
	log *slog.Logger
	m   *Metrics

	mu    sync.Mutex // guards the fields below
	co    *coord.Coordinator
	nodes map[uint8]*NodeInfo
	order []uint8
	// rescan is set by a coordinator reset: read the bonded nodes again.
	rescan atomic.Bool
}

// New returns a Collector; Run starts it.
func New(cfg Config) *Collector {
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.ReopenDelay <= 0 {
		cfg.ReopenDelay = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = &Metrics{}
	}
	if cfg.Deliver == nil {
		cfg.Deliver = func([]Reading) error { return nil }
	}
	c := &Collector{cfg: cfg, log: cfg.Logger, m: cfg.Metrics, nodes: map[uint8]*NodeInfo{}}
	return c
}

// Metrics returns the counters.
func (c *Collector) Metrics() *Metrics { return c.m }

// Nodes returns the bonded nodes known so far, by address.
func (c *Collector) Nodes() []NodeInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]NodeInfo, 0, len(c.order))
	for _, a := range c.order {
		out = append(out, *c.nodes[a])
	}
	return out
}

// ErrNoLink is returned by Do while no coordinator link is open.
var ErrNoLink = errors.New("no coordinator link")

// Do runs one transaction on the current link (for the JSON API).
func (c *Collector) Do(ctx context.Context, req dpa.Frame, timeout time.Duration) (*coord.Result, error) {
	c.mu.Lock()
	co := c.co
	c.mu.Unlock()
	if co == nil {
		return nil, ErrNoLink
	}
	return co.Do(ctx, req, timeout)
}

// Run polls until ctx ends, reopening the link whenever it is lost.
func (c *Collector) Run(ctx context.Context) error {
	ccfg := c.cfg.Coord
	ccfg.Logger = c.log
	ccfg.Stats = &c.m.Link
	onAsync := ccfg.OnAsync
	ccfg.OnAsync = func(f *dpa.Frame) {
		if f.IsReset() {
			c.rescan.Store(true)
		}
		if onAsync != nil {
			onAsync(f)
		}
	}
	for {
		link, err := c.cfg.Open()
		if err != nil {
			c.m.LinkFailures.Add(1)
			c.log.Warn("cannot open the coordinator link", logkey.Err, err)
		} else {
			c.m.LinkOpens.Add(1)
			co := coord.New(link, ccfg)
			c.mu.Lock()
			c.co = co
			c.mu.Unlock()
			err = c.session(ctx, co)
			c.mu.Lock()
			c.co = nil
			c.mu.Unlock()
			co.Close()
			if ctx.Err() != nil {
				return nil
			}
			c.m.LinkFailures.Add(1)
			c.log.Warn("coordinator link lost", logkey.Err, err)
		}
		t := time.NewTimer(c.cfg.ReopenDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// session polls over one open link until it fails or ctx ends.
func (c *Collector) session(ctx context.Context, co *coord.Coordinator) error {
	c.rescan.Store(true)
	tick := time.NewTicker(c.cfg.Interval)
	defer tick.Stop()
	for {
		if c.rescan.Load() {
			if err := c.scan(ctx, co); err != nil {
				c.log.Warn("cannot read the bonded nodes", logkey.Err, err)
			} else {
				c.rescan.Store(false)
			}
		}
		if !c.rescan.Load() {
			c.round(ctx, co)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-co.Done():
			return co.Err()
		case <-tick.C:
		}
		if err := co.Err(); err != nil {
			return err
		}
	}
}

// scan reads the bonded nodes from the coordinator.
func (c *Collector) scan(ctx context.Context, co *coord.Coordinator) error {
	res, err := co.Do(ctx, dpa.Frame{NADR: dpa.AddrCoordinator, PNUM: dpa.PNUMCoordinator, PCMD: dpa.CmdCoordBonded, HWPID: dpa.HWPIDDoNotCheck}, 0)
	if err != nil {
		return err
	}
	addrs, err := BondedNodes(res.Frame.PData)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	nodes := map[uint8]*NodeInfo{}
	for _, a := range addrs {
		if n, ok := c.nodes[a]; ok {
			nodes[a] = n
		} else {
			nodes[a] = &NodeInfo{Addr: a}
		}
	}
	c.nodes, c.order = nodes, addrs
	c.log.Info("bonded nodes", logkey.Count, len(addrs), logkey.Nodes, fmt.Sprint(addrs))
	return nil
}

// BondedNodes decodes the bitmap of Get Bonded Nodes: only addresses 1-239
// count (bits above are undefined and some coordinators set them).
func BondedNodes(bitmap []byte) ([]uint8, error) {
	if len(bitmap) != 32 {
		return nil, fmt.Errorf("bonded nodes: bitmap of %d bytes, want 32: %w", len(bitmap), dpa.ErrMalformed)
	}
	var out []uint8
	for a := 1; a <= dpa.AddrMaxNode; a++ {
		if bitmap[a/8]&(1<<(a%8)) != 0 {
			out = append(out, uint8(a))
		}
	}
	return out, nil
}

// metricNames names each sensor index: the quantity's metric, with the
// sensor index appended when the node has several of that quantity.
func metricNames(types []uint8) []string {
	count := map[string]int{}
	base := make([]string, len(types))
	for i, t := range types {
		if q := sensor.Lookup(t); q != nil && q.HasValue() {
			base[i] = q.Metric
		} else {
			base[i] = fmt.Sprintf("type_%d", t)
		}
		count[base[i]]++
	}
	for i := range base {
		if count[base[i]] > 1 {
			base[i] = fmt.Sprintf("%s_%d", base[i], i)
		}
	}
	return base
}

// enumerate fills in n's sensor types if they are not cached yet.
func (c *Collector) enumerate(ctx context.Context, co *coord.Coordinator, n *NodeInfo) error {
	res, err := co.Do(ctx, dpa.Frame{NADR: uint16(n.Addr), PNUM: dpa.PNUMStdSensor, PCMD: sensor.CmdEnumerate, HWPID: dpa.HWPIDDoNotCheck}, 0)
	if err != nil {
		return err
	}
	types, err := sensor.ParseEnumerate(res.Frame.PData)
	if err != nil {
		c.m.BadPayloads.Add(1)
		return err
	}
	c.mu.Lock()
	n.HWPID, n.Types, n.Metrics = res.Frame.HWPID, types, metricNames(types)
	c.mu.Unlock()
	c.log.Info("node enumerated", logkey.Node, n.Addr, logkey.HWPID, n.HWPID, logkey.Sensors, len(types))
	return nil
}

// round polls every node once.
func (c *Collector) round(ctx context.Context, co *coord.Coordinator) {
	c.mu.Lock()
	var nodes []*NodeInfo
	for _, a := range c.order {
		nodes = append(nodes, c.nodes[a])
	}
	c.mu.Unlock()
	var ready []*NodeInfo
	for _, n := range nodes {
		if ctx.Err() != nil || co.Err() != nil {
			return
		}
		c.mu.Lock()
		skip := time.Now().Before(n.NextTry)
		c.mu.Unlock()
		if skip {
			continue
		}
		if n.Types == nil {
			c.m.Polls.Add(1)
			if err := c.enumerate(ctx, co, n); err != nil {
				c.m.PollErrors.Add(1)
				c.failed(n)
				c.log.Warn("cannot enumerate sensors", logkey.Node, n.Addr, logkey.Err, err)
				continue
			}
			c.succeeded(n)
		}
		if len(n.Types) > 0 {
			ready = append(ready, n)
		}
	}
	if c.cfg.Mode == PollFRC {
		c.pollFRC(ctx, co, ready)
		return
	}
	for _, n := range ready {
		if ctx.Err() != nil || co.Err() != nil {
			return
		}
		c.pollNode(ctx, co, n, sensor.ReadAll)
	}
}

// pollNode reads the selected sensors of one node with Read Sensors With
// Types.
func (c *Collector) pollNode(ctx context.Context, co *coord.Coordinator, n *NodeInfo, bitmap uint32) {
	c.m.Polls.Add(1)
	res, err := co.Do(ctx, dpa.Frame{NADR: uint16(n.Addr), PNUM: dpa.PNUMStdSensor, PCMD: sensor.CmdReadSensorsWithTypes,
		HWPID: dpa.HWPIDDoNotCheck, PData: sensor.ReadRequest(bitmap)}, 0)
	if err != nil {
		c.m.PollErrors.Add(1)
		c.failed(n)
		c.log.Warn("poll failed", logkey.Node, n.Addr, logkey.Err, err)
		return
	}
	c.succeeded(n)
	vals, err := sensor.AppendReadWithTypes(nil, res.Frame.PData, bitmap)
	if err != nil {
		c.m.BadPayloads.Add(1)
		c.log.Warn("bad sensor payload", logkey.Node, n.Addr, logkey.Err, err, logkey.Response, dpa.DottedHex(res.Response))
		return
	}
	var out []Reading
	for _, v := range vals {
		if v.Index >= len(n.Types) || v.Type != n.Types[v.Index] {
			// The node's sensors changed: enumerate again next round.
			c.log.Warn("sensor types changed", logkey.Node, n.Addr, logkey.Index, v.Index, logkey.Type, v.Type)
			c.mu.Lock()
			n.Types = nil
			c.mu.Unlock()
			return
		}
		if !v.Valid {
			c.m.NoValue.Add(1)
			continue
		}
		out = append(out, Reading{Node: n.Addr, Index: v.Index, Type: v.Type, Metric: n.Metrics[v.Index], Value: v.Value, Time: res.ResponseTime})
	}
	c.deliver(out)
}

func (c *Collector) deliver(out []Reading) {
	if len(out) == 0 {
		return
	}
	if err := c.cfg.Deliver(out); err != nil {
		c.log.Error("cannot store readings", logkey.Count, len(out), logkey.Err, err)
		return
	}
	c.m.Readings.Add(uint64(len(out)))
}

type frcKey struct {
	typ uint8
	nth int // index among the node's sensors of that type
}

type frcTarget struct {
	node  *NodeInfo
	index int // sensor index on the node
}

// pollFRC reads every sensor across all nodes by sensor FRC.
func (c *Collector) pollFRC(ctx context.Context, co *coord.Coordinator, nodes []*NodeInfo) {
	groups := map[frcKey][]frcTarget{}
	var keys []frcKey
	fallback := map[*NodeInfo]uint32{}
	for _, n := range nodes {
		seen := map[uint8]int{}
		for i, t := range n.Types {
			k := frcKey{t, seen[t]}
			seen[t]++
			q := sensor.Lookup(t)
			if q == nil || !q.HasValue() {
				continue
			}
			if q.BestFRC() == 0 || k.nth > 31 {
				fallback[n] |= 1 << i
				continue
			}
			if _, ok := groups[k]; !ok {
				keys = append(keys, k)
			}
			groups[k] = append(groups[k], frcTarget{n, i})
		}
	}
	slices.SortFunc(keys, func(a, b frcKey) int { return int(a.typ)<<8 + a.nth - (int(b.typ)<<8 + b.nth) })
	for _, k := range keys {
		q := sensor.Lookup(k.typ)
		cmd := q.BestFRC()
		targets := groups[k]
		for len(targets) > 0 {
			if ctx.Err() != nil || co.Err() != nil {
				return
			}
			chunk := targets[:min(len(targets), sensor.FRCCapacity(cmd))]
			targets = targets[len(chunk):]
			c.frcChunk(ctx, co, cmd, q, k, chunk)
		}
	}
	for _, n := range nodes {
		if bm := fallback[n]; bm != 0 {
			c.pollNode(ctx, co, n, bm)
		}
	}
}

// frcChunk runs one FRC Send Selective (and Extra Result when needed).
func (c *Collector) frcChunk(ctx context.Context, co *coord.Coordinator, cmd uint8, q *sensor.Quantity, k frcKey, chunk []frcTarget) {
	addrs := make([]uint8, len(chunk))
	for i, t := range chunk {
		addrs[i] = t.node.Addr
	}
	pdata, err := sensor.FRCRequest(cmd, addrs, k.typ, uint8(k.nth))
	if err != nil {
		c.log.Error("cannot build FRC request", logkey.Err, err)
		return
	}
	c.m.Polls.Add(1)
	timeout := time.Second + time.Duration(len(chunk))*200*time.Millisecond
	res, err := co.Do(ctx, dpa.Frame{NADR: dpa.AddrCoordinator, PNUM: dpa.PNUMFRC, PCMD: dpa.CmdFRCSelective, HWPID: dpa.HWPIDDoNotCheck, PData: pdata}, timeout)
	if err != nil {
		c.m.PollErrors.Add(1)
		c.log.Warn("sensor FRC failed", logkey.Type, k.typ, logkey.Nth, k.nth, logkey.Err, err)
		return
	}
	p := res.Frame.PData
	if len(p) != 56 {
		c.m.BadPayloads.Add(1)
		c.log.Warn("bad FRC response", logkey.Type, k.typ, logkey.Length, len(p), logkey.Response, dpa.DottedHex(res.Response))
		return
	}
	if status := p[0]; status > dpa.AddrMaxNode {
		c.m.PollErrors.Add(1)
		c.log.Warn("sensor FRC refused", logkey.Type, k.typ, logkey.Status, status)
		return
	}
	var data [64]byte
	copy(data[:], p[1:])
	var width int
	switch cmd {
	case sensor.FRC1Byte:
		width = 1
	case sensor.FRC2Byte:
		width = 2
	case sensor.FRC4Byte:
		width = 4
	}
	if (len(chunk)+1)*width > 55 {
		extra, err := co.Do(ctx, dpa.Frame{NADR: dpa.AddrCoordinator, PNUM: dpa.PNUMFRC, PCMD: dpa.CmdFRCExtraResult, HWPID: dpa.HWPIDDoNotCheck}, 0)
		if err != nil || len(extra.Frame.PData) != 9 {
			c.m.PollErrors.Add(1)
			c.log.Warn("FRC extra result failed", logkey.Type, k.typ, logkey.Err, err)
		} else {
			copy(data[55:], extra.Frame.PData)
		}
	}
	var out []Reading
	for i, t := range chunk {
		v, st, err := sensor.FRCValue(cmd, q, data[:], i+1)
		if err != nil {
			c.m.BadPayloads.Add(1)
			continue
		}
		switch st {
		case sensor.FRCValid:
			c.mu.Lock()
			metric := t.node.Metrics[t.index]
			c.mu.Unlock()
			out = append(out, Reading{Node: t.node.Addr, Index: t.index, Type: k.typ, Metric: metric, Value: v, Time: res.ResponseTime})
		case sensor.FRCNoResponse:
			c.m.PollErrors.Add(1)
			c.log.Warn("node did not answer the FRC", logkey.Node, t.node.Addr, logkey.Type, k.typ)
		default:
			c.m.NoValue.Add(1)
			c.log.Debug("no FRC value", logkey.Node, t.node.Addr, logkey.Type, k.typ, logkey.Status, st.String())
		}
	}
	c.deliver(out)
}

// ReadBitmap returns the Read Sensors bitmap for the given indexes.
func ReadBitmap(indexes []int) uint32 {
	var b [4]byte
	for _, i := range indexes {
		if i >= 0 && i < 32 {
			b[i/8] |= 1 << (i % 8)
		}
	}
	return binary.LittleEndian.Uint32(b[:])
}
