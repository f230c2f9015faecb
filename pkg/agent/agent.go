package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/iotfabric/iotfabric/pkg/cni"
	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	"github.com/iotfabric/iotfabric/pkg/validate"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Options configures an Agent.
type Options struct {
	Config
	// Controllers are the controllers' API addresses; the agent keeps a
	// session to each and works while any one is up (or none: headless).
	Controllers []string
	// DialOptions for the controllers (credentials: TLS or insecure).
	DialOptions []grpc.DialOption
	// Keepalive is how long a controller connection may be idle before the
	// agent pings the controller (0: DefaultKeepalive; negative: no pings,
	// a half-open connection is then noticed only by the kernel's TCP
	// keepalive, after hours). gRPC pings no more often than every 10 s.
	Keepalive time.Duration
	// KeepaliveTimeout is how long the agent waits for a ping's answer
	// before it closes the connection and reconnects (0: DefaultKeepaliveTimeout).
	KeepaliveTimeout time.Duration
	// Applier programs the data plane (nil: nothing is programmed).
	Applier Applier
	// HostNetns is the namespace the host-side veths go to ("" = the plugin's).
	HostNetns string
	// PodGatewayAddr is the pods' default-route address, which the data plane
	// puts on their host-side veths (default overlay.DefaultPodGatewayAddr).
	PodGatewayAddr netip.Addr
	// CNISocket is the unix socket the plugin talks to ("" = no CNI server).
	CNISocket string
	// NamespaceNetworks maps a pod's namespace to a network when the plugin
	// gives none (default: the network named like the namespace).
	NamespaceNetworks map[string]string
	// Pods, when set, maps a Kubernetes pod (an ADD with K8S_POD_* in
	// CNI_ARGS and no network from the plugin) to its network, and learns
	// of attached pods (pkg/kube/podwatch).
	Pods           PodResolver
	KernelFeatures []string
	Version        string
	// ResyncInterval re-reads the kernel and re-applies this often (0: never).
	ResyncInterval time.Duration
	// AttachWait bounds how long an attach waits for the data plane (default 5s).
	AttachWait time.Duration
	// LeaseWait is how long, after the agent started, a pod that needs a
	// block waits for a controller session to come up (default 10s).
	LeaseWait time.Duration
	// OnApply, if set, is called after every attempt to program the data
	// plane with the state and the attempt's result (not on the core goroutine).
	OnApply func(overlay.State, error)
	// OnSession, if set, is called when the route stream of a controller
	// becomes live (first message received) and when it ends.
	OnSession func(controller string, live bool)
	// Renewer, if set, runs beside the sessions: it renews the enrolled
	// certificate the DialOptions present (pkg/enrollclient).
	Renewer interface{ Run(context.Context) error }
}

// PodResolver is the agent's view of the Kubernetes pods on its node.
type PodResolver interface {
	// Network returns the network of the pod and the address it asks for
	// (iotfabric.io/ip; the zero Addr when none), or a *cni.Error.
	Network(ctx context.Context, namespace, name, uid string) (string, netip.Addr, error)
	// Attached tells that the pod's endpoint is in place (it must not block).
	Attached(ep cni.Endpoint, gateway netip.Addr)
	// Refused tells that the pod's ADD was refused (it must not block).
	Refused(namespace, name, uid string, err *cni.Error)
}

// Agent is the vrouter agent: core, data-plane loop, controller sessions and
// CNI server.
type Agent struct {
	opts    Options
	log     *slog.Logger
	core    *Core
	state   *coreState
	apply   *Reconciler
	ready   chan struct{}
	started time.Time

	// leaseMu serialises block leases (concurrent ADDs needing a block
	// share the one leased).
	leaseMu sync.Mutex

	// reports orders the endpoint reports (see reportLock).
	reports *reportLock

	// mu guards the fields below.
	mu         sync.Mutex
	clients    map[string]clients // registered sessions
	clientsSet chan struct{}      // closed and replaced when a session registers
	kicks      map[string]chan struct{}
}

// New loads the state directory and prepares the agent.
func New(opts Options) (*Agent, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if !opts.PodGatewayAddr.IsValid() {
		opts.PodGatewayAddr = overlay.DefaultPodGatewayAddr
	}
	if opts.AttachWait <= 0 {
		opts.AttachWait = 5 * time.Second
	}
	if opts.LeaseWait <= 0 {
		opts.LeaseWait = 10 * time.Second
	}
	core, st, err := NewCore(opts.Config)
	if err != nil {
		return nil, err
	}
	a := &Agent{opts: opts, log: opts.Log.With(logkey.Component, logkey.ComponentAgent), core: core, state: st, ready: make(chan struct{}),
		clients: map[string]clients{}, clientsSet: make(chan struct{}), kicks: map[string]chan struct{}{},
		reports: newReportLock()}
	if opts.Applier != nil {
		a.apply = NewReconciler(coreSource{core}, opts.Applier, opts.Log, opts.ResyncInterval, opts.OnApply)
	}
	return a, nil
}

// Core returns the agent's core.
func (a *Agent) Core() *Core { return a.core }

// Ready is closed once the agent serves (CNI socket listening).
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Run runs everything until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	a.started = time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	coreDone := make(chan error, 1)
	wg.Go(func() { coreDone <- a.core.Run(ctx, a.state) })
	if a.apply != nil {
		wg.Go(func() {
			if err := a.apply.Run(ctx); err != nil {
				a.log.Debug("reconcile loop stopped", logkey.Err, err) // the core stopped; Run returns its error
			}
		})
	}
	if a.opts.Renewer != nil {
		wg.Go(func() { a.opts.Renewer.Run(ctx) })
	}
	for _, addr := range a.opts.Controllers {
		kick := make(chan struct{}, 1)
		a.mu.Lock()
		a.kicks[addr] = kick
		a.mu.Unlock()
		wg.Go(func() { a.runSession(ctx, addr, kick) })
	}
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-a.core.EndpointsChanged():
				a.mu.Lock()
				for _, k := range a.kicks {
					select {
					case k <- struct{}{}:
					default:
					}
				}
				a.mu.Unlock()
			}
		}
	})
	if r, ok := a.opts.Pods.(interface{ Run(context.Context) error }); ok {
		wg.Go(func() { _ = r.Run(ctx) })
	}
	srvErr := make(chan error, 1)
	if a.opts.CNISocket != "" {
		l, err := cni.Listen(a.opts.CNISocket)
		if err != nil {
			return err
		}
		srv := &cni.Server{Handler: a, Log: a.log}
		wg.Go(func() { srvErr <- srv.Serve(ctx, l) })
	}
	close(a.ready)
	a.log.Info("running", logkey.Gateway, a.opts.Gateway, logkey.Underlay, a.opts.Underlay, logkey.Controllers, a.opts.Controllers, logkey.CNISocket, a.opts.CNISocket)
	select {
	case <-ctx.Done():
		return nil
	case err := <-srvErr:
		return err
	case err := <-coreDone:
		return err
	}
}

// --- CNI server -----------------------------------------------------------

// Handle serves one request of the CNI plugin.
func (a *Agent) Handle(ctx context.Context, req *cni.Request) *cni.Response {
	start := time.Now()
	resp, err := a.handle(ctx, req)
	a.log.Debug("cni request", logkey.Op, req.Op, logkey.Container, req.ContainerID, logkey.Took, time.Since(start))
	if err != nil {
		var ce *cni.Error
		if !errors.As(err, &ce) {
			ce = &cni.Error{Code: cni.CodeInternal, Msg: err.Error()}
		}
		a.log.Info("cni request refused", logkey.Op, req.Op, logkey.Container, req.ContainerID, logkey.Interface, req.IfName, logkey.Code, ce.Code, logkey.Err, ce.Error())
		if req.Op == cni.OpAdd && a.opts.Pods != nil && req.PodName != "" {
			a.opts.Pods.Refused(req.PodNamespace, req.PodName, req.PodUID, ce)
		}
		return &cni.Response{Error: ce}
	}
	return resp
}

func (a *Agent) handle(ctx context.Context, req *cni.Request) (*cni.Response, error) {
	id := cni.EndpointID(req.ContainerID, req.IfName)
	base := func() *cni.Response {
		return &cni.Response{HostNetns: a.opts.HostNetns, Gateway: a.opts.PodGatewayAddr}
	}
	switch req.Op {
	case cni.OpAdd:
		var fixed netip.Addr
		if req.Network == "" && a.opts.Pods != nil && req.PodName != "" {
			n, ip, err := a.opts.Pods.Network(ctx, req.PodNamespace, req.PodName, req.PodUID)
			if err != nil {
				return nil, err
			}
			req.Network, fixed = n, ip
		}
		if req.Network == "" {
			req.Network = req.PodNamespace
			if n, ok := a.opts.NamespaceNetworks[req.PodNamespace]; ok {
				req.Network = n
			}
		}
		if err := validate.Name("network", req.Network); err != nil {
			return nil, cni.Errorf(cni.CodeInvalidNetworkConf, "%v", err)
		}
		leases := 0
		for range maxAddAttempts {
			ep, err := a.core.AddFixed(ctx, req, fixed)
			var nb *errNeedBlock
			if errors.As(err, &nb) {
				if leases++; leases > 8 {
					break
				}
				if err := a.leaseBlock(ctx, nb); err != nil {
					return nil, err
				}
				continue
			}
			if err != nil {
				return nil, err
			}
			// The controller records the endpoint before the pod gets its
			// addresses; what it refuses is rolled back (by record).
			err = a.record(ctx, ep)
			if errors.Is(err, errSuperseded) {
				continue // refused meanwhile through another report: pick again
			}
			var rf *refusal
			if errors.As(err, &rf) {
				if rf.code == codes.AlreadyExists && len(rf.inUse) > 0 && !fixed.IsValid() {
					continue // those addresses are taken: pick others
				}
				return nil, cni.Errorf(rf.cniCode(), "the controller refused endpoint %s in network %s: %s", ep.ID, ep.Network, rf.msg)
			}
			if err != nil {
				return nil, err
			}
			r := base()
			r.Endpoint = &ep
			return r, nil
		}
		return nil, cni.Errorf(cni.CodeTryAgainLater, "network %s: could not get an address the controller accepts after leasing blocks", req.Network)
	case cni.OpAttach:
		ep, gen, err := a.core.Attach(ctx, id, req.MAC)
		if err != nil {
			return nil, err
		}
		r := base()
		r.Endpoint = &ep
		if a.apply != nil {
			wctx, cancel := context.WithTimeout(ctx, a.opts.AttachWait)
			if err := a.apply.Wait(wctx, gen); err != nil {
				r.Warning = fmt.Sprintf("data plane not fully programmed yet: %v", err)
			}
			cancel()
		}
		if a.opts.Pods != nil && ep.PodName != "" {
			a.opts.Pods.Attached(ep, a.opts.PodGatewayAddr)
		}
		return r, nil
	case cni.OpDel:
		ep, ok, err := a.core.Del(ctx, id)
		if err != nil {
			return nil, err
		}
		r := base()
		if ok {
			r.Released = []cni.Endpoint{ep}
		}
		return r, nil
	case cni.OpCheck:
		ep, ok, err := a.core.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, cni.Errorf(cni.CodeUnknownContainer, "endpoint %s is not known to the vrouter agent", id)
		}
		r := base()
		r.Endpoint = &ep
		return r, nil
	case cni.OpGC:
		released, kept, err := a.core.GC(ctx, req.Valid)
		if err != nil {
			return nil, err
		}
		r := base()
		r.Released, r.Kept = released, kept
		return r, nil
	case cni.OpStatus:
		live, err := a.core.Live(ctx)
		if err != nil {
			return nil, cni.Errorf(cni.CodeNotAvailable, "the vrouter agent is stopping")
		}
		r := base()
		if !live && len(a.opts.Controllers) > 0 {
			r.Warning = "no controller reachable: pods are admitted from the address blocks this gateway leased"
		}
		return r, nil
	}
	return nil, cni.Errorf(cni.CodeDecodingFailure, "unknown operation %q", req.Op)
}

// maxAddAttempts bounds the allocations of one ADD (block leases, and
// addresses the controller says are taken).
const maxAddAttempts = 32

// refusal is the controller's refusal of an endpoint.
type refusal struct {
	code  codes.Code
	msg   string
	inUse []netip.Addr
}

func (r *refusal) Error() string { return r.msg }

// cniCode is the CNI error code of a refusal: 11 (try again later) when the
// same ADD may succeed later, 7 when the request or the network is wrong.
func (r *refusal) cniCode() uint {
	switch r.code {
	case codes.ResourceExhausted, codes.Aborted, codes.Unavailable, codes.DeadlineExceeded:
		return cni.CodeTryAgainLater
	case codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.FailedPrecondition, codes.OutOfRange:
		return cni.CodeInvalidNetworkConf
	}
	return cni.CodeInternal
}

func inUseOf(rf *refusal, err error) []netip.Addr {
	if errors.As(err, &rf) {
		return rf.inUse
	}
	return nil
}

// definitive reports whether a refusal stands (the same report would be
// refused again), so that the endpoint is released.
func definitive(c codes.Code) bool {
	switch c {
	case codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.FailedPrecondition, codes.OutOfRange:
		return true
	}
	return false
}

// registered returns the clients of the sessions registered now.
func (a *Agent) registered() []clients {
	a.mu.Lock()
	defer a.mu.Unlock()
	var cls []clients
	for _, addr := range a.opts.Controllers {
		if c, ok := a.clients[addr]; ok {
			cls = append(cls, c)
		}
	}
	return cls
}

// errSuperseded says that the endpoint an ADD was recording no longer has
// the addresses it was given (another report was refused meanwhile and
// released them): the ADD allocates again.
var errSuperseded = errors.New("the endpoint was released by a refusal of another report")

// record has a controller record ep (its id, network and addresses; the
// label follows at attach) before the pod gets it. It returns nil when a
// controller recorded it, and also when none is reachable (the pod is then
// admitted headless from the gateway's blocks, and reported when a
// session comes up); a *refusal when the controller refused it, and
// errSuperseded when the endpoint was released meanwhile. Whatever fails
// is rolled back on the gateway before the reports' lock is released, so
// that no report of many endpoints sends the addresses the refusal released.
func (a *Agent) record(ctx context.Context, ep cni.Endpoint) error {
	unlock, err := a.reports.shared(ctx)
	if err != nil {
		// The plugin went away: roll back once no report is in flight.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if u, lerr := a.reports.shared(lctx); lerr == nil {
			defer u()
		}
		a.refuse(ctx, ep, nil)
		return err
	}
	defer unlock()
	if cur, ok, err := a.core.Get(ctx, ep.ID); err != nil {
		return err
	} else if !ok || !sameAddrSet(cur.Addresses, ep.Addresses) {
		return errSuperseded
	}
	err = a.recordLocked(ctx, ep)
	if err != nil {
		var rf *refusal
		a.refuse(ctx, ep, inUseOf(rf, err))
	}
	return err
}

// refuse rolls back an endpoint the controller did not record.
func (a *Agent) refuse(ctx context.Context, ep cni.Endpoint, inUse []netip.Addr) {
	if _, err := a.core.Refuse(context.WithoutCancel(ctx), ep.ID, ep.Addresses, inUse); err != nil {
		a.log.Error("roll back a refused endpoint", logkey.Endpoint, ep.ID, logkey.Err, err)
	}
}

func (a *Agent) recordLocked(ctx context.Context, ep cni.Endpoint) error {
	cls := a.registered()
	ae := &v1.AgentEndpoint{Id: ep.ID, Network: ep.Network}
	if ep.PodName != "" {
		// The endpoint names its pod from its first record, not only once
		// its attach is reported.
		ae.Pod = &v1.PodRef{Namespace: ep.PodNamespace, Name: ep.PodName, Uid: ep.PodUID, ContainerId: ep.ContainerID}
	}
	for _, ad := range ep.Addresses {
		ae.Addresses = append(ae.Addresses, ad.String())
	}
	var lastErr error
	for _, cl := range cls {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := cl.agent.ReportEndpoints(rctx, &v1.ReportEndpointsRequest{Gateway: a.opts.Gateway, Endpoints: []*v1.AgentEndpoint{ae}})
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			lastErr = err
			continue
		}
		for _, r := range resp.GetResults() {
			if r.GetId() == ep.ID && r.GetError() != "" {
				rf := &refusal{code: codes.Code(r.GetCode()), msg: bounded(r.GetError())}
				if rf.code == codes.OK {
					rf.code = codes.Unknown
				}
				for _, s := range r.GetAddressesInUse() {
					if x, err := netip.ParseAddr(s); err == nil {
						rf.inUse = append(rf.inUse, x)
					}
				}
				return rf
			}
		}
		return nil
	}
	switch status.Code(lastErr) {
	case codes.OK, codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		if lastErr != nil {
			a.log.Warn("no controller answered; endpoint admitted from the gateway's blocks", logkey.Endpoint, ep.ID, logkey.Err, lastErr)
		}
		return nil
	}
	return &refusal{code: status.Code(lastErr), msg: bounded(status.Convert(lastErr).Message())}
}

// bounded cuts a message from the controller to at most 1 KiB.
func bounded(s string) string {
	if len(s) <= 1024 {
		return s
	}
	return s[:1024] + "…"
}

type clients struct {
	agent v1.AgentServiceClient
	net   v1.NetworkServiceClient
	// reported is the endpoint revision the session's reporter sent last.
	reported *atomic.Uint64
}

// ensureNetwork learns the network's address space from the controller.
func (a *Agent) ensureNetwork(ctx context.Context, cl clients, network string) error {
	if ok, err := a.core.networkKnown(ctx, network); err != nil || ok {
		return err
	}
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := cl.net.GetNetwork(gctx, &v1.NameRequest{Name: network})
	if status.Code(err) == codes.NotFound {
		return cni.Errorf(cni.CodeInvalidNetworkConf, "unknown network %q: create it on the controller (iotfabricctl network create) or fix \"network\" / the namespace mapping in the plugin configuration", network)
	}
	if err != nil {
		return fmt.Errorf("network %s: %w", network, err)
	}
	info := NetInfo{BlockV4: int(n.GetIpv4BlockSize()), BlockV6: int(n.GetIpv6BlockSize())}
	for _, sn := range n.GetSubnets() {
		p, err := netip.ParsePrefix(sn)
		if err != nil {
			return fmt.Errorf("network %s: subnet %q: %w", network, sn, err)
		}
		info.Subnets = append(info.Subnets, p)
	}
	return a.core.SetNetwork(ctx, network, info)
}

// leaseBlock leases a block of nb's network from a registered controller,
// after telling it every address this gateway uses in the network (so that it
// hands out a new block rather than the one it believes has room).
func (a *Agent) leaseBlock(ctx context.Context, nb *errNeedBlock) error {
	a.leaseMu.Lock()
	defer a.leaseMu.Unlock()
	// Just after a start the sessions are still connecting: give them a
	// moment rather than refusing the pod.
	wait := time.NewTimer(a.opts.LeaseWait)
	defer wait.Stop()
	if nb.known && a.core.hasRoom(ctx, nb.network, nb.family) {
		return nil // leased meanwhile by another ADD
	}
	var cls []clients
	for {
		a.mu.Lock()
		for _, addr := range a.opts.Controllers {
			if c, ok := a.clients[addr]; ok {
				cls = append(cls, c)
			}
		}
		set := a.clientsSet
		a.mu.Unlock()
		if len(cls) > 0 || len(a.opts.Controllers) == 0 || time.Since(a.started) > a.opts.LeaseWait {
			break
		}
		select {
		case <-set:
			continue
		case <-wait.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		break
	}
	if len(cls) == 0 {
		if nb.known {
			return cni.Errorf(cni.CodeTryAgainLater, "network %s: every address of the blocks this gateway leased is in use and no controller is reachable to lease another; retry when the uplink is back", nb.network)
		}
		return cni.Errorf(cni.CodeTryAgainLater, "network %s is not known on this gateway yet and no controller is reachable to look it up; retry when the uplink is back", nb.network)
	}
	var lastErr error
	for _, cl := range cls {
		if err := a.ensureNetwork(ctx, cl, nb.network); err != nil {
			var ce *cni.Error
			if errors.As(err, &ce) {
				return err
			}
			lastErr = err
			continue
		}
		if !nb.known {
			return nil // the pool exists now; the caller retries
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := a.reportInFlight(rctx, cl, nb.network)
		if err == nil {
			var r *v1.LeaseBlockResponse
			r, err = cl.agent.LeaseBlock(rctx, &v1.LeaseBlockRequest{Gateway: a.opts.Gateway, Network: nb.network, Family: uint32(nb.family)})
			if err == nil {
				var p netip.Prefix
				if p, err = netip.ParsePrefix(r.GetBlock().GetPrefix()); err == nil {
					cancel()
					// The controller counts the block's addresses again:
					// forget those it said were taken (they may be free now).
					if err := a.core.clearForeign(ctx, nb.network); err != nil {
						return err
					}
					return a.core.AddBlocks(ctx, []Block{{Network: nb.network, Prefix: p}})
				}
			}
		}
		cancel()
		lastErr = err
	}
	if status.Code(lastErr) == codes.ResourceExhausted {
		return cni.Errorf(cni.CodeTryAgainLater, "network %s has no free IPv%d address block left: %v", nb.network, nb.family, status.Convert(lastErr).Message())
	}
	return cni.Errorf(cni.CodeTryAgainLater, "network %s: lease an address block: %v", nb.network, lastErr)
}

// reportInFlight reports the network's endpoints changed since the
// session's last report and those of ADDs in flight (refusals are left to
// their ADDs), so that the controller counts their addresses before it
// picks a block to lease.
func (a *Agent) reportInFlight(ctx context.Context, cl clients, network string) error {
	unlock, err := a.reports.exclusive(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	b, err := a.core.report(ctx, cl.reported.Load(), false, network)
	if err != nil {
		return err
	}
	for chunk := range slices.Chunk(b.endpoints, MaxReportEndpoints) {
		if _, err := cl.agent.ReportEndpoints(ctx, &v1.ReportEndpointsRequest{Gateway: a.opts.Gateway, Endpoints: chunk}); err != nil {
			return err
		}
	}
	return nil
}

// --- controller sessions --------------------------------------------------

func (a *Agent) setClient(addr string, c *clients) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c == nil {
		delete(a.clients, addr)
	} else {
		a.clients[addr] = *c
		close(a.clientsSet)
		a.clientsSet = make(chan struct{})
	}
}

func (a *Agent) runSession(ctx context.Context, addr string, kick chan struct{}) {
	log := a.log.With(logkey.Controller, addr)
	// The caller's options come after the agent's reconnect backoff, so
	// that they can change it.
	dopts := append([]grpc.DialOption{grpc.WithConnectParams(reconnect)}, a.opts.DialOptions...)
	if kp, ok := a.opts.keepalive(); ok {
		dopts = append(dopts, grpc.WithKeepaliveParams(kp))
	}
	conn, err := grpc.NewClient(addr, dopts...)
	if err != nil {
		log.Error("controller address", logkey.Err, err)
		return
	}
	defer conn.Close()
	cl := clients{agent: v1.NewAgentServiceClient(conn), net: v1.NewNetworkServiceClient(conn), reported: new(atomic.Uint64)}
	bo := newBackoff(sessionRetryMin, sessionRetryMax)
	for ctx.Err() == nil {
		start := time.Now()
		err := a.sessionOnce(ctx, addr, cl, kick, log)
		a.setClient(addr, nil)
		a.core.sessionDown(context.WithoutCancel(ctx), addr)
		if a.opts.OnSession != nil {
			a.opts.OnSession(addr, false)
		}
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 10*time.Second {
			bo.reset()
		}
		wait := bo.next()
		if d, ok := retryDelay(err); ok {
			wait = max(wait, jitterRetry(d))
		}
		log.Warn("controller session ended; retrying", logkey.Err, err, logkey.RetryIn, wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (a *Agent) sessionOnce(ctx context.Context, addr string, cl clients, kick chan struct{}, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gw := &v1.Gateway{Name: a.opts.Gateway, UnderlayAddress: a.opts.Underlay.String()}
	for _, e := range a.opts.Encaps {
		if e == encap.MPLSoUDP || e == encap.MPLSoGRE {
			gw.Encapsulations = append(gw.Encapsulations, e.API())
		}
	}
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	reg, err := cl.agent.Register(rctx, &v1.RegisterRequest{Gateway: gw, KernelFeatures: a.opts.KernelFeatures,
		Architecture: runtime.GOARCH, AgentVersion: a.opts.Version}, grpc.WaitForReady(false))
	rcancel()
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	var blocks []Block
	for _, b := range reg.GetBlocks() {
		if err := a.ensureNetwork(ctx, cl, b.GetNetwork()); err != nil {
			log.Warn("network of a leased block", logkey.Network, b.GetNetwork(), logkey.Err, err)
			continue
		}
		if p, err := netip.ParsePrefix(b.GetPrefix()); err == nil {
			blocks = append(blocks, Block{Network: b.GetNetwork(), Prefix: p})
		}
	}
	if err := a.core.AddBlocks(ctx, blocks); err != nil {
		log.Warn("blocks from the controller", logkey.Err, err)
	}
	cl.reported.Store(0)
	// A full sync the controller refuses for load (RESOURCE_EXHAUSTED with
	// a retry delay) is asked again on the same registration and connection
	// once the delay has passed: the refusal costs one call, not a session.
	var rev uint64
	err = a.retryRefused(ctx, log, "ReportEndpoints", func() (err error) {
		rev, err = a.report(ctx, cl.agent, 0, true, log)
		return err
	})
	if err != nil {
		return err
	}
	cl.reported.Store(rev)
	a.setClient(addr, &cl)
	var (
		stream grpc.ServerStreamingClient[v1.GatewayRoutes]
		first  *v1.GatewayRoutes
		from   int64
	)
	err = a.retryRefused(ctx, log, "WatchGatewayRoutes", func() error {
		ctlID, fr, digests, err := a.core.resume(ctx, addr)
		if err != nil {
			return err
		}
		from = fr
		sctx, scancel := context.WithCancel(ctx)
		s, err := cl.agent.WatchGatewayRoutes(sctx, &v1.WatchGatewayRoutesRequest{Gateway: a.opts.Gateway, FromRevision: from, ControllerId: ctlID,
			MaxMessageBytes: MaxRouteMessage, Digests: digests})
		if err == nil {
			first, err = recvUpdate(s)
		}
		if err != nil {
			scancel()
			return fmt.Errorf("route stream: %w", err)
		}
		stream = s
		context.AfterFunc(ctx, scancel)
		return nil
	})
	if err != nil {
		return err
	}
	log.Info("controller session up", logkey.Blocks, len(blocks), logkey.ResumeFrom, from)
	errc := make(chan error, 2)
	go func() {
		m := first
		for {
			if err := a.core.applyRoutes(ctx, addr, m); err != nil {
				errc <- err
				return
			}
			if m == first && a.opts.OnSession != nil {
				a.opts.OnSession(addr, true)
			}
			var err error
			if m, err = recvUpdate(stream); err != nil {
				errc <- fmt.Errorf("route stream: %w", err)
				return
			}
		}
	}()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-kick:
			}
			r, err := a.report(ctx, cl.agent, rev, false, log)
			if err != nil {
				errc <- err
				return
			}
			rev = r
			cl.reported.Store(r)
		}
	}()
	return <-errc
}

// MaxReportEndpoints is the most endpoints (or endpoint ids) one
// ReportEndpoints message carries. A full sync of more is sent in pages: the
// ids, page by page, for the controller to delete the gateway's other
// endpoints (v1.EndpointPrune), then the endpoints in reports of this size.
const MaxReportEndpoints = 1000

// report sends the endpoint changes after rev and returns the revision sent.
// It holds the reports' lock from the snapshot of the changes until their
// refusals are applied.
func (a *Agent) report(ctx context.Context, cl v1.AgentServiceClient, rev uint64, full bool, log *slog.Logger) (uint64, error) {
	unlock, err := a.reports.exclusive(ctx)
	if err != nil {
		return rev, err
	}
	defer unlock()
	b, err := a.core.nextReport(ctx, rev, full)
	if err != nil {
		return rev, err
	}
	if !b.fullSync && len(b.endpoints) == 0 {
		return b.rev, nil
	}
	start := time.Now()
	var deleted int64
	send := func(req *v1.ReportEndpointsRequest) error {
		req.Gateway = a.opts.Gateway
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		resp, err := cl.ReportEndpoints(rctx, req)
		if err != nil {
			return fmt.Errorf("report endpoints: %w", err)
		}
		deleted += resp.GetDeleted()
		return a.applyRefusals(ctx, req.GetEndpoints(), resp.GetResults(), log)
	}
	offline := b.offline
	if b.fullSync && len(b.endpoints) <= MaxReportEndpoints {
		err = send(&v1.ReportEndpointsRequest{Endpoints: b.endpoints, FullSync: true, OfflineLog: offline})
	} else {
		if b.fullSync {
			err = a.sendPrune(b.endpoints, offline, send)
			offline = nil
		}
		for chunk := range slices.Chunk(b.endpoints, MaxReportEndpoints) {
			if err != nil {
				break
			}
			err = send(&v1.ReportEndpointsRequest{Endpoints: chunk, OfflineLog: offline})
			offline = nil
		}
	}
	if err != nil {
		return rev, err
	}
	if len(b.offline) > 0 {
		a.core.offlineReported(ctx, len(b.offline))
	}
	log.Debug("endpoints reported", logkey.Count, len(b.endpoints), logkey.FullSync, b.fullSync, logkey.OfflineRecords, len(b.offline), logkey.Deleted, deleted, logkey.Took, time.Since(start))
	return b.rev, nil
}

// sendPrune sends the pages of a full sync of eps (sorted by id): each page
// lists up to MaxReportEndpoints ids and covers the range from the previous
// page's last id (exclusive) to its own last id, the last page to the end.
func (a *Agent) sendPrune(eps []*v1.AgentEndpoint, offline []string, send func(*v1.ReportEndpointsRequest) error) error {
	after := ""
	for i := 0; i < len(eps); i += MaxReportEndpoints {
		page := eps[i:min(i+MaxReportEndpoints, len(eps))]
		pr := &v1.EndpointPrune{After: after}
		for _, e := range page {
			pr.Keep = append(pr.Keep, e.GetId())
		}
		if i+len(page) < len(eps) {
			pr.Through = page[len(page)-1].GetId()
		}
		if err := send(&v1.ReportEndpointsRequest{Prune: pr, OfflineLog: offline}); err != nil {
			return err
		}
		after, offline = pr.Through, nil
	}
	return nil
}

// applyRefusals releases the reported endpoints the controller refused for
// good: the agent keeps no address the controller has not recorded (the
// pod loses it).
func (a *Agent) applyRefusals(ctx context.Context, sentEPs []*v1.AgentEndpoint, results []*v1.EndpointResult, log *slog.Logger) error {
	var sent map[string][]netip.Addr
	for _, r := range results {
		if r.GetError() == "" {
			continue
		}
		if !definitive(codes.Code(r.GetCode())) {
			log.Warn("controller refused an endpoint for now", logkey.Endpoint, r.GetId(), logkey.Reason, bounded(r.GetError()))
			continue
		}
		if sent == nil {
			sent = map[string][]netip.Addr{}
			for _, e := range sentEPs {
				for _, s := range e.GetAddresses() {
					if x, err := netip.ParseAddr(s); err == nil {
						sent[e.GetId()] = append(sent[e.GetId()], x)
					}
				}
			}
		}
		var inUse []netip.Addr
		for _, s := range r.GetAddressesInUse() {
			if x, err := netip.ParseAddr(s); err == nil {
				inUse = append(inUse, x)
			}
		}
		if ok, err := a.core.Refuse(ctx, r.GetId(), sent[r.GetId()], inUse); err != nil {
			return err
		} else if ok {
			log.Warn("controller refused an endpoint; released", logkey.Endpoint, r.GetId(), logkey.Reason, bounded(r.GetError()))
		}
	}
	return nil
}

// MaxRouteMessage is the largest route stream message the agent asks for
// (the controller sends at most 1 MiB in any case); larger updates come in
// chunks.
const MaxRouteMessage = 1 << 20

// maxUpdateChunks bounds the chunks of one route stream update (with 1 MiB
// chunks, 4 GiB): past it the stream is broken, not merely large.
const maxUpdateChunks = 4096

// recvUpdate receives one update of a route stream, joining its chunks: it
// returns only once the last chunk (more unset) arrived, so that a snapshot
// is applied whole or not at all.
func recvUpdate(stream grpc.ServerStreamingClient[v1.GatewayRoutes]) (*v1.GatewayRoutes, error) {
	m, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	for n := 1; m.GetMore(); n++ {
		next, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		if next.GetKind() != m.GetKind() || next.GetRevision() != m.GetRevision() || n >= maxUpdateChunks {
			return nil, fmt.Errorf("chunk %d of update %d: kind %v revision %d (a broken chunk sequence)", n, m.GetRevision(), next.GetKind(), next.GetRevision())
		}
		m.Put = append(m.Put, next.GetPut()...)
		m.Delete = append(m.Delete, next.GetDelete()...)
		m.Keep = append(m.Keep, next.GetKeep()...)
		m.More = next.GetMore()
	}
	return m, nil
}

// retryDelay returns the delay a controller asked for in a RESOURCE_EXHAUSTED
// error (google.rpc.RetryInfo).
func retryDelay(err error) (time.Duration, bool) {
	st, ok := status.FromError(err) // err may wrap the status
	if !ok || st.Code() != codes.ResourceExhausted {
		return 0, false
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return min(ri.GetRetryDelay().AsDuration(), maxRetryDelay), true
		}
	}
	return 0, false
}

// jitterRetry is the wait after a controller asked to retry in d: never
// sooner, spread uniformly over a quarter of d more. The controller already
// spreads the delays of the calls it refuses over the time it needs to serve
// them (one turn each); the quarter only keeps gateways given the same delay
// (the 1 s floor, the cap) from returning in the same instant, and costs at
// most a quarter of d more where a whole d more (the spread before, which
// controllers of older versions relied on alone) doubled the wait.
func jitterRetry(d time.Duration) time.Duration {
	d = max(d, 0)
	return d + rand.N(d/4+1)
}

// retryRefused runs call, and again after the retry delay each time the
// controller refuses it for load; other errors end it.
func (a *Agent) retryRefused(ctx context.Context, log *slog.Logger, method string, call func() error) error {
	for {
		err := call()
		d, ok := retryDelay(err)
		if !ok {
			return err
		}
		wait := jitterRetry(d)
		log.Info("controller busy; asking again", logkey.Method, method, logkey.RetryIn, wait, logkey.Err, err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// maxRetryDelay caps the delay a controller may ask for.
const maxRetryDelay = 5 * time.Minute
