// Package podnet maps Kubernetes pods to iotfabric networks: the
// annotations iotfabric reads and writes on Kubernetes objects, and the
// mapping of a pod to its network and fixed address. It is shared by the
// controller (pkg/kube) and the agent (pkg/kube/podwatch) and imports no
// Kubernetes client.
package podnet

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/iotfabric/iotfabric/pkg/model"
)

// Annotations and labels iotfabric reads and writes on Kubernetes objects.
const (
	// AnnotationNetwork on a namespace selects its pods' network; on a pod
	// it overrides the namespace's.
	AnnotationNetwork = "iotfabric.io/network"
	// AnnotationIsolation "true" on a namespace gives it a network of its own
	// (IsolatedNetwork), cut from the controller's isolation pool.
	AnnotationIsolation = "iotfabric.io/isolation"
	// AnnotationIP on a pod asks for a fixed address.
	AnnotationIP = "iotfabric.io/ip"
	// AnnotationUnderlay and AnnotationEncap on a node give its gateway's
	// underlay address and encapsulations (else the agent registers them).
	AnnotationUnderlay = "iotfabric.io/underlay"
	AnnotationEncap    = "iotfabric.io/encap"
	// AnnotationNetworkStatus is the Multus convention the agent writes on
	// each pod it wired: network, addresses, gateway.
	AnnotationNetworkStatus = "k8s.v1.cni.cncf.io/network-status"
	// LabelNamespace marks a VirtualNetwork made for an isolated namespace.
	LabelNamespace = "iotfabric.io/namespace"
	// Finalizer holds a VirtualNetwork until its network left the store.
	Finalizer = "iotfabric.io/network"
)

// IsolatedNetwork is the name of the network of an isolated namespace.
func IsolatedNetwork(namespace string) string { return "ns-" + namespace }

// NetworkFor maps a pod to its network: the pod's iotfabric.io/network
// annotation, else its namespace's, else the namespace's own network when it
// is isolated, else def. A malformed annotation is an error that names it.
func NetworkFor(namespace string, nsAnnotations, podAnnotations map[string]string, def string) (string, error) {
	if n, ok := podAnnotations[AnnotationNetwork]; ok {
		if err := model.ValidateName("network", n); err != nil {
			return "", fmt.Errorf("pod annotation %s: %w", AnnotationNetwork, err)
		}
		return n, nil
	}
	return NamespaceNetwork(namespace, nsAnnotations, def)
}

// NamespaceNetwork is NetworkFor for a pod without annotations.
func NamespaceNetwork(namespace string, nsAnnotations map[string]string, def string) (string, error) {
	isolated, err := Isolated(nsAnnotations)
	if err != nil {
		return "", err
	}
	if n, ok := nsAnnotations[AnnotationNetwork]; ok {
		if err := model.ValidateName("network", n); err != nil {
			return "", fmt.Errorf("namespace annotation %s: %w", AnnotationNetwork, err)
		}
		return n, nil
	}
	if isolated {
		return IsolatedNetwork(namespace), nil
	}
	if def == "" {
		return "", fmt.Errorf("namespace %s has no %s annotation and no default network is configured", namespace, AnnotationNetwork)
	}
	return def, nil
}

// Isolated reads a namespace's iotfabric.io/isolation annotation.
func Isolated(nsAnnotations map[string]string) (bool, error) {
	v, ok := nsAnnotations[AnnotationIsolation]
	if !ok {
		return false, nil
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true":
		return true, nil
	case "false", "":
		return false, nil
	}
	return false, fmt.Errorf("namespace annotation %s: %q is neither \"true\" nor \"false\"", AnnotationIsolation, v)
}

// PodIP reads a pod's iotfabric.io/ip annotation (zero when absent).
func PodIP(podAnnotations map[string]string) (netip.Addr, error) {
	v, ok := podAnnotations[AnnotationIP]
	if !ok {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(strings.TrimSpace(v))
	if err != nil {
		return a, fmt.Errorf("pod annotation %s: %q is not an IP address", AnnotationIP, v)
	}
	return a.Unmap(), nil
}
