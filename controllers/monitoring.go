package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/engine/auth"
)

// Engine scraping (docs/operations.md, "Scraping"). With --pod-monitors
// and the Prometheus operator's PodMonitor CRD installed, the operator
// renders one PodMonitor per program, in the program's (the world's)
// namespace, as the Prometheus operator's own examples scrape one
// workload per PodMonitor. Per program rather than per world because what
// a scrape needs differs per program: the bearer credential (each
// program's engines accept only their own clients file's tokens) and the
// TLS server name (<program>-engine.<ns>.svc); a PodMonitor's endpoint
// carries one of each. The credential is a metrics-only token in its own
// Secret, <program>-engine-metrics-token, listed in the engines' clients
// file as the built-in client MetricsClientName with the metrics scope
// alone. The CA comes from the world's attune-ca-bundle ConfigMap (a CA
// certificate is public). The PodMonitor is handled as unstructured so
// that the operator does not import the Prometheus operator's Go module.
const (
	// MonitoringGroup is the Prometheus operator's API group.
	MonitoringGroup = "monitoring.coreos.com"
	// MetricsClientName names the built-in metrics client in the clients
	// file. It is longer than the 40 characters spec.access.clients[].name
	// allows, so no user client can take it.
	MetricsClientName = "attune-operator-prometheus-metrics-scraper"
	// MetricsTokenKey is the key of the token in the metrics token Secret.
	MetricsTokenKey       = "token"
	metricsTokenComponent = "metrics-token"
	// podMonitorRecheck is how long an absent PodMonitor CRD is believed
	// absent before discovery is asked again (installing the Prometheus
	// operator after Attune is picked up within it).
	podMonitorRecheck = 5 * time.Minute
)

// podMonitorGVK is the Prometheus operator's PodMonitor.
var podMonitorGVK = schema.GroupVersionKind{Group: MonitoringGroup, Version: "v1", Kind: "PodMonitor"}

// +kubebuilder:rbac:groups=monitoring.coreos.com,resources=podmonitors,verbs=get;list;watch;create;update;patch;delete

// AllNamespaces is the PodMonitors option of --pod-monitors: every world.
func AllNamespaces(string) bool { return true }

// MetricsTokenSecretName is the Secret of the program's metrics-only token.
func MetricsTokenSecretName(p *wellbeingv1alpha1.MeditationProgram) string {
	return engineName(p) + "-metrics-token"
}

// PodMonitorName is the program's PodMonitor.
func PodMonitorName(p *wellbeingv1alpha1.MeditationProgram) string { return engineName(p) }

// podMonitorAPI remembers whether the PodMonitor CRD is installed, so
// that a cluster without it costs one discovery call per podMonitorRecheck
// rather than one per reconcile.
type podMonitorAPI struct {
	mu        sync.Mutex
	checkedAt time.Time
	present   bool
}

// podMonitorsOn says whether program p gets a PodMonitor: enabled for its
// namespace and the CRD installed. A failed discovery is an error (the
// reconcile is retried); an absent CRD is not.
func (r *MeditationProgramReconciler) podMonitorsOn(p *wellbeingv1alpha1.MeditationProgram) (bool, error) {
	if r.PodMonitors == nil || !r.PodMonitors(p.Namespace) {
		return false, nil
	}
	api := &r.podMonitorAPI
	api.mu.Lock()
	defer api.mu.Unlock()
	now := r.Clock.Now()
	if api.present || (!api.checkedAt.IsZero() && now.Sub(api.checkedAt) < podMonitorRecheck) {
		return api.present, nil
	}
	_, err := r.RESTMapper().RESTMapping(podMonitorGVK.GroupKind(), podMonitorGVK.Version)
	switch {
	case err == nil:
		api.present = true
	case meta.IsNoMatchError(err):
		api.present = false
	default:
		return false, fmt.Errorf("discover %s/%s PodMonitor: %w", MonitoringGroup, podMonitorGVK.Version, err)
	}
	api.checkedAt = now
	return api.present, nil
}

// podMonitorGone records that the CRD went away (it was uninstalled).
func (r *MeditationProgramReconciler) podMonitorGone() {
	r.podMonitorAPI.mu.Lock()
	defer r.podMonitorAPI.mu.Unlock()
	r.podMonitorAPI.present, r.podMonitorAPI.checkedAt = false, r.Clock.Now()
}

func metricsTokenSecret(p *wellbeingv1alpha1.MeditationProgram, token string) *corev1.Secret {
	return builtInTokenSecret(p, MetricsTokenSecretName(p), metricsTokenComponent, MetricsTokenKey, token)
}

// builtInTokenSecret is the Secret of one of the operator's built-in
// clients' tokens (metrics, tuning): the engine's labels with its own
// component, the token under key.
func builtInTokenSecret(p *wellbeingv1alpha1.MeditationProgram, name, component, key, token string) *corev1.Secret {
	labels := engineLabels(p)
	labels[LabelComponent] = component
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: p.Namespace, Labels: labels},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{key: []byte(token)},
	}
}

// reconcileMetricsClient issues the metrics-only token once and returns
// its clients-file entry; nil when the program gets no PodMonitor. To
// rotate it, delete the Secret: a new token is issued, the engines reload
// the clients file and the Prometheus operator re-reads the Secret.
func (r *MeditationProgramReconciler) reconcileMetricsClient(ctx context.Context, a *childApplier, reader client.Reader, p *wellbeingv1alpha1.MeditationProgram) (*auth.Client, error) {
	on, err := r.podMonitorsOn(p)
	if err != nil || !on {
		return nil, err
	}
	key := client.ObjectKey{Namespace: p.Namespace, Name: MetricsTokenSecretName(p)}
	if _, err := a.createSecretIfMissing(ctx, p, key, func() (*corev1.Secret, error) {
		token, err := randomToken()
		return metricsTokenSecret(p, token), err
	}); err != nil {
		return nil, err
	}
	// Read back what is stored (a concurrent create may have won).
	secret := &corev1.Secret{}
	if err := reader.Get(ctx, key, secret); err != nil {
		return nil, fmt.Errorf("get Secret %s: %w", key.Name, err)
	}
	if ref := metav1.GetControllerOf(secret); ref == nil || ref.UID != p.UID {
		return nil, fmt.Errorf("the Secret %s exists and is not this program's; remove it so that the metrics token can be issued", key.Name)
	}
	token := string(secret.Data[MetricsTokenKey])
	if token == "" {
		return nil, fmt.Errorf("the Secret %s holds no %s; delete it to have a metrics token issued anew", key.Name, MetricsTokenKey)
	}
	return &auth.Client{Name: MetricsClientName, TokenSHA256: auth.HashToken(token), Scopes: []auth.Scope{auth.ScopeMetrics}}, nil
}

// EnginePodMonitor is the program's PodMonitor. Relabelings add the
// namespace, world and pod target labels; program is not one of them:
// the engines expose it themselves (a constant label), and a target label
// of the same name would push theirs to exported_program.
func EnginePodMonitor(p *wellbeingv1alpha1.MeditationProgram) *unstructured.Unstructured {
	selector := map[string]any{}
	for k, v := range EngineSelectorLabels(p) {
		selector[k] = v
	}
	relabel := func(source, target string) any {
		return map[string]any{"action": "replace", "sourceLabels": []any{source}, "targetLabel": target}
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"spec": map[string]any{
			"selector":          map[string]any{"matchLabels": selector},
			"namespaceSelector": map[string]any{"matchNames": []any{p.Namespace}},
			"podMetricsEndpoints": []any{map[string]any{
				"port":   engineHTTPPortStr,
				"scheme": "https",
				"path":   "/metrics",
				"authorization": map[string]any{
					"type":        "Bearer",
					"credentials": map[string]any{"name": MetricsTokenSecretName(p), "key": MetricsTokenKey},
				},
				"tlsConfig": map[string]any{
					"ca":         map[string]any{"configMap": map[string]any{"name": CABundleConfigMapName, "key": CABundleKey}},
					"serverName": EngineServerName(p),
				},
				"relabelings": []any{
					relabel("__meta_kubernetes_namespace", "namespace"),
					relabel("__meta_kubernetes_pod_label_wellbeing_attune_io_world", "world"),
					relabel("__meta_kubernetes_pod_name", "pod"),
				},
			}},
		},
	}}
	u.SetGroupVersionKind(podMonitorGVK)
	u.SetName(PodMonitorName(p))
	u.SetNamespace(p.Namespace)
	u.SetLabels(engineLabels(p))
	return u
}

// reconcilePodMonitor applies the program's PodMonitor when the program
// gets one. Turning --pod-monitors off leaves existing PodMonitors in
// place (the operator then does not look for them); they go with their
// program.
func (r *MeditationProgramReconciler) reconcilePodMonitor(ctx context.Context, a *childApplier, rc *programReconcile) error {
	p := rc.program
	on, err := r.podMonitorsOn(p)
	if err != nil || !on {
		return err
	}
	desired := EnginePodMonitor(p)
	if err := controllerutil.SetControllerReference(p, desired, r.Scheme); err != nil {
		return fmt.Errorf("set owner of PodMonitor %s: %w", desired.GetName(), err)
	}
	existing := &unstructured.Unstructured{}
	existing.SetGroupVersionKind(podMonitorGVK)
	err = r.Get(ctx, client.ObjectKeyFromObject(desired), existing)
	switch {
	case meta.IsNoMatchError(err):
		r.podMonitorGone()
		return nil
	case err == nil && isSubset(desired.Object["spec"], existing.Object["spec"]) && isSubset(desired.Object["metadata"], existing.Object["metadata"]):
		return nil
	case err == nil || apierrors.IsNotFound(err):
		if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(desired), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			return fmt.Errorf("apply PodMonitor %s: %w", desired.GetName(), err)
		}
		a.changes = append(a.changes, "Applied PodMonitor "+desired.GetName())
		return nil
	default:
		return fmt.Errorf("get PodMonitor %s: %w", desired.GetName(), err)
	}
}

// ParseMonitoringNamespaces reads --monitoring-namespaces: comma-separated
// namespace names (empty: none).
func ParseMonitoringNamespaces(list string) ([]string, error) {
	var out []string
	for _, ns := range strings.Split(list, ",") {
		ns = strings.TrimSpace(ns)
		if ns == "" {
			continue
		}
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return nil, fmt.Errorf("namespace %q: %s", ns, strings.Join(errs, "; "))
		}
		if !slices.Contains(out, ns) {
			out = append(out, ns)
		}
	}
	return out, nil
}

// admitMonitoringNamespaces adds the operator's monitoring namespaces that
// the world does not already name to the engines' ingress rule, so that
// a Prometheus server in them reaches the API port (GET /metrics still
// needs a metrics token).
func admitMonitoringNamespaces(policy *networkingv1.NetworkPolicy, w *wellbeingv1alpha1.VirtualWorld, namespaces []string) {
	var extra []string
	for _, ns := range namespaces {
		if !slices.Contains(w.Spec.Isolation.MonitoringNamespaces, ns) {
			extra = append(extra, ns)
		}
	}
	if len(extra) == 0 || len(policy.Spec.Ingress) == 0 {
		return
	}
	policy.Spec.Ingress[0].From = append(policy.Spec.Ingress[0].From, networkingv1.NetworkPolicyPeer{NamespaceSelector: namespaceSelector(extra...)})
}
