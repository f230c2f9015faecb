// Package soak holds the soak test (`make soak`, docs/soak.md): a
// controller process on bbolt, an FRR edge router peering with it and
// flapping VPN routes, vrouter agent processes programming gateway network
// namespaces, and the real CNI plugin called through libcni, all at once,
// with random and hostile API calls and CNI requests, agents and the
// controller killed with SIGKILL and restarted; then the invariants are
// checked (no duplicate address, IPAM counts equal to the endpoints, every
// gateway's routes equal to the controller's, FRR's VPN table equal to the
// controller's, memory back to its level before the flood, log bytes under
// the bound) and a summary is printed.
//
// The test runs when IOTFABRIC_SOAK_DURATION is set (2m, 10m...). With
// IOTFABRIC_SOAK_KEEP=DIR it copies the daemons' logs (controller.log,
// gw-0.log...) into DIR at its end, passed or failed; the summary breaks
// the logs down per daemon, per level and per message either way.
package soak
