package kube

import (
	"net/netip"
	"strings"

	"github.com/iotfabric/iotfabric/pkg/kube/podnet"
)

// Annotations and labels iotfabric reads and writes on Kubernetes objects
// (pkg/kube/podnet holds them, for the agent's client-free build).
const (
	AnnotationNetwork       = podnet.AnnotationNetwork
	AnnotationIsolation     = podnet.AnnotationIsolation
	AnnotationIP            = podnet.AnnotationIP
	AnnotationUnderlay      = podnet.AnnotationUnderlay
	AnnotationEncap         = podnet.AnnotationEncap
	AnnotationNetworkStatus = podnet.AnnotationNetworkStatus
	LabelNamespace          = podnet.LabelNamespace
	Finalizer               = podnet.Finalizer
)

// IsolatedNetwork is podnet.IsolatedNetwork.
func IsolatedNetwork(namespace string) string { return podnet.IsolatedNetwork(namespace) }

// NetworkFor is podnet.NetworkFor.
func NetworkFor(namespace string, nsAnnotations, podAnnotations map[string]string, def string) (string, error) {
	return podnet.NetworkFor(namespace, nsAnnotations, podAnnotations, def)
}

// NamespaceNetwork is podnet.NamespaceNetwork.
func NamespaceNetwork(namespace string, nsAnnotations map[string]string, def string) (string, error) {
	return podnet.NamespaceNetwork(namespace, nsAnnotations, def)
}

// Isolated is podnet.Isolated.
func Isolated(nsAnnotations map[string]string) (bool, error) { return podnet.Isolated(nsAnnotations) }

// PodIP is podnet.PodIP.
func PodIP(podAnnotations map[string]string) (netip.Addr, error) { return podnet.PodIP(podAnnotations) }

// canonicalPrefix is the prefix's canonical text, or s when it is none.
func canonicalPrefix(s string) string {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return s
	}
	return p.Masked().String()
}
