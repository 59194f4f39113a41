package controllers

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
)

// worldSecrets watches the operator's own Secrets one world namespace at a
// time, so that a deleted key or token Secret is issued again at once
// without the operator listing or watching Secrets cluster-wide (its RBAC
// grants Secrets only in world namespaces: docs in README "Security").
// The informers also serve the reconcilers' reads of those Secrets
// (ownObjectsClient): only the operator's own, by label, so no other
// Secret's data is ever cached and memory follows the programs.
type worldSecrets struct {
	client rest.Interface

	mu sync.Mutex
	// ctx is the manager's, from the first controller that starts.
	ctx context.Context
	// sinks are the controllers' queues, each with the owner kind whose
	// Secrets it reconciles.
	sinks []secretSink
	// watching maps a world's name to its namespace's running informer.
	watching map[string]namespaceWatch
}

type secretSink struct {
	ownerKind string
	queue     workqueue.TypedRateLimitingInterface[reconcile.Request]
}

type namespaceWatch struct {
	namespace string
	stop      context.CancelFunc
	informer  toolscache.SharedIndexInformer
}

func newWorldSecrets(cfg *rest.Config) (*worldSecrets, error) {
	c, err := corev1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("secrets client: %w", err)
	}
	return &worldSecrets{client: c.RESTClient(), watching: map[string]namespaceWatch{}}, nil
}

// source is a controller's watch of the Secrets controlled by ownerKind
// (VirtualWorld or MeditationProgram): their updates and deletions.
func (w *worldSecrets) source(ownerKind string) source.Source {
	return source.Func(func(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.ctx == nil {
			w.ctx = ctx
		}
		w.sinks = append(w.sinks, secretSink{ownerKind: ownerKind, queue: q})
		return nil
	})
}

// watch starts the informer of world's namespace once; a world that moved
// (it cannot: spec.namespace is immutable) would be watched anew.
func (w *worldSecrets) watch(world, namespace string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx == nil {
		return // the controllers have not started; the next reconcile starts it
	}
	if current, ok := w.watching[world]; ok {
		if current.namespace == namespace {
			return
		}
		current.stop()
	}
	ctx, stop := context.WithCancel(w.ctx)
	selector := labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByValue}).String()
	lw := toolscache.NewFilteredListWatchFromClient(w.client, "secrets", namespace, func(o *metav1.ListOptions) {
		o.LabelSelector = selector
	})
	informer := toolscache.NewSharedIndexInformer(lw, &corev1.Secret{}, 0, toolscache.Indexers{secretProgramIndex: secretProgram})
	// Managed fields are never read (as in CacheOptions).
	_ = informer.SetTransform(cache.TransformStripManagedFields())
	_, _ = informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		// Creations are ours and need no second look (as with Owns).
		UpdateFunc: func(_, obj any) { w.enqueue(obj) },
		DeleteFunc: func(obj any) { w.enqueue(obj) },
	})
	go informer.RunWithContext(ctx)
	w.watching[world] = namespaceWatch{namespace: namespace, stop: stop, informer: informer}
}

// secretProgramIndex indexes a namespace's Secrets by the program they
// belong to (label LabelProgram), so that listing one program's Secrets
// costs what it has, not what its world has.
const secretProgramIndex = "program"

func secretProgram(obj any) ([]string, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, nil
	}
	return labelValue(m, LabelProgram), nil
}

// labelValue is an index's values for obj: the value of its label, none
// when it has no such label.
func labelValue(obj metav1.Object, label string) []string {
	if v, ok := obj.GetLabels()[label]; ok {
		return []string{v}
	}
	return nil
}

// informer is the synced informer of namespace's Secrets; nil while none
// is (not a world's namespace, or its first list not yet done).
func (w *worldSecrets) informer(namespace string) toolscache.SharedIndexInformer {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, nw := range w.watching {
		if nw.namespace == namespace && nw.informer.HasSynced() {
			return nw.informer
		}
	}
	return nil
}

// get is the operator's Secret key as last watched, when the informer of
// its namespace has it.
func (w *worldSecrets) get(key types.NamespacedName) (*corev1.Secret, bool) {
	informer := w.informer(key.Namespace)
	if informer == nil {
		return nil, false
	}
	obj, ok, err := informer.GetStore().GetByKey(key.Namespace + "/" + key.Name)
	if err != nil || !ok {
		return nil, false
	}
	s, ok := obj.(*corev1.Secret)
	return s, ok
}

// forget stops the informer of a world that is gone.
func (w *worldSecrets) forget(world string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if current, ok := w.watching[world]; ok {
		current.stop()
		delete(w.watching, world)
	}
}

func (w *worldSecrets) enqueue(obj any) {
	if tombstone, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = tombstone.Obj
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return
	}
	ref := metav1.GetControllerOf(m)
	if ref == nil {
		return
	}
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil || gv.Group != wellbeingv1alpha1.GroupVersion.Group {
		return
	}
	request := reconcile.Request{NamespacedName: ownerKey(ref.Kind, m.GetNamespace(), ref.Name)}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.sinks {
		if s.ownerKind == ref.Kind {
			s.queue.Add(request)
		}
	}
}

// ownerKey is the key of a Secret's owner: VirtualWorlds are cluster-scoped.
func ownerKey(kind, namespace, name string) types.NamespacedName {
	if kind == "VirtualWorld" {
		namespace = ""
	}
	return types.NamespacedName{Namespace: namespace, Name: name}
}
