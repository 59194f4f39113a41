package controllers

import (
	"context"
	"fmt"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
)

// Autoscaling defaults, as the CRD's markers state them; repeated here so
// that objects built without the API server's defaulting (tests,
// EngineChildren) render the same autoscaler.
const (
	defaultAutoscalingCPUUtilization = 70
	defaultIngestRateMetricName      = "attune_engine_samples_ingested_per_second"
)

// The design (docs/scale-out.md, "Autoscaling"): the HorizontalPodAutoscaler
// scales the MeditationProgram's scale subresource, not the Deployment,
// which is what a custom resource's scale subresource is for
// (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#scale-subresource). The
// autoscaler then owns spec.engine.replicas, the one number from which the
// operator derives the Deployment's replicas, the PodDisruptionBudget, the
// GPU count and status.replicas; the operator stays the Deployment's only
// writer and never picks a replica count itself. Targeting the Deployment
// instead would make two writers of one Deployment and need the operator
// to give up spec.replicas through a server-side-apply ownership transfer
// (https://kubernetes.io/docs/reference/using-api/server-side-apply/#transferring-ownership).

// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=get;list;watch;create;update;patch;delete

// reconcileAutoscaler applies the program's HorizontalPodAutoscaler, or
// deletes the one it owns when spec.engine.autoscaling is gone.
func (r *MeditationProgramReconciler) reconcileAutoscaler(ctx context.Context, a *childApplier, rc *programReconcile) error {
	p := rc.program
	// Suspended, no autoscaler either: it would scale a program whose
	// engines are off (and count against the quota's bounds of its
	// siblings). Resuming re-creates it.
	if p.Spec.Engine.Autoscaling == nil || p.Spec.Suspend {
		rc.status.Autoscaling = nil
		return a.deleteIfOwned(ctx, p, &autoscalingv2.HorizontalPodAutoscaler{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace}})
	}
	others, err := r.otherProgramsGPUs(ctx, p, rc.world)
	if err != nil {
		return err
	}
	bounds := autoscalingBounds(p, rc.world, others)
	rc.status.Autoscaling = &bounds
	return a.apply(ctx, p, engineAutoscaler(p, bounds))
}

// otherProgramsGPUs counts the GPUs of the quota's resource that the other
// programs in the world's namespace may use (replicas times per-pod
// request): the part of the quota this program cannot have. An autoscaled
// sibling counts at its maxReplicas, not its current replicas: two
// autoscaled programs counting each other's current size could each be
// given the whole quota, and each scale into it.
func (r *MeditationProgramReconciler) otherProgramsGPUs(ctx context.Context, p *wellbeingv1alpha1.MeditationProgram, w *wellbeingv1alpha1.VirtualWorld) (int32, error) {
	if w == nil || w.Spec.GPUQuota.Limit == nil {
		return 0, nil
	}
	if _, perPod := gpuPerPod(p); perPod == 0 {
		return 0, nil
	}
	programs := &wellbeingv1alpha1.MeditationProgramList{}
	if err := r.List(ctx, programs, client.InNamespace(p.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return 0, fmt.Errorf("list the namespace's programs for the GPU quota: %w", err)
	}
	var sum int32
	for i := range programs.Items {
		o := &programs.Items[i]
		if o.Name == p.Name {
			continue
		}
		if name, perPod := gpuPerPod(o); string(name) == quotaResourceName(w) {
			sum += siblingReplicaBound(o) * perPod
		}
	}
	return sum, nil
}

// siblingReplicaBound is the most replicas program o may run: its
// autoscaler's maxReplicas (never below its current count) when it
// autoscales and runs, else its replicas (0 when suspended).
func siblingReplicaBound(o *wellbeingv1alpha1.MeditationProgram) int32 {
	replicas := desiredReplicas(o)
	if as := o.Spec.Engine.Autoscaling; as != nil && !o.Spec.Suspend {
		return max(replicas, as.MaxReplicas, ptr.Deref(as.MinReplicas, 1))
	}
	return replicas
}

// autoscaledGPUSiblings are the running, autoscaled programs with GPUs in
// obj's namespace other than obj: those whose autoscaler bounds obj's
// change can move. A read of the cache; none enqueued in the common case.
func (r *MeditationProgramReconciler) autoscaledGPUSiblings(ctx context.Context, obj client.Object) []reconcile.Request {
	// From the index: listing every program of the namespace here, at
	// every program's creation, grew as the square of a world's programs
	// (a tenth of the operator's CPU creating 1,000 per world).
	programs := &wellbeingv1alpha1.MeditationProgramList{}
	if err := r.List(ctx, programs, client.InNamespace(obj.GetNamespace()), client.MatchingFields{autoscaledGPUIndexField: "true"}, client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "list sibling programs", "namespace", obj.GetNamespace())
		return nil
	}
	var requests []reconcile.Request
	for i := range programs.Items {
		if o := &programs.Items[i]; o.Name != obj.GetName() {
			requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(o)})
		}
	}
	return requests
}

// autoscaledGPUIndexField indexes the programs whose autoscaler bounds a
// sibling's change can move (value "true"): running, autoscaled, with
// GPUs.
const autoscaledGPUIndexField = "attune.autoscaledGPU"

func indexAutoscaledGPUPrograms(ctx context.Context, mgr ctrl.Manager) error {
	return mgr.GetFieldIndexer().IndexField(ctx, &wellbeingv1alpha1.MeditationProgram{}, autoscaledGPUIndexField, func(obj client.Object) []string {
		o := obj.(*wellbeingv1alpha1.MeditationProgram)
		if o.Spec.Engine.Autoscaling == nil || o.Spec.Suspend {
			return nil
		}
		if _, perPod := gpuPerPod(o); perPod > 0 {
			return []string{"true"}
		}
		return nil
	})
}

// quotaResourceName is the extended resource the world's quota counts.
func quotaResourceName(w *wellbeingv1alpha1.VirtualWorld) string {
	if w.Spec.GPUQuota.ResourceName == "" {
		return "nvidia.com/gpu"
	}
	return w.Spec.GPUQuota.ResourceName
}

// autoscalingBounds is the autoscaler's replica range: the spec's, with
// maxReplicas lowered to the pods whose GPUs fit in what the world's quota
// leaves after otherGPUs. It never goes below minReplicas (an autoscaler
// needs min ≤ max): pods the quota then refuses are reported on
// EngineAvailable (QuotaExceeded), as for a fixed replica count.
func autoscalingBounds(p *wellbeingv1alpha1.MeditationProgram, w *wellbeingv1alpha1.VirtualWorld, otherGPUs int32) wellbeingv1alpha1.AutoscalingStatus {
	as := p.Spec.Engine.Autoscaling
	minReplicas := max(ptr.Deref(as.MinReplicas, 1), 1)
	maxReplicas := max(as.MaxReplicas, minReplicas)
	bounds := wellbeingv1alpha1.AutoscalingStatus{MinReplicas: minReplicas, MaxReplicas: maxReplicas,
		Message: fmt.Sprintf("%d to %d replicas, from spec.engine.autoscaling", minReplicas, maxReplicas)}
	name, perPod := gpuPerPod(p)
	if perPod == 0 || w == nil || w.Spec.GPUQuota.Limit == nil || string(name) != quotaResourceName(w) {
		return bounds
	}
	left := max(*w.Spec.GPUQuota.Limit-otherGPUs, 0)
	fit := left / perPod
	if fit >= maxReplicas {
		return bounds
	}
	bounds.MaxReplicas = max(fit, minReplicas)
	bounds.Message = fmt.Sprintf("maxReplicas lowered from %d to %d: VirtualWorld %s's GPU quota of %d %s leaves %d to this program (other programs may use %d), %d per pod",
		maxReplicas, bounds.MaxReplicas, w.Name, *w.Spec.GPUQuota.Limit, name, left, otherGPUs, perPod)
	if fit < minReplicas {
		bounds.Message += fmt.Sprintf("; minReplicas %d needs more, and the quota refuses the pods beyond %d", minReplicas, fit)
	}
	return bounds
}

// engineAutoscaler is the program's HorizontalPodAutoscaler: it scales the
// program itself (the scale subresource) on the engine container's CPU
// utilisation and, optionally, the engines' ingest rate.
func engineAutoscaler(p *wellbeingv1alpha1.MeditationProgram, bounds wellbeingv1alpha1.AutoscalingStatus) *autoscalingv2.HorizontalPodAutoscaler {
	m := p.Spec.Engine.Autoscaling.Metrics
	metrics := []autoscalingv2.MetricSpec{{
		// The engine container's own CPU, not the pod's: a model sidecar's
		// CPU (tokenising, a CPU-only model) would otherwise drive it.
		Type: autoscalingv2.ContainerResourceMetricSourceType,
		ContainerResource: &autoscalingv2.ContainerResourceMetricSource{
			Name:      corev1.ResourceCPU,
			Container: "engine",
			Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType,
				AverageUtilization: ptr.To(ptr.Deref(m.CPUUtilization, defaultAutoscalingCPUUtilization))},
		},
	}}
	if ir := m.IngestRate; ir != nil {
		name := ir.MetricName
		if name == "" {
			name = defaultIngestRateMetricName
		}
		metrics = append(metrics, autoscalingv2.MetricSpec{
			Type: autoscalingv2.PodsMetricSourceType,
			Pods: &autoscalingv2.PodsMetricSource{
				Metric: autoscalingv2.MetricIdentifier{Name: name},
				Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: ptr.To(ir.AverageValue.DeepCopy())},
			},
		})
	}
	return &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, Labels: engineLabels(p)},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{
				APIVersion: wellbeingv1alpha1.GroupVersion.String(), Kind: "MeditationProgram", Name: p.Name,
			},
			MinReplicas: ptr.To(bounds.MinReplicas),
			MaxReplicas: bounds.MaxReplicas,
			Metrics:     metrics,
		},
	}
}
