package agent

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/iotfabric/iotfabric/pkg/cni"
	"github.com/iotfabric/iotfabric/pkg/ipam"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	"github.com/iotfabric/iotfabric/pkg/routedigest"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Add allocates the endpoint of req (or returns the one it has), persisted.
// An *errNeedBlock asks the caller to lease a block first.
func (c *Core) Add(ctx context.Context, req *cni.Request) (cni.Endpoint, error) {
	return c.AddFixed(ctx, req, netip.Addr{})
}

// AddFixed is Add with the address fixed when it is valid (a pod's
// iotfabric.io/ip; its other address families are allocated as usual).
func (c *Core) AddFixed(ctx context.Context, req *cni.Request, fixed netip.Addr) (cni.Endpoint, error) {
	var out cni.Endpoint
	var err error
	e2 := c.doSaved(ctx, func(s *coreState) {
		if err = ctx.Err(); err != nil {
			return // the plugin went away while the request waited
		}
		var e *Endpoint
		if e, err = c.add(s, req, fixed); err == nil {
			out = cloneEP(e)
		}
	})
	if e2 != nil {
		return out, e2
	}
	return out, err
}

func cloneEP(e *Endpoint) cni.Endpoint {
	o := e.Endpoint
	o.Addresses = slices.Clone(e.Addresses)
	return o
}

// Attach marks the endpoint's veth pair in place; the returned generation is
// the desired state that includes it.
func (c *Core) Attach(ctx context.Context, id, mac string) (cni.Endpoint, uint64, error) {
	var out cni.Endpoint
	var gen uint64
	var err error
	e2 := c.doSaved(ctx, func(s *coreState) {
		if err = ctx.Err(); err != nil {
			return
		}
		e, ok := s.eps[id]
		if !ok {
			err = cni.Errorf(cni.CodeUnknownContainer, "endpoint %s is not known to the agent (was it deleted meanwhile?)", id)
			return
		}
		delete(s.tentative, id) // the controller recorded it: its block is leased
		if !e.Attached || e.MAC != mac {
			e.Attached, e.MAC = true, mac
			c.changed(s, false)
			e.rev = s.rev
		} else {
			// A retried ADD recreated the veth: program it again.
			s.routesCache.invalidate()
			s.desiredGen++
			c.signal(c.desiredCh)
		}
		out, gen = cloneEP(e), s.desiredGen
	})
	if e2 != nil {
		return out, 0, e2
	}
	return out, gen, err
}

// Del releases the endpoint; ok is false when it was already gone.
func (c *Core) Del(ctx context.Context, id string) (cni.Endpoint, bool, error) {
	var out cni.Endpoint
	var ok bool
	err := c.doSaved(ctx, func(s *coreState) {
		if e := c.remove(s, id); e != nil {
			out, ok = cloneEP(e), true
		}
	})
	return out, ok, err
}

// Refuse removes an endpoint the controller refused (releasing its
// addresses and label) if it still has the addresses the refused report
// gave (a refusal of an earlier report does not touch an endpoint given
// other addresses since); the addresses in inUse, which the controller says
// another endpoint holds, are not given to pods any more. It reports
// whether the endpoint was removed.
func (c *Core) Refuse(ctx context.Context, id string, reported, inUse []netip.Addr) (bool, error) {
	var ok bool
	err := c.doSaved(ctx, func(s *coreState) {
		if e, found := s.eps[id]; !found || !sameAddrSet(e.Addresses, reported) {
			return
		}
		e := c.remove(s, id)
		ok = true
		c.dropTentative(s, id)
		if len(inUse) == 0 {
			return
		}
		if s.foreign[e.Network] == nil {
			s.foreign[e.Network] = map[netip.Addr]bool{}
		}
		for _, a := range inUse {
			s.foreign[e.Network][a] = true
			if pool := s.pools[e.Network]; pool != nil {
				_ = pool.LoadAddr(a, foreignOwner)
			}
		}
	})
	return ok, err
}

func sameAddrSet(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// clearForeign forgets the addresses the controller said were held in the
// network (they may have been freed since).
func (c *Core) clearForeign(ctx context.Context, network string) error {
	return c.doSaved(ctx, func(s *coreState) {
		if len(s.foreign[network]) == 0 {
			return
		}
		delete(s.foreign, network)
		if err := s.rebuildPools(c.cfg.Gateway); err != nil {
			c.log.Error("rebuild address pools", logkey.Network, network, logkey.Err, err)
		}
	})
}

// Get returns the endpoint.
func (c *Core) Get(ctx context.Context, id string) (cni.Endpoint, bool, error) {
	var out cni.Endpoint
	var ok bool
	err := c.do(ctx, func(s *coreState) {
		if e, found := s.eps[id]; found {
			out, ok = cloneEP(e), true
		}
	})
	return out, ok, err
}

// Endpoints returns every endpoint, sorted by id.
func (c *Core) Endpoints(ctx context.Context) ([]cni.Endpoint, error) {
	var out []cni.Endpoint
	err := c.do(ctx, func(s *coreState) {
		for _, id := range slices.Sorted(maps.Keys(s.eps)) {
			out = append(out, cloneEP(s.eps[id]))
		}
	})
	return out, err
}

// GC releases every endpoint not in valid and returns them, and the host-side
// veths of the endpoints kept.
func (c *Core) GC(ctx context.Context, valid []cni.Attachment) (released []cni.Endpoint, kept []string, err error) {
	keep := map[string]bool{}
	for _, a := range valid {
		keep[cni.EndpointID(a.ContainerID, a.IfName)] = true
	}
	err = c.doSaved(ctx, func(s *coreState) {
		for _, id := range slices.Sorted(maps.Keys(s.eps)) {
			if keep[id] {
				kept = append(kept, s.eps[id].HostIf)
				continue
			}
			released = append(released, cloneEP(c.remove(s, id)))
		}
	})
	return released, kept, err
}

// AddBlocks records blocks leased to the gateway.
func (c *Core) AddBlocks(ctx context.Context, blocks []Block) error {
	var err error
	e2 := c.doSaved(ctx, func(s *coreState) {
		for _, b := range blocks {
			if e := c.addBlock(s, b.Network, b.Prefix); e != nil {
				c.log.Warn("leased block refused", logkey.Network, b.Network, logkey.Block, b.Prefix, logkey.Err, e)
				err = e
			}
		}
	})
	if e2 != nil {
		return e2
	}
	return err
}

// SetNetwork records a network's address space (subnets, block sizes).
func (c *Core) SetNetwork(ctx context.Context, network string, info NetInfo) error {
	var err error
	if e2 := c.doSaved(ctx, func(s *coreState) { err = c.setNetwork(s, network, info) }); e2 != nil {
		return e2
	}
	return err
}

// hasRoom reports whether the network's blocks have a free address of f.
func (c *Core) hasRoom(ctx context.Context, network string, f ipam.Family) bool {
	var ok bool
	_ = c.do(ctx, func(s *coreState) {
		pool := s.pools[network]
		if pool == nil {
			return
		}
		l, err := pool.Reserve("\x00probe", c.cfg.Gateway, f)
		if err == nil {
			ok = !l.NewBlock.IsValid()
			pool.Abort(l)
		}
	})
	return ok
}

// networkKnown reports whether the network's address space is known.
func (c *Core) networkKnown(ctx context.Context, network string) (bool, error) {
	var ok bool
	err := c.do(ctx, func(s *coreState) { _, ok = s.p.Networks[network] })
	return ok, err
}

// Blocks returns the blocks the gateway holds.
func (c *Core) Blocks(ctx context.Context) ([]Block, error) {
	var out []Block
	err := c.do(ctx, func(s *coreState) { out = slices.Clone(s.p.Blocks) })
	return out, err
}

// Desired returns the desired data-plane state and its generation.
func (c *Core) Desired(ctx context.Context) (overlay.State, uint64, error) {
	var st overlay.State
	var gen uint64
	err := c.do(ctx, func(s *coreState) {
		routes := effectiveRoutes(s)
		st = buildDesired(c.cfg.Underlay, c.cfg.Encaps, s.p.Tables, s.eps, routes)
		s.routesCache.rebuild(s, c.cfg.Underlay, routes)
		gen = s.desiredGen
	})
	return st, gen, err
}

// DesiredChanged is signalled whenever the desired state may have changed.
func (c *Core) DesiredChanged() <-chan struct{} { return c.desiredCh }

// EndpointsChanged is signalled whenever an endpoint changed (for reporting).
func (c *Core) EndpointsChanged() <-chan struct{} { return c.endpointCh }

// resume returns where the stream of the controller at addr resumes from,
// and the digests of the routes held from it, per network (for when the
// controller cannot resume from that revision).
func (c *Core) resume(ctx context.Context, addr string) (ctlID string, rev int64, digests []*v1.RouteDigest, err error) {
	err = c.do(ctx, func(s *coreState) {
		sr := s.sessions[addr]
		if sr == nil {
			return
		}
		ctlID, rev = sr.controllerID, sr.revision
		byNet := map[string]int{}
		for k := range sr.routes {
			byNet[k.network()]++
		}
		ds := make(map[string]*routedigest.Digest, len(byNet))
		for n, count := range byNet {
			d := routedigest.New(routedigest.BucketsFor(count))
			ds[n] = &d
		}
		for k, r := range sr.routes {
			network, prefix, rd := k.parts()
			ds[network].Add(prefix, rd, r.digest(), 1)
		}
		for _, n := range slices.Sorted(maps.Keys(ds)) {
			d := ds[n]
			digests = append(digests, &v1.RouteDigest{Network: n, Count: uint64(d.Count), Buckets: d.Buckets})
		}
	})
	return
}

// applyRoutes applies one update of the controller at addr's route stream
// (its chunks joined): a snapshot replaces the routes held from it, except
// those in its keep scopes; then deletes, then puts.
func (c *Core) applyRoutes(ctx context.Context, addr string, m *v1.GatewayRoutes) error {
	return c.do(ctx, func(s *coreState) {
		sr := s.sessions[addr]
		prev := map[routeKey]*route{}
		if sr != nil {
			prev = sr.routes
		}
		snapshot := m.GetKind() == v1.GatewayRoutes_KIND_SNAPSHOT || sr == nil
		// Route by route into the desired state's cache: a change on a
		// live session. A snapshot, or a session going live, is applied
		// whole.
		cache := &s.routesCache
		if snapshot || !sr.live {
			cache.invalidate()
		}
		if snapshot {
			next := &sessionRoutes{routes: map[routeKey]*route{}}
			if len(m.GetKeep()) > 0 {
				keep := keepScopes(m.GetKeep())
				for k, r := range prev {
					if keep(k) {
						next.routes[k] = r
					}
				}
			}
			sr = next
			s.sessions[addr] = sr
		}
		sr.live = true
		sr.controllerID, sr.revision = m.GetControllerId(), m.GetRevision()
		d := s.routesPending[addr]
		if d == nil {
			d = &routeDelta{routes: map[routeKey]*route{}}
			s.routesPending[addr] = d
		}
		d.controllerID, d.revision = sr.controllerID, sr.revision
		// note records in the cache that the route held under k went from
		// old to r on this session: with other sessions live, as the
		// change of the route in force. (The union of several live
		// sessions, s.frozen, is built again whenever it is read while
		// they are live: it needs no update here.)
		var lives []*sessionRoutes
		if cache.valid {
			if lives = liveSessions(s); len(lives) == 1 {
				lives = nil
			}
		}
		set := func(k routeKey, r *route) {
			if r == nil {
				delete(sr.routes, k)
			} else {
				sr.routes[k] = r
			}
		}
		note := func(k routeKey, old, r *route) {
			if lives == nil {
				set(k, r)
				cache.note(c.cfg.Underlay, k, old, r)
				return
			}
			before := inForce(lives, k)
			set(k, r)
			after := inForce(lives, k)
			if before == after {
				return
			}
			cache.note(c.cfg.Underlay, k, before, after)
		}
		for _, r := range m.GetDelete() {
			k := keyOf(r)
			if old, ok := sr.routes[k]; ok {
				note(k, old, nil)
				if !snapshot {
					d.routes[k] = nil
				}
			}
		}
		for _, r := range m.GetPut() {
			k, nr, err := newRoute(r)
			if err != nil {
				c.log.Error("route from a controller not kept", logkey.Network, r.GetNetwork(), logkey.Err, fmt.Errorf("%s: %w", r.GetPrefix(), err))
				continue
			}
			if old, ok := prev[k]; ok && old.wire == nr.wire {
				// Unchanged: nothing to persist. Its key is the held
				// route's (a map stores the key it is given).
				k = old.key()
				sr.routes[k] = old
				if !snapshot {
					continue
				}
			} else {
				note(k, sr.routes[k], nr)
			}
			if !snapshot {
				d.routes[k] = sr.routes[k]
			}
		}
		if snapshot {
			// Persist the difference from what was held, not the snapshot.
			for k := range prev {
				if _, ok := sr.routes[k]; !ok {
					d.routes[k] = nil
				}
			}
			for k, r := range sr.routes {
				if prev[k] != r {
					d.routes[k] = r
				}
			}
		}
		s.desiredGen++
		c.signal(c.desiredCh)
	})
}

// keepScopes returns whether a route key is in one of the scopes.
func keepScopes(scopes []*v1.RouteScope) func(routeKey) bool {
	type bucketSet struct {
		n       int
		buckets map[int]bool // nil: the whole network
	}
	byNet := map[string]bucketSet{}
	for _, sc := range scopes {
		n := int(sc.GetBucketCount())
		if n == 0 || !routedigest.Valid(n) {
			byNet[sc.GetNetwork()] = bucketSet{}
			continue
		}
		bs := bucketSet{n: n, buckets: map[int]bool{}}
		for _, b := range sc.GetBuckets() {
			bs.buckets[int(b)] = true
		}
		byNet[sc.GetNetwork()] = bs
	}
	return func(k routeKey) bool {
		network, prefix, rd := k.parts()
		bs, ok := byNet[network]
		if !ok {
			return false
		}
		return bs.buckets == nil || bs.buckets[routedigest.Bucket(prefix, rd, bs.n)]
	}
}

// sessionDown records that the stream of the controller at addr ended: its
// routes stay in force while no other controller is live.
func (c *Core) sessionDown(ctx context.Context, addr string) {
	_ = c.do(ctx, func(s *coreState) {
		if sr := s.sessions[addr]; sr != nil && sr.live {
			effectiveRoutes(s) // freeze the set in force
			sr.live = false
			s.routesCache.invalidate()
			s.desiredGen++
			c.signal(c.desiredCh)
		}
	})
}

// Live reports whether any controller stream is live.
func (c *Core) Live(ctx context.Context) (bool, error) {
	var live bool
	err := c.do(ctx, func(s *coreState) { live = c.anyLive(s) })
	return live, err
}

// reportBatch is what a controller session sends next.
type reportBatch struct {
	endpoints []*v1.AgentEndpoint
	fullSync  bool
	offline   []string
	rev       uint64
}

// nextReport returns the endpoint changes after rev (all of them, as a full
// sync, when full or when an endpoint was removed since).
func (c *Core) nextReport(ctx context.Context, rev uint64, full bool) (reportBatch, error) {
	return c.report(ctx, rev, full, "")
}

// report is nextReport; with network set, it lists that network's endpoints
// changed after rev and those not attached yet (not as a full sync), and no
// offline log.
func (c *Core) report(ctx context.Context, rev uint64, full bool, network string) (reportBatch, error) {
	var b reportBatch
	err := c.do(ctx, func(s *coreState) {
		b.rev = s.rev
		if network == "" {
			b.fullSync = full || s.delRev > rev
			b.offline = slices.Clone(s.p.OfflineLog)
		}
		for _, id := range slices.Sorted(maps.Keys(s.eps)) {
			e := s.eps[id]
			if network != "" && e.Network != network {
				continue
			}
			label, mac := e.Label, e.MAC
			if !e.Attached {
				// Reported without a label until attached (the route is
				// advertised once the pod is wired), and only by full syncs
				// and before a lease: the ADD records it itself (Agent.record),
				// and a full sync must not delete the endpoint of an ADD in
				// flight.
				label, mac = 0, ""
			}
			switch {
			case network == "" && !e.Attached && !b.fullSync:
				continue
			case network != "" && !e.Attached:
				// Before a lease: the controller must count the addresses of
				// ADDs in flight, or it returns the block it thinks has room.
			case !b.fullSync && e.rev <= rev && rev != 0:
				continue
			}
			ae := &v1.AgentEndpoint{Id: e.ID, Network: e.Network, Mac: mac, Label: label, Created: timestamppb.New(e.Created)}
			if e.PodName != "" {
				ae.Pod = &v1.PodRef{Namespace: e.PodNamespace, Name: e.PodName, Uid: e.PodUID, ContainerId: e.ContainerID}
			}
			for _, a := range e.Addresses {
				ae.Addresses = append(ae.Addresses, a.String())
			}
			b.endpoints = append(b.endpoints, ae)
		}
	})
	return b, err
}

// offlineReported drops the first n offline-log lines (sent to a controller).
func (c *Core) offlineReported(ctx context.Context, n int) {
	_ = c.do(ctx, func(s *coreState) {
		n = min(n, len(s.p.OfflineLog))
		if n > 0 {
			s.p.OfflineLog = slices.Delete(s.p.OfflineLog, 0, n)
			s.dirty = true
		}
	})
}
