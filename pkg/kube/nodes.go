package kube

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/model"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// ReasonBadNode is the reason of Events on nodes with malformed annotations.
const ReasonBadNode = "BadAnnotation"

// syncNode keeps the gateway of a node: created or updated from the node's
// annotations when it has them; removed, with its endpoints (and so their
// routes), once the node has been gone for the grace period.
func (r *Reconciler) syncNode(ctx context.Context, t *term, name string) error {
	obj, exists, err := t.nodes.GetStore().GetByKey(name)
	if err != nil {
		return err
	}
	if exists {
		delete(t.nodeGone, name)
		return r.nodeGateway(ctx, obj.(*corev1.Node))
	}
	gone, ok := t.nodeGone[name]
	if !ok {
		gone = r.now()
		t.nodeGone[name] = gone
	}
	if wait := r.cfg.NodeGrace - r.now().Sub(gone); wait > 0 {
		return &retryAfter{wait}
	}
	eps, _, err := r.fab.ListEndpoints(ctx, "", name)
	if err != nil {
		return err
	}
	for _, e := range eps {
		if _, err := r.fab.DeleteEndpoint(ctx, e.Id); err != nil && !errors.Is(err, model.ErrNotFound) {
			return err
		}
	}
	if _, err := r.fab.DeleteGateway(ctx, name); err != nil && !errors.Is(err, model.ErrNotFound) {
		return err
	}
	delete(t.nodeGone, name)
	r.log.Info("node gone: gateway and its endpoints removed", logkey.KubeNode, name, logkey.Count, len(eps))
	return nil
}

// nodeGateway applies a node's iotfabric.io/underlay and iotfabric.io/encap
// annotations to its gateway (without them the agent registers it).
func (r *Reconciler) nodeGateway(ctx context.Context, n *corev1.Node) error {
	u, ok := n.Annotations[AnnotationUnderlay]
	if !ok {
		return nil
	}
	addr, err := netip.ParseAddr(strings.TrimSpace(u))
	if err != nil || !addr.Is4() {
		r.rec.Event(n, corev1.EventTypeWarning, ReasonBadNode, "annotation "+AnnotationUnderlay+": want the gateway's IPv4 underlay address, have "+u)
		return nil
	}
	var encaps []v1.Encapsulation
	if e, ok := n.Annotations[AnnotationEncap]; ok {
		if encaps, err = model.ParseEncaps(e); err != nil {
			r.rec.Event(n, corev1.EventTypeWarning, ReasonBadNode, "annotation "+AnnotationEncap+": "+err.Error())
			return nil
		}
	}
	g, err := r.fab.GetGateway(ctx, n.Name)
	switch {
	case errors.Is(err, model.ErrNotFound):
		_, err = r.fab.CreateGateway(ctx, &v1.Gateway{Name: n.Name, UnderlayAddress: addr.String(), Encapsulations: encaps})
		if err == nil {
			r.log.Info("gateway created from its node", logkey.KubeNode, n.Name, logkey.Underlay, addr.String())
		}
		if errors.Is(err, model.ErrExists) {
			return errors.New("gateway created meanwhile")
		}
	case err != nil:
	case g.UnderlayAddress != addr.String() || (len(encaps) > 0 && !slices.Equal(g.Encapsulations, encaps)):
		g.UnderlayAddress = addr.String()
		if len(encaps) > 0 {
			g.Encapsulations = encaps
		}
		_, err = r.fab.UpdateGateway(ctx, g)
	}
	if model.HasKind(err) && !errors.Is(err, model.ErrUnavailable) && !errors.Is(err, model.ErrAborted) {
		r.rec.Event(n, corev1.EventTypeWarning, ReasonBadNode, err.Error())
		return nil
	}
	return err
}

// seedNodes schedules the removal of the gateways that host pods' endpoints
// but have no node (deleted while no controller led) and none of whose
// endpoints belongs to a live pod.
func (r *Reconciler) seedNodes(ctx context.Context, t *term) error {
	gws, _, err := r.fab.ListGateways(ctx)
	if err != nil {
		return err
	}
	for _, g := range gws {
		if _, ok, _ := t.nodes.GetStore().GetByKey(g.Name); ok {
			continue
		}
		eps, _, err := r.fab.ListEndpoints(ctx, "", g.Name)
		if err != nil {
			return err
		}
		fromPods, live := false, false
		for _, e := range eps {
			if uid := e.GetPod().GetUid(); uid != "" {
				fromPods = true
				if objs, err := t.pods.GetIndexer().ByIndex(uidIndex, uid); err != nil || len(objs) > 0 {
					live = true
				}
			}
		}
		if fromPods && !live {
			t.queue.Add(keyNode + g.Name)
		}
	}
	return nil
}
