// Command controller is the iotfabric controller: it keeps virtual networks,
// gateways, endpoints and their addresses in a store (a bbolt file, or etcd for
// several controllers) and serves the iotfabric.v1 gRPC API. It reads flags
// and the configuration file, and starts the controller pkg/server builds.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/iotfabric/iotfabric/internal/buildinfo"
	"github.com/iotfabric/iotfabric/internal/logbound"
	"github.com/iotfabric/iotfabric/pkg/api"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/server"
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
	apiInsecure := fs.Bool("api-insecure", false, "allow --api-listen on a non-loopback address without api.tls (every caller that reaches it is an admin)")
	httpListen := fs.String("http-listen", "", "REST API address (docs/rest.md; default \"off\")")
	metricsListen := fs.String("metrics-listen", "", "Prometheus /metrics and /healthz address (default "+DefaultMetricsListen+"; \"off\" disables)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (default info)")
	version := fs.Bool("version", false, "print the version, commit, build date, Go version and platform, then exit")
	asn := fs.Uint("asn", 0, fmt.Sprintf("BGP AS number, also used in automatic route targets (default %d)", DefaultASN))
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *version {
		fmt.Println(buildinfo.Get("controller"))
		return 0
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
		case "api-insecure":
			cfg.API.Insecure = *apiInsecure
		case "http-listen":
			cfg.API.HTTPListen = *httpListen
		case "metrics-listen":
			cfg.Metrics.Listen = *metricsListen
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
		log.Error("controller stopped", logkey.Err, err)
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
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if cfg.Log.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	// Bounded: long values cut; a line repeated by one component, or in
	// the audit log by one caller with one outcome, summarised per interval.
	// The audit lines of calls that succeeded are all kept.
	return slog.New(logbound.NewHandler(h, logbound.Options{KeyAttrs: []string{logkey.Identity, logkey.Code}, Never: api.AuditSucceeded}))
}

// serve runs the controller until ctx ends. ready, if not nil, receives the
// bound API and metrics addresses once serving.
func serve(ctx context.Context, cfg Config, log *slog.Logger, ready func(api, metrics string)) error {
	c, err := server.Start(ctx, cfg, server.Options{Logger: log})
	if err != nil {
		return err
	}
	if ready != nil {
		ready(c.Addr(), c.MetricsAddr())
	}
	return c.Wait()
}
