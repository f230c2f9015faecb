package kube

import (
	"context"
	"errors"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/iotfabric/iotfabric/pkg/logkey"
	"github.com/iotfabric/iotfabric/pkg/model"
)

// apiProbeTimeout bounds the GC's check that the API server answers.
const apiProbeTimeout = 5 * time.Second

// tickGC asks for a collection pass every quarter of the pod grace period.
func (r *Reconciler) tickGC(ctx context.Context, t *term) {
	every := max(r.cfg.PodGrace/4, 500*time.Millisecond)
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			t.queue.Add(keyGC)
		}
	}
}

// collect releases the endpoints of pods that are gone: an endpoint that
// records a pod UID which the pod informer has not known for the whole grace
// period, and which a live GET confirms gone (no pod of that name, or one
// with another UID: a StatefulSet pod made again). Nothing is released while
// the informers are not synced or the API server does not answer; an
// endpoint without a pod UID (not from Kubernetes, or from before) is never
// touched.
func (r *Reconciler) collect(ctx context.Context, t *term) error {
	for _, synced := range t.synced {
		if !synced() {
			return nil
		}
	}
	pctx, cancel := context.WithTimeout(ctx, apiProbeTimeout)
	err := r.kc.Discovery().RESTClient().Get().AbsPath("/readyz").Do(pctx).Error()
	cancel()
	if err != nil {
		r.log.Info("API server not answering: no endpoint is released", logkey.Err, err)
		return nil
	}
	eps, _, err := r.fab.ListEndpoints(ctx, "", "")
	if err != nil {
		return err
	}
	now := r.now()
	seen := make(map[string]bool, len(eps))
	idx := t.pods.GetIndexer()
	for _, e := range eps {
		uid := e.GetPod().GetUid()
		if uid == "" {
			continue
		}
		seen[e.Id] = true
		if objs, err := idx.ByIndex(uidIndex, uid); err == nil && len(objs) > 0 {
			delete(t.podGone, e.Id)
			continue
		}
		first, ok := t.podGone[e.Id]
		if !ok {
			t.podGone[e.Id] = now
			continue
		}
		if now.Sub(first) < r.cfg.PodGrace {
			continue
		}
		gctx, cancel := context.WithTimeout(ctx, apiProbeTimeout)
		p, err := r.kc.CoreV1().Pods(e.Pod.Namespace).Get(gctx, e.Pod.Name, metav1.GetOptions{})
		cancel()
		switch {
		case err == nil && string(p.UID) == uid:
			delete(t.podGone, e.Id) // the cache was behind
			continue
		case err != nil && !apierrors.IsNotFound(err):
			r.log.Info("pod not confirmed gone: endpoint kept", logkey.Endpoint, e.Id, logkey.Err, err)
			continue
		}
		if _, err := r.fab.DeleteEndpoint(ctx, e.Id); err != nil && !errors.Is(err, model.ErrNotFound) {
			return err
		}
		delete(t.podGone, e.Id)
		r.log.Info("pod gone: endpoint released", logkey.Endpoint, e.Id, logkey.KubePod, e.Pod.Namespace+"/"+e.Pod.Name, logkey.KubeUID, uid)
	}
	for id := range t.podGone {
		if !seen[id] {
			delete(t.podGone, id)
		}
	}
	return nil
}
