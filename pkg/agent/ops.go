package agent

import (
	"context"
	"maps"
	"slices"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/iotfabric/iotfabric/pkg/cni"
	"github.com/iotfabric/iotfabric/pkg/ipam"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Add allocates the endpoint of req (or returns the one it has), persisted.
// An *errNeedBlock asks the caller to lease a block first.
func (c *Core) Add(ctx context.Context, req *cni.Request) (cni.Endpoint, error) {
	var out cni.Endpoint
	var err error
	e2 := c.doSaved(ctx, func(s *coreState) {
		if err = ctx.Err(); err != nil {
			return // the plugin went away while the request waited
		}
		var e *Endpoint
		if e, err = c.add(s, req); err == nil {
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
		if !e.Attached || e.MAC != mac {
			e.Attached, e.MAC = true, mac
			c.changed(s, false)
			e.rev = s.rev
		} else {
			// A retried ADD recreated the veth: program it again.
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
		st = buildDesired(c.cfg.Underlay, c.cfg.Encaps, s.p.Tables, s.eps, effectiveRoutes(s))
		gen = s.desiredGen
	})
	return st, gen, err
}

// DesiredChanged is signalled whenever the desired state may have changed.
func (c *Core) DesiredChanged() <-chan struct{} { return c.desiredCh }

// EndpointsChanged is signalled whenever an endpoint changed (for reporting).
func (c *Core) EndpointsChanged() <-chan struct{} { return c.endpointCh }

// resume returns where the stream of the controller at addr resumes from.
func (c *Core) resume(ctx context.Context, addr string) (ctlID string, rev int64, err error) {
	err = c.do(ctx, func(s *coreState) {
		if sr := s.sessions[addr]; sr != nil {
			ctlID, rev = sr.controllerID, sr.revision
		}
	})
	return
}

// applyRoutes applies one message of the controller at addr's route stream.
func (c *Core) applyRoutes(ctx context.Context, addr string, m *v1.GatewayRoutes) error {
	return c.do(ctx, func(s *coreState) {
		sr := s.sessions[addr]
		if sr == nil || m.GetKind() == v1.GatewayRoutes_KIND_SNAPSHOT {
			sr = &sessionRoutes{routes: map[routeKey]*route{}}
			s.sessions[addr] = sr
		}
		sr.live = true
		sr.controllerID, sr.revision = m.GetControllerId(), m.GetRevision()
		for _, r := range m.GetDelete() {
			delete(sr.routes, keyOf(r))
		}
		for _, r := range m.GetPut() {
			sr.routes[keyOf(r)] = newRoute(r)
		}
		s.routesDirty = true
		s.desiredGen++
		c.signal(c.desiredCh)
	})
}

// sessionDown records that the stream of the controller at addr ended: its
// routes stay in force while no other controller is live.
func (c *Core) sessionDown(ctx context.Context, addr string) {
	_ = c.do(ctx, func(s *coreState) {
		if sr := s.sessions[addr]; sr != nil && sr.live {
			effectiveRoutes(s) // freeze the set in force
			sr.live = false
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
			switch {
			case network == "" && !e.Attached:
				// Reported once attached: the route is advertised when the
				// pod is wired, and the controller's work is halved.
				continue
			case network != "" && !e.Attached:
				// Before a lease: the controller must count the addresses of
				// ADDs in flight, or it returns the block it thinks has room.
			case !b.fullSync && e.rev <= rev && rev != 0:
				continue
			}
			ae := &v1.AgentEndpoint{Id: e.ID, Network: e.Network, Mac: e.MAC, Label: e.Label, Created: timestamppb.New(e.Created)}
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
