// Package gobgp implements bgp.Speaker with an embedded GoBGP
// (github.com/osrg/gobgp/v3). It is the only place in iotfabric that knows
// GoBGP's API: protobuf messages, anypb attributes, its gRPC stream.
//
// Routes are fed to GoBGP in batches through its AddPathStream call (wire
// encoded NLRI and attributes, one management operation per batch), over a
// private unix socket. Received routes and session changes come from one
// WatchEvent subscription (post-policy Adj-RIB-In and peer state, so our
// own routes cost nothing there) whose callback only queues and signals; a
// dispatcher goroutine decodes them and keeps the table of received routes
// that subscriptions are served from. ListPath is never used, and ListPeer
// only by ListPeers (an operator's call, not the update path). The
// dispatcher also applies the import filter (SetImportFilter) and counts
// each peer's routes for its prefix limit; the received routes are kept
// compactly (held.go). Announce refuses, and reports, routes no UPDATE can
// carry.
package gobgp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/iotfabric/iotfabric/internal/mapshrink"
	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/logkey"
)

// batchSize is the number of paths per AddPathStream message: one GoBGP
// management operation (GoBGP v3 still sends one UPDATE per VPN path).
const batchSize = 500

// Speaker is a bgp.Speaker backed by an embedded GoBGP server.
type Speaker struct {
	cfg bgp.Config
	log *slog.Logger

	// mu guards the lifecycle fields.
	mu       sync.Mutex
	srv      *server.BgpServer
	conn     *grpc.ClientConn
	client   api.GobgpApiClient
	sockDir  string
	cancel   context.CancelFunc
	running  bool
	stopped  bool
	peerAddr map[netip.Addr]bgp.PeerConfig

	wg sync.WaitGroup

	// rxMu guards the queue filled by the watch callback and the state
	// the dispatcher derives from it.
	rxMu     sync.Mutex
	rxQueue  [][]*api.Path
	rxSignal chan struct{}
	received map[receivedKey]held
	// receivedPeak and refusedPeak are the most entries received and
	// refused held since they were last built: a Go map keeps the room of
	// its peak after deletes, so a withdrawn flood would keep megabytes;
	// the dispatcher builds them again when they fall under a quarter of
	// that (mapshrink.Shrink).
	receivedPeak int
	refusedPeak  int
	attrs        interner
	subs         map[*subscriber]struct{}
	// filter holds the route targets a received route needs one of to be
	// kept (SetImportFilter); nil: keep every route.
	filter map[bgp.RouteTarget]struct{}
	// refused holds the keys of the routes the filter refused, so that
	// count (per peer and family: the routes the peer holds in GoBGP's
	// Adj-RIB-In) stays exact, with their route targets (interned in
	// refusedAttrs), so that a filter widened by targets none of them
	// carries needs no soft reset.
	refused      map[receivedKey]*routeAttrs
	refusedAttrs interner
	count        map[peerFamily]uint32
	// peerIdx numbers the peers routes were received from (receivedKey.peer).
	peerIdx  map[netip.Addr]uint16
	peerList []netip.Addr

	// stMu guards the counters and the session states.
	stMu          sync.Mutex
	peerState     map[netip.Addr]bgp.PeerState
	prefixLimited map[netip.Addr]bool // held idle for exceeding its maximum prefixes
	prefixHits    map[netip.Addr]uint64
	limits        map[netip.Addr]uint32 // each configured peer's prefix limit
	notAdvertised uint64
	filtered      uint64
	refreshes     uint64
}

// peerFamily is one peer's routes of one address family (VPNv4 or VPNv6).
type peerFamily struct {
	peer netip.Addr
	v6   bool
}

var _ bgp.Speaker = (*Speaker)(nil)

// New returns a speaker for cfg (defaults filled in, then validated). A nil
// logger discards everything.
func New(cfg bgp.Config, logger *slog.Logger) (*Speaker, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Speaker{
		cfg:      cfg,
		log:      logger,
		peerAddr: map[netip.Addr]bgp.PeerConfig{},
		rxSignal: make(chan struct{}, 1),
		received: map[receivedKey]held{},
		attrs:    interner{},
		subs:     map[*subscriber]struct{}{},
		refused:  map[receivedKey]*routeAttrs{},

		refusedAttrs: interner{},
		peerIdx:      map[netip.Addr]uint16{},
		count:        map[peerFamily]uint32{},

		peerState:     map[netip.Addr]bgp.PeerState{},
		prefixLimited: map[netip.Addr]bool{},
		prefixHits:    map[netip.Addr]uint64{},
		limits:        map[netip.Addr]uint32{},
	}, nil
}

// Start implements bgp.Speaker.
func (s *Speaker) Start(ctx context.Context, initial []bgp.Route) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running || s.stopped {
		return bgp.ErrAlreadyRunning
	}
	dir, err := makeSockDir()
	if err != nil {
		return err
	}
	sock := filepath.Join(dir, "gobgp.sock")
	srv := server.NewBgpServer(server.GrpcListenAddress("unix://"+sock), server.LoggerOption(newLogger(s.log)))
	go srv.Serve()
	defer func() {
		if err != nil {
			srv.Stop()
			os.RemoveAll(dir)
		}
	}()

	g := &api.Global{
		Asn:        s.cfg.ASN,
		RouterId:   s.cfg.RouterID.String(),
		ListenPort: int32(s.cfg.ListenPort),
	}
	for _, a := range s.cfg.ListenAddress {
		g.ListenAddresses = append(g.ListenAddresses, a.String())
	}
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: g}); err != nil {
		return fmt.Errorf("bgp: start: %w", err)
	}

	wctx, cancel := context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			cancel()
		}
	}()
	watch := &api.WatchEventRequest{
		Peer: &api.WatchEventRequest_Peer{},
		Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{
			// Post-policy Adj-RIB-In: paths received from peers only (our
			// own routes cost nothing here), withdrawals, and the drops
			// GoBGP makes when a session ends or a graceful-restart
			// helper period expires.
			{Type: api.WatchEventRequest_Table_Filter_POST_POLICY, Init: true},
		}},
	}
	if err := srv.WatchEvent(wctx, watch, s.onEvent); err != nil {
		return fmt.Errorf("bgp: watch: %w", err)
	}

	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("bgp: api client: %w", err)
	}
	s.srv, s.conn, s.client, s.sockDir, s.cancel = srv, conn, api.NewGobgpApiClient(conn), dir, cancel
	s.running = true
	s.wg.Add(1)
	go s.dispatch(wctx)

	if len(initial) > 0 {
		if err := s.addPathsLocked(ctx, initial, nil); err != nil {
			s.stopLocked()()
			return fmt.Errorf("bgp: initial routes: %w", err)
		}
	}
	for _, p := range s.cfg.Peers {
		if err := s.addPeerLocked(ctx, p, !s.cfg.GracefulRestart.Disabled); err != nil {
			s.stopLocked()()
			return err
		}
	}
	s.log.Info("bgp speaker started", logkey.ASN, s.cfg.ASN, logkey.RouterID, s.cfg.RouterID, logkey.ListenPort, s.cfg.ListenPort, logkey.Peers, len(s.cfg.Peers), logkey.Routes, len(initial))
	return nil
}

// Stop implements bgp.Speaker. Sessions are closed with a Cease NOTIFICATION.
// If ctx ends first, Stop returns its error and the teardown finishes in
// the background; the speaker is stopped either way.
func (s *Speaker) Stop(ctx context.Context) error {
	s.mu.Lock()
	if !s.running {
		s.mu.Unlock()
		return nil
	}
	teardown := s.stopLocked()
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		teardown()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("bgp: stop: %w", ctx.Err())
	}
}

// stopLocked marks the speaker stopped and returns the teardown, which
// touches nothing that s.mu guards.
func (s *Speaker) stopLocked() func() {
	s.running = false
	s.stopped = true
	srv, cancel, conn, dir := s.srv, s.cancel, s.conn, s.sockDir
	return func() {
		srv.Stop()
		cancel()
		conn.Close()
		os.RemoveAll(dir)
		s.wg.Wait()
		s.rxMu.Lock()
		for sub := range s.subs {
			sub.close()
		}
		s.subs = map[*subscriber]struct{}{}
		s.rxMu.Unlock()
		s.log.Info("bgp speaker stopped")
	}
}

func (s *Speaker) runningLocked() error {
	if !s.running {
		return bgp.ErrNotRunning
	}
	return nil
}

// AddPeer implements bgp.Speaker.
func (s *Speaker) AddPeer(ctx context.Context, p bgp.PeerConfig) error {
	if err := p.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.runningLocked(); err != nil {
		return err
	}
	// Also a peer added after Start announces the Restart and Forwarding
	// bits: the controller may have restarted with this peer in its store,
	// and without the Forwarding bit the peer would flush the routes it
	// kept for us before we send them again.
	return s.addPeerLocked(ctx, p, !s.cfg.GracefulRestart.Disabled)
}

func (s *Speaker) addPeerLocked(ctx context.Context, p bgp.PeerConfig, restarting bool) error {
	if _, ok := s.peerAddr[p.Address]; ok {
		return fmt.Errorf("bgp: peer %s: %w", p.Address, bgp.ErrPeerExists)
	}
	if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.apiPeer(p, restarting)}); err != nil {
		return fmt.Errorf("bgp: add peer %s: %w", p.Address, err)
	}
	s.peerAddr[p.Address] = p
	s.stMu.Lock()
	s.limits[p.Address] = s.maxPrefixes(p)
	s.peerState[p.Address] = bgp.PeerIdle
	s.stMu.Unlock()
	s.log.Info("bgp peer added", logkey.Peer, p.Address, logkey.ASN, p.ASN, logkey.MD5, p.Password != "")
	return nil
}

func (s *Speaker) apiPeer(p bgp.PeerConfig, restarting bool) *api.Peer {
	port := uint32(p.Port)
	if port == 0 {
		port = bgp.DefaultPort
	}
	hold := uint64(s.cfg.HoldTime / time.Second)
	peer := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			AuthPassword:    p.Password,
			Description:     p.Description,
		},
		Transport: &api.Transport{RemotePort: port},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      uint64(s.cfg.ConnectRetry / time.Second),
			HoldTime:          hold,
			KeepaliveInterval: max(hold/3, 1),
		}},
	}
	gr := !s.cfg.GracefulRestart.Disabled
	for _, f := range []*api.Family{familyVPNv4, familyVPNv6} {
		af := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true}}
		if gr {
			af.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		peer.AfiSafis = append(peer.AfiSafis, af)
	}
	if gr {
		peer.GracefulRestart = &api.GracefulRestart{
			Enabled:         true,
			RestartTime:     uint32(s.cfg.GracefulRestart.RestartTime / time.Second),
			DeferralTime:    uint32(s.cfg.GracefulRestart.DeferralTime / time.Second),
			LocalRestarting: restarting,
		}
	}
	if s.cfg.RouteReflector && p.ASN == s.cfg.ASN {
		peer.RouteReflector = &api.RouteReflector{
			RouteReflectorClient:    true,
			RouteReflectorClusterId: s.cfg.ClusterID.String(),
		}
	}
	return peer
}

// maxPrefixes is the prefix limit in force for p.
func (s *Speaker) maxPrefixes(p bgp.PeerConfig) uint32 {
	if p.MaxPrefixes != 0 {
		return p.MaxPrefixes
	}
	return s.cfg.MaxPrefixes
}

// DeletePeer implements bgp.Speaker. The session is closed with a Cease
// NOTIFICATION and the peer's routes are withdrawn.
func (s *Speaker) DeletePeer(ctx context.Context, addr netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.runningLocked(); err != nil {
		return err
	}
	if _, ok := s.peerAddr[addr]; !ok {
		return fmt.Errorf("bgp: peer %s: %w", addr, bgp.ErrPeerNotFound)
	}
	if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
		return fmt.Errorf("bgp: delete peer %s: %w", addr, err)
	}
	delete(s.peerAddr, addr)
	s.stMu.Lock()
	delete(s.peerState, addr)
	delete(s.prefixLimited, addr)
	delete(s.limits, addr)
	s.stMu.Unlock()
	s.log.Info("bgp peer deleted", logkey.Peer, addr)
	return nil
}

// ListPeers implements bgp.Speaker. It asks GoBGP for its counters (a
// server-wide operation): meant for operators, not for a hot path.
func (s *Speaker) ListPeers(ctx context.Context) ([]bgp.PeerStatus, error) {
	s.mu.Lock()
	if err := s.runningLocked(); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	srv := s.srv
	cfgs := make(map[netip.Addr]bgp.PeerConfig, len(s.peerAddr))
	for a, p := range s.peerAddr {
		cfgs[a] = p
	}
	s.mu.Unlock()

	var out []bgp.PeerStatus
	err := srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		addr, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			return
		}
		st := bgp.PeerStatus{PeerConfig: cfgs[addr], State: sessionState(p.GetState().GetSessionState())}
		st.Address = addr
		if st.State == bgp.PeerEstablished {
			if up := p.GetTimers().GetState().GetUptime(); up != nil {
				st.Uptime = time.Since(up.AsTime()).Truncate(time.Second)
			}
		}
		for _, af := range p.GetAfiSafis() {
			st.PrefixesSent += af.GetState().GetAdvertised()
			st.PrefixesReceived += af.GetState().GetReceived()
		}
		st.MaxPrefixes = s.maxPrefixes(st.PeerConfig)
		s.stMu.Lock()
		st.PrefixLimitHits = s.prefixHits[addr]
		if s.prefixLimited[addr] {
			st.Reason = prefixLimitReason(st.MaxPrefixes)
		}
		s.stMu.Unlock()
		out = append(out, st)
	})
	if err != nil {
		return nil, fmt.Errorf("bgp: list peers: %w", err)
	}
	return out, nil
}

// prefixLimitReason is what ListPeers says of a session held idle for
// exceeding its prefix limit.
func prefixLimitReason(limit uint32) string {
	return fmt.Sprintf("maximum prefixes exceeded: the peer sent more than %d routes of one address family; the session stays idle until the peer is configured again (iotfabricctl peer add, or a controller restart for a configuration-file peer)", limit)
}

// Counters implements bgp.Speaker.
func (s *Speaker) Counters() bgp.Counters {
	s.stMu.Lock()
	defer s.stMu.Unlock()
	c := bgp.Counters{Peers: make(map[netip.Addr]bgp.PeerState, len(s.peerState)), PrefixLimitHits: make(map[netip.Addr]uint64, len(s.prefixHits)),
		NotAdvertised: s.notAdvertised, Filtered: s.filtered, InboundRefreshes: s.refreshes}
	for a, st := range s.peerState {
		c.Peers[a] = st
	}
	for a, n := range s.prefixHits {
		c.PrefixLimitHits[a] = n
	}
	return c
}

func sessionState(st api.PeerState_SessionState) bgp.PeerState {
	switch st {
	case api.PeerState_CONNECT:
		return bgp.PeerConnect
	case api.PeerState_ACTIVE:
		return bgp.PeerActive
	case api.PeerState_OPENSENT:
		return bgp.PeerOpenSent
	case api.PeerState_OPENCONFIRM:
		return bgp.PeerOpenConfirm
	case api.PeerState_ESTABLISHED:
		return bgp.PeerEstablished
	}
	return bgp.PeerIdle
}

// Announce implements bgp.Speaker. All routes are validated before any is
// sent; they reach GoBGP in batches over one AddPathStream.
func (s *Speaker) Announce(ctx context.Context, routes []bgp.Route) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.runningLocked(); err != nil {
		return err
	}
	return s.addPathsLocked(ctx, routes, nil)
}

// Withdraw implements bgp.Speaker.
func (s *Speaker) Withdraw(ctx context.Context, keys []bgp.RouteKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.runningLocked(); err != nil {
		return err
	}
	return s.addPathsLocked(ctx, nil, keys)
}

func (s *Speaker) addPathsLocked(ctx context.Context, routes []bgp.Route, withdraw []bgp.RouteKey) error {
	// Validate everything before anything is sent.
	for _, r := range routes {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("bgp: announce: %w", err)
		}
	}
	for _, k := range withdraw {
		if !k.RD.IsValid() || !k.Prefix.IsValid() {
			return fmt.Errorf("bgp: withdraw %s: %w", k, bgp.ErrInvalidRoute)
		}
	}
	total := len(routes) + len(withdraw)
	if total == 0 {
		return nil
	}
	stream, err := s.client.AddPathStream(ctx, grpc.WaitForReady(true))
	if err != nil {
		return fmt.Errorf("bgp: add path stream: %w", err)
	}
	// Encode batch by batch, so only one batch of API paths is alive at a time.
	cache := attrCache{}
	batch := make([]*api.Path, 0, min(batchSize, total))
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := stream.Send(&api.AddPathStreamRequest{TableType: api.TableType_GLOBAL, Paths: batch})
		if errors.Is(err, io.EOF) {
			_, err = stream.CloseAndRecv() // the server's reason
		}
		if err != nil {
			return fmt.Errorf("bgp: add path stream: %w", err)
		}
		batch = batch[:0]
		return nil
	}
	var refused []bgp.RouteError
	for _, r := range routes {
		p, err := cache.apiPath(r)
		if errors.Is(err, bgp.ErrRouteTooLarge) {
			// No UPDATE can carry it: withdraw what an earlier version of
			// the route may have announced, and report it.
			refused = append(refused, bgp.RouteError{Key: r.Key(), Err: err})
			p, err = apiWithdrawal(r.Key())
		}
		if err != nil {
			return fmt.Errorf("bgp: announce: %w", err)
		}
		if batch = append(batch, p); len(batch) == batchSize {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	for _, k := range withdraw {
		p, err := apiWithdrawal(k)
		if err != nil {
			return fmt.Errorf("bgp: withdraw: %w", err)
		}
		if batch = append(batch, p); len(batch) == batchSize {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return fmt.Errorf("bgp: add path stream: %w", err)
	}
	if len(refused) > 0 {
		s.stMu.Lock()
		s.notAdvertised += uint64(len(refused))
		s.stMu.Unlock()
		return &bgp.NotAdvertisedError{Routes: refused}
	}
	return nil
}

// onEvent is GoBGP's watch callback: it only queues and signals.
func (s *Speaker) onEvent(ev *api.WatchEventResponse) {
	switch e := ev.GetEvent().(type) {
	case *api.WatchEventResponse_Table:
		if len(e.Table.GetPaths()) == 0 {
			return
		}
		s.rxMu.Lock()
		s.rxQueue = append(s.rxQueue, e.Table.GetPaths())
		s.rxMu.Unlock()
		select {
		case s.rxSignal <- struct{}{}:
		default:
		}
	case *api.WatchEventResponse_Peer:
		if e.Peer.GetType() == api.WatchEventResponse_PeerEvent_STATE {
			s.peerStateEvent(e.Peer.GetPeer().GetState())
		}
	}
}

// peerStateEvent records a session state change.
func (s *Speaker) peerStateEvent(ps *api.PeerState) {
	addr, err := netip.ParseAddr(ps.GetNeighborAddress())
	if err != nil {
		return
	}
	addr = addr.Unmap()
	st := sessionState(ps.GetSessionState())
	s.stMu.Lock()
	if _, known := s.peerState[addr]; known {
		s.peerState[addr] = st
	}
	s.stMu.Unlock()
	s.log.Info("bgp peer state", logkey.Peer, addr, logkey.State, st)
}

// countLocked keeps the number of routes each peer holds per family (put:
// a key not held before, or a withdrawal of one that was) and returns true
// when the put made the peer pass its limit. GoBGP's own prefix limit
// counts its whole Adj-RIB-In on every UPDATE (quadratic in the table
// size: 4.4x slower at 10,000 routes, minutes at 100,000); this is a
// counter.
func (s *Speaker) countLocked(pf peerFamily, delta int) (over bool, limit uint32) {
	c := int(s.count[pf]) + delta
	if c <= 0 {
		delete(s.count, pf)
		return false, 0
	}
	s.count[pf] = uint32(c)
	if delta <= 0 {
		return false, 0
	}
	s.stMu.Lock()
	limit = s.limits[pf.peer]
	limited := s.prefixLimited[pf.peer]
	s.stMu.Unlock()
	if limit == 0 || limited {
		return false, limit
	}
	if uint64(c)*100 == uint64(limit)*bgp.PrefixLimitWarnPct {
		s.log.Warn("bgp peer close to its maximum prefixes", logkey.Peer, pf.peer, logkey.Routes, c, logkey.Limit, limit)
	}
	return c > int(limit), limit
}

// prefixLimit shuts down the session of a peer that passed its limit: a
// Cease NOTIFICATION (administrative shutdown, with the reason as RFC 8203
// message), and the session stays down until the peer is configured again.
// The routes it sent are withdrawn as the session ends.
func (s *Speaker) prefixLimit(addr netip.Addr, limit uint32) {
	s.stMu.Lock()
	if s.prefixLimited[addr] {
		s.stMu.Unlock()
		return
	}
	s.prefixLimited[addr] = true
	s.prefixHits[addr]++
	s.stMu.Unlock()
	s.log.Error("bgp session shut down: the peer sent more routes than its maximum prefixes", logkey.Peer, addr, logkey.Limit, limit)
	s.mu.Lock()
	srv, running := s.srv, s.running
	s.mu.Unlock()
	if !running {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.DisablePeer(ctx, &api.DisablePeerRequest{Address: addr.String(), Communication: fmt.Sprintf("maximum prefixes (%d) exceeded", limit)}); err != nil {
		s.log.Warn("bgp: shut down the session of a peer over its maximum prefixes", logkey.Peer, addr, logkey.Err, err)
	}
}

// dispatch turns queued Adj-RIB-In changes into received-route events.
func (s *Speaker) dispatch(ctx context.Context) {
	defer s.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.rxSignal:
		}
		s.rxMu.Lock()
		q := s.rxQueue
		s.rxQueue = nil
		var evs []bgp.RouteEvent
		over := map[netip.Addr]uint32{}
		for _, batch := range q {
			for _, p := range batch {
				evs = s.applyLocked(p, evs, over)
			}
		}
		s.shrinkLocked()
		if len(evs) > 0 {
			for sub := range s.subs {
				sub.push(evs)
			}
		}
		s.rxMu.Unlock()
		for a, limit := range over {
			s.prefixLimit(a, limit)
		}
	}
}

// applyLocked applies one received path (or its withdrawal) to the table
// of received routes and appends the resulting event.
// A peer that passes its prefix limit is added to over.
func (s *Speaker) applyLocked(p *api.Path, evs []bgp.RouteEvent, over map[netip.Addr]uint32) []bgp.RouteEvent {
	if p.GetFamily() == nil || p.Family.Safi != api.Family_SAFI_MPLS_VPN {
		return evs
	}
	peer, err := netip.ParseAddr(p.GetNeighborIp())
	if err != nil || peer.IsUnspecified() {
		return evs // not from a peer
	}
	peer = peer.Unmap()
	r, err := decodePath(p)
	if err != nil {
		s.log.Warn("ignoring received path", logkey.Peer, peer, logkey.Err, err)
		return evs
	}
	k := s.keyLocked(peer, r.Key())
	pf := peerFamily{peer: peer, v6: r.IsIPv6()}
	old, had := s.received[k]
	_, wasRefused := s.refused[k]
	if p.GetIsWithdraw() {
		if had || wasRefused {
			s.countLocked(pf, -1)
		}
		s.unrefuseLocked(k)
		if had {
			evs = append(evs, bgp.RouteEvent{Peer: peer, Withdraw: true, Route: old.route(k.routeKey())})
			s.dropLocked(k, old)
		}
		return evs
	}
	if !had && !wasRefused {
		if o, limit := s.countLocked(pf, 1); o {
			over[peer] = limit
		}
	}
	if !s.acceptLocked(r) {
		// No network imports it: not kept (a route that was, is withdrawn).
		s.stMu.Lock()
		s.filtered++
		s.stMu.Unlock()
		s.refuseLocked(k, r.RouteTargets)
		if had {
			evs = append(evs, bgp.RouteEvent{Peer: peer, Withdraw: true, Route: old.route(k.routeKey())})
			s.dropLocked(k, old)
		}
		return evs
	}
	s.unrefuseLocked(k)
	if had && old.same(r) {
		return evs // e.g. marked stale, or refreshed after a graceful restart
	}
	h := held{nextHop: r.NextHop, label: r.Label, attrs: s.attrs.get(r.RouteTargets, r.Encaps)}
	if had {
		s.attrs.put(old.attrs)
	}
	s.received[k] = h
	s.receivedPeak = max(s.receivedPeak, len(s.received))
	return append(evs, bgp.RouteEvent{Peer: peer, Route: h.route(k.routeKey())})
}

// shrinkLocked builds the maps of received and refused routes again when
// a withdrawal left them under a quarter of their peak.
func (s *Speaker) shrinkLocked() {
	s.refusedPeak = max(s.refusedPeak, len(s.refused))
	s.received, s.receivedPeak = mapshrink.Shrink(s.received, s.receivedPeak)
	s.refused, s.refusedPeak = mapshrink.Shrink(s.refused, s.refusedPeak)
}

// refuseLocked records that the filter refused route k, carrying rts.
func (s *Speaker) refuseLocked(k receivedKey, rts []bgp.RouteTarget) {
	if old, ok := s.refused[k]; ok {
		if slices.Equal(old.rts, rts) {
			return
		}
		s.refusedAttrs.put(old)
	}
	s.refused[k] = s.refusedAttrs.get(rts, nil)
}

// unrefuseLocked forgets that route k was refused.
func (s *Speaker) unrefuseLocked(k receivedKey) {
	if a, ok := s.refused[k]; ok {
		s.refusedAttrs.put(a)
		delete(s.refused, k)
	}
}

// refusedCarryLocked reports whether a refused route carries one of rts.
// It looks at each distinct set of route targets once, not at each route.
func (s *Speaker) refusedCarryLocked(rts map[bgp.RouteTarget]struct{}) bool {
	for _, a := range s.refusedAttrs {
		for _, t := range a.rts {
			if _, ok := rts[t]; ok {
				return true
			}
		}
	}
	return false
}

// dropLocked forgets a held route.
func (s *Speaker) dropLocked(k receivedKey, h held) {
	delete(s.received, k)
	s.attrs.put(h.attrs)
}

// acceptLocked reports whether the import filter keeps r.
func (s *Speaker) acceptLocked(r bgp.Route) bool {
	if s.filter == nil {
		return true
	}
	for _, t := range r.RouteTargets {
		if _, ok := s.filter[t]; ok {
			return true
		}
	}
	return false
}

// SetImportFilter implements bgp.Speaker. The filter applies where
// received paths enter the speaker (the dispatcher): a refused route is not
// decoded into the table of received routes nor delivered. GoBGP itself
// still holds every path a peer sent in its Adj-RIB-In (it needs them for
// the prefix limit and to re-evaluate them): when the filter accepts more
// than before, its paths are run through again (a soft reset inbound of
// every peer), so routes refused earlier arrive.
func (s *Speaker) SetImportFilter(ctx context.Context, rts []bgp.RouteTarget) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.runningLocked(); err != nil {
		return err
	}
	f := make(map[bgp.RouteTarget]struct{}, len(rts))
	for _, t := range rts {
		f[t] = struct{}{}
	}
	s.rxMu.Lock()
	added := map[bgp.RouteTarget]struct{}{} // before the first call everything was kept
	if s.filter != nil {
		for t := range f {
			if _, ok := s.filter[t]; !ok {
				added[t] = struct{}{}
			}
		}
	}
	// Only a refused route that carries an added target can be accepted
	// now: without one, GoBGP's Adj-RIB-In need not be run through again
	// (each run queues an event per path it holds, with a copy of its
	// peer's configuration: about 20 KB a route at once).
	refresh := s.refusedCarryLocked(added)
	s.filter = f
	// Withdraw what the new filter refuses.
	var evs []bgp.RouteEvent
	var dropped uint64
	for k, h := range s.received {
		if r := h.route(k.routeKey()); !s.acceptLocked(r) {
			s.refuseLocked(k, r.RouteTargets)
			s.dropLocked(k, h)
			evs = append(evs, bgp.RouteEvent{Peer: s.peerList[k.peer], Withdraw: true, Route: r})
			dropped++
		}
	}
	s.shrinkLocked()
	if len(evs) > 0 {
		for sub := range s.subs {
			sub.push(evs)
		}
	}
	s.rxMu.Unlock()
	if dropped > 0 {
		s.stMu.Lock()
		s.filtered += dropped
		s.stMu.Unlock()
	}
	if !refresh || len(s.peerAddr) == 0 {
		return nil
	}
	s.stMu.Lock()
	s.refreshes++
	s.stMu.Unlock()
	// Run every peer's Adj-RIB-In through again (an empty address is every
	// peer): the routes the new filter accepts reach the dispatcher.
	if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Soft: true, Direction: api.ResetPeerRequest_IN}); err != nil {
		return fmt.Errorf("bgp: soft reset inbound: %w", err)
	}
	return nil
}

// Subscribe implements bgp.Speaker.
func (s *Speaker) Subscribe(ctx context.Context) (<-chan []bgp.RouteEvent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.runningLocked(); err != nil {
		return nil, err
	}
	sub := &subscriber{signal: make(chan struct{}, 1), out: make(chan []bgp.RouteEvent), done: make(chan struct{})}
	s.rxMu.Lock()
	snap := make([]bgp.RouteEvent, 0, len(s.received))
	for k, h := range s.received {
		snap = append(snap, bgp.RouteEvent{Peer: s.peerList[k.peer], Route: h.route(k.routeKey())})
	}
	sub.queue = [][]bgp.RouteEvent{snap}
	s.subs[sub] = struct{}{}
	s.rxMu.Unlock()
	go func() {
		sub.run(ctx)
		s.rxMu.Lock()
		delete(s.subs, sub)
		s.rxMu.Unlock()
	}()
	return sub.out, nil
}

// subscriber is one Subscribe call: an unbounded queue drained by its own
// goroutine into the channel the caller reads.
type subscriber struct {
	mu     sync.Mutex
	queue  [][]bgp.RouteEvent
	signal chan struct{}
	out    chan []bgp.RouteEvent
	done   chan struct{}
	once   sync.Once
}

func (u *subscriber) push(evs []bgp.RouteEvent) {
	u.mu.Lock()
	u.queue = append(u.queue, evs)
	u.mu.Unlock()
	select {
	case u.signal <- struct{}{}:
	default:
	}
}

func (u *subscriber) close() { u.once.Do(func() { close(u.done) }) }

func (u *subscriber) run(ctx context.Context) {
	defer close(u.out)
	for {
		u.mu.Lock()
		var next []bgp.RouteEvent
		has := len(u.queue) > 0
		if has {
			next = u.queue[0]
			// The slot is cleared (and an emptied queue let go), or the
			// queue's array would keep a flood's events alive after
			// they were delivered.
			u.queue[0] = nil
			if u.queue = u.queue[1:]; len(u.queue) == 0 {
				u.queue = nil
			}
		}
		u.mu.Unlock()
		if has {
			select {
			case u.out <- next:
				continue
			case <-ctx.Done():
				return
			case <-u.done:
				return
			}
		}
		select {
		case <-u.signal:
		case <-ctx.Done():
			return
		case <-u.done:
			return
		}
	}
}
