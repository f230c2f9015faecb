package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/iotfabric/iotfabric/pkg/controller"
	"github.com/iotfabric/iotfabric/pkg/logkey"
	v1 "github.com/iotfabric/iotfabric/proto/iotfabric/v1"
)

// Fabric is what the reconciler asks of the controller (pkg/controller's
// *Controller implements it).
type Fabric interface {
	GetNetwork(ctx context.Context, name string) (*v1.VirtualNetwork, error)
	ListNetworks(ctx context.Context) ([]*v1.VirtualNetwork, int64, error)
	CreateNetwork(ctx context.Context, n *v1.VirtualNetwork) (*v1.VirtualNetwork, error)
	UpdateNetwork(ctx context.Context, n *v1.VirtualNetwork) (*v1.VirtualNetwork, error)
	DeleteNetwork(ctx context.Context, name string) (int64, error)
	IpamStatus(ctx context.Context, name string) (*v1.IpamStatus, error)
	WatchNetworks(ctx context.Context, from int64, send func(controller.Event[*v1.VirtualNetwork]) error) error
	WatchEndpoints(ctx context.Context, from int64, send func(controller.Event[*v1.Endpoint]) error) error
	ListEndpoints(ctx context.Context, network, gateway string) ([]*v1.Endpoint, int64, error)
	DeleteEndpoint(ctx context.Context, id string) (int64, error)
	GetGateway(ctx context.Context, name string) (*v1.Gateway, error)
	ListGateways(ctx context.Context) ([]*v1.Gateway, int64, error)
	CreateGateway(ctx context.Context, g *v1.Gateway) (*v1.Gateway, error)
	UpdateGateway(ctx context.Context, g *v1.Gateway) (*v1.Gateway, error)
	DeleteGateway(ctx context.Context, name string) (int64, error)
}

var _ Fabric = (*controller.Controller)(nil)

// Options are the reconciler's collaborators.
type Options struct {
	// RESTConfig reaches the API server (nil: Config.Kubeconfig, else in-cluster).
	RESTConfig *rest.Config
	Logger     *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// OnLeading, if set, is called when this controller starts or stops leading.
	OnLeading func(leading bool)
}

// Reconciler maps Kubernetes objects to the fabric while it holds the lease.
type Reconciler struct {
	cfg  Config
	fab  Fabric
	kc   kubernetes.Interface
	dc   dynamic.Interface
	log  *slog.Logger
	now  func() time.Time
	opts Options
	rec  record.EventRecorder

	leading    atomic.Bool
	reconciled atomic.Pointer[chan struct{}] // closed when a term's first pass is done

	// term is the state of one leadership term, owned by its worker goroutine
	// (informer callbacks only enqueue keys).
	term *term
	mu   sync.Mutex // guards term (read by Leading tests and the bench)
}

// New builds a reconciler; Run starts it.
func New(cfg Config, fab Fabric, opts Options) (*Reconciler, error) {
	cfg = cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	rc := opts.RESTConfig
	if rc == nil {
		var err error
		if rc, err = restConfig(cfg.Kubeconfig); err != nil {
			return nil, err
		}
	}
	rc = rest.CopyConfig(rc)
	if rc.UserAgent == "" {
		rc.UserAgent = "iotfabric-controller"
	}
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	dc, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	if cfg.Lease.Identity == "" {
		cfg.Lease.Identity = defaultIdentity()
	}
	r := &Reconciler{cfg: cfg, fab: fab, kc: kc, dc: dc, log: opts.Logger.With(logkey.Component, logkey.ComponentKube), now: opts.Now, opts: opts}
	ch := make(chan struct{})
	r.reconciled.Store(&ch)
	return r, nil
}

// Leading reports whether this controller holds the lease.
func (r *Reconciler) Leading() bool { return r.leading.Load() }

// Reconciled is closed once the current (or next) leadership term has synced
// its informers and worked through every object once.
func (r *Reconciler) Reconciled() <-chan struct{} { return *r.reconciled.Load() }

// Identity is this controller's lease holder identity.
func (r *Reconciler) Identity() string { return r.cfg.Lease.Identity }

// Run takes part in the leader election until ctx ends, reconciling while
// it leads.
func (r *Reconciler) Run(ctx context.Context) error {
	bc := record.NewBroadcaster(record.WithContext(ctx))
	defer bc.Shutdown()
	bc.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: r.kc.CoreV1().Events("")})
	r.rec = bc.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "iotfabric-controller"})
	return r.elect(ctx, r.lead)
}

// term is one leadership term: informers, the work queue and what the
// worker remembers between keys.
type term struct {
	queue   workqueue.TypedRateLimitingInterface[string]
	vns     cache.SharedIndexInformer
	nss     cache.SharedIndexInformer
	nodes   cache.SharedIndexInformer
	pods    cache.SharedIndexInformer
	synced  []cache.InformerSynced
	storeUp atomic.Bool // the store watches run

	// Owned by the worker goroutine.
	deletedInStore map[string]bool      // networks deleted through the API while leading
	nodeGone       map[string]time.Time // node name -> when it was seen gone
	podGone        map[string]time.Time // endpoint id -> when its pod was first missing
	isolated       []netip.Prefix       // subnets given to isolated namespaces this term
}

// Key prefixes of the work queue.
const (
	keyVN   = "vn/"
	keyNS   = "ns/"
	keyNode = "node/"
	keyGC   = "gc"
)

const uidIndex = "uid"

// lead reconciles until ctx ends (the term is over).
func (r *Reconciler) lead(ctx context.Context) {
	r.leading.Store(true)
	defer r.leading.Store(false)
	if r.opts.OnLeading != nil {
		r.opts.OnLeading(true)
		defer r.opts.OnLeading(false)
	}
	start := r.now()
	t := &term{
		queue:          workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		deletedInStore: map[string]bool{}, nodeGone: map[string]time.Time{}, podGone: map[string]time.Time{},
	}
	defer t.queue.ShutDown()
	r.mu.Lock()
	r.term = t
	r.mu.Unlock()

	kf := informers.NewSharedInformerFactory(r.kc, 0)
	df := dynamicinformer.NewDynamicSharedInformerFactory(r.dc, 0)
	t.vns = df.ForResource(VirtualNetworks).Informer()
	t.nss = kf.Core().V1().Namespaces().Informer()
	t.nodes = kf.Core().V1().Nodes().Informer()
	t.pods = kf.Core().V1().Pods().Informer()
	// Pods are kept for their UID, name and node only.
	_ = t.pods.SetTransform(slimPod)
	_ = t.pods.AddIndexers(cache.Indexers{uidIndex: func(obj any) ([]string, error) {
		if p, ok := obj.(*corev1.Pod); ok {
			return []string{string(p.UID)}, nil
		}
		return nil, nil
	}})
	enqueue := func(prefix string) cache.ResourceEventHandler {
		return cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { r.enqueueObj(t, prefix, obj) },
			UpdateFunc: func(_, obj any) { r.enqueueObj(t, prefix, obj) },
			DeleteFunc: func(obj any) { r.enqueueObj(t, prefix, obj) },
		}
	}
	_, _ = t.vns.AddEventHandler(enqueue(keyVN))
	_, _ = t.nss.AddEventHandler(enqueue(keyNS))
	_, _ = t.nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.enqueueObj(t, keyNode, obj) },
		UpdateFunc: func(old, obj any) { r.enqueueObj(t, keyNode, obj) },
		DeleteFunc: func(obj any) {
			// The worker decides when the grace period is over.
			r.enqueueObj(t, keyNode, obj)
		},
	})
	t.synced = []cache.InformerSynced{t.vns.HasSynced, t.nss.HasSynced, t.nodes.HasSynced, t.pods.HasSynced}
	kf.Start(ctx.Done())
	df.Start(ctx.Done())
	defer kf.Shutdown()
	defer df.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), t.synced...) {
		return
	}
	r.log.Info("kubernetes informers synced", logkey.Took, r.now().Sub(start))

	// The store's side: networks (both-way reconciliation) and endpoints
	// (addresses used, in status).
	var wg sync.WaitGroup
	defer wg.Wait()
	storeSynced := make(chan struct{}, 2)
	wg.Go(func() { r.watchStore(ctx, t, storeSynced) })
	for range 2 {
		select {
		case <-storeSynced:
		case <-ctx.Done():
			return
		}
	}
	t.storeUp.Store(true)
	if err := r.seedNodes(ctx, t); err != nil {
		r.log.Warn("gateways without nodes not checked", logkey.Err, err)
	}
	for _, o := range t.nss.GetStore().ListKeys() {
		t.queue.Add(keyNS + o)
	}
	for _, o := range t.nodes.GetStore().ListKeys() {
		t.queue.Add(keyNode + o)
	}
	t.queue.Add(keyGC)
	wg.Go(func() { r.tickGC(ctx, t) })
	wg.Go(func() {
		<-ctx.Done()
		t.queue.ShutDown()
	})
	// The first pass is over once the queue was empty.
	reconciled := *r.reconciled.Load()
	wg.Go(func() {
		for ctx.Err() == nil {
			if t.queue.Len() == 0 {
				time.Sleep(20 * time.Millisecond)
				if t.queue.Len() == 0 {
					r.log.Info("kubernetes reconciled", logkey.Took, r.now().Sub(start))
					close(reconciled)
					return
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	defer func() {
		ch := make(chan struct{})
		r.reconciled.Store(&ch)
	}()
	r.work(ctx, t)
}

func (r *Reconciler) enqueueObj(t *term, prefix string, obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	t.queue.Add(prefix + key)
}

// work is the worker: one key at a time.
func (r *Reconciler) work(ctx context.Context, t *term) {
	for {
		key, quit := t.queue.Get()
		if quit {
			return
		}
		err := r.process(ctx, t, key)
		t.queue.Done(key)
		switch {
		case err == nil:
			t.queue.Forget(key)
		case ctx.Err() != nil:
			return
		default:
			var again *retryAfter
			if errors.As(err, &again) {
				t.queue.Forget(key)
				t.queue.AddAfter(key, again.d)
				continue
			}
			r.log.Info("kubernetes reconcile failed; retrying", logkey.KubeObject, key, logkey.Err, err)
			t.queue.AddRateLimited(key)
		}
	}
}

// retryAfter asks for the key again after d (not a failure).
type retryAfter struct{ d time.Duration }

func (e *retryAfter) Error() string { return fmt.Sprintf("again in %v", e.d) }

func (r *Reconciler) process(ctx context.Context, t *term, key string) error {
	switch {
	case strings.HasPrefix(key, keyVN):
		return r.syncNetwork(ctx, t, strings.TrimPrefix(key, keyVN))
	case strings.HasPrefix(key, keyNS):
		return r.syncNamespace(ctx, t, strings.TrimPrefix(key, keyNS))
	case strings.HasPrefix(key, keyNode):
		return r.syncNode(ctx, t, strings.TrimPrefix(key, keyNode))
	case key == keyGC:
		return r.collect(ctx, t)
	}
	return nil
}

// watchStore follows the store's networks and endpoints; each sends on
// synced once its snapshot is in.
func (r *Reconciler) watchStore(ctx context.Context, t *term, synced chan<- struct{}) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for ctx.Err() == nil {
			err := r.fab.WatchNetworks(ctx, 0, func(ev controller.Event[*v1.VirtualNetwork]) error {
				switch ev.Type {
				case controller.EventSynced:
					select {
					case synced <- struct{}{}:
					default:
					}
				case controller.EventDelete:
					t.queue.Add(keyVN + "\x00deleted/" + ev.Record.GetName())
				default:
					t.queue.Add(keyVN + ev.Record.GetName())
				}
				return nil
			})
			if ctx.Err() == nil {
				r.log.Warn("store watch of networks ended; again", logkey.Err, err)
				sleep(ctx, time.Second)
			}
		}
	})
	wg.Go(func() {
		sent := false
		for ctx.Err() == nil {
			err := r.fab.WatchEndpoints(ctx, 0, func(ev controller.Event[*v1.Endpoint]) error {
				switch {
				case ev.Type == controller.EventSynced:
					if !sent {
						sent = true
						synced <- struct{}{}
					}
				case ev.Record.GetNetwork() != "":
					// The addresses used change: status, coalesced.
					t.queue.AddAfter(keyVN+ev.Record.GetNetwork(), time.Second)
				}
				return nil
			})
			if ctx.Err() == nil {
				r.log.Warn("store watch of endpoints ended; again", logkey.Err, err)
				sleep(ctx, time.Second)
			}
		}
	})
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// slimPod keeps what the reconciler reads of a pod.
func slimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return &corev1.Pod{ObjectMeta: metaSlim(p.ObjectMeta), Spec: corev1.PodSpec{NodeName: p.Spec.NodeName}}, nil
}

// vnObject returns the VirtualNetwork object of name from the informer.
func vnObject(t *term, name string) (*unstructured.Unstructured, bool) {
	obj, ok, err := t.vns.GetStore().GetByKey(name)
	if err != nil || !ok {
		return nil, false
	}
	u, ok := obj.(*unstructured.Unstructured)
	return u, ok
}
