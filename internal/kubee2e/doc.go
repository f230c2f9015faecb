// Package kubee2e is the end-to-end test of iotfabric on Kubernetes: a real
// kube-apiserver (internal/kubetest) with deploy/kubernetes applied, a
// controller with the Kubernetes reconciler and its BGP speaker peering with
// FRR, two gateways whose agents watch their node's pods in network
// namespaces, and the CNI plugin driven through libcni with the CNI_ARGS
// container runtimes pass. It holds tests only.
package kubee2e
