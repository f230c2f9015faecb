// Package server is the controller's composition root: from a Config it
// builds a whole controller — the store (bbolt or etcd), IPAM and the
// resource logic (pkg/controller), the route table and its BGP speaker
// (pkg/vpn, pkg/bgp/gobgp), the enrollment authority and the set of revoked
// certificates (pkg/enroll), the eight gRPC services (pkg/api) on one gRPC
// server, and the metrics — and runs it. cmd/controller and the test
// harnesses (internal/fabrictest) start controllers only through Start, and
// the defaults (ASN, addresses, ports) are set here only (config.go).
//
// It owns the wiring and the process-level concerns (listeners, TLS,
// interceptors — among them the API's authorization, pkg/api's Authorizer,
// with its audit log under component=audit — metrics, shutdown); it refuses
// to serve the API without TLS on a non-loopback address unless api.insecure
// is set. With api.enrollment.ca_key it verifies client certificates itself
// (clients without one may join; one expired within the renewal grace may
// renew) and sends its CA after its certificate, for joining agents that pin
// it. It may not hold resource logic, read or write store keys itself, or
// translate API messages.
package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/iotfabric/iotfabric/pkg/api"
	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/gobgp"
	"github.com/iotfabric/iotfabric/pkg/console"
	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/enroll"
	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/kube"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/model"
	"github.com/iotfabric/iotfabric/pkg/rest"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	"github.com/iotfabric/iotfabric/pkg/store/etcd"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	"github.com/iotfabric/iotfabric/pkg/vpn"
)

// Options are what a program embedding a controller may add to its Config.
type Options struct {
	// Logger receives the controller's log (nil: discarded).
	Logger *slog.Logger
	// OpenStore, if set, opens the store instead of the Config's etcd or
	// bbolt file (tests: a bbolt file without fsync, a shared etcd).
	OpenStore func(ctx context.Context) (store.Store, error)
	// ExclusiveStore says that OpenStore's store is this controller's alone
	// (a bbolt file): the stream markers of every other controller instance
	// are then stale. A bbolt store the Config selects is exclusive.
	ExclusiveStore bool
	// ServerOptions are added to the gRPC server's (after the interceptors and
	// the Config's TLS).
	ServerOptions []grpc.ServerOption
	// NoAuthorization installs no Authorizer: every caller may call every
	// method and nothing is audited. For benchmarks that measure what
	// authorization costs (make bench-cni); cmd/controller never sets it.
	// The REST API (api.http_listen) is authorized regardless.
	NoAuthorization bool
	// HTTPHandlers are more handlers on the REST API's listener
	// (api.http_listen), by http.ServeMux pattern — the web console at
	// "/ui/" — behind its authentication (rest.CallerFrom gives the caller).
	HTTPHandlers map[string]http.Handler
}

// Controller is a running controller.
type Controller struct {
	log         *slog.Logger
	ctx         context.Context // Start's
	st          store.Store
	runner      *vpn.Runner
	gs          *grpc.Server
	hs          *health.Server
	hsrv        *http.Server
	lis         net.Listener
	metricsAddr string
	rest        *rest.Handler // nil: REST API off
	restSrv     *http.Server
	restAddr    string
	stopRunner  context.CancelFunc
	runErr      chan error // the runner's result
	sweeper     *controller.Sweeper
	stopSweeper context.CancelFunc
	sweeperDone chan struct{} // closed when the sweeper's Run returned
	stopRevs    context.CancelFunc
	revsDone    chan struct{} // closed when the revocation set's Run returned
	serveErr    chan error    // gs.Serve's result
	stopKube    context.CancelFunc
	kubeDone    chan struct{} // closed when the Kubernetes reconciler stopped
	stopCache   context.CancelFunc
	cacheDone   chan struct{} // closed when the gateway cache's Run returned

	stopOnce sync.Once
	stopped  chan struct{} // closed once stopped
	err      error         // why it stopped, set before stopped is closed
}

// apiBufferSize is the size of the API connections' read and write buffers:
// a route change or a registration fits in one; a snapshot's 16 KiB frames
// take four writes instead of one.
const apiBufferSize = 4 << 10

// Start builds the controller cfg describes and serves its API; it runs
// until ctx ends or Stop. cfg must be valid (Config.Validate).
func Start(ctx context.Context, cfg Config, opts Options) (_ *Controller, err error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var cleanup []func()
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
		}
	}()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := newMetrics(reg)

	st, err := openStore(ctx, cfg, opts, log, m)
	if err != nil {
		return nil, err
	}
	cleanup = append(cleanup, func() { st.Close() })

	exclusive := opts.ExclusiveStore || (opts.OpenStore == nil && len(cfg.Etcd.Endpoints) == 0)
	ctl := controller.New(st, controller.Config{ASN: cfg.BGP.ASN, Logger: log, ExclusiveStore: exclusive})
	n, err := ctl.LoadNetworks(ctx)
	if err != nil {
		return nil, fmt.Errorf("load networks: %w", err)
	}
	log.Info("state loaded", logkey.Networks, n)
	// Registrations of unchanged gateways are answered from memory once the
	// gateway cache has listed the store, in the background (until then
	// they read the store).
	cacheCtx, stopCache := context.WithCancel(context.Background())
	cacheDone := make(chan struct{})
	go func() { defer close(cacheDone); ctl.RunGatewayCache(cacheCtx) }()
	cleanup = append(cleanup, func() { stopCache(); <-cacheDone })
	registerCounts(reg, ctl)

	sp, configPeers, err := speaker(cfg, log)
	if err != nil {
		return nil, err
	}
	// The route table follows the store's watch; it drives the BGP speaker
	// (when configured) and serves routes to the API and the agents.
	runner := vpn.NewRunner(st, sp, cfg.BGP.ASN, log.With(logkey.Component, logkey.ComponentVPN))
	runner.SetLimits(vpn.Limits{MaxNetworkRoutes: max(cfg.Routes.MaxPerNetwork, 0)})
	m.routeGauges(reg, runner)

	lis, err := listenAPI(ctx, cfg.API.Listen)
	if err != nil {
		return nil, fmt.Errorf("API listener: %w", err)
	}
	cleanup = append(cleanup, func() { lis.Close() })
	// Callers without TLS are the local operator, trusted as admin, on a
	// loopback listener; elsewhere only with api.insecure.
	// The revoked certificates, kept current from the store: refused at the
	// handshake and on every call, their streams ended.
	revs := enroll.NewRevocations(st, !exclusive, log.With(logkey.Component, logkey.ComponentEnroll))
	revsCtx, stopRevs := context.WithCancel(context.Background())
	revsDone := make(chan struct{})
	go func() { defer close(revsDone); revs.Run(revsCtx) }()
	cleanup = append(cleanup, func() { stopRevs(); <-revsDone })
	select {
	case <-revs.Ready():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	enroller, err := newEnroller(cfg, st, revs, log)
	if err != nil {
		return nil, err
	}
	authz := &api.Authorizer{Audit: log.With(logkey.Component, logkey.ComponentAudit), Revocations: revs}
	if !cfg.API.TLS.Enabled() {
		if !loopback(lis.Addr()) {
			if !cfg.API.Insecure {
				return nil, fmt.Errorf("API listener %s: not a loopback address and api.tls is not set; set api.tls, or api.insecure: true (--api-insecure) to serve every caller as admin", lis.Addr())
			}
			log.Warn("API serves without TLS on a non-loopback address (api.insecure): every caller that reaches it is an admin", logkey.API, lis.Addr().String())
		}
		authz.Anonymous = tlsconfig.Admin
	}
	unary := []grpc.UnaryServerInterceptor{m.unary, recoverUnary(log), authz.Unary}
	stream := []grpc.StreamServerInterceptor{m.stream, recoverStream(log), authz.Stream}
	if opts.NoAuthorization {
		unary, stream = unary[:2], stream[:2]
		log.Warn("API authorization is off (benchmark): every caller may call every method")
	}
	gsOpts := []grpc.ServerOption{
		// Metrics see every outcome; a panic in authorization or in a handler
		// becomes an Internal error, counted as such.
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		// Agents ping to notice a dead path (pkg/agent's --keepalive): permit
		// it, also between streams; ping idle clients to notice dead ones.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: cfg.API.Keepalive.MinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: cfg.API.Keepalive.Time, Timeout: cfg.API.Keepalive.Timeout}),
		// Every message stays below model.MaxMsgSize: lists come in pages, watches one record per message.
		grpc.MaxRecvMsgSize(model.MaxMsgSize), grpc.MaxSendMsgSize(model.MaxMsgSize),
		// A connection takes its write buffer from a pool shared by all
		// connections while it writes: when one route change goes out to
		// 10,000 gateway streams at once, 10,000 buffers are taken together,
		// so their size is what the burst allocates (gRPC's 32 KiB: 320 MB,
		// and a collection in the middle of the burst). The read buffer is
		// pooled too on plain TCP; under TLS it is each connection's own for
		// as long as the connection lives.
		grpc.ReadBufferSize(apiBufferSize), grpc.WriteBufferSize(apiBufferSize),
	}
	if cfg.API.TLS.Enabled() {
		tc, err := serverTLS(cfg, enroller, revs)
		if err != nil {
			return nil, fmt.Errorf("api.tls: %w", err)
		}
		authz.PeerVerified = enroller.CA() != nil
		gsOpts = append(gsOpts, grpc.Creds(credentials.NewTLS(tc)))
		log.Info("API requires mutual TLS", logkey.ClientCA, cfg.API.TLS.CA, logkey.Enrollment, enroller.CA() != nil)
	}
	gs := grpc.NewServer(append(gsOpts, opts.ServerOptions...)...)
	services := api.Services{Controller: ctl, Routes: runner, Peers: vpn.NewPeers(st, runner, configPeers), Enroller: enroller, Logger: log,
		OnRouteChangeSent: func(d time.Duration) { m.changeSent.Observe(d.Seconds()) }}
	services.Register(gs)

	var restAPI restServer
	if cfg.HTTPEnabled() {
		extra := opts.HTTPHandlers
		var ui *console.Handler
		if cfg.Console.On(true) {
			if ui, err = newConsole(cfg, services, authz, log); err != nil {
				return nil, err
			}
			extra = maps.Clone(extra)
			if extra == nil {
				extra = map[string]http.Handler{}
			}
			extra[console.Prefix] = ui
		}
		restAPI, err = startREST(cfg, opts, rest.Options{Register: services.Register, Authorizer: authz,
			Unary: []grpc.UnaryServerInterceptor{m.unary, recoverUnary(log)}, Stream: []grpc.StreamServerInterceptor{m.stream, recoverStream(log)},
			MaxStreams: cfg.API.HTTPMaxStreams, Extra: extra, Logger: log.With(logkey.Component, logkey.ComponentREST)}, enroller)
		if err != nil {
			return nil, err
		}
		cleanup = append(cleanup, restAPI.stop)
		if ui != nil {
			ui.SetAPI(restAPI.h)
		}
	}

	// The heartbeat is written before any stream marker of this instance;
	// the sweeper's first round removes the markers of dead instances (of
	// this controller's previous run, too) at once, in the background, while
	// the API already serves.
	sw := ctl.NewSweeper(controller.LivenessConfig{Instance: runner.ID(), Interval: cfg.Liveness.Interval,
		OnSwept: func(n int) { m.swept.Add(float64(n)) }})
	if err := sw.Start(ctx); err != nil {
		return nil, fmt.Errorf("controller liveness: %w", err)
	}
	c := &Controller{log: log, ctx: ctx, st: st, runner: runner, gs: gs, lis: lis, sweeper: sw, sweeperDone: make(chan struct{}),
		rest: restAPI.h, restSrv: restAPI.srv, restAddr: restAPI.addr,
		stopRevs: stopRevs, revsDone: revsDone, stopCache: stopCache, cacheDone: cacheDone,
		runErr: make(chan error, 1), serveErr: make(chan error, 1), stopped: make(chan struct{})}
	sctx, scancel := context.WithCancel(context.Background())
	c.stopSweeper = scancel
	go func() { defer close(c.sweeperDone); sw.Run(sctx) }()
	cleanup = append(cleanup, func() { scancel(); <-c.sweeperDone })
	rctx, rcancel := context.WithCancel(context.Background())
	c.stopRunner = rcancel
	go func() { c.runErr <- runner.Run(rctx) }()
	cleanup = append(cleanup, func() { rcancel(); <-c.runErr })
	select {
	case <-runner.Ready():
	case err := <-c.runErr:
		c.runErr <- err // for the cleanup
		return nil, fmt.Errorf("routes: %w", err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c.hs = health.NewServer()
	healthpb.RegisterHealthServer(gs, c.hs)
	reflection.Register(gs)

	if cfg.MetricsEnabled() {
		ml, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			return nil, fmt.Errorf("metrics listener: %w", err)
		}
		c.metricsAddr = ml.Addr().String()
		c.hsrv = &http.Server{Handler: debugHandlers(metricsMux(reg, st), cfg.Metrics.Pprof), ReadHeaderTimeout: 5 * time.Second}
		go c.hsrv.Serve(ml)
	}
	c.stopKube, c.kubeDone = func() {}, make(chan struct{})
	if cfg.Kubernetes.Enabled {
		kr, err := kube.New(cfg.Kubernetes, ctl, kube.Options{Logger: log})
		if err != nil {
			return nil, err
		}
		kctx, kcancel := context.WithCancel(context.Background())
		c.stopKube = kcancel
		go func() {
			defer close(c.kubeDone)
			if err := kr.Run(kctx); err != nil {
				log.Error("kubernetes reconciler stopped", logkey.Err, err)
			}
		}()
	} else {
		close(c.kubeDone)
	}
	go func() { c.serveErr <- gs.Serve(lis) }()
	restAPI.serve(log)
	go c.supervise()
	log.Info("controller serving", logkey.API, lis.Addr().String(), logkey.Metrics, c.metricsAddr, logkey.REST, c.restAddr)
	return c, nil
}

// newEnroller builds the enrollment authority: with api.enrollment.ca_key,
// it signs with that CA; else an external CA issues the certificates.
func newEnroller(cfg Config, st store.Store, revs *enroll.Revocations, log *slog.Logger) (*enroll.Enroller, error) {
	e := cfg.API.Enrollment
	ecfg := enroll.Config{Lifetime: e.CertLifetime, Grace: e.RenewGrace, Revocations: revs, Logger: log.With(logkey.Component, logkey.ComponentEnroll)}
	if ecfg.Grace == 0 {
		ecfg.Grace = -1 // none
	}
	if e.Enabled() && cfg.API.TLS.Enabled() {
		ca, err := enroll.LoadCA(cfg.enrollCACert(), e.CAKey)
		if err != nil {
			return nil, fmt.Errorf("api.enrollment: %w", err)
		}
		ecfg.CA = ca
	}
	return enroll.New(st, ecfg), nil
}

// serverTLS is the API's TLS configuration. With enrollment, the controller
// verifies client certificates itself: a client without one may join, one
// expired within the renewal grace may renew; and it sends its CA with its
// certificate, so that a joining agent finds the CA it pins. Revoked
// certificates are refused at the handshake either way.
func serverTLS(cfg Config, e *enroll.Enroller, revs *enroll.Revocations) (*tls.Config, error) {
	if e.CA() == nil {
		tc, err := tlsconfig.Server(cfg.API.TLS)
		if err != nil {
			return nil, err
		}
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 && revs.Revoked(cs.PeerCertificates[0].SerialNumber) {
				return fmt.Errorf("tls: client certificate %s is revoked", cs.PeerCertificates[0].SerialNumber.Text(16))
			}
			return nil
		}
		return tc, nil
	}
	v := tlsconfig.Verify{Anonymous: true, Grace: e.Grace()}
	if revs != nil {
		v.Revoked = revs.Revoked
	}
	tc, err := tlsconfig.ServerWith(cfg.API.TLS, v)
	if err != nil {
		return nil, err
	}
	chain := tc.Certificates[0].Certificate
	ca := e.CA().Certificate().Raw
	if !bytes.Equal(chain[len(chain)-1], ca) {
		tc.Certificates[0].Certificate = append(chain[:len(chain):len(chain)], ca)
	}
	return tc, nil
}

func openStore(ctx context.Context, cfg Config, opts Options, log *slog.Logger, m *metrics) (store.Store, error) {
	if opts.OpenStore != nil {
		return opts.OpenStore(ctx)
	}
	if len(cfg.Etcd.Endpoints) > 0 {
		log.Info("using etcd store", logkey.EtcdEndpoints, cfg.Etcd.Endpoints)
		return etcd.Open(ctx, etcd.Options{Endpoints: cfg.Etcd.Endpoints, Namespace: cfg.Etcd.Namespace})
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	path := filepath.Join(cfg.DataDir, "state.db")
	log.Info("using bbolt store", logkey.Path, path)
	return bolt.Open(path, bolt.Options{OnCommit: func(d time.Duration, n int) {
		m.commitSeconds.Observe(d.Seconds())
		m.commitTxns.Observe(float64(n))
	}})
}

// speaker builds the BGP speaker when bgp.router_id is set (else nil).
func speaker(cfg Config, log *slog.Logger) (bgp.Speaker, []bgp.PeerConfig, error) {
	if !cfg.BGP.Enabled() {
		log.Info("BGP speaker disabled: set bgp.router_id to advertise endpoints to edge routers")
		return nil, nil, nil
	}
	bcfg, err := cfg.BGP.Speaker()
	if err != nil {
		return nil, nil, err
	}
	sp, err := gobgp.New(bcfg, log.With(logkey.Component, logkey.ComponentBGP))
	if err != nil {
		return nil, nil, err
	}
	return sp, bcfg.Peers, nil
}

func metricsMux(reg *prometheus.Registry, st store.Store) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		hctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if _, _, err := st.List(hctx, keys.Networks); err != nil {
			http.Error(w, "store: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Addr is the API's address.
func (c *Controller) Addr() string { return c.lis.Addr().String() }

// RESTAddr is the REST API's address ("" when off).
func (c *Controller) RESTAddr() string { return c.restAddr }

// MetricsAddr is the metrics listener's address ("" when off).
func (c *Controller) MetricsAddr() string { return c.metricsAddr }

// supervise stops the controller when Start's context ends (gracefully) or
// a part of it fails.
func (c *Controller) supervise() {
	var err error
	graceful := false
	select {
	case <-c.ctx.Done():
		c.log.Info("shutting down")
		graceful = true
	case <-c.stopped:
		return
	case err = <-c.serveErr:
		err = fmt.Errorf("API server: %w", err)
	case err = <-c.runErr:
		c.runErr <- err
		err = fmt.Errorf("routes: %w", err)
	}
	c.err = err
	c.stop(graceful)
}

// Wait returns once the controller has stopped: nil after Start's context
// ended or Stop, else what made it fail.
func (c *Controller) Wait() error {
	<-c.stopped
	return c.err
}

// Stop stops the controller at once: its connections and streams end.
func (c *Controller) Stop() { c.stop(false) }

func (c *Controller) stop(graceful bool) {
	c.stopOnce.Do(func() {
		restServer{h: c.rest, srv: c.restSrv}.stop()
		c.hs.Shutdown()
		if graceful {
			done := make(chan struct{})
			go func() { c.gs.GracefulStop(); close(done) }()
			// Route streams never end by themselves: end them now, not
			// after the 10 s below (the agents resume after the restart).
			ectx, cancel := context.WithTimeout(context.Background(), time.Second)
			c.runner.EndGatewayStreams(ectx)
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				c.log.Warn("requests still running after 10s; stopping them")
				c.gs.Stop()
				<-done
			}
		} else {
			c.gs.Stop()
		}
		if c.hsrv != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c.hsrv.Shutdown(sctx)
			cancel()
		}
		c.stopKube()
		<-c.kubeDone
		c.stopRunner()
		if err := <-c.runErr; err != nil && !errors.Is(err, context.Canceled) {
			c.log.Warn("route table stopped", logkey.Err, err)
		}
		c.runErr <- nil
		c.stopSweeper()
		<-c.sweeperDone
		c.stopRevs()
		<-c.revsDone
		c.stopCache()
		<-c.cacheDone
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := c.sweeper.Stop(sctx); err != nil {
			c.log.Warn("controller liveness key left to go stale", logkey.Err, err)
		}
		cancel()
		c.st.Close()
		c.log.Info("stopped")
		close(c.stopped)
	})
}
