// Package agent is the vrouter agent. Its core holds the endpoints of the
// gateway's pods (addresses, MPLS labels, host-side veths), the address blocks
// the gateway leased, and the routes received from the controllers. One
// goroutine owns all of it; the CNI server and the controller sessions talk to
// it through closures run on that goroutine. Every change is persisted under
// the state directory before it is acknowledged, so a restart (SIGKILL
// included) keeps labels and addresses, and the desired data-plane state is
// rebuilt from it.
//
// The data plane is programmed by one reconcile loop (Reconciler) with two
// possible sources: the core (vrouter-agent --gateway) or a hand-written state
// file (FileSource, vrouter-agent --state).
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/iotfabric/iotfabric/internal/atomicfile"
	"github.com/iotfabric/iotfabric/pkg/cni"
	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/ipam"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/overlay"
)

// Config configures a Core.
type Config struct {
	Gateway  string
	Underlay netip.Addr
	StateDir string
	// Encaps the gateway uses, most preferred first (default MPLSoUDP, MPLSoGRE).
	Encaps []encap.Encap
	Log    *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
}

// sessionRoutes are the routes one controller sent.
type sessionRoutes struct {
	live         bool // received its snapshot (or resumed) on the current stream
	controllerID string
	revision     int64
	routes       map[routeKey]*route
}

// coreState is owned by the core goroutine.
type coreState struct {
	p        *persisted
	eps      map[string]*Endpoint
	labels   map[uint32]string
	pools    map[string]*ipam.Pool
	sessions map[string]*sessionRoutes
	frozen   map[routeKey]*route // the routes in force while no controller is live
	// foreign are addresses of the gateway's blocks that the controller said
	// another endpoint holds (an endpoint created through the API on this
	// gateway): never given to a pod. Not persisted; cleared when the
	// controller hands out a block the agent already has.
	foreign map[string]map[netip.Addr]bool
	rev     uint64 // change counter of endpoints
	delRev  uint64 // rev of the last removal
	dirty   bool   // stateFile needs writing
	// routesPending is what changed in the routes since the last flush to
	// the route log, per controller.
	routesPending map[string]*routeDelta
	routeFlushes  uint64 // flushes handed to the writer
	desiredGen    uint64
	// routesCache holds the desired remote routes between whole builds.
	routesCache desiredRoutes
	afterSave   []func(error)
	// tentative are blocks taken for a fixed address before the controller
	// leased them, by endpoint (until it is attached or refused).
	tentative map[string]Block
}

// Core owns the agent state.
type Core struct {
	cfg  Config
	log  *slog.Logger
	ops  chan func(*coreState)
	done chan struct{}

	// notifications (non-blocking sends; readers then ask the core)
	desiredCh  chan struct{}
	endpointCh chan struct{}
	routesOut  chan routeFlush // to the route log's writer
	rlog       *routeLog
}

// NewCore loads the state directory.
func NewCore(cfg Config) (*Core, *coreState, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.Encaps) == 0 {
		cfg.Encaps = slices.Clone(overlay.DefaultEncapPriority)
	}
	if cfg.Gateway == "" {
		return nil, nil, errors.New("agent: the gateway name is required")
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("agent: state directory: %w", err)
	}
	p, err := loadState(cfg.StateDir)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: %w", err)
	}
	if p.Gateway != "" && p.Gateway != cfg.Gateway {
		return nil, nil, fmt.Errorf("agent: the state directory %s belongs to gateway %q, not %q", cfg.StateDir, p.Gateway, cfg.Gateway)
	}
	p.Gateway = cfg.Gateway
	sessions, rlog, err := openRouteLog(cfg.StateDir)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: %w", err)
	}
	s := &coreState{p: p, eps: map[string]*Endpoint{}, labels: map[uint32]string{}, pools: map[string]*ipam.Pool{},
		sessions: sessions, frozen: map[routeKey]*route{}, foreign: map[string]map[netip.Addr]bool{}, tentative: map[string]Block{},
		routesPending: map[string]*routeDelta{}}
	if len(sessions) == 1 {
		// Shared, as effectiveRoutes shares a single live session's map.
		for _, sr := range sessions {
			s.frozen = sr.routes
		}
	} else {
		for _, sr := range sessions {
			maps.Copy(s.frozen, sr.routes)
		}
	}
	for _, e := range p.Endpoints {
		if other, ok := s.labels[e.Label]; ok {
			return nil, nil, fmt.Errorf("agent: label %d held by both %s and %s", e.Label, other, e.ID)
		}
		s.labels[e.Label] = e.ID
		s.eps[e.ID] = e
	}
	if err := s.rebuildPools(cfg.Gateway); err != nil {
		return nil, nil, fmt.Errorf("agent: %w", err)
	}
	p.Endpoints = nil
	if p.NextLabel < overlay.LabelFirst {
		p.NextLabel = overlay.LabelFirst
	}
	c := &Core{cfg: cfg, log: cfg.Log.With(logkey.Component, logkey.ComponentCore), ops: make(chan func(*coreState)), done: make(chan struct{}),
		desiredCh: make(chan struct{}, 1), endpointCh: make(chan struct{}, 1), routesOut: make(chan routeFlush, 1), rlog: rlog}
	return c, s, nil
}

// rebuildPools makes one ipam.Pool per network, configured like the
// controller's, holding this gateway's blocks and its endpoints' addresses.
func (s *coreState) rebuildPools(gw string) error {
	s.pools = map[string]*ipam.Pool{}
	for n, info := range s.p.Networks {
		pool, err := ipam.NewPool(ipam.Config{Subnets: info.Subnets, BlockV4: info.BlockV4, BlockV6: info.BlockV6})
		if err != nil {
			return fmt.Errorf("network %s: %w", n, err)
		}
		for _, b := range s.p.Blocks {
			if b.Network == n {
				if err := pool.LoadBlock(b.Prefix, gw); err != nil {
					return fmt.Errorf("network %s: %w", n, err)
				}
			}
		}
		for _, e := range s.eps {
			if e.Network != n {
				continue
			}
			for _, a := range e.Addresses {
				if err := pool.LoadAddr(a, e.ID); err != nil {
					return fmt.Errorf("network %s: %w", n, err)
				}
			}
		}
		for a := range s.foreign[n] {
			_ = pool.LoadAddr(a, foreignOwner) // outside the blocks: nothing to avoid
		}
		s.pools[n] = pool
	}
	return nil
}

// foreignOwner owns, in the agent's pools, the addresses another endpoint
// holds at the controller.
const foreignOwner = "\x00controller"

// Run owns the state until ctx ends.
func (c *Core) Run(ctx context.Context, s *coreState) error {
	defer close(c.done)
	written := make(chan struct{})
	go c.writeRoutes(written)
	defer func() { close(c.routesOut); <-written }()
	c.signal(c.desiredCh)
	// Route changes go to the route log at most a second after the first
	// of them; the timer runs only while some are pending, so an idle
	// agent does not wake up every second.
	routesTimer := time.NewTimer(time.Second)
	routesTimer.Stop()
	armed := false
	defer routesTimer.Stop()
	for {
		select {
		case <-ctx.Done():
			if len(s.routesPending) > 0 {
				c.routesOut <- c.routeFlush(s) // the writer is draining: wait for it
			}
			return nil
		case op := <-c.ops:
			op(s)
			// Group commit: run what is queued, then persist once.
		drain:
			for range 256 {
				select {
				case op := <-c.ops:
					op(s)
				default:
					break drain
				}
			}
			c.persist(s)
		case <-routesTimer.C:
			armed = false
			c.flushRoutes(s) // the writer busy: they stay pending, and the timer is armed again
		}
		if !armed && len(s.routesPending) > 0 {
			routesTimer.Reset(time.Second)
			armed = true
		}
	}
}

func (c *Core) persist(s *coreState) {
	var err error
	if s.dirty {
		p := *s.p
		p.Endpoints = make([]*Endpoint, 0, len(s.eps))
		for _, id := range slices.Sorted(maps.Keys(s.eps)) {
			p.Endpoints = append(p.Endpoints, s.eps[id])
		}
		var data []byte
		if data, err = json.Marshal(&p); err == nil {
			err = atomicfile.Write(filepath.Join(c.cfg.StateDir, stateFile), data, 0o600)
		}
		if err != nil {
			c.log.Error("persist state", logkey.Err, err)
		} else {
			s.dirty = false
		}
	}
	for _, f := range s.afterSave {
		f(err)
	}
	s.afterSave = s.afterSave[:0]
}

// flushRoutes hands what changed in the routes to the route log's writer
// (encoding is kept off the core goroutine); while the writer is busy the
// changes keep accumulating. Routes are never changed in place, so the
// writer shares them.
func (c *Core) flushRoutes(s *coreState) {
	if len(s.routesPending) == 0 {
		return
	}
	select {
	case c.routesOut <- c.routeFlush(s):
		s.routesPending = map[string]*routeDelta{}
		s.routeFlushes++
	default:
	}
}

// routeFlush is the pending changes or, when the log would grow past twice
// what the sessions hold, everything they hold (the log is then rewritten).
func (c *Core) routeFlush(s *coreState) routeFlush {
	var pending, live int64
	for _, d := range s.routesPending {
		pending += int64(len(d.routes)) + 1
	}
	for _, sr := range s.sessions {
		live += int64(len(sr.routes)) + 1
	}
	if compactDue(c.rlog.lines.Load(), pending, live) {
		return wholeFlush(s.sessions)
	}
	return routeFlush{sessions: s.routesPending}
}

// writeRoutes appends route changes to the route log until routesOut is
// closed, then closes the log.
func (c *Core) writeRoutes(done chan<- struct{}) {
	defer close(done)
	for fl := range c.routesOut {
		if err := c.rlog.write(fl); err != nil {
			c.log.Error("persist routes", logkey.Err, err)
		}
		c.rlog.flushes.Add(1)
	}
	if err := c.rlog.close(); err != nil {
		c.log.Error("persist routes", logkey.Err, err)
	}
}

func (c *Core) signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// do runs f on the core goroutine and waits for it.
func (c *Core) do(ctx context.Context, f func(*coreState)) error {
	done := make(chan struct{})
	select {
	case c.ops <- func(s *coreState) { f(s); close(done) }:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return errors.New("agent: stopped")
	}
	<-done
	return nil
}

// doSaved runs f on the core goroutine and waits until its changes are on disk.
func (c *Core) doSaved(ctx context.Context, f func(*coreState)) error {
	saved := make(chan error, 1)
	err := c.do(ctx, func(s *coreState) {
		f(s)
		s.afterSave = append(s.afterSave, func(err error) { saved <- err })
	})
	if err != nil {
		return err
	}
	select {
	case err := <-saved:
		return err
	case <-c.done:
		return errors.New("agent: stopped")
	}
}

// changedLocked records an endpoint change.
func (c *Core) changed(s *coreState, removal bool) {
	s.rev++
	if removal {
		s.delRev = s.rev
	}
	s.dirty = true
	s.routesCache.invalidate()
	s.desiredGen++
	c.signal(c.desiredCh)
	c.signal(c.endpointCh)
}

func (c *Core) anyLive(s *coreState) bool {
	for _, sr := range s.sessions {
		if sr.live {
			return true
		}
	}
	return false
}

func (c *Core) offline(s *coreState, format string, a ...any) {
	if c.anyLive(s) {
		return
	}
	line := c.cfg.Now().UTC().Format(time.RFC3339) + " " + fmt.Sprintf(format, a...)
	s.p.OfflineLog = append(s.p.OfflineLog, line)
	if len(s.p.OfflineLog) > 10000 {
		s.p.OfflineLog = s.p.OfflineLog[len(s.p.OfflineLog)-10000:]
	}
}

// allocLabel returns the next free label from NextLabel upward (wrapping).
func (c *Core) allocLabel(s *coreState, id string) (uint32, error) {
	l := s.p.NextLabel
	for range overlay.LabelLast - overlay.LabelFirst + 1 {
		if l > overlay.LabelLast || l < overlay.LabelFirst {
			l = overlay.LabelFirst
		}
		if _, used := s.labels[l]; !used {
			s.labels[l] = id
			s.p.NextLabel = l + 1
			return l, nil
		}
		l++
	}
	return 0, errors.New("no MPLS label left")
}

func (c *Core) tableOf(s *coreState, network string) uint32 {
	if t, ok := s.p.Tables[network]; ok {
		return t
	}
	used := map[uint32]bool{}
	for _, t := range s.p.Tables {
		used[t] = true
	}
	for t := uint32(overlay.TableFirst + 1); t < overlay.TableLast; t++ {
		if !used[t] {
			s.p.Tables[network] = t
			s.dirty = true
			return t
		}
	}
	return 0
}

// errNeedBlock asks the caller to lease a block of the family, then retry.
type errNeedBlock struct {
	network string
	family  ipam.Family
	known   bool // the gateway already holds blocks of the network
}

func (e *errNeedBlock) Error() string {
	return fmt.Sprintf("network %s: no free IPv%d address in the blocks leased to this gateway", e.network, e.family)
}

// familiesOf returns the address families of the network's subnets.
func familiesOf(s *coreState, network string) []ipam.Family {
	var fs []ipam.Family
	for _, p := range s.p.Networks[network].Subnets {
		f := ipam.IPv6
		if p.Addr().Is4() {
			f = ipam.IPv4
		}
		if !slices.Contains(fs, f) {
			fs = append(fs, f)
		}
	}
	slices.Sort(fs)
	return fs
}

// add allocates (or returns) the endpoint of req, with the address fixed
// when it is valid (a pod's iotfabric.io/ip). It runs on the core goroutine.
func (c *Core) add(s *coreState, req *cni.Request, fixed netip.Addr) (*Endpoint, error) {
	id := cni.EndpointID(req.ContainerID, req.IfName)
	if e, ok := s.eps[id]; ok {
		if e.Network != req.Network {
			return nil, cni.Errorf(cni.CodeInvalidNetworkConf, "endpoint %s already exists in network %s, not %s: delete it first", id, e.Network, req.Network)
		}
		if e.Netns != req.Netns {
			e.Netns = req.Netns
			s.dirty = true
		}
		return e, nil
	}
	pool := s.pools[req.Network]
	fams := familiesOf(s, req.Network)
	if pool == nil || len(fams) == 0 {
		return nil, &errNeedBlock{network: req.Network, family: ipam.IPv4}
	}
	var leases []ipam.Lease
	abort := func() {
		for _, l := range leases {
			pool.Abort(l)
		}
	}
	var tentative netip.Prefix
	if fixed.IsValid() {
		l, err := c.reserveFixed(s, req, id, pool, fixed)
		if err != nil {
			return nil, err
		}
		leases, tentative = append(leases, l), l.NewBlock
	}
	for _, f := range fams {
		if fixed.IsValid() && fixed.Is4() == (f == ipam.IPv4) {
			continue
		}
		l, err := pool.Reserve(id, c.cfg.Gateway, f)
		if err == nil && l.NewBlock.IsValid() {
			// Only the controller leases blocks: this one may be another
			// gateway's.
			pool.Abort(l)
			err = ipam.ErrExhausted
		}
		if err != nil {
			abort()
			if errors.Is(err, ipam.ErrExhausted) {
				return nil, &errNeedBlock{network: req.Network, family: f, known: true}
			}
			return nil, err
		}
		leases = append(leases, l)
	}
	if c.tableOf(s, req.Network) == 0 {
		abort()
		return nil, cni.Errorf(cni.CodeInternal, "no routing table left for network %s", req.Network)
	}
	label, err := c.allocLabel(s, id)
	if err != nil {
		abort()
		return nil, cni.Errorf(cni.CodeInternal, "%v", err)
	}
	e := &Endpoint{Endpoint: cni.Endpoint{ID: id, ContainerID: req.ContainerID, IfName: req.IfName, Netns: req.Netns,
		Network: req.Network, Label: label, HostIf: cni.HostIfName(id),
		PodNamespace: req.PodNamespace, PodName: req.PodName, PodUID: req.PodUID}, Created: c.cfg.Now().UTC()}
	for _, l := range leases {
		pool.Commit(l)
		e.Addresses = append(e.Addresses, l.Addr)
	}
	if tentative.IsValid() {
		s.p.Blocks = append(s.p.Blocks, Block{Network: req.Network, Prefix: tentative})
		s.tentative[id] = Block{Network: req.Network, Prefix: tentative}
	}
	s.eps[id] = e
	c.offline(s, "admitted %s in network %s with %v, label %d, while no controller was reachable", id, req.Network, e.Addresses, label)
	c.changed(s, false)
	e.rev = s.rev
	return e, nil
}

// reserveFixed reserves the address a pod asks for. It must lie in the
// network's subnets and be free. When its block is not leased to this
// gateway, the block is taken tentatively: the controller, which records
// the endpoint before the pod gets it, leases the block to this gateway
// with it, or refuses (another gateway holds the block, another endpoint
// the address) and Refuse drops the block again. Without a live controller
// the block cannot be asked for: the ADD is to be tried again later.
func (c *Core) reserveFixed(s *coreState, req *cni.Request, id string, pool *ipam.Pool, a netip.Addr) (ipam.Lease, error) {
	a = a.Unmap()
	pod := req.PodNamespace + "/" + req.PodName
	subnets := s.p.Networks[req.Network].Subnets
	if !slices.ContainsFunc(subnets, func(p netip.Prefix) bool { return p.Contains(a) }) {
		return ipam.Lease{}, cni.Errorf(cni.CodeInvalidNetworkConf, "pod %s asks for address %s, which is in no subnet of network %s %v", pod, a, req.Network, subnets)
	}
	if owner, ok := pool.Owner(a); ok {
		if owner == foreignOwner {
			owner = "an endpoint of the controller"
		} else {
			owner = "endpoint " + owner
		}
		return ipam.Lease{}, cni.Errorf(cni.CodeInvalidNetworkConf, "pod %s asks for address %s of network %s, which %s holds", pod, a, req.Network, owner)
	}
	l, err := pool.ReserveAddr(id, c.cfg.Gateway, a)
	if err != nil {
		return ipam.Lease{}, cni.Errorf(cni.CodeInvalidNetworkConf, "pod %s asks for address %s of network %s: %v", pod, a, req.Network, err)
	}
	if l.NewBlock.IsValid() && !c.anyLive(s) {
		pool.Abort(l)
		return ipam.Lease{}, cni.Errorf(cni.CodeTryAgainLater, "pod %s asks for address %s, outside the blocks leased to this gateway, and no controller is reachable to lease its block; retry when the uplink is back", pod, a)
	}
	return l, nil
}

// dropTentative forgets the block taken for a fixed address of id that the
// controller refused, unless another endpoint has an address in it.
func (c *Core) dropTentative(s *coreState, id string) {
	b, ok := s.tentative[id]
	if !ok {
		return
	}
	delete(s.tentative, id)
	for _, e := range s.eps {
		if e.Network == b.Network && slices.ContainsFunc(e.Addresses, b.Prefix.Contains) {
			return
		}
	}
	s.p.Blocks = slices.DeleteFunc(s.p.Blocks, func(x Block) bool { return x == b })
	if err := s.rebuildPools(c.cfg.Gateway); err != nil {
		c.log.Error("rebuild the address pools", logkey.Err, err)
	}
	s.dirty = true
}

// remove releases an endpoint; it runs on the core goroutine.
func (c *Core) remove(s *coreState, id string) *Endpoint {
	e, ok := s.eps[id]
	if !ok {
		return nil
	}
	delete(s.eps, id)
	delete(s.labels, e.Label)
	if pool := s.pools[e.Network]; pool != nil {
		pool.ReleaseOwner(id)
	}
	c.offline(s, "released %s (network %s, %v, label %d) while no controller was reachable", id, e.Network, e.Addresses, e.Label)
	c.changed(s, true)
	return e
}

// setNetwork records a network's address space.
func (c *Core) setNetwork(s *coreState, network string, info NetInfo) error {
	old, had := s.p.Networks[network]
	s.p.Networks[network] = info
	if err := s.rebuildPools(c.cfg.Gateway); err != nil {
		if had {
			s.p.Networks[network] = old
		} else {
			delete(s.p.Networks, network)
		}
		_ = s.rebuildPools(c.cfg.Gateway)
		return err
	}
	s.dirty = true
	return nil
}

// addBlock records a block leased to the gateway.
func (c *Core) addBlock(s *coreState, network string, prefix netip.Prefix) error {
	prefix = prefix.Masked()
	for _, b := range s.p.Blocks {
		if b.Network == network && b.Prefix == prefix {
			return nil
		}
	}
	s.p.Blocks = append(s.p.Blocks, Block{Network: network, Prefix: prefix})
	sort.Slice(s.p.Blocks, func(i, j int) bool {
		a, b := s.p.Blocks[i], s.p.Blocks[j]
		if a.Network != b.Network {
			return a.Network < b.Network
		}
		return a.Prefix.Addr().Less(b.Prefix.Addr())
	})
	s.dirty = true
	if err := s.rebuildPools(c.cfg.Gateway); err != nil {
		s.p.Blocks = slices.DeleteFunc(s.p.Blocks, func(b Block) bool { return b.Network == network && b.Prefix == prefix })
		_ = s.rebuildPools(c.cfg.Gateway)
		return err
	}
	return nil
}
