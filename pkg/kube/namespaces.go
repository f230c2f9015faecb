package kube

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/model"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Reasons of Events on namespaces.
const (
	ReasonBadAnnotation  = "BadAnnotation"
	ReasonUnknownNetwork = "UnknownNetwork"
	ReasonNoPool         = "IsolationPoolExhausted"
)

// syncNamespace checks a namespace's annotations and keeps the network of an
// isolated namespace: a VirtualNetwork labelled with the namespace, whose
// subnet is cut from the isolation pool.
func (r *Reconciler) syncNamespace(ctx context.Context, t *term, name string) error {
	obj, exists, err := t.nss.GetStore().GetByKey(name)
	if err != nil {
		return err
	}
	own, hasOwn := vnObject(t, IsolatedNetwork(name))
	if hasOwn && own.GetLabels()[LabelNamespace] != name {
		hasOwn = false // a network of that name the namespace does not own
	}
	if exists && obj.(*corev1.Namespace).DeletionTimestamp != nil {
		exists = false // terminating: its pods go, and so does its network
	}
	if !exists {
		if hasOwn && own.GetDeletionTimestamp() == nil {
			r.log.Info("namespace deleted: deleting its network", logkey.KubeNamespace, name)
			return ignoreNotFound(r.dc.Resource(VirtualNetworks).Delete(ctx, own.GetName(), metav1.DeleteOptions{}))
		}
		return nil
	}
	ns := obj.(*corev1.Namespace)
	ann := ns.Annotations
	isolated, err := Isolated(ann)
	if err != nil {
		r.rec.Event(ns, corev1.EventTypeWarning, ReasonBadAnnotation, err.Error())
		return nil
	}
	if n, ok := ann[AnnotationNetwork]; ok {
		network, err := NamespaceNetwork(name, ann, r.cfg.DefaultNetwork)
		if err != nil {
			r.rec.Event(ns, corev1.EventTypeWarning, ReasonBadAnnotation, err.Error())
			return nil
		}
		if _, err := r.fab.GetNetwork(ctx, network); errors.Is(err, model.ErrNotFound) {
			r.rec.Event(ns, corev1.EventTypeWarning, ReasonUnknownNetwork, fmt.Sprintf("annotation %s names network %q, which does not exist: create it (a VirtualNetwork) or fix the annotation", AnnotationNetwork, n))
		} else if err != nil {
			return err
		}
		isolated = false
	}
	switch {
	case isolated && !hasOwn:
		return r.createIsolated(ctx, t, ns)
	case !isolated && hasOwn && own.GetDeletionTimestamp() == nil:
		r.log.Info("namespace no longer isolated: deleting its network", logkey.KubeNamespace, name)
		return ignoreNotFound(r.dc.Resource(VirtualNetworks).Delete(ctx, own.GetName(), metav1.DeleteOptions{}))
	}
	return nil
}

// createIsolated creates the namespace's VirtualNetwork with the first free
// subnet of the pool.
func (r *Reconciler) createIsolated(ctx context.Context, t *term, ns *corev1.Namespace) error {
	if r.cfg.IsolationPool == "" {
		r.rec.Event(ns, corev1.EventTypeWarning, ReasonNoPool, "the namespace asks for isolation, but the controller has no kubernetes.isolation_pool")
		return nil
	}
	nets, _, err := r.fab.ListNetworks(ctx)
	if err != nil {
		return err
	}
	var used []netip.Prefix
	add := func(subnets []string) {
		for _, s := range subnets {
			if p, err := netip.ParsePrefix(s); err == nil {
				used = append(used, p)
			}
		}
	}
	for _, n := range nets {
		add(n.Subnets)
	}
	for _, o := range t.vns.GetStore().List() {
		if u, ok := o.(*unstructured.Unstructured); ok {
			s, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "subnets")
			add(s)
		}
	}
	// Objects created moments ago may not be in the informer yet.
	used = append(used, t.isolated...)
	subnet, ok := freeSubnet(netip.MustParsePrefix(r.cfg.IsolationPool), r.cfg.IsolationPrefix, used)
	if !ok {
		r.rec.Event(ns, corev1.EventTypeWarning, ReasonNoPool, fmt.Sprintf("no /%d left in the isolation pool %s", r.cfg.IsolationPrefix, r.cfg.IsolationPool))
		return nil
	}
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetAPIVersion(VirtualNetworks.GroupVersion().String())
	u.SetKind(VirtualNetworkKind)
	u.SetName(IsolatedNetwork(ns.Name))
	u.SetLabels(map[string]string{LabelNamespace: ns.Name})
	setSpec(u, &v1.VirtualNetwork{Subnets: []string{subnet.String()}})
	_, err = r.dc.Resource(VirtualNetworks).Create(ctx, u, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("kubernetes API: %w", err)
	}
	t.isolated = append(t.isolated, subnet)
	r.log.Info("isolated namespace: network created", logkey.KubeNamespace, ns.Name, logkey.Network, u.GetName(), logkey.Subnets, subnet.String())
	return nil
}

// freeSubnet returns the first prefix of length bits in pool that overlaps
// none of used.
func freeSubnet(pool netip.Prefix, bits int, used []netip.Prefix) (netip.Prefix, bool) {
	pool = pool.Masked()
	p := netip.PrefixFrom(pool.Addr(), bits)
	for pool.Contains(p.Addr()) {
		free := true
		for _, u := range used {
			if u.Overlaps(p) {
				free = false
				break
			}
		}
		if free {
			return p, true
		}
		next, ok := nextPrefix(p)
		if !ok {
			break
		}
		p = next
	}
	return netip.Prefix{}, false
}

// nextPrefix is the prefix of the same length right after p.
func nextPrefix(p netip.Prefix) (netip.Prefix, bool) {
	b := p.Addr().AsSlice()
	bit := p.Bits() - 1
	for i := bit; i >= 0; i-- {
		byteI, mask := i/8, byte(0x80>>(i%8))
		if b[byteI]&mask == 0 {
			b[byteI] |= mask
			a, _ := netip.AddrFromSlice(b)
			return netip.PrefixFrom(a, p.Bits()), true
		}
		b[byteI] &^= mask
	}
	return netip.Prefix{}, false
}

func ignoreNotFound(err error) error {
	if err == nil || apierrors.IsNotFound(err) {
		return nil
	}
	return fmt.Errorf("kubernetes API: %w", err)
}
