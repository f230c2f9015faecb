// Command controller is the iotfabric controller: it keeps virtual networks,
// gateways, endpoints and their addresses in a store (a bbolt file, or etcd for
// several controllers) and serves the iotfabric.v1 gRPC API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/iotfabric/iotfabric/pkg/api"
	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/bgp/gobgp"
	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/keys"
	"github.com/iotfabric/iotfabric/pkg/store"
	"github.com/iotfabric/iotfabric/pkg/store/bolt"
	"github.com/iotfabric/iotfabric/pkg/store/etcd"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	"github.com/iotfabric/iotfabric/pkg/vpn"
)

const usage = `Usage: controller [flags]

The iotfabric controller keeps virtual networks, gateways, endpoints and their
addresses, and serves the iotfabric.v1 gRPC API (use iotfabricctl to drive it).

State is kept in one bbolt file (<data-dir>/state.db) unless etcd endpoints are
given, in which case several controllers can share it. Settings come from the
YAML file given with --config; flags override the file.

Flags:
`

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr *os.File) int {
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	configPath := fs.String("config", "", "YAML configuration file (see README, Configuration)")
	dataDir := fs.String("data-dir", "", "directory of the bbolt state file (default "+DefaultDataDir+")")
	etcdEndpoints := fs.String("etcd-endpoints", "", "comma-separated etcd URLs; when set, state is kept in etcd instead of bbolt")
	apiListen := fs.String("api-listen", "", "gRPC API address (default "+DefaultAPIListen+")")
	metricsListen := fs.String("metrics-listen", "", "Prometheus /metrics and /healthz address (default "+DefaultMetricsListen+"; \"off\" disables)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (default info)")
	asn := fs.Uint("asn", 0, fmt.Sprintf("BGP AS number, also used in automatic route targets (default %d)", DefaultASN))
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "controller: unexpected argument %q (all settings are flags; see --help)\n", fs.Arg(0))
		return 2
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "controller: %v\n", err)
		return 2
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "data-dir":
			cfg.DataDir = *dataDir
		case "etcd-endpoints":
			cfg.Etcd.Endpoints = splitList(*etcdEndpoints)
		case "api-listen":
			cfg.API.Listen = *apiListen
		case "metrics-listen":
			cfg.Metrics.Listen = *metricsListen
			if *metricsListen == "off" {
				cfg.Metrics.Listen = ""
			}
		case "log-level":
			cfg.Log.Level = *logLevel
		case "asn":
			cfg.BGP.ASN = uint32(*asn)
		}
	})
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "controller: invalid configuration:\n%v\n", err)
		return 2
	}
	log := newLogger(cfg, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, cfg, log, nil); err != nil {
		log.Error("controller stopped", "err", err)
		return 1
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func newLogger(cfg Config, w *os.File) *slog.Logger {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func openStore(ctx context.Context, cfg Config, log *slog.Logger, m *metrics) (store.Store, error) {
	if len(cfg.Etcd.Endpoints) > 0 {
		log.Info("using etcd store", "endpoints", cfg.Etcd.Endpoints)
		return etcd.Open(ctx, etcd.Options{Endpoints: cfg.Etcd.Endpoints, Namespace: cfg.Etcd.Namespace})
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	path := filepath.Join(cfg.DataDir, "state.db")
	log.Info("using bbolt store", "path", path)
	return bolt.Open(path, bolt.Options{OnCommit: func(d time.Duration, n int) {
		m.commitSeconds.Observe(d.Seconds())
		m.commitTxns.Observe(float64(n))
	}})
}

// serve runs the controller until ctx ends. ready, if not nil, receives the
// bound API and metrics addresses once serving.
func serve(ctx context.Context, cfg Config, log *slog.Logger, ready func(api, metrics string)) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := newMetrics(reg)
	st, err := openStore(ctx, cfg, log, m)
	if err != nil {
		return err
	}
	defer st.Close()

	ctl := controller.New(st, controller.Config{ASN: cfg.BGP.ASN, Logger: log})
	n, err := ctl.LoadNetworks(ctx)
	if err != nil {
		return fmt.Errorf("load networks: %w", err)
	}
	log.Info("state loaded", "networks", n)

	lis, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return fmt.Errorf("API listener: %w", err)
	}
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(m.unary, recoverUnary(log)),
		grpc.ChainStreamInterceptor(m.stream, recoverStream(log)),
	}
	if cfg.API.TLS.Enabled() {
		tc, err := tlsconfig.Server(cfg.API.TLS)
		if err != nil {
			lis.Close()
			return fmt.Errorf("api.tls: %w", err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
		log.Info("API requires mutual TLS", "client_ca", cfg.API.TLS.CA)
	}
	gs := grpc.NewServer(opts...)

	// The route table follows the store's watch; it drives the BGP speaker
	// (when configured) and serves routes to the API and the agents.
	var sp bgp.Speaker
	var configPeers []bgp.PeerConfig
	if cfg.BGP.Enabled() {
		bcfg, err := cfg.BGP.Speaker()
		if err != nil {
			lis.Close()
			return err
		}
		gsp, err := gobgp.New(bcfg, log.With("component", "bgp"))
		if err != nil {
			lis.Close()
			return err
		}
		sp, configPeers = gsp, bcfg.Peers
	} else {
		log.Info("BGP speaker disabled: set bgp.router_id to advertise endpoints to edge routers")
	}
	runner := vpn.NewRunner(st, sp, cfg.BGP.ASN, log.With("component", "vpn"))
	for _, g := range []struct {
		name, help string
		get        func(vpn.Stats) int
	}{
		{"iotfabric_routes_local", "VPN routes of the endpoints (announced to BGP peers when BGP runs).", func(s vpn.Stats) int { return s.Announced }},
		{"iotfabric_routes_received", "VPN routes received from BGP peers.", func(s vpn.Stats) int { return s.Received }},
		{"iotfabric_gateway_streams", "Gateways whose agent has a route stream open.", func(s vpn.Stats) int { return s.GatewayStreams }},
	} {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: g.name, Help: g.help},
			func() float64 { return float64(g.get(runner.Stats())) }))
	}
	api.Services{Controller: ctl, Routes: runner, Peers: vpn.NewPeers(st, runner, configPeers), Logger: log}.Register(gs)
	runErr := make(chan error, 1)
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	go func() { runErr <- runner.Run(rctx) }()
	select {
	case <-runner.Ready():
	case err := <-runErr:
		lis.Close()
		return fmt.Errorf("routes: %w", err)
	case <-ctx.Done():
	}
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)

	var metricsAddr string
	var hsrv *http.Server
	if cfg.Metrics.Listen != "" {
		ml, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			lis.Close()
			return fmt.Errorf("metrics listener: %w", err)
		}
		metricsAddr = ml.Addr().String()
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
		hsrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go hsrv.Serve(ml)
	}

	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
	log.Info("controller serving", "api", lis.Addr().String(), "metrics", metricsAddr)
	if ready != nil {
		ready(lis.Addr().String(), metricsAddr)
	}

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-errc:
		return fmt.Errorf("API server: %w", err)
	case err := <-runErr:
		gs.Stop()
		return fmt.Errorf("routes: %w", err)
	}
	hs.Shutdown()
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		log.Warn("requests still running after 10s; stopping them")
		gs.Stop()
	}
	if hsrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hsrv.Shutdown(sctx)
	}
	log.Info("stopped")
	return nil
}

type metrics struct {
	requests      *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	commitSeconds prometheus.Histogram
	commitTxns    prometheus.Histogram
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iotfabric_api_requests_total", Help: "API requests by method and gRPC status code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "iotfabric_api_request_seconds", Help: "API request latency by method (unary calls).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
		}, []string{"method"}),
	}
	m.commitSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "iotfabric_store_commit_seconds", Help: "Duration of bbolt commits (each carries one or more transactions, fsync included).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14),
	})
	m.commitTxns = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "iotfabric_store_commit_transactions", Help: "Transactions carried by one bbolt commit (group commit).",
		Buckets: prometheus.ExponentialBuckets(1, 2, 10),
	})
	reg.MustRegister(m.requests, m.latency, m.commitSeconds, m.commitTxns)
	return m
}

func shortMethod(full string) string { return full[strings.LastIndexByte(full, '/')+1:] }

func (m *metrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	t := time.Now()
	resp, err := h(ctx, req)
	meth := shortMethod(info.FullMethod)
	m.latency.WithLabelValues(meth).Observe(time.Since(t).Seconds())
	m.requests.WithLabelValues(meth, status.Code(err).String()).Inc()
	return resp, err
}

func (m *metrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	err := h(srv, ss)
	m.requests.WithLabelValues(shortMethod(info.FullMethod), status.Code(err).String()).Inc()
	return err
}

// recoverUnary turns a panic in a handler into an Internal error: a bad
// request never takes the controller down.
func recoverUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				log.Error("panic in API handler", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
				err = status.Errorf(codes.Internal, "internal error in %s; the controller logged the details", shortMethod(info.FullMethod))
			}
		}()
		return h(ctx, req)
	}
}

func recoverStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				log.Error("panic in API stream", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
				err = status.Errorf(codes.Internal, "internal error in %s", shortMethod(info.FullMethod))
			}
		}()
		return h(srv, ss)
	}
}
