// Package podwatch is the vrouter agent's view of Kubernetes: an informer on
// its own node's pods (field selector spec.nodeName) and one on namespaces,
// so that the CNI plugin never needs API credentials. It maps a pod to its
// network (pkg/kube/podnet's NetworkFor) and writes the pod's
// k8s.v1.cni.cncf.io/network-status annotation once it is wired.
//
// It talks to the API server through pkg/kube/kubelite (net/http and JSON,
// pods and namespaces reduced to the fields read here), not client-go, so
// that the agent stays small on a gateway.
//
// A pod not yet in the cache is read with a short GET; while the API server
// cannot be reached, the cached namespace mapping decides (pods are still
// admitted, headless). A refused ADD becomes a Warning Event on the pod
// (reason NetworkSetupRefused; at most one per pod every EventInterval).
package podwatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/iotfabric/iotfabric/pkg/cni"
	"github.com/iotfabric/iotfabric/pkg/kube/kubelite"
	"github.com/iotfabric/iotfabric/pkg/kube/podnet"
	"github.com/iotfabric/iotfabric/pkg/logkey"
)

// DefaultGetTimeout bounds the GET of a pod the cache does not have yet.
const DefaultGetTimeout = 2 * time.Second

// Config configures a Watcher.
type Config struct {
	// Node is this gateway's node name.
	Node string
	// DefaultNetwork is the network of pods of namespaces without a mapping.
	DefaultNetwork string
	// Kube reaches the API server (nil: the Kubeconfig file, else the pod's
	// service account, kubelite.InCluster).
	Kube       *kubelite.Config
	Kubeconfig string
	GetTimeout time.Duration
	Logger     *slog.Logger
}

// Watcher implements pkg/agent's PodResolver.
type Watcher struct {
	cfg     Config
	kc      *kubelite.Client
	log     *slog.Logger
	pods    *kubelite.Informer[*kubelite.Pod]
	nss     *kubelite.Informer[*kubelite.Namespace]
	writes  chan statusWrite
	events  chan podEvent
	started chan struct{}
}

type podEvent struct {
	namespace, name, uid string
	message              string
}

type statusWrite struct {
	namespace, name, uid string
	value                string
}

// New builds a watcher; Run starts its informers.
func New(cfg Config) (*Watcher, error) {
	if cfg.Node == "" {
		return nil, errors.New("podwatch: the node name is required")
	}
	if cfg.GetTimeout <= 0 {
		cfg.GetTimeout = DefaultGetTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	kcfg := cfg.Kube
	if kcfg == nil {
		var err error
		if cfg.Kubeconfig != "" {
			kcfg, err = kubelite.LoadKubeconfig(cfg.Kubeconfig)
		} else {
			kcfg, err = kubelite.InCluster()
		}
		if err != nil {
			return nil, fmt.Errorf("podwatch: kubernetes configuration: %w", err)
		}
	}
	c := *kcfg
	c.UserAgent = "iotfabric-agent"
	kc, err := kubelite.New(c)
	if err != nil {
		return nil, fmt.Errorf("podwatch: %w", err)
	}
	w := &Watcher{cfg: cfg, kc: kc, log: cfg.Logger.With(logkey.Component, logkey.ComponentPodWatch),
		writes: make(chan statusWrite, 1024), events: make(chan podEvent, 256), started: make(chan struct{})}
	w.pods = kubelite.NewPodInformer(kc, kubelite.InformerOptions{FieldSelector: "spec.nodeName=" + cfg.Node, Logger: w.log})
	w.nss = kubelite.NewNamespaceInformer(kc, kubelite.InformerOptions{Logger: w.log})
	return w, nil
}

// Run runs the informers and the annotation writer until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	defer w.kc.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { w.pods.Run(ctx) })
	wg.Go(func() { w.nss.Run(ctx) })
	close(w.started)
	// Writes the API server did not take wait here (the latest per pod)
	// and are tried again with a backoff, however long it is away.
	pending := map[string]statusWrite{}
	lastEvent := map[string]time.Time{} // per pod, for EventInterval
	backoff := time.Second
	retry := time.NewTimer(backoff)
	retry.Stop()
	for {
		select {
		case <-ctx.Done():
			retry.Stop()
			return nil
		case wr := <-w.writes:
			key := wr.namespace + "/" + wr.name
			delete(pending, key)
			if !w.write(ctx, wr) {
				if len(pending) == 0 {
					backoff = time.Second
					retry.Reset(backoff)
				}
				pending[key] = wr
			}
		case ev := <-w.events:
			key := ev.namespace + "/" + ev.name
			if t, ok := lastEvent[key]; ok && time.Since(t) < EventInterval {
				continue
			}
			for k, t := range lastEvent {
				if time.Since(t) >= EventInterval {
					delete(lastEvent, k)
				}
			}
			lastEvent[key] = time.Now()
			w.event(ctx, ev)
		case <-retry.C:
			for key, wr := range pending {
				if !w.write(ctx, wr) {
					break
				}
				delete(pending, key)
			}
			if len(pending) > 0 {
				backoff = min(2*backoff, maxWriteBackoff)
				retry.Reset(backoff)
			}
		}
	}
}

// maxWriteBackoff bounds the wait between tries of annotations the API
// server did not take.
const maxWriteBackoff = 30 * time.Second

// Synced reports whether both informers have their first listing.
func (w *Watcher) Synced() bool { return w.pods.Synced() && w.nss.Synced() }

// Network maps the pod to its network and the fixed address its
// iotfabric.io/ip annotation asks for (zero when none, or when the pod is
// not known because the API server is away).
func (w *Watcher) Network(ctx context.Context, namespace, name, uid string) (string, netip.Addr, error) {
	pod, err := w.pod(ctx, namespace, name, uid)
	if err != nil {
		return "", netip.Addr{}, err
	}
	var podAnn map[string]string
	if pod != nil {
		podAnn = pod.Metadata.Annotations
	}
	var nsAnn map[string]string
	if ns, ok := w.nss.Get(namespace); ok {
		nsAnn = ns.Metadata.Annotations
	} else {
		gctx, cancel := context.WithTimeout(ctx, w.cfg.GetTimeout)
		ns, err := w.kc.GetNamespace(gctx, namespace)
		cancel()
		if err == nil {
			nsAnn = ns.Metadata.Annotations
		}
	}
	n, err := podnet.NetworkFor(namespace, nsAnn, podAnn, w.cfg.DefaultNetwork)
	if err != nil {
		return "", netip.Addr{}, cni.Errorf(cni.CodeInvalidNetworkConf, "pod %s/%s: %v", namespace, name, err)
	}
	ip, err := podnet.PodIP(podAnn)
	if err != nil {
		return "", netip.Addr{}, cni.Errorf(cni.CodeInvalidNetworkConf, "pod %s/%s: %v", namespace, name, err)
	}
	return n, ip, nil
}

// pod returns the pod from the cache, else from a short GET; nil when the
// API server cannot be reached (the namespace mapping decides then).
func (w *Watcher) pod(ctx context.Context, namespace, name, uid string) (*kubelite.Pod, error) {
	if p, ok := w.pods.Get(namespace + "/" + name); ok {
		if uid == "" || p.Metadata.UID == uid {
			return p, nil
		}
	}
	gctx, cancel := context.WithTimeout(ctx, w.cfg.GetTimeout)
	defer cancel()
	p, err := w.kc.GetPod(gctx, namespace, name)
	switch {
	case err == nil && uid != "" && p.Metadata.UID != uid:
		return nil, cni.Errorf(cni.CodeTryAgainLater, "pod %s/%s has UID %s, the runtime asks for %s (re-created meanwhile?)", namespace, name, p.Metadata.UID, uid)
	case err == nil:
		return p, nil
	case kubelite.IsNotFound(err):
		return nil, cni.Errorf(cni.CodeTryAgainLater, "pod %s/%s is not known to the API server", namespace, name)
	}
	w.log.Info("API server not reachable: the namespace mapping decides", logkey.KubePod, namespace+"/"+name, logkey.Err, err)
	return nil, nil
}

// NetworkStatus is one entry of the k8s.v1.cni.cncf.io/network-status annotation.
type NetworkStatus struct {
	Name      string   `json:"name"`
	Interface string   `json:"interface"`
	IPs       []string `json:"ips"`
	MAC       string   `json:"mac,omitempty"`
	Default   bool     `json:"default"`
	Gateway   []string `json:"gateway,omitempty"`
}

// Attached queues the pod's network-status annotation.
func (w *Watcher) Attached(ep cni.Endpoint, gateway netip.Addr) {
	st := NetworkStatus{Name: "iotfabric/" + ep.Network, Interface: ep.IfName, MAC: ep.MAC, Default: true}
	for _, a := range ep.Addresses {
		st.IPs = append(st.IPs, a.String())
	}
	if gateway.IsValid() {
		st.Gateway = []string{gateway.String()}
	}
	b, _ := json.Marshal([]NetworkStatus{st})
	select {
	case w.writes <- statusWrite{namespace: ep.PodNamespace, name: ep.PodName, uid: ep.PodUID, value: string(b)}:
	default:
		w.log.Warn("network-status annotation dropped: too many queued", logkey.KubePod, ep.PodNamespace+"/"+ep.PodName)
	}
}

// write patches the annotation (only on the pod of that UID). It reports
// false when the API server did not answer (the write is to be tried
// again); true when it is done or moot (the pod is gone or re-created).
func (w *Watcher) write(ctx context.Context, wr statusWrite) bool {
	patch := map[string]any{"metadata": map[string]any{"annotations": map[string]string{podnet.AnnotationNetworkStatus: wr.value}}}
	if wr.uid != "" {
		patch["metadata"].(map[string]any)["uid"] = wr.uid // a precondition: another pod of that name is left alone
	}
	b, _ := json.Marshal(patch)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := w.kc.MergePatchPod(pctx, wr.namespace, wr.name, b)
	cancel()
	if err == nil || kubelite.IsNotFound(err) || kubelite.IsConflict(err) || kubelite.IsInvalid(err) || ctx.Err() != nil {
		return true
	}
	w.log.Info("network-status annotation not written yet", logkey.KubePod, wr.namespace+"/"+wr.name, logkey.Err, err)
	return false
}

// ReasonAddRefused is the reason of the Event the agent writes on a pod
// whose CNI ADD it refused.
const ReasonAddRefused = "NetworkSetupRefused"

// EventInterval is the least time between two Events on one pod (the
// runtime retries a refused ADD every few seconds).
const EventInterval = 30 * time.Second

// MaxEventMessage bounds an Event's message (bytes).
const MaxEventMessage = 1024

// Refused queues a Warning Event on the pod whose CNI ADD was refused, with
// the CNI error code and message (it never blocks; Events are best effort).
func (w *Watcher) Refused(namespace, name, uid string, err *cni.Error) {
	msg := fmt.Sprintf("CNI ADD refused by the iotfabric agent on node %s (CNI error %d): %s", w.cfg.Node, err.Code, err.Msg)
	if err.Details != "" {
		msg += ": " + err.Details
	}
	if len(msg) > MaxEventMessage {
		msg = strings.ToValidUTF8(msg[:MaxEventMessage-len(" …")], "") + " …"
	}
	select {
	case w.events <- podEvent{namespace: namespace, name: name, uid: uid, message: msg}:
	default:
		w.log.Warn("event dropped: too many queued", logkey.KubePod, namespace+"/"+name)
	}
}

// event creates a Warning Event on the pod.
func (w *Watcher) event(ctx context.Context, ev podEvent) {
	now := time.Now().UTC().Format(time.RFC3339)
	e := &kubelite.Event{
		Metadata: kubelite.ObjectMeta{GenerateName: ev.name + ".", Namespace: ev.namespace},
		InvolvedObject: kubelite.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: ev.namespace, Name: ev.name,
			UID: ev.uid},
		Reason: ReasonAddRefused, Message: ev.message, Type: kubelite.EventTypeWarning,
		Source:         kubelite.EventSource{Component: "iotfabric-agent", Host: w.cfg.Node},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := w.kc.CreateEvent(cctx, e); err != nil {
		w.log.Info("event not written", logkey.KubePod, ev.namespace+"/"+ev.name, logkey.Err, err)
	}
}

// Cached reports whether the pod informer holds the pod.
func (w *Watcher) Cached(namespace, name string) bool {
	_, ok := w.pods.Get(namespace + "/" + name)
	return ok
}
