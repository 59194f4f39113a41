package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
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
	// created holds the Secrets this process created that their
	// namespace's informer has not yet delivered, so that reads just after
	// a create are served without asking the API server (read your own
	// writes). An entry goes when the informer delivers any event of its
	// name, from when on the informer is the truth, and is not used after
	// createdMemory: a Secret deleted while the watch was broken is not in
	// the relist, and sends no event of its name.
	created map[types.NamespacedName]createdSecret
}

type createdSecret struct {
	secret *corev1.Secret
	at     time.Time
}

// createdMemory is how long a created Secret is served from memory at
// most: a watch delivers in well under a second.
const createdMemory = 30 * time.Second

// createdEntry is the remembered Secret key, if still of use. The caller
// holds w.mu.
func (w *worldSecrets) createdEntry(key types.NamespacedName) (*corev1.Secret, bool) {
	e, ok := w.created[key]
	if !ok {
		return nil, false
	}
	if time.Since(e.at) > createdMemory {
		delete(w.created, key)
		return nil, false
	}
	return e.secret, true
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
	// Protobuf, as controller-runtime's informers use for built-in kinds: a
	// typed client left alone speaks JSON, which costs the API server and
	// this process several times more per event of a watch.
	cfg = rest.CopyConfig(cfg)
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	c, err := corev1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("secrets client: %w", err)
	}
	return &worldSecrets{client: c.RESTClient(), watching: map[string]namespaceWatch{}, created: map[types.NamespacedName]createdSecret{}}, nil
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
		w.dropCreated(current.namespace)
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
		AddFunc:    func(obj any) { w.delivered(obj) },
		UpdateFunc: func(_, obj any) { w.delivered(obj); w.enqueue(obj) },
		DeleteFunc: func(obj any) { w.delivered(obj); w.enqueue(obj) },
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
// its namespace has it, or as this process created it, when the informer
// has not yet delivered it.
func (w *worldSecrets) get(key types.NamespacedName) (*corev1.Secret, bool) {
	if informer := w.informer(key.Namespace); informer != nil {
		if s, ok := storedSecret(informer, key); ok {
			return s, true
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.createdEntry(key)
}

// lacks says whether the operator has no Secret key as far as this
// process knows without asking: the informer of its namespace has synced
// and holds none of that name, and this process created none that it has
// not yet delivered. A Secret there without the operator's label (planted)
// is outside the informer's selection and not known; the caller's create
// then fails with AlreadyExists, and it reads the Secret from the API
// server.
func (w *worldSecrets) lacks(key types.NamespacedName) bool {
	informer := w.informer(key.Namespace)
	if informer == nil {
		return false
	}
	// Memory first, then the store: the store is written before the
	// handler that drops the entry runs, so a delivery in between is seen
	// in one or the other.
	w.mu.Lock()
	_, remembered := w.createdEntry(key)
	w.mu.Unlock()
	if remembered {
		return false
	}
	_, stored := storedSecret(informer, key)
	return !stored
}

func storedSecret(informer toolscache.SharedIndexInformer, key types.NamespacedName) (*corev1.Secret, bool) {
	obj, ok, err := informer.GetStore().GetByKey(key.Namespace + "/" + key.Name)
	if err != nil || !ok {
		return nil, false
	}
	s, ok := obj.(*corev1.Secret)
	return s, ok
}

// remember keeps a Secret this process just created until the informer of
// its namespace delivers it. Only one the informer will deliver is kept:
// one with the operator's label, in a watched namespace, not already
// delivered (the informer's store is written before its handlers run, and
// both this check and delivered hold w.mu, so a delivery after the check
// removes the entry; one that never comes is outlived by createdMemory).
func (w *worldSecrets) remember(s *corev1.Secret) {
	if s.Labels[LabelManagedBy] != ManagedByValue {
		return
	}
	key := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
	w.mu.Lock()
	defer w.mu.Unlock()
	for k := range w.created {
		w.createdEntry(k) // drops what is past createdMemory
	}
	for _, nw := range w.watching {
		if nw.namespace != key.Namespace {
			continue
		}
		if _, ok := storedSecret(nw.informer, key); ok {
			return
		}
		kept := s.DeepCopy()
		kept.ManagedFields = nil // never read (as in CacheOptions)
		w.created[key] = createdSecret{secret: kept, at: time.Now()}
		return
	}
}

// delivered drops what remember kept of obj's name: the informer now
// holds it (or its deletion).
func (w *worldSecrets) delivered(obj any) {
	if tombstone, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = tombstone.Obj
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.created, types.NamespacedName{Namespace: m.GetNamespace(), Name: m.GetName()})
}

// forget stops the informer of a world that is gone.
func (w *worldSecrets) forget(world string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if current, ok := w.watching[world]; ok {
		current.stop()
		delete(w.watching, world)
		w.dropCreated(current.namespace)
	}
}

// dropCreated forgets what remember kept in a namespace no longer watched.
// The caller holds w.mu.
func (w *worldSecrets) dropCreated(namespace string) {
	for key := range w.created {
		if key.Namespace == namespace {
			delete(w.created, key)
		}
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
