// Package vpn is the controller's route table: it turns the controller's
// state into BGP/MPLS L3VPN routes for the speaker, imports the routes peers
// send, and serves each network's routes to the route watchers (RouteService)
// and to the gateways' route streams.
//
// What it owns:
//
//   - Table (table.go), the pure core: networks, gateways and endpoints as the
//     store has them, each endpoint's VPN routes (pkg/bgp.EndpointRoutes), the
//     routes received from peers, and per Flush what changed in each network.
//     It does no I/O and is not safe for concurrent use.
//   - Runner (runner.go), the one goroutine (Run) that owns a Table and
//     everything derived from it: route watchers (watch.go) and gateway
//     sessions (gateways.go: each followed network's routes held once, with
//     a change log and digests, so that gateways resume from a revision or
//     from pkg/routedigest digests). Store events, received routes, subscriptions and
//     queries all reach it as messages; watchers are fed by it through bounded
//     channels and a watcher that falls behind is dropped, never waited for.
//   - The speaker queue (speaker.go): a second goroutine makes every call to
//     the bgp.Speaker (Start, peers, Announce, Withdraw) in order, so a slow
//     speaker call never holds up the table; route changes that pile up
//     meanwhile are merged into one batch.
//   - NetRoute.Equal and diff (routes.go): the one route comparison and the
//     one route-set difference used by every path above.
//   - The import limits (limits.go): the import filter handed to the speaker
//     (every route target a network imports), the per-network route limit
//     past which a network's gateways keep their last set (frozen), and the
//     endpoints whose routes are not advertised, with the reason.
//
// What it may not touch: it only reads the store's networks/, gateways/,
// endpoints/ and bgp/peers/ keys (pkg/controller and the PeerService write
// them); it speaks BGP only through the pkg/bgp Speaker interface (GoBGP is
// pkg/bgp/gobgp's business); it programs no kernel state (the gateways'
// agents do, from the routes streamed to them); and it maps no errors to gRPC
// status codes outside the transport (server.go).
package vpn
