package agent

import (
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/keepalive"
)

// Controller connection liveness defaults (LTE: a lost path is noticed
// within Keepalive+KeepaliveTimeout of idleness, not after the kernel's two
// hours). The controller's keepalive enforcement (pkg/server) must permit
// pings this often.
const (
	DefaultKeepalive        = 30 * time.Second
	DefaultKeepaliveTimeout = 10 * time.Second
)

// The controller sessions' reconnect backoff: the base doubles from
// sessionRetryMin to sessionRetryMax, each wait is drawn uniformly from
// [base/2, base] so that gateways cut off together do not come back in step.
const (
	sessionRetryMin = 100 * time.Millisecond
	sessionRetryMax = 5 * time.Second
)

// reconnect is how gRPC dials a controller connection again after it broke
// or a dial failed: after about 1 s, growing up to sessionRetryMax, each
// delay spread over half of it either way. gRPC's default (1 s growing by
// 1.6 up to 2 minutes, +-20 %) made a gateway whose dials had failed for a
// while (a controller restart, an LTE outage) wait up to another two
// minutes once the controller was back: after a restart of 13 s, 10,000
// gateways took 30 s to 1 m 46 s to stream again. The cost while a
// controller stays unreachable is one connection attempt (a SYN) every
// 2.5-7.5 s.
var reconnect = grpc.ConnectParams{
	Backoff:           grpcbackoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.5, MaxDelay: sessionRetryMax},
	MinConnectTimeout: 20 * time.Second,
}

// keepalive returns the gRPC client keepalive parameters, false when pings
// are off.
func (o *Options) keepalive() (keepalive.ClientParameters, bool) {
	t, to := o.Keepalive, o.KeepaliveTimeout
	if t < 0 {
		return keepalive.ClientParameters{}, false
	}
	if t == 0 {
		t = DefaultKeepalive
	}
	if to <= 0 {
		to = DefaultKeepaliveTimeout
	}
	return keepalive.ClientParameters{Time: t, Timeout: to, PermitWithoutStream: true}, true
}

// backoff is an exponential backoff with jitter; not safe for concurrent use.
type backoff struct {
	min, max, base time.Duration
}

func newBackoff(lo, hi time.Duration) *backoff {
	return &backoff{min: lo, max: hi, base: lo}
}

// next returns the wait before the next attempt, uniformly random in
// [base/2, base], and doubles the base up to max.
func (b *backoff) next() time.Duration {
	half := b.base / 2
	d := half + rand.N(b.base-half+1)
	b.base = min(2*b.base, b.max)
	return d
}

// reset starts again from the smallest base (after a session that lasted).
func (b *backoff) reset() { b.base = b.min }
