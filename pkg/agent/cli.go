package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/iotfabric/iotfabric/pkg/encap"
	"github.com/iotfabric/iotfabric/pkg/enrollclient"
	"github.com/iotfabric/iotfabric/pkg/kube/podwatch"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/overlay"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	"github.com/iotfabric/iotfabric/pkg/validate"
)

// DefaultStateDir and DefaultCNISocket are where the agent keeps its state
// and serves the CNI plugin.
const (
	DefaultStateDir  = "/var/lib/iotfabric/agent"
	DefaultCNISocket = "/run/iotfabric/cni.sock"
)

// Flags are the command-line settings of the controller-driven agent.
type Flags struct {
	Controllers       []string
	Gateway           string
	Underlay          string
	StateDir          string
	CNISocket         string
	TLS               tlsconfig.Files
	NamespaceNetworks string
	Encaps            string
	Keepalive         time.Duration
	KeepaliveTimeout  time.Duration
	// Join is a bootstrap token: enroll (Enroll) when the state directory
	// holds no identity yet.
	Join          string
	CAFingerprint string
	// Kubernetes (pkg/kube/podwatch): the node's pods map to networks.
	KubeNode           string
	Kubeconfig         string
	KubeDefaultNetwork string
}

type listFlag struct{ l *[]string }

func (f listFlag) String() string {
	if f.l == nil {
		return ""
	}
	return strings.Join(*f.l, ",")
}

func (f listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*f.l = append(*f.l, v)
		}
	}
	return nil
}

// Register adds the flags to fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.Var(listFlag{&f.Controllers}, logkey.Controller, "controller API address host:port (repeatable, or comma-separated); the agent works while any one is up")
	fs.StringVar(&f.Gateway, logkey.Gateway, "", "this gateway's name at the controller (enables the controller sessions and the CNI server)")
	fs.StringVar(&f.Underlay, logkey.Underlay, "", "this gateway's IPv4 underlay (tunnel source) address")
	fs.StringVar(&f.StateDir, "state-dir", DefaultStateDir, "directory of the agent's state (endpoints, labels, blocks, routes)")
	fs.StringVar(&f.CNISocket, "cni-socket", DefaultCNISocket, "unix socket the CNI plugin talks to (mode 0600)")
	fs.StringVar(&f.TLS.Cert, "tls-cert", "", "client certificate (PEM) for the controllers' mutual TLS")
	fs.StringVar(&f.TLS.Key, "tls-key", "", "its private key (PEM)")
	fs.StringVar(&f.TLS.CA, "tls-ca", "", "CA (PEM) that signs the controllers' certificates")
	fs.StringVar(&f.NamespaceNetworks, "namespace-networks", "", "pod namespace to network mapping, ns=network,... (default: the network named like the namespace)")
	fs.DurationVar(&f.Keepalive, "keepalive", DefaultKeepalive, "ping a controller after this long without traffic to notice a dead connection (0: off; at least 10s)")
	fs.DurationVar(&f.KeepaliveTimeout, "keepalive-timeout", DefaultKeepaliveTimeout, "close and reconnect when a ping is not answered within this (0: the default)")
	fs.StringVar(&f.Join, "join", "", "bootstrap token (iotfabricctl gateway token create): enroll with the first --controller that answers, unless the state directory holds an identity already; the gateway's name comes from the token")
	fs.StringVar(&f.CAFingerprint, "ca-fingerprint", "", "with --join: SHA-256 fingerprint of the controller's CA (sha256:<hex>, printed with the token)")
	fs.StringVar(&f.KubeNode, "kube-node", "", "this gateway's Kubernetes node name: pods' networks come from their annotations and namespaces (off when empty)")
	fs.StringVar(&f.Kubeconfig, "kubeconfig", "", "kubeconfig for --kube-node (default: the pod's service account)")
	fs.StringVar(&f.KubeDefaultNetwork, "kube-default-network", "", "network of pods whose namespace names none and is not isolated (with --kube-node)")
	fs.StringVar(&f.Encaps, "encaps", "mplsoudp,mplsogre", "encapsulations this gateway uses, most preferred first: mplsoudp, mplsogre, plain")
}

// Enabled reports whether the controller-driven agent was asked for.
func (f *Flags) Enabled() bool { return f.Gateway != "" || f.Join != "" }

// IdentityDir is where an enrolled agent keeps its key (0600), certificate
// and CA: the tls directory of its state directory.
func (f *Flags) IdentityDir() string { return filepath.Join(f.StateDir, "tls") }

// Enroll joins with the --join token when the state directory holds no
// identity yet: the key is generated here and written 0600 to IdentityDir,
// with the certificate the controller issued and its CA. The controllers
// are tried in turn.
func (f *Flags) Enroll(ctx context.Context, log *slog.Logger) error {
	if f.Join == "" {
		return nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := f.IdentityDir()
	if enrollclient.Enrolled(dir) {
		log.Info("already enrolled; --join ignored", logkey.Path, dir)
		return nil
	}
	if f.CAFingerprint == "" || len(f.Controllers) == 0 {
		return errors.New("--join needs --ca-fingerprint and a --controller")
	}
	if f.TLS.Enabled() {
		return errors.New("--join and --tls-* exclude each other: an enrolled agent keeps its certificate in its state directory")
	}
	var errs []error
	for _, addr := range f.Controllers {
		jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		id, err := enrollclient.Join(jctx, addr, f.Join, f.CAFingerprint)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if gw := id.Name().Gateway; id.Name().Role != tlsconfig.RoleGateway || (f.Gateway != "" && gw != f.Gateway) {
			return fmt.Errorf("the token enrolls %s, not gateway %q", id.Name(), f.Gateway)
		}
		if err := id.Save(dir); err != nil {
			return fmt.Errorf("save the enrolled identity: %w", err)
		}
		log.Info("enrolled", logkey.Identity, id.Name().String(), logkey.Controller, addr, logkey.NotAfter, id.Cert.NotAfter, logkey.Path, dir)
		return nil
	}
	return fmt.Errorf("enroll: %w", errors.Join(errs...))
}

// Options validates the flags and returns the agent's options (Applier and
// HostNetns are the caller's).
func (f *Flags) Options(log *slog.Logger) (Options, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	flog := log.With(logkey.Component, logkey.ComponentAgent)
	var errs []error
	if f.Gateway != "" { // else from the enrolled identity, or refused below
		if err := validate.Name("gateway", f.Gateway); err != nil {
			errs = append(errs, fmt.Errorf("--gateway: %w", err))
		}
	}
	u, err := validate.Underlay(f.Underlay)
	if err != nil {
		errs = append(errs, fmt.Errorf("--underlay: %w", err))
	}
	if len(f.Controllers) == 0 {
		flog.Warn("no --controller: the gateway runs headless from its state directory")
	}
	if !filepath.IsAbs(f.StateDir) || !filepath.IsAbs(f.CNISocket) {
		errs = append(errs, errors.New("--state-dir and --cni-socket must be absolute paths"))
	}
	encaps, old, err := encap.ParseList(f.Encaps)
	if err != nil {
		errs = append(errs, fmt.Errorf("--encaps: %w", err))
	}
	for _, o := range old {
		use, _ := encap.Deprecated(o)
		flog.Warn("deprecated encapsulation spelling in --encaps", logkey.Value, o, logkey.Use, use)
	}
	for _, e := range encaps {
		if e != encap.MPLSoUDP && e != encap.MPLSoGRE && e != encap.Plain {
			errs = append(errs, fmt.Errorf("--encaps: the data plane has no %v (use mplsoudp, mplsogre, plain)", e))
		}
	}
	nsMap := map[string]string{}
	for _, kv := range strings.Split(f.NamespaceNetworks, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || v == "" {
			errs = append(errs, fmt.Errorf("--namespace-networks: %q is not namespace=network", kv))
			continue
		}
		nsMap[k] = v
	}
	ka := f.Keepalive
	switch {
	case ka < 0 || f.KeepaliveTimeout < 0:
		errs = append(errs, fmt.Errorf("--keepalive %v --keepalive-timeout %v: want durations >= 0", f.Keepalive, f.KeepaliveTimeout))
	case ka == 0:
		ka = -1 // off
	case ka < 10*time.Second:
		flog.Warn("--keepalive below 10s: gRPC pings at most every 10s", logkey.Value, ka)
	}
	creds := grpc.WithTransportCredentials(insecure.NewCredentials())
	var renewer *enrollclient.Renewer
	if dir := f.IdentityDir(); !f.TLS.Enabled() && enrollclient.Enrolled(dir) {
		// Enrolled: the certificate of the state directory, renewed by the
		// agent itself.
		id, err := enrollclient.Load(dir)
		if err != nil {
			errs = append(errs, err)
		} else if n := id.Name(); n.Role != tlsconfig.RoleGateway || (f.Gateway != "" && n.Gateway != f.Gateway) {
			errs = append(errs, fmt.Errorf("the identity in %s is %s, not gateway %q", dir, n, f.Gateway))
		} else if renewer, err = enrollclient.NewRenewer(id, dir, f.Controllers, log.With(logkey.Component, logkey.ComponentRenew)); err != nil {
			errs = append(errs, err)
		} else {
			f.Gateway = n.Gateway
			creds = grpc.WithTransportCredentials(renewer.Credentials())
		}
	} else if f.Join != "" {
		errs = append(errs, errors.New("--join: not enrolled yet (call Enroll first)"))
	}
	if f.TLS.Enabled() {
		tc, err := tlsconfig.Client(f.TLS)
		if err != nil {
			errs = append(errs, fmt.Errorf("--tls-*: %w", err))
		} else {
			creds = grpc.WithTransportCredentials(credentials.NewTLS(tc))
		}
	}
	var pods PodResolver
	if f.KubeNode != "" {
		w, err := podwatch.New(podwatch.Config{Node: f.KubeNode, Kubeconfig: f.Kubeconfig, DefaultNetwork: f.KubeDefaultNetwork, Logger: log})
		if err != nil {
			errs = append(errs, fmt.Errorf("--kube-node: %w", err))
		}
		pods = w
	}
	if f.Gateway == "" {
		errs = append(errs, errors.New("--gateway: give this gateway's name (or --join a token)"))
	}
	if err := errors.Join(errs...); err != nil {
		return Options{}, err
	}
	opts := Options{
		Pods:        pods,
		Config:      Config{Gateway: f.Gateway, Underlay: u, StateDir: f.StateDir, Encaps: encaps, Log: log},
		Controllers: f.Controllers, DialOptions: []grpc.DialOption{creds}, Keepalive: ka, KeepaliveTimeout: f.KeepaliveTimeout,
		CNISocket: f.CNISocket, NamespaceNetworks: nsMap, ResyncInterval: 5 * time.Minute,
	}
	if renewer != nil {
		opts.Renewer = renewer
	}
	return opts, nil
}

// KernelFeatures names the kernel features the data plane detected, for
// RegisterRequest.kernel_features.
func KernelFeatures(f overlay.Features) []string {
	var out []string
	for _, x := range []struct {
		ok   bool
		name string
	}{{f.MPLS, "mpls"}, {f.MPLSTunnel, "mpls-iptunnel"}, {f.FOU, "fou"}, {f.IPIP, "ipip"}, {f.GRE, "gre"},
		{f.VRF, "vrf"}, {f.IPv6, "ipv6"}, {f.Nexthops, "nexthops"}} {
		if x.ok {
			out = append(out, x.name)
		}
	}
	return out
}
