package kube

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/model"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Reasons of the Ready condition and of Events on VirtualNetwork objects.
const (
	ReasonReady         = "Reconciled"
	ReasonInvalid       = "Invalid"
	ReasonRefused       = "Refused"
	ReasonDeleteBlocked = "DeleteBlocked"
)

// deleteRetry is how often a blocked deletion is tried again.
const deleteRetry = 10 * time.Second

// syncNetwork reconciles one network name: its VirtualNetwork object and its
// store record.
func (r *Reconciler) syncNetwork(ctx context.Context, t *term, name string) error {
	if n, ok := strings.CutPrefix(name, "\x00deleted/"); ok {
		t.deletedInStore[n] = true
		name = n
	}
	u, exists := vnObject(t, name)
	net, err := r.fab.GetNetwork(ctx, name)
	if err != nil && !errors.Is(err, model.ErrNotFound) {
		return err
	}
	if err == nil {
		delete(t.deletedInStore, name)
	}
	switch {
	case !exists && net == nil:
		return nil
	case !exists:
		return r.adoptNetwork(ctx, net)
	case u.GetDeletionTimestamp() != nil:
		return r.deleteNetwork(ctx, u, net != nil)
	}
	if !slices.Contains(u.GetFinalizers(), Finalizer) {
		u = u.DeepCopy()
		u.SetFinalizers(append(u.GetFinalizers(), Finalizer))
		var err error
		if u, err = r.dc.Resource(VirtualNetworks).Update(ctx, u, metav1.UpdateOptions{}); err != nil {
			return conflictOK(err)
		}
	}
	want, specErr := specOf(u)
	changedByUser := u.GetGeneration() != observedGeneration(u)
	switch {
	case net == nil && t.deletedInStore[name] && statusID(u) != 0:
		// Deleted through the gRPC API: the object follows.
		r.log.Info("network deleted through the API: deleting its VirtualNetwork", logkey.Network, name)
		return r.removeObject(ctx, u)
	case specErr != nil:
		return r.refuse(ctx, u, net, ReasonInvalid, specErr)
	case net == nil:
		created, err := r.fab.CreateNetwork(ctx, want)
		if model.HasKind(err) && !errors.Is(err, model.ErrUnavailable) && !errors.Is(err, model.ErrAborted) {
			return r.refuse(ctx, u, nil, ReasonRefused, err)
		}
		if err != nil {
			return err
		}
		r.log.Info("network created from its VirtualNetwork", logkey.Network, name)
		net = created
	case !sameSpec(want, net) && changedByUser:
		upd := proto3Clone(want)
		upd.Name = name
		if upd.Ipv4BlockSize == 0 {
			upd.Ipv4BlockSize = net.Ipv4BlockSize
		}
		if upd.Ipv6BlockSize == 0 {
			upd.Ipv6BlockSize = net.Ipv6BlockSize
		}
		updated, err := r.fab.UpdateNetwork(ctx, upd)
		if model.HasKind(err) && !errors.Is(err, model.ErrUnavailable) && !errors.Is(err, model.ErrAborted) {
			return r.refuse(ctx, u, net, ReasonRefused, err)
		}
		if err != nil {
			return err
		}
		r.log.Info("network updated from its VirtualNetwork", logkey.Network, name)
		net = updated
	case !sameSpec(want, net):
		// Changed through the gRPC API since the object was last applied:
		// the object follows.
		u = u.DeepCopy()
		setSpec(u, net)
		var err error
		if u, err = r.dc.Resource(VirtualNetworks).Update(ctx, u, metav1.UpdateOptions{}); err != nil {
			return conflictOK(err)
		}
	}
	return r.setStatus(ctx, u, net, corev1.ConditionTrue, ReasonReady, "the network is in the store")
}

// refuse records why the object's spec is not applied: an Event and
// Ready=False (the store keeps what it had).
func (r *Reconciler) refuse(ctx context.Context, u *unstructured.Unstructured, net *v1.VirtualNetwork, reason string, err error) error {
	return r.setStatus(ctx, u, net, corev1.ConditionFalse, reason, err.Error())
}

// adoptNetwork creates the VirtualNetwork object of a network made through
// the gRPC API.
func (r *Reconciler) adoptNetwork(ctx context.Context, net *v1.VirtualNetwork) error {
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetAPIVersion(VirtualNetworks.GroupVersion().String())
	u.SetKind(VirtualNetworkKind)
	u.SetName(net.Name)
	u.SetFinalizers([]string{Finalizer})
	setSpec(u, net)
	created, err := r.dc.Resource(VirtualNetworks).Create(ctx, u, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil // the informer brings it
	}
	if err != nil {
		return err
	}
	r.log.Info("VirtualNetwork created for a network of the store", logkey.Network, net.Name)
	return r.setStatus(ctx, created, net, corev1.ConditionTrue, ReasonReady, "the network is in the store")
}

// deleteNetwork deletes the store's network of an object being deleted, then
// lets the object go.
func (r *Reconciler) deleteNetwork(ctx context.Context, u *unstructured.Unstructured, inStore bool) error {
	if !slices.Contains(u.GetFinalizers(), Finalizer) {
		return nil
	}
	if inStore {
		_, err := r.fab.DeleteNetwork(ctx, u.GetName())
		if errors.Is(err, model.ErrConflict) {
			if e := r.setStatus(ctx, u, nil, corev1.ConditionFalse, ReasonDeleteBlocked, err.Error()); e != nil {
				return e
			}
			return &retryAfter{deleteRetry}
		}
		if err != nil && !errors.Is(err, model.ErrNotFound) {
			return err
		}
		r.log.Info("network deleted with its VirtualNetwork", logkey.Network, u.GetName())
	}
	return r.dropFinalizer(ctx, u)
}

func (r *Reconciler) dropFinalizer(ctx context.Context, u *unstructured.Unstructured) error {
	u = u.DeepCopy()
	u.SetFinalizers(slices.DeleteFunc(u.GetFinalizers(), func(f string) bool { return f == Finalizer }))
	_, err := r.dc.Resource(VirtualNetworks).Update(ctx, u, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return conflictOK(err)
}

// removeObject deletes the object (its network is gone already).
func (r *Reconciler) removeObject(ctx context.Context, u *unstructured.Unstructured) error {
	if err := r.dropFinalizer(ctx, u); err != nil {
		return err
	}
	err := r.dc.Resource(VirtualNetworks).Delete(ctx, u.GetName(), metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// setStatus writes the object's status when it differs from what it shows;
// a new refusal also gets an Event.
func (r *Reconciler) setStatus(ctx context.Context, u *unstructured.Unstructured, net *v1.VirtualNetwork, ready corev1.ConditionStatus, reason, msg string) error {
	st := map[string]any{}
	if old, ok := u.Object["status"].(map[string]any); ok {
		st = runtime.DeepCopyJSON(old)
	}
	if net != nil {
		st["id"] = int64(net.Id)
		st["autoRouteTarget"] = net.AutoRouteTarget
		used, err := r.addressesUsed(ctx, net.Name)
		if err != nil {
			return err
		}
		st["addressesUsed"] = used
	}
	gen := u.GetGeneration()
	if ready == corev1.ConditionTrue {
		// A refused spec stays unobserved: it is tried again, and a change
		// made through the gRPC API does not overwrite it.
		st["observedGeneration"] = gen
	}
	cond := map[string]any{"type": "Ready", "status": string(ready), "reason": reason, "message": msg, "observedGeneration": gen}
	var conds []any
	changed := true
	if old, ok := st["conditions"].([]any); ok {
		for _, c := range old {
			cm, ok := c.(map[string]any)
			if !ok || cm["type"] != "Ready" {
				conds = append(conds, c)
				continue
			}
			if cm["status"] == cond["status"] && cm["reason"] == cond["reason"] && cm["message"] == cond["message"] {
				changed = false
				cond["lastTransitionTime"] = cm["lastTransitionTime"]
			}
		}
	}
	if changed || cond["lastTransitionTime"] == nil {
		cond["lastTransitionTime"] = r.now().UTC().Format(time.RFC3339)
	}
	st["conditions"] = append(conds, cond)
	if old, ok := u.Object["status"].(map[string]any); ok && equality.Semantic.DeepEqual(old, st) {
		return nil
	}
	nu := u.DeepCopy()
	nu.Object["status"] = st
	if _, err := r.dc.Resource(VirtualNetworks).UpdateStatus(ctx, nu, metav1.UpdateOptions{}); err != nil {
		return conflictOK(err)
	}
	if changed && ready != corev1.ConditionTrue {
		r.rec.Event(u, corev1.EventTypeWarning, reason, msg)
		r.log.Info("VirtualNetwork not applied", logkey.Network, u.GetName(), logkey.Reason, reason, logkey.Err, msg)
	}
	return nil
}

func (r *Reconciler) addressesUsed(ctx context.Context, network string) (int64, error) {
	st, err := r.fab.IpamStatus(ctx, network)
	if errors.Is(err, model.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var n int64
	for _, s := range st.Subnets {
		n += int64(s.Used)
	}
	return n, nil
}

// conflictOK turns an update conflict (the object changed meanwhile; the
// informer brings the new one and the key comes again) into success.
func conflictOK(err error) error {
	if apierrors.IsConflict(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("kubernetes API: %w", err)
	}
	return nil
}

func observedGeneration(u *unstructured.Unstructured) int64 {
	v, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	return v
}

func statusID(u *unstructured.Unstructured) int64 {
	v, _, _ := unstructured.NestedInt64(u.Object, "status", "id")
	return v
}

func proto3Clone(n *v1.VirtualNetwork) *v1.VirtualNetwork {
	return &v1.VirtualNetwork{Name: n.Name, Subnets: slices.Clone(n.Subnets), ImportRouteTargets: slices.Clone(n.ImportRouteTargets),
		ExportRouteTargets: slices.Clone(n.ExportRouteTargets), Encapsulations: slices.Clone(n.Encapsulations),
		Ipv4BlockSize: n.Ipv4BlockSize, Ipv6BlockSize: n.Ipv6BlockSize}
}
