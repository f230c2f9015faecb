package server

import (
	"context"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/vpn"
)

type metrics struct {
	requests      *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	commitSeconds prometheus.Histogram
	commitTxns    prometheus.Histogram
	swept         prometheus.Counter
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
	reg.MustRegister(m.requests, m.latency, m.commitSeconds, m.commitTxns, m.swept)
	return m
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
	} {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: g.name, Help: g.help},
			func() float64 { return float64(g.get(runner.Stats())) }))
	}
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
