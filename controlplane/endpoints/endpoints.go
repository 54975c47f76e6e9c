// Package endpoints follows a Kubernetes cluster for the mesh registry: which pods of the
// injected workloads are ready to serve, and at which IP. It watches, with client-go informers,
// the pods that the injector marked (label attestmesh.io/injected=true) and the EndpointSlices
// of every Service; an endpoint counts when its slice says it is ready and its pod is an
// injected one, and it is listed under the pod's config ID (annotation attestmesh.io/config-id).
// Kubernetes decides readiness (the sidecar's /ready, the app's probes, termination); this
// package only joins the two.
//
// A pod's config ID is only a claim: a pod that names a config ID it cannot attest as gets no
// SVID for it, and every client sidecar checks the server's SPIFFE ID in the handshake, so a
// false claim costs availability (a connection refused), never identity.
//
// The control plane needs get, list and watch on pods and endpointslices (the chart's
// ClusterRole), nothing else.
package endpoints

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Labels and annotations the injector sets (controlplane/injector).
const (
	labelInjected    = "attestmesh.io/injected"
	annotationConfig = "attestmesh.io/config-id"
)

// Config configures a Watcher.
type Config struct {
	Client kubernetes.Interface
	// OnChange is called, without blocking for long, whenever the ready endpoints of some
	// config ID may have changed.
	OnChange func()
	Logger   *slog.Logger
	// Resync is the informers' resync period; 0 means none.
	Resync time.Duration
}

// Watcher follows the cluster. Its methods are safe for concurrent use; Run is called once.
type Watcher struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	pods   cache.Indexer
	slices cache.Indexer
	synced bool
}

// New returns a Watcher; nothing is watched until Run.
func New(cfg Config) (*Watcher, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("endpoints: a Kubernetes client is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Watcher{cfg: cfg, log: log.With("subsystem", "endpoints")}, nil
}

// Run watches until ctx is done. It returns an error only when the informers cannot start.
func (w *Watcher) Run(ctx context.Context) error {
	injected := informers.NewSharedInformerFactoryWithOptions(w.cfg.Client, w.cfg.Resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = labelInjected + "=true" }))
	all := informers.NewSharedInformerFactory(w.cfg.Client, w.cfg.Resync)
	pods := injected.Core().V1().Pods().Informer()
	eps := all.Discovery().V1().EndpointSlices().Informer()
	changed := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { w.changed() },
		UpdateFunc: func(any, any) { w.changed() },
		DeleteFunc: func(any) { w.changed() },
	}
	for _, inf := range []cache.SharedIndexInformer{pods, eps} {
		if _, err := inf.AddEventHandler(changed); err != nil {
			return fmt.Errorf("endpoints: %w", err)
		}
	}
	w.mu.Lock()
	w.pods, w.slices = pods.GetIndexer(), eps.GetIndexer()
	w.mu.Unlock()
	injected.Start(ctx.Done())
	all.Start(ctx.Done())
	defer injected.Shutdown()
	defer all.Shutdown()
	w.log.Info("following the cluster's injected pods and EndpointSlices")
	if !cache.WaitForCacheSync(ctx.Done(), pods.HasSynced, eps.HasSynced) {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("endpoints: the pod and EndpointSlice caches did not sync")
	}
	w.mu.Lock()
	w.synced = true
	w.mu.Unlock()
	w.log.Info("cluster caches synced", "injected_pods", len(pods.GetIndexer().List()), "endpointslices", len(eps.GetIndexer().List()))
	w.changed()
	<-ctx.Done()
	return nil
}

func (w *Watcher) changed() {
	if w.cfg.OnChange != nil {
		w.cfg.OnChange()
	}
}

// Ready returns the IPs of the ready, injected pods of every config ID, each list sorted.
// Before the caches have synced it returns nil.
func (w *Watcher) Ready() map[string][]netip.Addr {
	w.mu.Lock()
	pods, eps, synced := w.pods, w.slices, w.synced
	w.mu.Unlock()
	if !synced {
		return nil
	}
	var ps []*corev1.Pod
	for _, o := range pods.List() {
		if p, ok := o.(*corev1.Pod); ok {
			ps = append(ps, p)
		}
	}
	var ss []*discoveryv1.EndpointSlice
	for _, o := range eps.List() {
		if s, ok := o.(*discoveryv1.EndpointSlice); ok {
			ss = append(ss, s)
		}
	}
	return Join(ps, ss)
}

// Join lists, for every config ID, the IPs of the endpoints that an EndpointSlice says are
// ready and whose pod (in pods, by namespace and name) is injected and names that config ID.
// The lists are sorted and hold each address once.
func Join(pods []*corev1.Pod, eps []*discoveryv1.EndpointSlice) map[string][]netip.Addr {
	type key struct{ ns, name string }
	configOf := make(map[key]string, len(pods))
	for _, p := range pods {
		id, ok := p.Annotations[annotationConfig]
		if !ok || p.Labels[labelInjected] != "true" || p.DeletionTimestamp != nil {
			continue
		}
		configOf[key{p.Namespace, p.Name}] = id
	}
	sets := map[string]map[netip.Addr]bool{}
	for _, s := range eps {
		for _, e := range s.Endpoints {
			ref := e.TargetRef
			if ref == nil || ref.Kind != "Pod" || e.Conditions.Ready == nil || !*e.Conditions.Ready {
				continue
			}
			ns := ref.Namespace
			if ns == "" {
				ns = s.Namespace
			}
			id, ok := configOf[key{ns, ref.Name}]
			if !ok {
				continue
			}
			for _, a := range e.Addresses {
				ip, err := netip.ParseAddr(a)
				if err != nil {
					continue
				}
				if sets[id] == nil {
					sets[id] = map[netip.Addr]bool{}
				}
				sets[id][ip] = true
			}
		}
	}
	out := make(map[string][]netip.Addr, len(sets))
	for id, set := range sets {
		out[id] = slices.SortedFunc(maps.Keys(set), func(a, b netip.Addr) int { return a.Compare(b) })
	}
	return out
}
