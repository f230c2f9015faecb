package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/iotfabric/iotfabric/pkg/bgp"
	"github.com/iotfabric/iotfabric/pkg/console"
	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/enroll"
	"github.com/iotfabric/iotfabric/pkg/kube"
	"github.com/iotfabric/iotfabric/pkg/rest"
	"github.com/iotfabric/iotfabric/pkg/tlsconfig"
	"github.com/iotfabric/iotfabric/pkg/vpn"
)

// Config is the controller's configuration file (YAML). Flags override it.
type Config struct {
	// DataDir holds the bbolt state file (state.db). Used unless etcd endpoints are set.
	DataDir string     `yaml:"data_dir"`
	Etcd    EtcdConfig `yaml:"etcd"`
	API     struct {
		Listen string `yaml:"listen"`
		// TLS turns on mutual TLS: clients (agents, iotfabricctl) must present a
		// certificate signed by tls.ca, whose subject gives their role
		// (docs/security.md).
		TLS tlsconfig.Files `yaml:"tls"`
		// Insecure lets the API listen on an address other than loopback
		// without TLS: every caller that can reach it is then an admin.
		Insecure bool `yaml:"insecure"`
		// Keepalive: the pings the API permits (agents ping every 30 s by
		// default) and the controller's own pings to notice dead clients.
		Keepalive KeepaliveConfig `yaml:"keepalive"`
		// Enrollment: the CA that signs the certificates of enrolled
		// gateways and operators (docs/security.md).
		Enrollment EnrollmentConfig `yaml:"enrollment"`
		// HTTPListen is the address of the REST API (pkg/rest,
		// docs/rest.md); "off" (or empty) turns it off. With api.tls it
		// serves HTTPS with the same certificate and asks for a client
		// certificate from the same CA.
		HTTPListen string `yaml:"http_listen"`
		// HTTPAnonymous is the role of REST callers without a client
		// certificate: none (refused, 401), viewer, or admin (only on a
		// loopback listener without TLS, like the gRPC API's).
		HTTPAnonymous string `yaml:"http_anonymous"`
		// HTTPMaxStreams bounds the REST watches (server-sent events)
		// served at once.
		HTTPMaxStreams int `yaml:"http_max_streams"`
	} `yaml:"api"`
	Metrics struct {
		// Listen is the address of /metrics and /healthz; "off" (or empty)
		// turns them off.
		Listen string `yaml:"listen"`
		// Pprof serves Go's profiles under /debug/pprof/ on the metrics
		// listener (heap, goroutines, CPU): off by default, for capacity
		// planning (docs/fleet.md).
		Pprof bool `yaml:"pprof"`
	} `yaml:"metrics"`
	Log struct {
		Level  string `yaml:"level"`  // debug, info, warn, error
		Format string `yaml:"format"` // text or json
	} `yaml:"log"`
	BGP BGPConfig `yaml:"bgp"`
	// Liveness: every interval the controller writes its heartbeat to the
	// store and sweeps the stream markers of controllers whose heartbeat is
	// older than three intervals (killed while streaming).
	Liveness struct {
		Interval time.Duration `yaml:"interval"`
	} `yaml:"liveness"`
	// Routes bounds what the route table hands the gateways.
	Routes struct {
		// MaxPerNetwork: past this many routes (endpoints' and imported) a
		// network's gateways keep the routes they have and get no changes of
		// it until it is back within the limit (-1: no limit).
		MaxPerNetwork int `yaml:"max_per_network"`
	} `yaml:"routes"`
	// Kubernetes: namespaces, pods and nodes drive the fabric (pkg/kube,
	// docs/kubernetes.md).
	Kubernetes kube.Config `yaml:"kubernetes"`
	// Console: the web console at /ui/ on api.http_listen (pkg/console,
	// docs/console.md).
	Console console.Config `yaml:"console"`
}

// KeepaliveConfig is the API's gRPC keepalive section.
type KeepaliveConfig struct {
	// MinTime: a client pinging more often than this is closed (GOAWAY
	// too_many_pings); below the agents' --keepalive.
	MinTime time.Duration `yaml:"min_time"`
	// Time: the controller pings a client connection idle this long, and
	// closes it when the ping is not answered within Timeout.
	Time    time.Duration `yaml:"time"`
	Timeout time.Duration `yaml:"timeout"`
}

// EnrollmentConfig is the API's enrollment section. With ca_key set (and
// api.tls), the controller signs certificates for bootstrap tokens (Join)
// and renews them; without it an external CA issues the certificates and
// Join is refused.
type EnrollmentConfig struct {
	// CACert is the CA certificate that signs (default: api.tls.ca).
	CACert string `yaml:"ca_cert"`
	// CAKey is its private key (PEM).
	CAKey string `yaml:"ca_key"`
	// CertLifetime of issued certificates.
	CertLifetime time.Duration `yaml:"cert_lifetime"`
	// RenewGrace: a certificate expired for less than this may still renew
	// itself (not any other call); 0: none.
	RenewGrace time.Duration `yaml:"renew_grace"`
}

// Enabled reports whether the controller signs certificates.
func (e EnrollmentConfig) Enabled() bool { return e.CAKey != "" }

// EtcdConfig selects the etcd store.
type EtcdConfig struct {
	Endpoints []string `yaml:"endpoints"`
	Namespace string   `yaml:"namespace"`
}

// BGPConfig is the BGP speaker's section. The speaker runs when router_id is set.
type BGPConfig struct {
	ASN            uint32       `yaml:"asn"`
	RouterID       string       `yaml:"router_id"`
	ListenAddress  string       `yaml:"listen_address"` // default: every address
	ListenPort     int32        `yaml:"listen_port"`    // -1: do not listen, only connect out
	RouteReflector bool         `yaml:"route_reflector"`
	ClusterID      string       `yaml:"cluster_id"`
	Peers          []PeerConfig `yaml:"peers"`
	// MaxPrefixes is the most routes a peer may send per address family,
	// for peers that set none (default bgp.DefaultMaxPrefixes).
	MaxPrefixes uint32 `yaml:"max_prefixes"`
	// GracefulRestart is on by default (restarting speaker and helper, 120 s).
	GracefulRestart struct {
		Disabled    bool          `yaml:"disabled"`
		RestartTime time.Duration `yaml:"restart_time"`
	} `yaml:"graceful_restart"`
}

// PeerConfig is one BGP neighbour.
type PeerConfig struct {
	Address  string `yaml:"address"`
	ASN      uint32 `yaml:"asn"`
	Password string `yaml:"password"`
	Port     uint16 `yaml:"port"`
	// MaxPrefixes overrides bgp.max_prefixes for this peer.
	MaxPrefixes uint32 `yaml:"max_prefixes"`
}

// Enabled reports whether the BGP speaker should run.
func (b BGPConfig) Enabled() bool { return b.RouterID != "" }

// Speaker converts the section to the speaker's configuration.
func (b BGPConfig) Speaker() (bgp.Config, error) {
	c := bgp.Config{ASN: b.ASN, ListenPort: int(b.ListenPort), RouteReflector: b.RouteReflector, MaxPrefixes: b.MaxPrefixes}
	c.GracefulRestart.Disabled, c.GracefulRestart.RestartTime = b.GracefulRestart.Disabled, b.GracefulRestart.RestartTime
	var err error
	if c.RouterID, err = netip.ParseAddr(b.RouterID); err != nil {
		return c, fmt.Errorf("bgp.router_id %q: want an IPv4 address", b.RouterID)
	}
	if b.ListenAddress != "" {
		a, err := netip.ParseAddr(b.ListenAddress)
		if err != nil {
			return c, fmt.Errorf("bgp.listen_address %q: want an IP address", b.ListenAddress)
		}
		c.ListenAddress = []netip.Addr{a}
	}
	if b.ClusterID != "" {
		if c.ClusterID, err = netip.ParseAddr(b.ClusterID); err != nil {
			return c, fmt.Errorf("bgp.cluster_id %q: want an IPv4 address", b.ClusterID)
		}
	}
	for i, p := range b.Peers {
		a, err := netip.ParseAddr(p.Address)
		if err != nil {
			return c, fmt.Errorf("bgp.peers[%d].address %q: want an IP address", i, p.Address)
		}
		c.Peers = append(c.Peers, bgp.PeerConfig{Address: a, ASN: p.ASN, Password: p.Password, Port: p.Port, MaxPrefixes: p.MaxPrefixes})
	}
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("bgp: %w", err)
	}
	return c, nil
}

// Defaults: the one place where the controller's defaults are set.
const (
	DefaultDataDir       = "/var/lib/iotfabric"
	DefaultAPIListen     = "127.0.0.1:50051"
	DefaultMetricsListen = "127.0.0.1:9477"
	DefaultASN           = controller.DefaultASN
	DefaultBGPPort       = bgp.DefaultPort
	DefaultLiveness      = controller.DefaultHeartbeatInterval
	// API keepalive: agents ping every 30 s by default (pkg/agent).
	DefaultKeepaliveMinTime = 10 * time.Second
	DefaultKeepaliveTime    = 60 * time.Second
	DefaultKeepaliveTimeout = 20 * time.Second
	// Enrollment: certificates live 30 days and may renew up to 30 days
	// after they expired (a gateway offline that long).
	DefaultCertLifetime = enroll.DefaultLifetime
	DefaultRenewGrace   = enroll.DefaultGrace
	// MetricsOff as metrics.listen (file or flag) turns the metrics listener off.
	MetricsOff = "off"
	// HTTPOff as api.http_listen turns the REST API off (the default).
	HTTPOff = "off"
	// DefaultHTTPAnonymous: REST callers without a client certificate are refused.
	DefaultHTTPAnonymous  = "none"
	DefaultHTTPMaxStreams = rest.DefaultMaxStreams
)

// DefaultConfig is the configuration with every default set.
func DefaultConfig() Config {
	var c Config
	c.DataDir = DefaultDataDir
	c.API.Listen = DefaultAPIListen
	c.Metrics.Listen = DefaultMetricsListen
	c.API.HTTPListen, c.API.HTTPAnonymous, c.API.HTTPMaxStreams = HTTPOff, DefaultHTTPAnonymous, DefaultHTTPMaxStreams
	c.Log.Level = "info"
	c.Log.Format = "text"
	c.BGP.ASN = DefaultASN
	c.BGP.ListenPort = DefaultBGPPort
	c.Liveness.Interval = DefaultLiveness
	c.Routes.MaxPerNetwork = vpn.DefaultMaxNetworkRoutes
	c.API.Enrollment.CertLifetime, c.API.Enrollment.RenewGrace = DefaultCertLifetime, DefaultRenewGrace
	c.API.Keepalive = KeepaliveConfig{MinTime: DefaultKeepaliveMinTime, Time: DefaultKeepaliveTime, Timeout: DefaultKeepaliveTimeout}
	return c
}

// MetricsEnabled reports whether the metrics listener runs (metrics.listen
// is neither empty nor "off").
func (c *Config) MetricsEnabled() bool {
	return c.Metrics.Listen != "" && c.Metrics.Listen != MetricsOff
}

// HTTPEnabled reports whether the REST API is served (api.http_listen is
// neither empty nor "off").
func (c *Config) HTTPEnabled() bool {
	return c.API.HTTPListen != "" && c.API.HTTPListen != HTTPOff
}

// httpAnonymous is the identity of REST callers without a client
// certificate (api.http_anonymous).
func (c *Config) httpAnonymous() (tlsconfig.Identity, error) {
	switch c.API.HTTPAnonymous {
	case "", "none":
		return tlsconfig.Identity{}, nil
	case "viewer":
		return tlsconfig.Identity{Role: tlsconfig.RoleViewer, Name: "anonymous"}, nil
	case "admin":
		return tlsconfig.Identity{Role: tlsconfig.RoleAdmin, Name: "anonymous"}, nil
	}
	return tlsconfig.Identity{}, fmt.Errorf("api.http_anonymous %q: use none, viewer or admin", c.API.HTTPAnonymous)
}

// LoadConfig reads the YAML file path over the defaults (path "": the
// defaults); unknown keys are errors.
func LoadConfig(path string) (Config, error) {
	c := DefaultConfig()
	if path == "" {
		return c, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("read config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) { // an empty file is fine
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Validate checks the whole configuration and names every problem.
func (c *Config) Validate() error {
	var errs []error
	if c.Kubernetes.Enabled {
		if err := c.Kubernetes.Defaults().Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(c.Etcd.Endpoints) == 0 && c.DataDir == "" {
		errs = append(errs, errors.New("data_dir is empty and no etcd endpoints are set: the controller needs somewhere to keep its state"))
	}
	for _, e := range c.Etcd.Endpoints {
		if !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") {
			errs = append(errs, fmt.Errorf("etcd endpoint %q: want a URL such as http://127.0.0.1:2379", e))
		}
	}
	for name, addr := range map[string]string{"api.listen": c.API.Listen, "metrics.listen": c.Metrics.Listen, "api.http_listen": c.API.HTTPListen} {
		if name == "metrics.listen" && !c.MetricsEnabled() || name == "api.http_listen" && !c.HTTPEnabled() {
			continue // off
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want HOST:PORT such as 127.0.0.1:50051", name, addr))
		}
	}
	if err := c.checkInsecure("api.listen", c.API.Listen); err != nil {
		errs = append(errs, err)
	}
	if c.HTTPEnabled() {
		errs = append(errs, c.checkHTTP()...)
	}
	if c.API.TLS.Enabled() {
		if _, err := tlsconfig.Server(c.API.TLS); err != nil {
			errs = append(errs, fmt.Errorf("api.tls: %w", err))
		}
	}
	if e := c.API.Enrollment; e.Enabled() {
		if !c.API.TLS.Enabled() {
			errs = append(errs, errors.New("api.enrollment.ca_key is set but api.tls is not: enrollment issues certificates for mutual TLS; set api.tls"))
		} else if _, err := enroll.LoadCA(c.enrollCACert(), e.CAKey); err != nil {
			errs = append(errs, fmt.Errorf("api.enrollment: %w", err))
		}
		if e.CertLifetime <= 0 || e.RenewGrace < 0 {
			errs = append(errs, fmt.Errorf("api.enrollment cert_lifetime %v, renew_grace %v: want a positive lifetime such as 720h and a grace >= 0", e.CertLifetime, e.RenewGrace))
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level %q: use debug, info, warn or error", c.Log.Level))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log.format %q: use text or json", c.Log.Format))
	}
	if c.Routes.MaxPerNetwork < -1 || c.Routes.MaxPerNetwork == 0 {
		errs = append(errs, fmt.Errorf("routes.max_per_network %d: want a positive number, or -1 for no limit", c.Routes.MaxPerNetwork))
	}
	if err := c.Console.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Liveness.Interval <= 0 {
		errs = append(errs, fmt.Errorf("liveness.interval %v: want a positive duration such as 10s", c.Liveness.Interval))
	}
	if k := c.API.Keepalive; k.MinTime <= 0 || k.Time <= 0 || k.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("api.keepalive min_time %v, time %v, timeout %v: want positive durations such as 10s, 60s, 20s", k.MinTime, k.Time, k.Timeout))
	}
	if c.BGP.ASN == 0 {
		errs = append(errs, errors.New("bgp.asn must be set (it also forms the automatic route targets)"))
	}
	for i, p := range c.BGP.Peers {
		if _, err := netip.ParseAddr(p.Address); err != nil {
			errs = append(errs, fmt.Errorf("bgp.peers[%d].address %q: want an IP address", i, p.Address))
		}
		if p.ASN == 0 {
			errs = append(errs, fmt.Errorf("bgp.peers[%d].asn must be set", i))
		}
	}
	if len(errs) == 0 && c.BGP.Enabled() {
		if _, err := c.BGP.Speaker(); err != nil {
			errs = append(errs, err)
		}
	} else if len(c.BGP.Peers) > 0 && !c.BGP.Enabled() {
		errs = append(errs, errors.New("bgp.peers are set but bgp.router_id is not: set router_id to run the BGP speaker"))
	}
	return errors.Join(errs...)
}

// enrollCACert is the CA certificate enrollment signs with.
func (c *Config) enrollCACert() string {
	if c.API.Enrollment.CACert != "" {
		return c.API.Enrollment.CACert
	}
	return c.API.TLS.CA
}

// checkInsecure refuses an API address (key: its configuration key) other
// than loopback without TLS, unless api.insecure is set. A host name other
// than localhost is checked once bound (Start).
func (c *Config) checkInsecure(key, addr string) error {
	if c.API.TLS.Enabled() || c.API.Insecure {
		return nil
	}
	if maybeLoopback(addr) {
		return nil
	}
	who := "every caller that can reach it would be an admin"
	if key != "api.listen" {
		who = "anyone who can reach it would call it without a certificate, as api.http_anonymous"
	}
	return fmt.Errorf("%s %q is not a loopback address and api.tls is not set: %s; "+
		"set api.tls (mutual TLS), listen on 127.0.0.1, or set api.insecure: true (--api-insecure) to accept that", key, addr, who)
}

// maybeLoopback reports whether addr may be a loopback address: a loopback
// IP, localhost, or a host name (checked once bound); a bad address is
// reported elsewhere.
func maybeLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return true // reported as a bad address
	}
	ip, perr := netip.ParseAddr(host)
	return host == "localhost" || perr == nil && ip.IsLoopback() || perr != nil && host != ""
}

// checkHTTP checks the REST API's section: its address as api.listen's, the
// anonymous role (admin only on loopback without TLS, as the gRPC API
// trusts callers without a certificate), the bound on watches.
func (c *Config) checkHTTP() []error {
	var errs []error
	if err := c.checkInsecure("api.http_listen", c.API.HTTPListen); err != nil {
		errs = append(errs, err)
	}
	id, err := c.httpAnonymous()
	if err != nil {
		errs = append(errs, err)
	} else if id.Role == tlsconfig.RoleAdmin && (c.API.TLS.Enabled() || !maybeLoopback(c.API.HTTPListen)) {
		errs = append(errs, fmt.Errorf("api.http_anonymous admin: only on a loopback api.http_listen without api.tls (%q); use viewer, or client certificates", c.API.HTTPListen))
	}
	if c.API.HTTPMaxStreams <= 0 {
		errs = append(errs, fmt.Errorf("api.http_max_streams %d: want a positive number such as %d", c.API.HTTPMaxStreams, DefaultHTTPMaxStreams))
	}
	return errs
}

// loopback reports whether a is a loopback address (a bound listener's).
func loopback(a net.Addr) bool {
	t, ok := a.(*net.TCPAddr)
	return ok && t.IP.IsLoopback()
}
