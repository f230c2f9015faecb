package server

import (
	"context"
	"net"
)

// listenAPI listens for the gRPC API. Its connections keep the system's TCP
// keepalive settings (on Linux: the first probe after two hours of
// silence), as gRPC's own dialer does on the agents' side, instead of Go's
// (a probe after 15 s, then every 15 s).
//
// gRPC's keepalive (api.keepalive, and the agents' pings) is what notices a
// dead agent; and with it gRPC sets TCP_USER_TIMEOUT to its timeout (20 s),
// which also bounds how long a TCP keepalive probe may go unanswered. With
// Go's settings one lost probe (or its lost answer) was therefore enough to
// close a healthy connection 30 s after the last frame: on a lossy LTE link
// now and then, and at 10,000 gateways on a loopback whose backlog dropped
// packets when the agents' pings came in step, thousands of sessions a
// minute while idle (docs/fleet.md).
func listenAPI(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: -1, Interval: -1, Count: -1}}
	return lc.Listen(ctx, "tcp", addr)
}
