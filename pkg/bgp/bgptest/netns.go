// Package bgptest runs real BGP peers — FRR 8.4, BIRD 2 and gobgpd from
// Debian — in fresh network namespaces for iotfabric's interop tests,
// end-to-end tests and demo. Everything a helper starts is stopped, and
// every namespace and link it makes is removed, by t.Cleanup, also when the
// test fails. The helpers need root.
//
// The namespaces are internal/netnstest's; the names below are kept for the
// tests that use them.
package bgptest

import (
	"net/netip"
	"testing"

	"github.com/iotfabric/iotfabric/internal/netnstest"
)

// Netns is a named network namespace made for a test, or the calling
// process's own namespace (Name == "").
type Netns = netnstest.NS

// Link is a veth pair between two namespaces, with one address on each end.
type Link = netnstest.Link

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	netnstest.RequireRoot(t)
}

// NewNetns makes a fresh named network namespace with loopback up.
// t.Cleanup kills every process left in it and deletes it.
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	return netnstest.New(t, "ifb")
}

// Self returns the calling process's own namespace (for the side of a link
// where an in-process speaker runs). Run the test binary in a fresh
// namespace first (see ReexecInNewNetns), so links and addresses made
// there vanish with the process.
func Self(t testing.TB) *Netns {
	t.Helper()
	return netnstest.Self(t)
}

// Connect joins a and b with a veth pair and gives the ends addrA and addrB
// (same prefix, e.g. 10.0.0.1/24 and 10.0.0.2/24). t.Cleanup removes it.
func Connect(t testing.TB, a, b *Netns, addrA, addrB netip.Prefix) *Link {
	t.Helper()
	return netnstest.Connect(t, a, b, addrA, addrB)
}

// ReexecInNewNetns makes the test binary run in a fresh network namespace
// of its own: call it first in TestMain. An in-process speaker then lives
// in a namespace nobody else uses.
func ReexecInNewNetns() { netnstest.ReexecInNewNetns() }
