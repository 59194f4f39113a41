package controllers

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
)

// DefaultMaxConcurrentReconciles is how many programs are reconciled at
// once by default (--max-concurrent-reconciles). A reconcile mostly waits
// on the API server and the engines, so the workers are many more than
// cores: make bench-operator-tuning at 5,000 programs tuning every minute
// needs about 83 reconciles a second.
const DefaultMaxConcurrentReconciles = 16

// Options configure the reconcilers.
type Options struct {
	OperatorNamespace       string
	EngineImage             string
	MaxConcurrentReconciles int
	Clock                   clock.PassiveClock
	// SecretAccess, when set (cluster mode), is bound in each world
	// namespace; nil when the operator's own RBAC grants it Secrets
	// (namespaced mode's Roles, or a run as a cluster admin).
	SecretAccess *SecretAccess
	// Prometheus says which Prometheus addresses programs may name.
	Prometheus PrometheusAccess
	// PodMonitors says which namespaces' programs get a PodMonitor
	// (AllNamespaces with --pod-monitors; nil: none).
	PodMonitors func(namespace string) bool
	// MonitoringNamespaces are admitted by every engine's NetworkPolicy
	// (--monitoring-namespaces).
	MonitoringNamespaces []string
}

// RESTConfig is cfg as the operator's manager uses it: responses are not
// compressed. The operator runs beside the API server, where gzip costs
// both ends CPU and saves nothing worth it; the API server compresses the
// events of every watch list (WatchListCompression) for a client that
// accepts gzip, as client-go's transport does unless told not to. The
// control plane's own components (kube-controller-manager,
// kube-scheduler) opt out the same way.
func RESTConfig(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.DisableCompression = true
	return cfg
}

// CacheOptions limits the operator's cache to the objects it manages and
// drops managed fields (which the operator never reads; they are the
// larger part of an applied Deployment) before objects enter it. Secrets
// are not in it at all: the reconcilers read them from the API server
// (ReconcilerClient) and watch their own per world namespace, so the
// operator never lists or watches Secrets cluster-wide.
func CacheOptions() cache.Options {
	managed := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByValue})}
	enginePods := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{LabelName: EngineAppName})}
	return cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ByObject: map[client.Object]cache.ByObject{
		&corev1.Namespace{}:                      managed,
		&rbacv1.RoleBinding{}:                    managed,
		&corev1.ConfigMap{}:                      managed,
		&corev1.ServiceAccount{}:                 managed,
		&corev1.Service{}:                        managed,
		&corev1.ResourceQuota{}:                  managed,
		&corev1.PersistentVolumeClaim{}:          managed,
		&appsv1.Deployment{}:                     managed,
		&policyv1.PodDisruptionBudget{}:          managed,
		&autoscalingv2.HorizontalPodAutoscaler{}: managed,
		&networkingv1.NetworkPolicy{}:            managed,
		&corev1.Pod{}:                            enginePods,
	}}
}

// ReconcilerClient is the manager's client with Secrets read from the API
// server rather than the cache: a cached read would start a cluster-wide
// Secret informer, which the operator's RBAC does not allow.
func ReconcilerClient(mgr ctrl.Manager) (client.Client, error) {
	c, err := client.New(mgr.GetConfig(), client.Options{
		Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper(), HTTPClient: mgr.GetHTTPClient(),
		Cache: &client.CacheOptions{Reader: mgr.GetCache(), DisableFor: []client.Object{&corev1.Secret{}}},
	})
	if err != nil {
		return nil, fmt.Errorf("create the reconcilers' client: %w", err)
	}
	return c, nil
}

// ownObjectsClient serves reads of the operator's own Secrets from the
// informers of worldSecrets, lists of a program's engine pods from an
// index of the cache (List), and every other read as c does (Secrets from
// the API server). A Secret the informers do not hold is read from the API
// server: one without the operator's label (a planted one, which the
// reconcilers then refuse; a PostgreSQL Secret a program names), or any
// while the informer of its namespace is still listing. One this client
// just created or applied is served from memory until the informer
// delivers it (worldSecrets.remember). A cached one may trail a write by
// the time the watch takes to deliver it; an update made from it then
// conflicts and is retried, and the watch's event reconciles again.
type ownObjectsClient struct {
	client.Client
	secrets *worldSecrets
	// applies sends the applies of every kind but Secrets without
	// decoding the answer.
	applies *answerlessApplier
}

// newOwnObjectsClient wraps c, the reconcilers' client of mgr, with the
// operator's Secrets from secrets and answerless applies.
func newOwnObjectsClient(mgr cluster.Cluster, c client.Client, secrets *worldSecrets) *ownObjectsClient {
	return &ownObjectsClient{Client: c, secrets: secrets, applies: newAnswerlessApplier(mgr)}
}

func (c *ownObjectsClient) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if s, ok := obj.(*corev1.Secret); ok && len(opts) == 0 {
		if cached, ok := c.secrets.get(key); ok {
			cached.DeepCopyInto(s)
			return nil
		}
	}
	return c.Client.Get(ctx, key, obj, opts...)
}

// Create remembers a Secret it created until the informer of its
// namespace delivers it, so that the reads that follow at once (the
// program's next reconcile, woken by its other children) are answered
// without asking the API server.
func (c *ownObjectsClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	if err := c.Client.Create(ctx, obj, opts...); err != nil {
		return err
	}
	if s, ok := obj.(*corev1.Secret); ok && len((&client.CreateOptions{}).ApplyOptions(opts).DryRun) == 0 {
		c.secrets.remember(s)
	}
	return nil
}

// Apply remembers a Secret it created as Create does: the apply's answer
// is the stored Secret. An apply of any other kind is sent without
// decoding its answer (answerlessApplier), and leaves obj as it was.
func (c *ownObjectsClient) Apply(ctx context.Context, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
	// client.ApplyConfigurationFromUnstructured's configuration is the
	// Unstructured that c.Client decodes the answer into (a Secret's, or
	// a dry run's, below).
	u, ok := obj.(interface {
		GroupVersionKind() schema.GroupVersionKind
		UnstructuredContent() map[string]any
	})
	o := (&client.ApplyOptions{}).ApplyOptions(opts)
	dryRun := len(o.DryRun) != 0
	secret := ok && u.GroupVersionKind() == secretGVK
	if ok && !secret && !dryRun {
		return c.applies.apply(ctx, &unstructured.Unstructured{Object: u.UnstructuredContent()}, o)
	}
	if err := c.Client.Apply(ctx, obj, opts...); err != nil {
		return err
	}
	if !secret || dryRun {
		return nil
	}
	s := &corev1.Secret{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.UnstructuredContent(), s); err == nil && s.ResourceVersion != "" {
		c.secrets.remember(s)
	}
	return nil
}

// lacksOwnSecret says whether the operator has no Secret key, as far as it
// knows without asking the API server (worldSecrets.lacks).
func (c *ownObjectsClient) lacksOwnSecret(key client.ObjectKey) bool {
	return c.secrets.lacks(key)
}

// List serves two lists from indexes, so that a program's reconcile reads
// what is its own rather than everything in its world's namespace (which
// may hold thousands of programs): the metadata of the operator's Secrets
// of one program, from the informer of worldSecrets, and a program's
// engine pods, from the manager's cache by enginePodIndexField. Any other
// list goes to c, as does one whose informer is still listing.
func (c *ownObjectsClient) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	o := (&client.ListOptions{}).ApplyOptions(opts)
	if o.Namespace == "" || o.LabelSelector == nil || o.FieldSelector != nil || o.Limit != 0 || o.Continue != "" {
		return c.Client.List(ctx, list, opts...)
	}
	switch l := list.(type) {
	case *metav1.PartialObjectMetadataList:
		if l.GroupVersionKind() == corev1.SchemeGroupVersion.WithKind("SecretList") && c.listOwnSecrets(l, o) {
			return nil
		}
	case *corev1.PodList:
		instance, byInstance := o.LabelSelector.RequiresExactMatch(LabelInstance)
		if app, _ := o.LabelSelector.RequiresExactMatch(LabelName); byInstance && app == EngineAppName {
			return c.Client.List(ctx, list, append(opts, client.MatchingFields{enginePodIndexField: instance})...)
		}
	}
	return c.Client.List(ctx, list, opts...)
}

// listOwnSecrets fills meta with the operator's Secrets that o selects,
// from the informer of o's namespace; false when it cannot (the selector
// does not require the operator's label, or the informer is not synced).
func (c *ownObjectsClient) listOwnSecrets(meta *metav1.PartialObjectMetadataList, o *client.ListOptions) bool {
	if required, _ := o.LabelSelector.RequiresExactMatch(LabelManagedBy); required != ManagedByValue {
		return false
	}
	informer := c.secrets.informer(o.Namespace)
	if informer == nil {
		return false
	}
	var objs []any
	if program, ok := o.LabelSelector.RequiresExactMatch(LabelProgram); ok {
		var err error
		if objs, err = informer.GetIndexer().ByIndex(secretProgramIndex, program); err != nil {
			return false
		}
	} else {
		objs = informer.GetStore().List()
	}
	meta.Items = nil
	for _, obj := range objs {
		s, ok := obj.(*corev1.Secret)
		if !ok || !o.LabelSelector.Matches(labels.Set(s.Labels)) {
			continue
		}
		item := metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}}
		s.ObjectMeta.DeepCopyInto(&item.ObjectMeta)
		meta.Items = append(meta.Items, item)
	}
	return true
}

// SetupWithManager registers both reconcilers and their shared index.
func SetupWithManager(mgr ctrl.Manager, o Options) error {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if sa := o.SecretAccess; sa != nil && (sa.ClusterRole == "" || sa.ServiceAccount == "" || sa.Namespace == "") {
		return fmt.Errorf("secret access needs the ClusterRole, the operator's ServiceAccount and its namespace (have %+v)", *sa)
	}
	if err := IndexWorldRef(context.Background(), mgr); err != nil {
		return fmt.Errorf("index programs by world: %w", err)
	}
	if err := indexEnginePods(context.Background(), mgr); err != nil {
		return fmt.Errorf("index engine pods by program: %w", err)
	}
	if err := indexAutoscaledGPUPrograms(context.Background(), mgr); err != nil {
		return fmt.Errorf("index autoscaled GPU programs: %w", err)
	}
	c, err := ReconcilerClient(mgr)
	if err != nil {
		return err
	}
	secrets, err := newWorldSecrets(mgr.GetConfig())
	if err != nil {
		return err
	}
	c = newOwnObjectsClient(mgr, c, secrets)
	world := &VirtualWorldReconciler{
		Client: c, APIReader: mgr.GetAPIReader(), Scheme: mgr.GetScheme(),
		Recorder: mgr.GetEventRecorder("attune-virtualworld"), Clock: o.Clock, OperatorNamespace: o.OperatorNamespace,
		SecretAccess: o.SecretAccess, secrets: secrets,
	}
	if err := world.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up VirtualWorld controller: %w", err)
	}
	program := &MeditationProgramReconciler{
		Client: c, Scheme: mgr.GetScheme(), Prometheus: o.Prometheus, OwnedSecrets: secrets.source("MeditationProgram"), Recorder: mgr.GetEventRecorder("attune-meditationprogram"),
		Clock: o.Clock, OperatorNamespace: o.OperatorNamespace, EngineImage: o.EngineImage, MaxConcurrentReconciles: o.MaxConcurrentReconciles,
		APIReader: mgr.GetAPIReader(), PodMonitors: o.PodMonitors,
		MonitoringNamespaces: o.MonitoringNamespaces,
	}
	if err := program.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up MeditationProgram controller: %w", err)
	}
	return nil
}
