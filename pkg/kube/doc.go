// Package kube is the controller's Kubernetes side: client-go shared
// informers on VirtualNetwork objects (the iotfabric.io/v1 CRD), namespaces,
// nodes and pods drive the fabric's networks, gateways and endpoints.
//
//   - VirtualNetwork objects and the store's networks are reconciled both
//     ways (networks.go): a new or changed object is applied to the store, a
//     network created through the gRPC API appears as an object, a network
//     deleted through the API takes its object with it, and status shows the
//     id, the automatic route target, the addresses in use and a Ready
//     condition. A spec the controller refuses gets an Event and Ready=False,
//     never a half-written store.
//   - Namespaces (namespaces.go): iotfabric.io/isolation: "true" gives a
//     namespace a VirtualNetwork of its own, cut from the configured pool;
//     malformed annotations and unknown networks get an Event.
//   - Nodes (nodes.go): a deleted node's gateway, endpoints and routes are
//     removed after a grace period.
//   - Pods (gc.go): an endpoint whose pod UID no longer exists is released
//     after a grace period, confirmed by a live GET; never while the
//     informers are not synced or the API server cannot be reached.
//
// Only the holder of a coordination.k8s.io Lease acts (lease.go); every
// controller keeps serving the API and BGP. One goroutine owns the work
// queue; informer callbacks only enqueue keys.
//
// The mapping of a pod to its network (mapping.go) is shared with the agent's
// pod informer (pkg/kube/podwatch).
package kube
