package controllers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/engine/contract"
)

// DefaultEngineImage is the engine image used when a program names none.
const DefaultEngineImage = "ghcr.io/attune-io/attune-engine:v0.1.0"

// MeditationProgramReconciler turns a MeditationProgram into its engine
// Deployment and what it needs: ServiceAccount, configuration, token Secret,
// Service and PodDisruptionBudget.
type MeditationProgramReconciler struct {
	client.Client
	Scheme   *runtime.Scheme
	Recorder events.EventRecorder
	Clock    clock.PassiveClock
	// EngineImage is the default engine image.
	EngineImage string
	// MaxConcurrentReconciles bounds parallel reconciles (default
	// DefaultMaxConcurrentReconciles).
	MaxConcurrentReconciles int
	// HTTPClient reads the engines and Prometheus (default http.DefaultClient).
	HTTPClient *http.Client
	// APIReader reads objects the cache does not hold: the PostgreSQL
	// Secrets users create (the cache holds no Secrets at all).
	// Default: the client.
	APIReader client.Reader
	// Prometheus says which Prometheus addresses programs may name.
	Prometheus PrometheusAccess
	// OperatorNamespace is admitted by each program's NetworkPolicy: the
	// operator reads the engines' loss (empty: not admitted).
	OperatorNamespace string
	// OwnedSecrets watches the token Secrets per world namespace (the
	// operator does not watch Secrets cluster-wide); nil: no watch.
	OwnedSecrets source.Source
	// PodMonitors says which namespaces' programs get a PodMonitor and a
	// metrics token (monitoring.go); nil: none (--pod-monitors off).
	PodMonitors   func(namespace string) bool
	podMonitorAPI podMonitorAPI
	// MonitoringNamespaces are admitted to every engine's API port, as
	// each world's spec.isolation.monitoringNamespaces are (monitoring.go).
	MonitoringNamespaces []string
	// ownWrites detects a cached program older than our own last status
	// write (own_status_writes.go).
	ownWrites ownStatusWrites
	// certificateChecks remembers the checks of unchanged certificates
	// (certificate_checks.go).
	certificateChecks certificateChecks
	// applied remembers the children found as declared
	// (applied_children.go).
	applied appliedChildren
	// worldsFirstSeen times the set-up of worlds created before this
	// process saw them (world_setup.go).
	worldsFirstSeen worldFirstSeen
}

// programReconcile carries one reconcile's working state between steps.
type programReconcile struct {
	program    *wellbeingv1alpha1.MeditationProgram
	world      *wellbeingv1alpha1.VirtualWorld
	status     *wellbeingv1alpha1.MeditationProgramStatus
	conds      conditionSetter
	strength   float64
	configHash string
	deployment *appsv1.Deployment
	// requeueAfter is when the next tuning measurement is due (0: none).
	requeueAfter time.Duration
	// unavailableReason and unavailableMessage explain missing engines.
	unavailableReason, unavailableMessage string
	// storeSecretHash digests the PostgreSQL Secret (empty: embedded store
	// or no usable Secret); storeProblem says what is wrong with it.
	storeSecretHash, storeProblem string
	// certificateProblem says why the serving certificate is not issued
	// (yet): the engines cannot start without it.
	certificateProblem string
	// effectEvents are emitted once the status is written.
	effectEvents []effectEvent
	// pushStrength: push the strength to the engines after the ConfigMap
	// is written (strength_push.go).
	pushStrength bool
	// quiet: write no status this time (a new program whose world is
	// being set up for a moment, reconcileWorld).
	quiet bool
}

// errWorldUnusable stops the steps when the world is missing or wrong; the
// condition explaining it is already set.
var errWorldUnusable = errors.New("world unusable")

// +kubebuilder:rbac:groups=wellbeing.attune.io,resources=meditationprograms,verbs=get;list;watch
// +kubebuilder:rbac:groups=wellbeing.attune.io,resources=meditationprograms/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups="",resources=services;serviceaccounts;configmaps;persistentvolumeclaims,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch

// Reconcile runs the program's steps in order, then writes status if it changed.
func (r *MeditationProgramReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	program := &wellbeingv1alpha1.MeditationProgram{}
	if err := r.Get(ctx, req.NamespacedName, program); err != nil {
		if apierrors.IsNotFound(err) {
			forgetProgramMetrics(req.Namespace, req.Name)
			r.ownWrites.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !program.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // owner references clean up every child
	}
	if r.ownWrites.stale(program) {
		// The cache has not caught up with our last status write: acting
		// on this copy would undo the tuner's last step.
		return ctrl.Result{RequeueAfter: staleCacheRetry}, nil
	}

	status := program.Status.DeepCopy()
	status.ObservedGeneration = program.Generation
	rc := &programReconcile{program: program, status: status, conds: conditionSetter{&status.Conditions, program.Generation, r.Clock}}
	applier := &childApplier{client: r.Client, scheme: r.Scheme, recorder: r.Recorder, reader: r.APIReader, applied: &r.applied}

	steps := []struct {
		name string
		run  func(context.Context, *childApplier, *programReconcile) error
	}{
		{"world", r.reconcileWorld},
		// First after the world, well before the Deployment: a later
		// step's error stops the loop, and engine pods must never run
		// without their policy (the world's deny-all isolates them
		// entirely until it exists).
		{"network policy", r.reconcileNetworkPolicy},
		{"tuning", r.reconcileTuning},
		{"effects", r.reconcileEffects},
		{"service account", r.reconcileServiceAccount},
		{"token secret", r.reconcileTokenSecret},
		{"access", r.reconcileAccess},
		{"serving certificate", r.reconcileServingCertificate},
		{"store", r.reconcileStore},
		{"config map", r.reconcileConfigMap},
		{"strength push", r.reconcileStrengthPush},
		{"data volume", r.reconcileDataVolume},
		{"deployment", r.reconcileDeployment},
		{"service", r.reconcileService},
		{"disruption budget", r.reconcileDisruptionBudget},
		{"autoscaler", r.reconcileAutoscaler},
		{"pod monitor", r.reconcilePodMonitor},
	}
	var stepErr error
	for _, step := range steps {
		if err := step.run(ctx, applier, rc); err != nil {
			stepErr = err
			if !errors.Is(err, errWorldUnusable) {
				stepErr = fmt.Errorf("%s: %w", step.name, err)
			}
			break
		}
	}
	r.computeStatus(rc, stepErr)
	applier.recordChanges(program)
	if rc.quiet {
		return ctrl.Result{RequeueAfter: rc.requeueAfter}, nil
	}
	if err := r.writeStatus(ctx, program, status); err != nil {
		return ctrl.Result{}, err
	}
	r.emitEffectEvents(program, rc.effectEvents)
	// The alerted conditions as written, every step (effects' harm
	// included) having set its own.
	recordProgramConditions(program.Namespace, program.Name, status.Conditions)
	if errors.Is(stepErr, errWorldUnusable) {
		// The world watch re-runs us when it appears, changes or ends its
		// set-up.
		return ctrl.Result{}, nil
	}
	if stepErr != nil {
		log.FromContext(ctx).Error(stepErr, "reconcile program")
		return ctrl.Result{}, stepErr
	}
	return ctrl.Result{RequeueAfter: rc.requeueAfter}, nil
}

// reconcileWorld resolves the program's world and checks the program lives
// in the world's namespace.
func (r *MeditationProgramReconciler) reconcileWorld(ctx context.Context, _ *childApplier, rc *programReconcile) error {
	world := &wellbeingv1alpha1.VirtualWorld{}
	name := rc.program.Spec.WorldRef.Name
	if err := r.Get(ctx, client.ObjectKey{Name: name}, world); err != nil {
		if apierrors.IsNotFound(err) {
			r.worldsFirstSeen.forget(name)
			r.worldUnusable(rc, wellbeingv1alpha1.ReasonWorldNotFound, fmt.Sprintf("VirtualWorld %q does not exist", name))
			return errWorldUnusable
		}
		return fmt.Errorf("get world %s: %w", name, err)
	}
	if world.Spec.Namespace != rc.program.Namespace {
		r.worldUnusable(rc, wellbeingv1alpha1.ReasonWrongNamespace, fmt.Sprintf(
			"program is in namespace %q but VirtualWorld %q owns namespace %q; create the program there", rc.program.Namespace, name, world.Spec.Namespace))
		return errWorldUnusable
	}
	// A world not yet reconciled, or waiting for its Secret access, is
	// set up in a moment: reading the program's Secrets now would be
	// refused (cluster mode binds that access per world namespace).
	if !worldSetUp(world) {
		ready := meta.FindStatusCondition(world.Status.Conditions, wellbeingv1alpha1.ConditionReady)
		message := fmt.Sprintf("VirtualWorld %q is not set up yet", name)
		if ready != nil {
			message = fmt.Sprintf("VirtualWorld %q is not set up yet: %s", name, ready.Message)
		}
		rc.conds.set(wellbeingv1alpha1.ConditionReconciled, metav1.ConditionFalse, wellbeingv1alpha1.ReasonWorldNotReady, message)
		rc.conds.set(wellbeingv1alpha1.ConditionReady, metav1.ConditionFalse, wellbeingv1alpha1.ReasonWorldNotReady, message)
		// A world is set up in about a second (one binding authorized): a
		// program without a status yet gets none for that moment, since
		// it would be overwritten at once (a write per new program of a
		// new world). One whose world's wait lasts longer is told.
		var since time.Time
		if ready != nil {
			since = ready.LastTransitionTime.Time
		} else {
			since = r.worldsFirstSeen.since(name, world.CreationTimestamp.Time, r.Clock.Now())
		}
		// A clock behind the API server's by more than a second is not
		// trusted to measure the moment.
		waited := r.Clock.Since(since)
		rc.quiet = len(rc.program.Status.Conditions) == 0 && waited > -time.Second && waited < worldSetUpQuiet
		if rc.quiet {
			// Told then, if the world is still being set up.
			rc.requeueAfter = max(worldSetUpQuiet-waited, 100*time.Millisecond)
		}
		return errWorldSettingUp
	}
	r.worldsFirstSeen.forget(name)
	rc.world = world
	return nil
}

// worldSetUpQuiet is how long a new program waits for its world's set-up
// before its status says so (2-3 s when counted from Ready's
// LastTransitionTime, which has whole seconds; 3 s from the operator's
// first sight of the world).
const worldSetUpQuiet = 3 * time.Second

// errWorldSettingUp stops the steps, as errWorldUnusable does, while the
// world is being set up. The world's set-up ending reconciles the program
// again (worldSetUpChanged), so it does not poll the world.
var errWorldSettingUp = fmt.Errorf("%w: the world is being set up", errWorldUnusable)

func (r *MeditationProgramReconciler) worldUnusable(rc *programReconcile, reason, message string) {
	rc.conds.set(wellbeingv1alpha1.ConditionReconciled, metav1.ConditionFalse, reason, message)
	rc.conds.set(wellbeingv1alpha1.ConditionReady, metav1.ConditionFalse, reason, message)
	rc.conds.set(wellbeingv1alpha1.ConditionDegraded, metav1.ConditionTrue, reason, message)
}

func (r *MeditationProgramReconciler) reconcileServiceAccount(ctx context.Context, a *childApplier, rc *programReconcile) error {
	return a.apply(ctx, rc.program, engineServiceAccount(rc.program))
}

// reconcileTokenSecret issues the engine's API tokens once: a read-write
// token for virtual-world clients and a read-only one for the operator,
// and, in a Secret of its own (world apps read the first; only platform
// admins may read this one), the backup-only token.
func (r *MeditationProgramReconciler) reconcileTokenSecret(ctx context.Context, a *childApplier, rc *programReconcile) error {
	backup := client.ObjectKey{Namespace: rc.program.Namespace, Name: BackupTokenSecretName(rc.program)}
	if _, err := a.createSecretIfMissing(ctx, rc.program, backup, func() (*corev1.Secret, error) {
		token, err := randomToken()
		return backupTokenSecret(rc.program, token), err
	}); err != nil {
		return err
	}
	key := client.ObjectKey{Namespace: rc.program.Namespace, Name: engineTokenName(rc.program)}
	_, err := a.createSecretIfMissing(ctx, rc.program, key, func() (*corev1.Secret, error) {
		readWrite, err := randomToken()
		if err != nil {
			return nil, err
		}
		readOnly, err := randomToken()
		if err != nil {
			return nil, err
		}
		return engineTokenSecret(rc.program, readWrite, readOnly), nil
	})
	return err
}

func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// storeSecretRecheck is how often a missing or unusable PostgreSQL Secret
// is looked at again: users' Secrets are not watched.
const storeSecretRecheck = 30 * time.Second

// reconcileStore checks the PostgreSQL store's Secret: it must exist and
// hold connectionString or host. A problem is reported on the conditions,
// not fatal: the children are still applied, so the engines start as soon
// as the Secret is fixed.
func (r *MeditationProgramReconciler) reconcileStore(ctx context.Context, _ *childApplier, rc *programReconcile) error {
	if !usesPostgres(rc.program) {
		return nil
	}
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	name := rc.program.Spec.Engine.Store.Postgres.SecretRef.Name
	secret := &corev1.Secret{}
	err := reader.Get(ctx, client.ObjectKey{Namespace: rc.program.Namespace, Name: name}, secret)
	switch {
	case apierrors.IsNotFound(err):
		rc.storeProblem = fmt.Sprintf("spec.engine.store.postgres.secretRef: Secret %s/%s not found", rc.program.Namespace, name)
	case err != nil:
		return fmt.Errorf("read store secret %s: %w", name, err)
	case len(secret.Data[contract.PostgresConnectionStringKey]) == 0 && len(secret.Data[contract.PostgresHostKey]) == 0:
		rc.storeProblem = fmt.Sprintf("spec.engine.store.postgres.secretRef: Secret %s/%s has neither the key %s nor %s",
			rc.program.Namespace, name, contract.PostgresConnectionStringKey, contract.PostgresHostKey)
	default:
		rc.storeSecretHash = secretDigest(secret.Data)
		return nil
	}
	rc.requeueAfter = minPositive(rc.requeueAfter, storeSecretRecheck)
	return nil
}

func (r *MeditationProgramReconciler) reconcileConfigMap(ctx context.Context, a *childApplier, rc *programReconcile) error {
	cm, hash, err := engineConfigMap(rc.program, rc.world, rc.strength)
	if err != nil {
		return err
	}
	rc.configHash = hash
	return a.apply(ctx, rc.program, cm)
}

// reconcileDataVolume applies the Embedded store's claim when one is asked
// for. A claim no longer asked for is kept, with its users' data, until the
// program is deleted (garbage collection through the owner reference).
func (r *MeditationProgramReconciler) reconcileDataVolume(ctx context.Context, a *childApplier, rc *programReconcile) error {
	volume := storeVolume(rc.program)
	if volume == nil {
		return nil
	}
	if !explicitStoreVolume(rc.program) {
		// The default size must not shrink a claim that was made larger
		// (an explicit volume removed again): a claim cannot shrink.
		existing := &corev1.PersistentVolumeClaim{}
		err := r.Get(ctx, client.ObjectKey{Namespace: rc.program.Namespace, Name: engineDataClaimName(rc.program)}, existing)
		if err == nil {
			// Nor may it change the class, immutable once set (the
			// explicit one, or the cluster's default the API server set).
			kept := &wellbeingv1alpha1.StoreVolume{Size: volume.Size, StorageClassName: existing.Spec.StorageClassName}
			if size, ok := existing.Spec.Resources.Requests[corev1.ResourceStorage]; ok && size.Cmp(volume.Size) > 0 {
				kept.Size = size
			}
			volume = kept
		} else if !apierrors.IsNotFound(err) {
			return fmt.Errorf("get the data claim: %w", err)
		}
	}
	return a.apply(ctx, rc.program, engineDataClaim(rc.program, volume))
}

func (r *MeditationProgramReconciler) reconcileDeployment(ctx context.Context, a *childApplier, rc *programReconcile) error {
	image := r.EngineImage
	if image == "" {
		image = DefaultEngineImage
	}
	deployment := engineDeployment(rc.program, rc.world, image, rc.configHash)
	if rc.storeSecretHash != "" {
		deployment.Spec.Template.Annotations[StoreSecretHashKey] = rc.storeSecretHash
	}
	if err := r.dropRollingUpdate(ctx, deployment); err != nil {
		return err
	}
	if err := a.apply(ctx, rc.program, deployment); err != nil {
		return err
	}
	// Read back the cached object for its status (available replicas).
	current := &appsv1.Deployment{}
	if err := r.Get(ctx, client.ObjectKeyFromObject(deployment), current); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("read deployment status: %w", err)
	}
	rc.deployment = current
	if current.Status.AvailableReplicas < desiredReplicas(rc.program) {
		rc.unavailableReason, rc.unavailableMessage = r.whyUnavailable(ctx, rc.program, current)
	}
	return nil
}

// dropRollingUpdate clears spec.strategy.rollingUpdate before the
// Deployment is applied with the Recreate strategy, which the API server
// refuses alongside it. Server-side apply removes only what the operator
// owns, and a rollingUpdate the API server defaulted (on Deployments created
// before the operator spelled its strategy out) or another manager set is
// not ours. Costs one write, only when switching to Recreate.
func (r *MeditationProgramReconciler) dropRollingUpdate(ctx context.Context, desired *appsv1.Deployment) error {
	if desired.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		return nil
	}
	current := &appsv1.Deployment{}
	if err := r.Get(ctx, client.ObjectKeyFromObject(desired), current); err != nil {
		return client.IgnoreNotFound(err)
	}
	if current.Spec.Strategy.RollingUpdate == nil {
		return nil
	}
	patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"strategy":{"type":"Recreate","rollingUpdate":null}}}`))
	if err := r.Patch(ctx, current, patch, client.FieldOwner(FieldOwner)); err != nil {
		return fmt.Errorf("clear rollingUpdate of Deployment %s: %w", current.Name, err)
	}
	return nil
}

// whyUnavailable finds what keeps engines from running: the quota refusing
// pods (the ReplicaSet's failure, surfaced on the Deployment) or the
// scheduler finding no node (GPUs exhausted, no matching product).
func (r *MeditationProgramReconciler) whyUnavailable(ctx context.Context, p *wellbeingv1alpha1.MeditationProgram, d *appsv1.Deployment) (string, string) {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentReplicaFailure && c.Status == corev1.ConditionTrue {
			if strings.Contains(c.Message, "exceeded quota") {
				return wellbeingv1alpha1.ReasonQuotaExceeded, c.Message
			}
			return wellbeingv1alpha1.ReasonReplicaFailure, c.Message
		}
	}
	pods := &corev1.PodList{}
	if err := r.List(ctx, pods, client.InNamespace(p.Namespace), client.MatchingLabels(EngineSelectorLabels(p))); err != nil {
		return "", ""
	}
	for _, pod := range pods.Items {
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				return wellbeingv1alpha1.ReasonUnschedulable, fmt.Sprintf("pod %s cannot be scheduled: %s", pod.Name, c.Message)
			}
		}
	}
	return "", ""
}

func (r *MeditationProgramReconciler) reconcileService(ctx context.Context, a *childApplier, rc *programReconcile) error {
	return a.apply(ctx, rc.program, engineService(rc.program))
}

// reconcileDisruptionBudget keeps one engine up through voluntary
// disruptions, which only makes sense with more than one replica.
func (r *MeditationProgramReconciler) reconcileDisruptionBudget(ctx context.Context, a *childApplier, rc *programReconcile) error {
	pdb := enginePDB(rc.program)
	if desiredReplicas(rc.program) <= 1 {
		return a.deleteIfOwned(ctx, rc.program, pdb)
	}
	return a.apply(ctx, rc.program, pdb)
}

// computeStatus derives counts and conditions from what the steps observed.
func (r *MeditationProgramReconciler) computeStatus(rc *programReconcile, stepErr error) {
	p, st := rc.program, rc.status
	replicas := desiredReplicas(p)
	_, gpuCount := gpuPerPod(p)
	st.Replicas = replicas
	st.GPUs = replicas * gpuCount
	st.TextModel = textModel(p)
	st.Selector = labels.SelectorFromSet(EngineSelectorLabels(p)).String()
	if rc.deployment != nil {
		st.ReadyReplicas = rc.deployment.Status.AvailableReplicas
	}

	if errors.Is(stepErr, errWorldUnusable) {
		st.GPUs, st.ReadyReplicas = 0, 0
		return
	}
	if stepErr != nil {
		rc.conds.set(wellbeingv1alpha1.ConditionReconciled, metav1.ConditionFalse, wellbeingv1alpha1.ReasonApplyFailed, stepErr.Error())
		rc.conds.set(wellbeingv1alpha1.ConditionDegraded, metav1.ConditionTrue, wellbeingv1alpha1.ReasonApplyFailed, stepErr.Error())
		rc.conds.set(wellbeingv1alpha1.ConditionReady, metav1.ConditionFalse, wellbeingv1alpha1.ReasonApplyFailed, stepErr.Error())
		return
	}
	rc.conds.set(wellbeingv1alpha1.ConditionReconciled, metav1.ConditionTrue, wellbeingv1alpha1.ReasonReconciled, "every child object is applied")
	rc.conds.set(wellbeingv1alpha1.ConditionDegraded, metav1.ConditionFalse, wellbeingv1alpha1.ReasonAsExpected, "nothing degraded")

	if p.Spec.Suspend {
		rc.conds.set(wellbeingv1alpha1.ConditionSuspended, metav1.ConditionTrue, wellbeingv1alpha1.ReasonSuspended, "spec.suspend scales the engines to zero")
		rc.conds.set(wellbeingv1alpha1.ConditionEngineAvailable, metav1.ConditionFalse, wellbeingv1alpha1.ReasonSuspended, "engines are scaled to zero")
		rc.conds.set(wellbeingv1alpha1.ConditionReady, metav1.ConditionFalse, wellbeingv1alpha1.ReasonSuspended, "the program is suspended")
		return
	}
	rc.conds.set(wellbeingv1alpha1.ConditionSuspended, metav1.ConditionFalse, wellbeingv1alpha1.ReasonNotSuspended, "engines run")

	available := st.ReadyReplicas >= replicas
	reason, message := wellbeingv1alpha1.ReasonAvailable, fmt.Sprintf("%d of %d engine replicas available", st.ReadyReplicas, replicas)
	if !available {
		reason = wellbeingv1alpha1.ReasonProgressing
		switch {
		case rc.storeProblem != "":
			reason, message = wellbeingv1alpha1.ReasonStoreSecretInvalid, message+": "+rc.storeProblem
		case rc.certificateProblem != "":
			reason, message = wellbeingv1alpha1.ReasonCertificatePending, message+": "+rc.certificateProblem
		case rc.unavailableReason != "":
			reason, message = rc.unavailableReason, message+": "+rc.unavailableMessage
		}
	}
	rc.conds.set(wellbeingv1alpha1.ConditionEngineAvailable, boolStatus(available), reason, message)
	if available {
		rc.conds.set(wellbeingv1alpha1.ConditionReady, metav1.ConditionTrue, wellbeingv1alpha1.ReasonAvailable, "engines are serving")
	} else {
		rc.conds.set(wellbeingv1alpha1.ConditionReady, metav1.ConditionFalse, reason, "waiting for engines: "+message)
	}
	if reason == wellbeingv1alpha1.ReasonQuotaExceeded || reason == wellbeingv1alpha1.ReasonUnschedulable || reason == wellbeingv1alpha1.ReasonReplicaFailure {
		rc.conds.set(wellbeingv1alpha1.ConditionDegraded, metav1.ConditionTrue, reason, message)
	}
	if rc.storeProblem != "" {
		// Running engines keep their connection; new ones could not start.
		rc.conds.set(wellbeingv1alpha1.ConditionDegraded, metav1.ConditionTrue, wellbeingv1alpha1.ReasonStoreSecretInvalid, rc.storeProblem)
	}
}

func (r *MeditationProgramReconciler) writeStatus(ctx context.Context, p *wellbeingv1alpha1.MeditationProgram, status *wellbeingv1alpha1.MeditationProgramStatus) error {
	if equality.Semantic.DeepEqual(&p.Status, status) {
		return nil
	}
	p.Status = *status
	if err := r.Status().Update(ctx, p, client.FieldOwner(FieldOwner)); err != nil {
		return fmt.Errorf("write program status: %w", err)
	}
	r.ownWrites.wrote(p)
	return nil
}

// ignoreCreates drops create events of owned objects. On start-up every
// parent is enqueued anyway, and a child we created is already as desired.
var ignoreCreates = builder.WithPredicates(predicate.Funcs{CreateFunc: func(event.CreateEvent) bool { return false }})

// IndexWorldRef indexes programs by spec.worldRef.name for both reconcilers.
func IndexWorldRef(ctx context.Context, mgr ctrl.Manager) error {
	return mgr.GetFieldIndexer().IndexField(ctx, &wellbeingv1alpha1.MeditationProgram{}, worldIndexField, func(obj client.Object) []string {
		return []string{obj.(*wellbeingv1alpha1.MeditationProgram).Spec.WorldRef.Name}
	})
}

// indexEnginePods indexes the cached engine pods by their program (label
// LabelInstance), for ownObjectsClient's lists of one program's engines.
func indexEnginePods(ctx context.Context, mgr ctrl.Manager) error {
	return mgr.GetFieldIndexer().IndexField(ctx, &corev1.Pod{}, enginePodIndexField, func(obj client.Object) []string {
		return labelValue(obj, LabelInstance)
	})
}

// SetupWithManager registers the controller and its watches.
func (r *MeditationProgramReconciler) SetupWithManager(mgr ctrl.Manager) error {
	concurrency := r.MaxConcurrentReconciles
	if concurrency <= 0 {
		concurrency = DefaultMaxConcurrentReconciles
	}
	b := ctrl.NewControllerManagedBy(mgr)
	if r.OwnedSecrets != nil {
		b = b.WatchesRawSource(r.OwnedSecrets)
	}
	return b.
		// Our own status writes must not re-trigger us.
		For(&wellbeingv1alpha1.MeditationProgram{}, builder.WithPredicates(predicate.Or(
			predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		// Children we just created need no second look: only their updates
		// (drift, Deployment status) and deletions do.
		Owns(&appsv1.Deployment{}, ignoreCreates).
		Owns(&corev1.ConfigMap{}, ignoreCreates).
		Owns(&corev1.Service{}, ignoreCreates).
		Owns(&corev1.ServiceAccount{}, ignoreCreates).
		Owns(&policyv1.PodDisruptionBudget{}, ignoreCreates).
		Owns(&networkingv1.NetworkPolicy{}, ignoreCreates).
		Owns(&corev1.PersistentVolumeClaim{}, ignoreCreates).
		// The autoscaler's status changes at every sync: only its spec
		// (drift) and deletion matter.
		Owns(&autoscalingv2.HorizontalPodAutoscaler{}, builder.WithPredicates(
			predicate.GenerationChangedPredicate{}, predicate.Funcs{CreateFunc: func(event.CreateEvent) bool { return false }})).
		// Engine pods are not owned by the program (their ReplicaSet owns
		// them), but their scheduling state explains missing engines.
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(programOfPod)).
		// The world's CA bundle appearing or changing (a new or rotated CA)
		// re-issues or updates the serving certificates (certificates.go).
		Watches(&corev1.ConfigMap{}, handler.EnqueueRequestsFromMapFunc(r.programsOfBundle)).
		// A world appearing, changing, moving or ending its set-up
		// re-evaluates its programs.
		Watches(&wellbeingv1alpha1.VirtualWorld{}, handler.EnqueueRequestsFromMapFunc(r.programsOfWorld),
			builder.WithPredicates(predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, worldSetUpChanged))).
		// A sibling's spec change (its replicas, GPUs, autoscaling or
		// suspension) moves the GPU bounds of the autoscaled GPU programs
		// of its namespace (autoscaling.go).
		Watches(&wellbeingv1alpha1.MeditationProgram{}, handler.EnqueueRequestsFromMapFunc(r.autoscaledGPUSiblings),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: concurrency}).
		Named("meditationprogram").
		Complete(r)
}

// programOfPod maps an engine pod to its program by the instance label.
func programOfPod(_ context.Context, obj client.Object) []reconcile.Request {
	name := obj.GetLabels()[LabelInstance]
	if name == "" || obj.GetLabels()[LabelName] != EngineAppName {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: obj.GetNamespace(), Name: name}}}
}

func (r *MeditationProgramReconciler) programsOfWorld(ctx context.Context, obj client.Object) []reconcile.Request {
	programs := &wellbeingv1alpha1.MeditationProgramList{}
	if err := r.List(ctx, programs, client.MatchingFields{worldIndexField: obj.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "list programs of world", "world", obj.GetName())
		return nil
	}
	requests := make([]reconcile.Request, 0, len(programs.Items))
	for _, p := range programs.Items {
		requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&p)})
	}
	return requests
}
