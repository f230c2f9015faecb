package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"time"
)

// Config is the speaker's configuration (the `bgp:` section of the controller
// configuration file).
type Config struct {
	ASN           uint32       `json:"asn" yaml:"asn"`
	RouterID      netip.Addr   `json:"router_id" yaml:"router_id"`
	ListenAddress []netip.Addr `json:"listen_address,omitempty" yaml:"listen_address,omitempty"` // default: all addresses
	// ListenPort is the TCP port to accept sessions on: 0 means 179,
	// -1 means do not listen (the speaker only connects out).
	ListenPort int          `json:"listen_port,omitempty" yaml:"listen_port,omitempty"`
	Peers      []PeerConfig `json:"peers,omitempty" yaml:"peers,omitempty"`
	// RouteReflector makes every iBGP peer a route-reflector client,
	// with ClusterID (an IPv4 address; default the router id).
	RouteReflector  bool                  `json:"route_reflector,omitempty" yaml:"route_reflector,omitempty"`
	ClusterID       netip.Addr            `json:"cluster_id,omitempty" yaml:"cluster_id,omitempty"`
	GracefulRestart GracefulRestartConfig `json:"graceful_restart" yaml:"graceful_restart"`
	// ConnectRetry is the time between connection attempts to a peer
	// (default 5 s; GoBGP waits a random 1-2x this, and at least 5 s).
	ConnectRetry time.Duration `json:"connect_retry,omitempty" yaml:"connect_retry,omitempty"`
	// HoldTime is the proposed hold time (default 90 s, keepalive a third of it).
	HoldTime time.Duration `json:"hold_time,omitempty" yaml:"hold_time,omitempty"`
	// MaxPrefixes is the maximum number of routes a peer may send per
	// address family (VPNv4, VPNv6) for peers that set none of their own
	// (default DefaultMaxPrefixes). The session of a peer that sends more
	// is shut down (Cease NOTIFICATION, administrative shutdown with the
	// reason) and stays idle until the peer is configured again.
	MaxPrefixes uint32 `json:"max_prefixes,omitempty" yaml:"max_prefixes,omitempty"`
}

// GracefulRestartConfig configures RFC 4724 graceful restart. It is on by
// default: the speaker is both restarting speaker (every start announces
// the Restart and Forwarding bits, since the gateways keep forwarding while
// the controller is down) and helper (it keeps a restarting peer's routes,
// marked stale, for the peer's restart time).
type GracefulRestartConfig struct {
	Disabled    bool          `json:"disabled,omitempty" yaml:"disabled,omitempty"`
	RestartTime time.Duration `json:"restart_time,omitempty" yaml:"restart_time,omitempty"` // default 120 s, at most 4095 s
	// DeferralTime bounds how long a restarting speaker waits for its
	// peers' End-of-RIB before it sends its routes (default 60 s).
	DeferralTime time.Duration `json:"deferral_time,omitempty" yaml:"deferral_time,omitempty"`
}

// Defaults for the configuration.
const (
	DefaultPort         = 179
	DefaultRestartTime  = 120 * time.Second
	DefaultDeferralTime = 60 * time.Second
	DefaultConnectRetry = 5 * time.Second
	DefaultHoldTime     = 90 * time.Second
	DefaultMaxPrefixes  = 100000
	// PrefixLimitWarnPct is the share of MaxPrefixes at which a warning
	// is logged.
	PrefixLimitWarnPct     = 80
	maxGracefulRestartTime = 4095 * time.Second
)

// PeerConfig is one BGP neighbour.
type PeerConfig struct {
	Address  netip.Addr `json:"address" yaml:"address"`
	ASN      uint32     `json:"asn" yaml:"asn"`
	Password string     `json:"password,omitempty" yaml:"password,omitempty"` // TCP MD5 (RFC 2385)
	// Port is the peer's TCP port (default 179).
	Port        uint16 `json:"port,omitempty" yaml:"port,omitempty"`
	Description string `json:"description,omitempty" yaml:"description,omitempty"`
	// MaxPrefixes is the maximum number of routes the peer may send per
	// address family; 0 takes the speaker's Config.MaxPrefixes.
	MaxPrefixes uint32 `json:"max_prefixes,omitempty" yaml:"max_prefixes,omitempty"`
}

// Validate checks a peer's configuration.
func (p PeerConfig) Validate() error {
	if !p.Address.IsValid() || p.Address.IsUnspecified() || p.Address.Zone() != "" {
		return fmt.Errorf("%w: peer address %q", ErrInvalidConfig, p.Address)
	}
	if p.ASN == 0 {
		return fmt.Errorf("%w: peer %s: asn must be set", ErrInvalidConfig, p.Address)
	}
	if len(p.Password) > 80 {
		return fmt.Errorf("%w: peer %s: TCP MD5 password longer than 80 bytes", ErrInvalidConfig, p.Address)
	}
	return nil
}

// WithDefaults returns the configuration with defaults filled in.
func (c Config) WithDefaults() Config {
	if c.GracefulRestart.RestartTime == 0 {
		c.GracefulRestart.RestartTime = DefaultRestartTime
	}
	if c.GracefulRestart.DeferralTime == 0 {
		c.GracefulRestart.DeferralTime = DefaultDeferralTime
	}
	if c.ConnectRetry == 0 {
		c.ConnectRetry = DefaultConnectRetry
	}
	if c.HoldTime == 0 {
		c.HoldTime = DefaultHoldTime
	}
	if c.ListenPort == 0 {
		c.ListenPort = DefaultPort
	}
	if c.MaxPrefixes == 0 {
		c.MaxPrefixes = DefaultMaxPrefixes
	}
	if c.RouteReflector && !c.ClusterID.IsValid() {
		c.ClusterID = c.RouterID
	}
	return c
}

// Validate checks the configuration (call WithDefaults first).
func (c Config) Validate() error {
	if c.ASN == 0 {
		return fmt.Errorf("%w: asn must be set", ErrInvalidConfig)
	}
	if !c.RouterID.Is4() || c.RouterID.IsUnspecified() {
		return fmt.Errorf("%w: router_id must be a non-zero IPv4 address, not %q", ErrInvalidConfig, c.RouterID)
	}
	if c.ListenPort < -1 || c.ListenPort > 65535 {
		return fmt.Errorf("%w: listen_port %d", ErrInvalidConfig, c.ListenPort)
	}
	for _, a := range c.ListenAddress {
		if !a.IsValid() {
			return fmt.Errorf("%w: listen_address %q", ErrInvalidConfig, a)
		}
	}
	if c.RouteReflector && !c.ClusterID.Is4() {
		return fmt.Errorf("%w: cluster_id must be an IPv4 address, not %q", ErrInvalidConfig, c.ClusterID)
	}
	gr := c.GracefulRestart
	if !gr.Disabled && (gr.RestartTime < time.Second || gr.RestartTime > maxGracefulRestartTime) {
		return fmt.Errorf("%w: graceful_restart.restart_time %s: want 1s..4095s", ErrInvalidConfig, gr.RestartTime)
	}
	if c.HoldTime != 0 && c.HoldTime < 3*time.Second {
		return fmt.Errorf("%w: hold_time %s: want 0 or at least 3s", ErrInvalidConfig, c.HoldTime)
	}
	seen := map[netip.Addr]bool{}
	for _, p := range c.Peers {
		if err := p.Validate(); err != nil {
			return err
		}
		if seen[p.Address] {
			return fmt.Errorf("%w: peer %s listed twice", ErrInvalidConfig, p.Address)
		}
		seen[p.Address] = true
	}
	return nil
}

// PeerState is a BGP session state (RFC 4271 8.2.2).
type PeerState string

// Session states.
const (
	PeerIdle        PeerState = "idle"
	PeerConnect     PeerState = "connect"
	PeerActive      PeerState = "active"
	PeerOpenSent    PeerState = "opensent"
	PeerOpenConfirm PeerState = "openconfirm"
	PeerEstablished PeerState = "established"
)

// PeerStatus is a peer's configuration and session state.
type PeerStatus struct {
	PeerConfig
	State PeerState
	// Uptime is how long the session has been established (0 otherwise).
	Uptime           time.Duration
	PrefixesSent     uint64
	PrefixesReceived uint64
	// MaxPrefixes is the limit in force for the peer (per address family).
	MaxPrefixes uint32
	// Reason says why the session is held down by the speaker ("" when it
	// is not): e.g. the peer sent more than MaxPrefixes routes.
	Reason string
	// PrefixLimitHits counts the sessions shut down for exceeding MaxPrefixes.
	PrefixLimitHits uint64
}

// Counters are a speaker's cumulative counts and current session states,
// for metrics. Reading them takes no server-wide lock.
type Counters struct {
	// Peers is each configured peer's session state, as last reported.
	Peers map[netip.Addr]PeerState
	// PrefixLimitHits counts, per peer, the sessions shut down because the
	// peer sent more than its maximum number of prefixes.
	PrefixLimitHits map[netip.Addr]uint64
	// NotAdvertised counts routes Announce refused (see NotAdvertisedError).
	NotAdvertised uint64
	// Filtered counts received routes dropped because no network imports
	// any of their route targets (see SetImportFilter).
	Filtered uint64
	// InboundRefreshes counts the times a widened import filter had the
	// peers' stored routes run through again (a soft reset inbound): only
	// when a refused route carries a route target the filter added.
	InboundRefreshes uint64
}

// RouteError is one route Announce could not advertise, and why.
type RouteError struct {
	Key RouteKey
	Err error
}

// NotAdvertisedError is returned by Announce when some routes could not be
// advertised (e.g. their UPDATE would exceed the BGP message size); every
// other route of the call was announced. It matches ErrNotAdvertised.
type NotAdvertisedError struct {
	Routes []RouteError
}

func (e *NotAdvertisedError) Error() string {
	if len(e.Routes) == 0 {
		return ErrNotAdvertised.Error()
	}
	return fmt.Sprintf("%d routes not advertised, first %s: %v", len(e.Routes), e.Routes[0].Key, e.Routes[0].Err)
}

// Unwrap makes the error match ErrNotAdvertised.
func (e *NotAdvertisedError) Unwrap() error { return ErrNotAdvertised }

// RouteEvent is a route received from a peer (or its withdrawal).
type RouteEvent struct {
	Peer     netip.Addr
	Withdraw bool
	Route    Route // for a withdrawal only Prefix and RD (and what the peer sent) are set
}

// Speaker is a BGP speaker that announces iotfabric's VPN routes to its
// peers and reports the VPN routes they send. Implementations are safe for
// concurrent use.
type Speaker interface {
	// Start starts the speaker. initial is the full set of local routes
	// known at start (may be nil): they are in the table before any peer is
	// configured, so after a restart the first UPDATEs carry the complete
	// table and peers that kept our routes during a graceful restart
	// refresh them without a withdrawal.
	Start(ctx context.Context, initial []Route) error
	// Stop closes all sessions (with a Cease NOTIFICATION) and stops.
	Stop(ctx context.Context) error

	AddPeer(ctx context.Context, p PeerConfig) error
	DeletePeer(ctx context.Context, addr netip.Addr) error
	ListPeers(ctx context.Context) ([]PeerStatus, error)

	// Announce adds or replaces routes (keyed by RD and prefix), in one batch.
	Announce(ctx context.Context, routes []Route) error
	// Withdraw removes routes; keys that are not announced are ignored.
	Withdraw(ctx context.Context, keys []RouteKey) error

	// Subscribe returns the VPN routes received from peers, per peer: first
	// one batch with every route currently held (possibly empty), then each
	// change as it happens. When a session ends its routes are withdrawn,
	// unless the peer restarts gracefully: then they stay until the peer
	// refreshes them or its restart time runs out. The channel is closed when ctx ends or the speaker stops.
	// A slow reader does not block the speaker: events queue for it.
	Subscribe(ctx context.Context) (<-chan []RouteEvent, error)

	// SetImportFilter sets the route targets of which a received route must
	// carry at least one to be kept (the union of every network's import
	// route targets); nil keeps nothing. Routes already held that the new
	// filter refuses are withdrawn on the subscription, routes it now
	// accepts are delivered. Until it is first called every route is kept.
	SetImportFilter(ctx context.Context, rts []RouteTarget) error

	// Counters returns the speaker's counters and session states.
	Counters() Counters
}
