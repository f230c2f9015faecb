package server

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"runtime/debug"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/vpn"
)

type metrics struct {
	requests      *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	commitSeconds prometheus.Histogram
	commitTxns    prometheus.Histogram
	swept         prometheus.Counter
	changeSent    prometheus.Histogram
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
	m.swept = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "iotfabric_stream_markers_swept_total", Help: "Route stream markers of dead controllers removed by this controller.",
	})
	m.changeSent = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "iotfabric_gateway_route_change_seconds",
		Help:    "From the route table taking in a change (a store change, routes from a BGP peer) until a gateway route stream handed it to gRPC; one observation per stream.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, .75, 1, 1.5, 2, 3, 5, 10, 30},
	})
	reg.MustRegister(m.requests, m.latency, m.commitSeconds, m.commitTxns, m.swept, m.changeSent)
	return m
}

// registerCounts registers the count of gateway registrations by where the
// controller answered them from.
func registerCounts(reg *prometheus.Registry, ctl *controller.Controller) {
	for _, from := range []string{"memory", "store"} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "iotfabric_gateway_registers_total",
			Help:        "Gateway registrations answered from memory (an unchanged gateway, from the gateway cache: no store call) or from the store.",
			ConstLabels: prometheus.Labels{"from": from},
		}, func() float64 {
			memory, fromStore := ctl.RegisterCounts()
			if from == "memory" {
				return float64(memory)
			}
			return float64(fromStore)
		}))
	}
}

// routeGauges registers the route table's gauges.
func (m *metrics) routeGauges(reg *prometheus.Registry, runner *vpn.Runner) {
	for _, g := range []struct {
		name, help string
		get        func(vpn.Stats) int
	}{
		{"iotfabric_routes_local", "VPN routes of the endpoints (announced to BGP peers when BGP runs).", func(s vpn.Stats) int { return s.Announced }},
		{"iotfabric_routes_received", "VPN routes received from BGP peers.", func(s vpn.Stats) int { return s.Received }},
		{"iotfabric_gateway_streams", "Gateways whose agent has a route stream open.", func(s vpn.Stats) int { return s.GatewayStreams }},
		{"iotfabric_endpoints_not_advertised", "Endpoints whose routes are not advertised (no route could be made, or the BGP speaker refused it).", func(s vpn.Stats) int { return s.NotAdvertised }},
		{"iotfabric_networks_route_limited", "Networks over routes.max_per_network: their gateways keep their last routes and get no changes.", func(s vpn.Stats) int { return s.NetworksFrozen }},
	} {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: g.name, Help: g.help},
			func() float64 { return float64(g.get(runner.Stats())) }))
	}
	reg.MustRegister(importCollector{runner})
}

// importCollector exports the BGP speaker's import limits and drops.
type importCollector struct{ r *vpn.Runner }

var (
	descPeerUp = prometheus.NewDesc("iotfabric_bgp_peer_established",
		"1 when the BGP session with the peer is established, else 0.", []string{"peer", "state"}, nil)
	descPrefixLimit = prometheus.NewDesc("iotfabric_bgp_prefix_limit_exceeded_total",
		"BGP sessions shut down because the peer sent more routes than its max_prefixes.", []string{"peer"}, nil)
	descNotAdvertised = prometheus.NewDesc("iotfabric_bgp_routes_not_advertised_total",
		"Routes the BGP speaker refused to advertise (their UPDATE would exceed the BGP message size).", nil, nil)
	descFiltered = prometheus.NewDesc("iotfabric_bgp_routes_filtered_total",
		"Received routes dropped because no network imports any of their route targets.", nil, nil)
	descRefreshes = prometheus.NewDesc("iotfabric_bgp_inbound_refreshes_total",
		"Times the peers' stored routes were run through the import filter again (soft reset inbound) because it now imports a route target a refused route carries.", nil, nil)
)

func (c importCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPeerUp
	ch <- descPrefixLimit
	ch <- descNotAdvertised
	ch <- descFiltered
	ch <- descRefreshes
}

func (c importCollector) Collect(ch chan<- prometheus.Metric) {
	if !c.r.HasSpeaker() {
		return
	}
	sp := c.r.Stats().Speaker
	for a, st := range sp.Peers {
		up := 0.0
		if st == bgp.PeerEstablished {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descPeerUp, prometheus.GaugeValue, up, a.String(), string(st))
	}
	for a, n := range sp.PrefixLimitHits {
		ch <- prometheus.MustNewConstMetric(descPrefixLimit, prometheus.CounterValue, float64(n), a.String())
	}
	ch <- prometheus.MustNewConstMetric(descNotAdvertised, prometheus.CounterValue, float64(sp.NotAdvertised))
	ch <- prometheus.MustNewConstMetric(descFiltered, prometheus.CounterValue, float64(sp.Filtered))
	ch <- prometheus.MustNewConstMetric(descRefreshes, prometheus.CounterValue, float64(sp.InboundRefreshes))
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
				log.Error("panic in API handler", logkey.Method, info.FullMethod, logkey.Panic, r, logkey.Stack, string(debug.Stack()))
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
				log.Error("panic in API stream", logkey.Method, info.FullMethod, logkey.Panic, r, logkey.Stack, string(debug.Stack()))
				err = status.Errorf(codes.Internal, "internal error in %s", shortMethod(info.FullMethod))
			}
		}()
		return h(srv, ss)
	}
}

// debugHandlers adds Go's profiles (/debug/pprof/) to the metrics mux when
// on (metrics.pprof).
func debugHandlers(mux *http.ServeMux, on bool) *http.ServeMux {
	if !on {
		return mux
	}
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
