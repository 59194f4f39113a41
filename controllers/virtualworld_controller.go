package controllers

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/engine/contract"
)

// VirtualWorldReconciler turns a VirtualWorld into its tenant namespace, GPU
// quota, pseudonymization key and network isolation.
type VirtualWorldReconciler struct {
	client.Client
	// APIReader reads objects outside the operator's label-filtered cache,
	// e.g. a namespace someone else created.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  events.EventRecorder
	Clock     clock.PassiveClock
	// OperatorNamespace is admitted by the world's NetworkPolicy so the
	// operator can read its engines' cohort loss.
	OperatorNamespace string
	// SecretAccess, when set, is bound in each world's namespace so that
	// the operator may use Secrets there and nowhere else.
	SecretAccess *SecretAccess
	// secrets watches the world namespaces' operator Secrets.
	secrets *worldSecrets
	// accessAwaited holds, by world, whether its Secret-access binding is
	// known to be in force, and since when it is awaited.
	accessAwaited awaitedAccess
	// applied remembers the children found as declared
	// (applied_children.go).
	applied appliedChildren
}

// SecretAccess is how the operator reaches Secrets in cluster mode: its
// cluster-wide role has no Secret verbs; ClusterRole (the chart's
// <release>-world-secrets, config/rbac's attune-world-secrets) holds them,
// and the operator binds it to its own ServiceAccount with a RoleBinding in
// each world namespace it created. Creating that binding needs only the
// bind verb on that one ClusterRole, and the chart's
// ValidatingAdmissionPolicy lets the operator bind roles only in a world's
// namespace (by the labels the operator sets there) and change only
// namespaces a VirtualWorld controls (so it cannot label others).
type SecretAccess struct {
	ClusterRole string
	// ServiceAccount and Namespace name the operator's ServiceAccount.
	ServiceAccount, Namespace string
}

// SecretAccessBindingName is the RoleBinding in each world namespace.
const SecretAccessBindingName = "attune-operator-secrets"

// worldReconcile carries one reconcile's working state between steps.
type worldReconcile struct {
	world     *wellbeingv1alpha1.VirtualWorld
	status    *wellbeingv1alpha1.VirtualWorldStatus
	namespace *corev1.Namespace
	conds     conditionSetter
	// requeueAfter is when the world is due again (the CA's renewal; 0: none).
	requeueAfter time.Duration
}

// +kubebuilder:rbac:groups=wellbeing.attune.io,resources=virtualworlds,verbs=get;list;watch
// +kubebuilder:rbac:groups=wellbeing.attune.io,resources=virtualworlds/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups="",resources=resourcequotas,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=rolebindings,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles,verbs=bind,resourceNames=attune-world-secrets
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
//
// No Secret verbs here: they are in config/rbac/world_secrets_role.yaml,
// bound per world namespace (SecretAccess).

// Reconcile runs the world's steps in order and writes status when it changed.
func (r *VirtualWorldReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	world := &wellbeingv1alpha1.VirtualWorld{}
	if err := r.Get(ctx, req.NamespacedName, world); err != nil {
		if apierrors.IsNotFound(err) {
			r.accessAwaited.forget(req.Name)
			if r.secrets != nil {
				r.secrets.forget(req.Name)
			}
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !world.DeletionTimestamp.IsZero() {
		r.accessAwaited.forget(world.Name)
		if r.secrets != nil {
			r.secrets.forget(world.Name)
		}
		return ctrl.Result{}, nil // ownership removes the namespace and everything in it
	}

	status := world.Status.DeepCopy()
	status.ObservedGeneration = world.Generation
	rc := &worldReconcile{world: world, status: status, conds: conditionSetter{&status.Conditions, world.Generation, r.Clock}}
	applier := &childApplier{client: r.Client, scheme: r.Scheme, recorder: r.Recorder, reader: r.APIReader, applied: &r.applied}

	steps := []struct {
		name string
		run  func(context.Context, *childApplier, *worldReconcile) error
	}{
		{"namespace", r.reconcileNamespace},
		{"secret access", r.reconcileSecretAccess},
		{"pseudonymization key", r.reconcileKeySecret},
		{"key-encryption key", r.reconcileKEKSecret},
		{"certificate authority", r.reconcileCertificateAuthority},
		{"gpu quota", r.reconcileQuota},
		{"network policy", r.reconcileNetworkPolicy},
		{"program totals", r.reconcileProgramTotals},
	}
	var stepErr error
	for _, step := range steps {
		if err := step.run(ctx, applier, rc); err != nil {
			stepErr = fmt.Errorf("%s: %w", step.name, err)
			break
		}
	}
	conflict := errors.Is(stepErr, errNamespaceConflict)
	accessPending := errors.Is(stepErr, errSecretAccessPending)
	switch {
	case conflict:
		// reconcileNamespace set Ready=False with the reason.
	case accessPending:
		rc.conds.set(wellbeingv1alpha1.ConditionReady, metav1.ConditionFalse, wellbeingv1alpha1.ReasonSecretAccessPending,
			fmt.Sprintf("waiting for RoleBinding %s in namespace %s to come into force: the API server does not yet let the operator use Secrets there",
				SecretAccessBindingName, world.Spec.Namespace))
	case stepErr != nil:
		rc.conds.set(wellbeingv1alpha1.ConditionReady, metav1.ConditionFalse, wellbeingv1alpha1.ReasonApplyFailed, stepErr.Error())
	default:
		message := fmt.Sprintf("namespace %s is ready; programs request %d GPUs", world.Spec.Namespace, status.GPUsRequested)
		if status.GPUQuotaLimit != nil {
			message += fmt.Sprintf(" of a quota of %d (%d in use)", *status.GPUQuotaLimit, status.GPUsInUse)
		}
		rc.conds.set(wellbeingv1alpha1.ConditionReady, metav1.ConditionTrue, wellbeingv1alpha1.ReasonReconciled, message)
	}
	applier.recordChanges(world)
	if err := r.writeStatus(ctx, world, status); err != nil {
		if apierrors.IsConflict(err) {
			// Read from a cache one write behind (often our own of a
			// moment ago, which the 250ms re-checks of the Secret access
			// meet): again, from the newer copy, without an error.
			return ctrl.Result{RequeueAfter: statusConflictRetry}, nil
		}
		return ctrl.Result{}, err
	}
	if conflict {
		// Nothing to retry until the namespace or the world changes.
		logger.Info("namespace conflict", "namespace", world.Spec.Namespace)
		return ctrl.Result{}, nil
	}
	if accessPending {
		// Not an error: RBAC takes a moment to see a new binding.
		return ctrl.Result{RequeueAfter: rc.requeueAfter}, nil
	}
	if errors.Is(stepErr, errSecretAccessMissing) {
		// Checked again on a schedule of its own rather than the error
		// back-off: creating the ClusterRole sends the world no event.
		r.Recorder.Eventf(world, nil, "Warning", "SecretAccessMissing", "Reconcile", "%v", stepErr)
		logger.Info("secret access not in force", "namespace", world.Spec.Namespace, "reason", stepErr.Error())
		return ctrl.Result{RequeueAfter: rc.requeueAfter}, nil
	}
	if stepErr != nil {
		return ctrl.Result{}, stepErr
	}
	return ctrl.Result{RequeueAfter: rc.requeueAfter}, nil
}

// statusConflictRetry is how soon a world whose status write met a newer
// version is reconciled again.
const statusConflictRetry = 200 * time.Millisecond

// errNamespaceConflict means the namespace exists and belongs to someone else.
var errNamespaceConflict = fmt.Errorf("namespace is not controlled by this world")

// reconcileNamespace creates the tenant namespace with Pod Security
// "restricted" enforcement. A namespace that exists but is not ours is never
// adopted: deleting the world would otherwise delete someone else's data.
func (r *VirtualWorldReconciler) reconcileNamespace(ctx context.Context, a *childApplier, rc *worldReconcile) error {
	name := rc.world.Spec.Namespace
	existing := &corev1.Namespace{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Name: name}, existing)
	switch {
	case err == nil:
		if ref := metav1.GetControllerOf(existing); ref == nil || ref.UID != rc.world.UID {
			rc.conds.set(wellbeingv1alpha1.ConditionReady, metav1.ConditionFalse, wellbeingv1alpha1.ReasonNamespaceConflict,
				fmt.Sprintf("namespace %s already exists and is not controlled by VirtualWorld %s; choose another spec.namespace", name, rc.world.Name))
			return errNamespaceConflict
		}
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("get namespace %s: %w", name, err)
	}
	labels := worldLabels(rc.world)
	labels["pod-security.kubernetes.io/enforce"] = "restricted"
	labels["pod-security.kubernetes.io/enforce-version"] = "latest"
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	err = a.apply(ctx, rc.world, ns)
	rc.namespace = ns
	return err
}

// reconcileSecretAccess binds SecretAccess.ClusterRole to the operator in
// the world's namespace, then watches the operator's Secrets there.
func (r *VirtualWorldReconciler) reconcileSecretAccess(ctx context.Context, a *childApplier, rc *worldReconcile) error {
	if sa := r.SecretAccess; sa != nil {
		binding := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: SecretAccessBindingName, Namespace: rc.world.Spec.Namespace, Labels: worldLabels(rc.world)},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: sa.ClusterRole},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa.ServiceAccount, Namespace: sa.Namespace}},
		}
		wrote, err := a.applyWrote(ctx, rc.world, binding)
		if err != nil {
			return err
		}
		if wrote {
			r.accessAwaited.changed(rc.world.Name)
		}
		recheck, err := r.awaitSecretAccess(ctx, rc.world)
		if err != nil {
			rc.requeueAfter = recheck
			return err
		}
	}
	// Watched only once the operator may: a refused list is retried
	// after a growing back-off.
	if r.secrets != nil {
		r.secrets.watch(rc.world.Name, rc.world.Spec.Namespace)
	}
	return nil
}

// reconcileKeySecret generates the world's pseudonymization key once when the
// world does not reference its own. It is never rotated: rotating would
// orphan every stored pseudonym.
func (r *VirtualWorldReconciler) reconcileKeySecret(ctx context.Context, a *childApplier, rc *worldReconcile) error {
	if rc.world.Spec.Privacy.PseudonymizationKeyRef != nil {
		return nil
	}
	name := client.ObjectKey{Namespace: rc.world.Spec.Namespace, Name: PseudonymizationKeySecretName}
	_, err := a.createSecretIfMissing(ctx, rc.world, name, func() (*corev1.Secret, error) {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("generate key: %w", err)
		}
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name.Name, Namespace: name.Namespace, Labels: worldLabels(rc.world)},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{PseudonymizationKeySecretKey: key},
		}, nil
	})
	return err
}

// reconcileKEKSecret generates the world's keyring once, when the world
// does not reference its own: one random 32-byte KEK, primary. The
// operator never rewrites it; a rotation adds a KEK to the Secret and
// points "primary" at it (docs/data-protection.md), and the engines
// re-wrap their data keys without a restart.
func (r *VirtualWorldReconciler) reconcileKEKSecret(ctx context.Context, a *childApplier, rc *worldReconcile) error {
	if rc.world.Spec.Privacy.KeyEncryptionKeySecretRef != nil {
		return nil
	}
	name := client.ObjectKey{Namespace: rc.world.Spec.Namespace, Name: KeyEncryptionKeySecretName}
	_, err := a.createSecretIfMissing(ctx, rc.world, name, func() (*corev1.Secret, error) {
		kek := make([]byte, 32)
		if _, err := rand.Read(kek); err != nil {
			return nil, fmt.Errorf("generate key-encryption key: %w", err)
		}
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name.Name, Namespace: name.Namespace, Labels: worldLabels(rc.world)},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{contract.KeyringPrimaryKey: []byte(FirstKEKID), FirstKEKID: kek},
		}, nil
	})
	return err
}

// reconcileQuota caps the GPUs requested in the namespace. No limit, no quota.
func (r *VirtualWorldReconciler) reconcileQuota(ctx context.Context, a *childApplier, rc *worldReconcile) error {
	quota := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: GPUQuotaName, Namespace: rc.world.Spec.Namespace, Labels: worldLabels(rc.world)}}
	limit := rc.world.Spec.GPUQuota.Limit
	rc.status.GPUQuotaLimit = limit
	if limit == nil {
		rc.status.GPUsInUse = 0
		return a.deleteIfOwned(ctx, rc.world, quota)
	}
	resourceName := rc.world.Spec.GPUQuota.ResourceName
	if resourceName == "" {
		resourceName = "nvidia.com/gpu"
	}
	quotaResource := corev1.ResourceName("requests." + resourceName)
	quota.Spec.Hard = corev1.ResourceList{quotaResource: *resource.NewQuantity(int64(*limit), resource.DecimalSI)}
	if err := a.apply(ctx, rc.world, quota); err != nil {
		return err
	}
	current := &corev1.ResourceQuota{}
	if err := r.Get(ctx, client.ObjectKeyFromObject(quota), current); err == nil {
		used := current.Status.Used[quotaResource]
		rc.status.GPUsInUse = int32(used.Value())
	}
	return nil
}

// reconcileNetworkPolicy admits ingress to the world's pods other than
// the engines only from the world's own namespace and the operator's
// namespace when isolation is on.
func (r *VirtualWorldReconciler) reconcileNetworkPolicy(ctx context.Context, a *childApplier, rc *worldReconcile) error {
	policy := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: NetworkPolicyName, Namespace: rc.world.Spec.Namespace, Labels: worldLabels(rc.world)}}
	if !ptr.Deref(rc.world.Spec.Isolation.NetworkPolicy, true) {
		if err := a.deleteIfOwned(ctx, rc.world, policy); err != nil {
			return err
		}
		return a.deleteIfOwned(ctx, rc.world, engineDenyAllPolicy(rc.world))
	}
	admitted := []string{rc.world.Spec.Namespace}
	if r.OperatorNamespace != "" && r.OperatorNamespace != rc.world.Spec.Namespace {
		admitted = append(admitted, r.OperatorNamespace)
	}
	policy.Spec = networkingv1.NetworkPolicySpec{
		// Every pod but the engines: the baseline for the world's own
		// pods. Policies add up, so engine pods get only the world's
		// deny-all (engineDenyAllPolicy) plus their program's policy
		// (network_policy.go), which admits its clients on the API port
		// only, and limits egress.
		PodSelector: worldBaselinePodSelector(),
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
					Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpIn, Values: admitted,
				}}},
			}},
		}},
	}
	if err := a.apply(ctx, rc.world, policy); err != nil {
		return err
	}
	return a.apply(ctx, rc.world, engineDenyAllPolicy(rc.world))
}

// reconcileProgramTotals counts the world's programs and their GPUs.
func (r *VirtualWorldReconciler) reconcileProgramTotals(ctx context.Context, _ *childApplier, rc *worldReconcile) error {
	// Read-only, from the cache, at every world reconcile (about once a
	// second while programs change): without copying them, which made this
	// list grow with programs × reconciles (make bench-operator SIZE=5000).
	programs := &wellbeingv1alpha1.MeditationProgramList{}
	if err := r.List(ctx, programs, client.MatchingFields{worldIndexField: rc.world.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("list programs: %w", err)
	}
	var count, gpus int32
	for i := range programs.Items {
		p := &programs.Items[i]
		if p.Namespace != rc.world.Spec.Namespace {
			continue // not part of the world: it gets WrongNamespace
		}
		count++
		gpus += p.Status.GPUs
	}
	rc.status.Programs, rc.status.GPUsRequested = count, gpus
	return nil
}

func (r *VirtualWorldReconciler) writeStatus(ctx context.Context, world *wellbeingv1alpha1.VirtualWorld, status *wellbeingv1alpha1.VirtualWorldStatus) error {
	if equality.Semantic.DeepEqual(&world.Status, status) {
		return nil
	}
	world.Status = *status
	if err := r.Status().Update(ctx, world, client.FieldOwner(FieldOwner)); err != nil {
		return fmt.Errorf("write world status: %w", err)
	}
	return nil
}

// worldOfProgramDelayed enqueues a program's world after delay; events
// within the delay collapse into one reconcile.
func worldOfProgramDelayed(delay time.Duration) handler.EventHandler {
	enqueue := func(obj client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		p, ok := obj.(*wellbeingv1alpha1.MeditationProgram)
		if !ok {
			return
		}
		q.AddAfter(reconcile.Request{NamespacedName: client.ObjectKey{Name: p.Spec.WorldRef.Name}}, delay)
	}
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.Object, q)
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.ObjectNew, q)
			if old, ok := e.ObjectOld.(*wellbeingv1alpha1.MeditationProgram); ok && old.Spec.WorldRef.Name != e.ObjectNew.(*wellbeingv1alpha1.MeditationProgram).Spec.WorldRef.Name {
				enqueue(e.ObjectOld, q) // the program left that world
			}
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.Object, q)
		},
	}
}

func (r *VirtualWorldReconciler) secretSource() source.Source {
	if r.secrets == nil {
		return source.Func(func(context.Context, workqueue.TypedRateLimitingInterface[reconcile.Request]) error { return nil })
	}
	return r.secrets.source("VirtualWorld")
}

// SetupWithManager registers the controller and its watches.
func (r *VirtualWorldReconciler) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr)
	if r.SecretAccess != nil {
		// Only cluster mode binds roles (and may watch RoleBindings).
		b = b.Owns(&rbacv1.RoleBinding{})
	}
	return b.
		For(&wellbeingv1alpha1.VirtualWorld{}).
		Owns(&corev1.Namespace{}).
		Owns(&corev1.ResourceQuota{}).
		Owns(&corev1.ConfigMap{}). // the CA bundle
		Owns(&networkingv1.NetworkPolicy{}).
		// A program's creation, deletion or GPU total changes its world's
		// status. The world is enqueued a moment later so that a burst of
		// program changes (a rollout of hundreds) costs one status write.
		Watches(&wellbeingv1alpha1.MeditationProgram{}, worldOfProgramDelayed(time.Second)).
		// The key Secret, watched per world namespace (no cluster-wide
		// Secret watch: see worldSecrets).
		WatchesRawSource(r.secretSource()).
		Named("virtualworld").
		Complete(r)
}
