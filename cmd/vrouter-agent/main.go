// Command vrouter-agent programs one gateway's data plane: per-network routing
// tables (or VRF devices), local endpoints, MPLS label routes and MPLSoUDP /
// MPLSoGRE tunnels toward remote gateways (pkg/overlay). It runs in one of
// three modes:
//
//   - --gateway NAME: follow the controllers. The agent registers the gateway
//     with every --controller, serves the CNI plugin on a unix socket, reports
//     its pods, receives the routes of the gateway's networks and keeps
//     forwarding (and admitting pods) while no controller is reachable
//     (pkg/agent, docs/agent.md).
//   - --state FILE: apply a hand-written desired state and apply it again
//     whenever the file changes; with --once, apply it once and exit.
//   - --cleanup: remove everything iotfabric created in the kernel (routes,
//     rules, tunnels, VRF devices, the pods' host-side veths, the FOU port),
//     then exit.
//
// The first two share one reconcile loop (pkg/agent.Reconciler) with two
// sources: the agent's core and the state file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/iotfabric/iotfabric/internal/buildinfo"
	"github.com/iotfabric/iotfabric/internal/logbound"
	"github.com/iotfabric/iotfabric/pkg/agent"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/overlay"
)

const usage = `vrouter-agent: program a gateway's overlay data plane into the Linux kernel.

Usage:
  vrouter-agent --gateway NAME --underlay IP --controller ADDR [flags]
                                       follow the controllers: register the gateway, serve the CNI
                                       plugin, report its pods and program the routes (docs/agent.md)
  vrouter-agent --join TOKEN --ca-fingerprint SHA256 --underlay IP --controller ADDR [flags]
                                       the same, enrolled first: generate a key, get a certificate for
                                       the token's gateway, keep and renew it in --state-dir/tls
  vrouter-agent --state FILE [flags]   apply FILE (YAML or JSON) and re-apply it whenever it changes
  vrouter-agent --cleanup [flags]      remove everything iotfabric created in the kernel (the pods' veths
                                       included), then exit

The state file holds the whole desired state of the gateway:

  underlay: 192.0.2.1              # this gateway's IPv4 underlay (tunnel source) address
  encapPriority: [mplsoudp, mplsogre]
  networks:
  - name: red
    table: 7001                    # routing table, 7000-7999
    endpoints:                     # local pods: host-side veth, address, MPLS label
    - {interface: veth1, address: 10.1.0.1, label: 1001}
    routes:                        # prefixes behind remote gateways
    - {prefix: 10.1.0.2/32, label: 1002, remoteUnderlay: 192.0.2.2, encaps: [mplsoudp, mplsogre]}

Everything the agent creates is marked: route protocol 165, tables 7000-7999,
rule priorities 7000-7099, interface names starting with "iof". At start it adopts
what is there and removes orphans without disturbing traffic that stays wanted.
On SIGTERM/SIGINT it exits and leaves the data plane in place (forwarding goes on).
With --gateway the desired state comes from the controllers and the CNI plugin
(docs/agent.md) instead of a file.

Flags:
`

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("vrouter-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		statePath  = fs.String("state", "", "desired state file (YAML or JSON); re-applied when it changes")
		cleanup    = fs.Bool("cleanup", false, "remove everything iotfabric owns in the kernel and exit")
		netnsPath  = fs.String("netns", "", "network namespace path to program (default: the agent's own)")
		vrf        = fs.String("vrf", "auto", "VRF devices: auto (when the kernel has them), on, off (policy tables)")
		fastPath   = fs.String("fast-path", "auto", "MPLSoUDP/MPLSoGRE encapsulation: off (kernel tunnels), auto (BPF fast path when the kernel allows it, kernel tunnels otherwise), on (BPF fast path or fail)")
		metrics    = fs.String("metrics", "", "serve Prometheus metrics on http://`ADDR`/metrics, e.g. 127.0.0.1:9120 (off when empty)")
		podGateway = fs.String("gateway-address", overlay.DefaultPodGatewayAddr.String(), "the pods' default-route address, put on every endpoint's host-side interface")
		resync     = fs.Duration("resync", 5*time.Minute, "re-read the kernel and repair drift this often (0: never)")
		level      = fs.String("log-level", "info", "log level: debug, info, warn, error")
		version    = fs.Bool("version", false, "print the version, commit, build date, Go version and platform, then exit")
		once       = fs.Bool("once", false, "apply the state file once and exit (non-zero if it did not fully apply)")
	)
	var gwf agent.Flags
	gwf.Register(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *version {
		fmt.Println(buildinfo.Get("vrouter-agent"))
		return 0
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "vrouter-agent: --log-level: %v\n", err)
		return 2
	}
	// Bounded: long values cut, repeated lines summarised per interval.
	base := slog.New(logbound.NewHandler(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}), logbound.Options{}))
	log := base.With(logkey.Component, logkey.ComponentVRouterAgent)
	podGW, err := netip.ParseAddr(*podGateway)
	if err != nil {
		fmt.Fprintf(stderr, "vrouter-agent: --gateway-address: %v\n", err)
		return 2
	}
	modes := 0
	for _, on := range []bool{*cleanup, *statePath != "", gwf.Enabled()} {
		if on {
			modes++
		}
	}
	if modes != 1 {
		fmt.Fprintln(stderr, "vrouter-agent: give exactly one of --gateway NAME (or --join TOKEN), --state FILE or --cleanup (see --help)")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var gwOpts agent.Options
	if gwf.Enabled() {
		if err := gwf.Enroll(ctx, log); err != nil {
			log.Error("enroll", logkey.Err, err)
			return 1
		}
		if gwOpts, err = gwf.Options(base); err != nil {
			fmt.Fprintf(stderr, "vrouter-agent: %v\n", err)
			return 2
		}
	}
	m, err := overlay.New(ctx, overlay.Config{NetNS: *netnsPath, Logger: base, PodGatewayAddr: podGW, VRF: overlay.VRFMode(*vrf), FastPath: overlay.FastPathMode(*fastPath)})
	if err != nil {
		log.Error("start", logkey.Err, err)
		return 1
	}
	defer m.Close()

	if *metrics != "" && !*cleanup {
		l, err := net.Listen("tcp", *metrics)
		if err != nil {
			log.Error("start", logkey.Err, fmt.Errorf("--metrics: %w", err))
			return 1
		}
		log.Info("serving metrics", logkey.Addr, l.Addr().String())
		srv := &http.Server{Handler: metricsHandler(m.FastPathStats), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(l)
		defer srv.Close()
	}
	if *cleanup {
		if err := m.Cleanup(ctx); err != nil {
			log.Error("cleanup", logkey.Err, err)
			return 1
		}
		log.Info("cleanup done")
		return 0
	}
	if gwf.Enabled() {
		gwOpts.Applier, gwOpts.HostNetns, gwOpts.PodGatewayAddr = m, *netnsPath, podGW
		gwOpts.KernelFeatures, gwOpts.Version = agent.KernelFeatures(m.Features()), buildinfo.Get("vrouter-agent").Version
		if m.UsesFastPath() {
			gwOpts.KernelFeatures = append(gwOpts.KernelFeatures, "bpf-fast-path")
		}
		gwOpts.ResyncInterval = *resync
		a, err := agent.New(gwOpts)
		if err != nil {
			log.Error("start", logkey.Err, err)
			return 1
		}
		log.Info("running", logkey.Gateway, gwOpts.Gateway, logkey.Controllers, gwf.Controllers, logkey.Features, m.Features())
		if err := a.Run(ctx); err != nil {
			log.Error("stopped", logkey.Err, err)
			return 1
		}
		log.Info("shutting down; the data plane stays in place")
		return 0
	}
	if *once {
		data, err := os.ReadFile(*statePath)
		if err == nil {
			var s overlay.State
			if s, err = overlay.ParseState(data, log); err == nil {
				err = m.Set(ctx, s)
			}
		}
		if err != nil {
			log.Error("apply", logkey.Path, *statePath, logkey.Err, err)
			return 1
		}
		log.Info("state applied", logkey.Path, *statePath)
		return 0
	}
	src, err := agent.OpenStateFile(*statePath, base)
	if err != nil {
		log.Error("start", logkey.Err, err)
		return 1
	}
	log.Info("running", logkey.Path, *statePath, logkey.Features, m.Features())
	if err := agent.RunStateFile(ctx, src, m, base, *resync); err != nil {
		log.Error("stopped", logkey.Err, err)
		return 1
	}
	log.Info("shutting down; the data plane stays in place")
	return 0
}
