package controllers

// Pure functions of their inputs: no API server.

import (
	"strings"
	"testing"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
)

func autoscaledProgram(namespace, name, world string, minReplicas, maxReplicas int32) *wellbeingv1alpha1.MeditationProgram {
	p := &wellbeingv1alpha1.MeditationProgram{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec:       wellbeingv1alpha1.MeditationProgramSpec{WorldRef: wellbeingv1alpha1.WorldReference{Name: world}},
	}
	p.Spec.Engine.Store = wellbeingv1alpha1.EngineStore{Type: wellbeingv1alpha1.StorePostgreSQL,
		Postgres: &wellbeingv1alpha1.PostgresStore{SecretRef: wellbeingv1alpha1.SecretReference{Name: name + "-postgres"}}}
	p.Spec.Engine.Autoscaling = &wellbeingv1alpha1.EngineAutoscaling{MinReplicas: ptr.To(minReplicas), MaxReplicas: maxReplicas}
	return p
}

func withGPUModel(p *wellbeingv1alpha1.MeditationProgram, perPod int32) *wellbeingv1alpha1.MeditationProgram {
	p.Spec.Engine.GPU = wellbeingv1alpha1.GPUSpec{Count: ptr.To(perPod)}
	p.Spec.Engine.Model = &wellbeingv1alpha1.ModelSidecar{Image: "nvcr.io/nvidia/tritonserver:25.01", ModelName: "emotion", Port: 8000}
	return p
}

func plainWorld() *wellbeingv1alpha1.VirtualWorld {
	return &wellbeingv1alpha1.VirtualWorld{ObjectMeta: metav1.ObjectMeta{Name: "w"},
		Spec: wellbeingv1alpha1.VirtualWorldSpec{Namespace: "w", Context: wellbeingv1alpha1.ContextSocial}}
}

func quotaWorld(limit int32) *wellbeingv1alpha1.VirtualWorld {
	w := plainWorld()
	w.Spec.GPUQuota = wellbeingv1alpha1.GPUQuota{Limit: ptr.To(limit)}
	return w
}

// TestEngineAutoscalerRendering: the autoscaler scales the program's own
// scale subresource, on the engine container's CPU (70% unless set) and,
// when asked, the ingest rate as a Pods metric.
func TestEngineAutoscalerRendering(t *testing.T) {
	p := autoscaledProgram("ns", "calm", "w", 2, 6)
	hpa := engineAutoscaler(p, autoscalingBounds(p, nil, 0))
	ref := hpa.Spec.ScaleTargetRef
	if ref.APIVersion != "wellbeing.attune.io/v1alpha1" || ref.Kind != "MeditationProgram" || ref.Name != "calm" {
		t.Errorf("scaleTargetRef = %+v, want the program itself", ref)
	}
	if hpa.Name != "calm" || hpa.Namespace != "ns" || hpa.Labels[LabelManagedBy] != ManagedByValue {
		t.Errorf("metadata = %+v", hpa.ObjectMeta)
	}
	if ptr.Deref(hpa.Spec.MinReplicas, 0) != 2 || hpa.Spec.MaxReplicas != 6 {
		t.Errorf("bounds = %d..%d, want 2..6", ptr.Deref(hpa.Spec.MinReplicas, 0), hpa.Spec.MaxReplicas)
	}
	if len(hpa.Spec.Metrics) != 1 {
		t.Fatalf("metrics = %+v, want CPU only", hpa.Spec.Metrics)
	}
	cpu := hpa.Spec.Metrics[0].ContainerResource
	if cpu == nil || cpu.Name != corev1.ResourceCPU || cpu.Container != "engine" ||
		cpu.Target.Type != autoscalingv2.UtilizationMetricType || ptr.Deref(cpu.Target.AverageUtilization, 0) != 70 {
		t.Errorf("CPU metric = %+v, want the engine container at 70%%", hpa.Spec.Metrics[0])
	}

	p.Spec.Engine.Autoscaling.Metrics = wellbeingv1alpha1.AutoscalingMetrics{CPUUtilization: ptr.To[int32](55),
		IngestRate: &wellbeingv1alpha1.IngestRateMetric{AverageValue: resource.MustParse("250")}}
	hpa = engineAutoscaler(p, autoscalingBounds(p, nil, 0))
	if len(hpa.Spec.Metrics) != 2 {
		t.Fatalf("metrics = %+v, want CPU and the ingest rate", hpa.Spec.Metrics)
	}
	if got := ptr.Deref(hpa.Spec.Metrics[0].ContainerResource.Target.AverageUtilization, 0); got != 55 {
		t.Errorf("CPU target = %d, want 55", got)
	}
	pods := hpa.Spec.Metrics[1].Pods
	if pods == nil || pods.Metric.Name != "attune_engine_samples_ingested_per_second" ||
		pods.Target.Type != autoscalingv2.AverageValueMetricType || pods.Target.AverageValue.Cmp(resource.MustParse("250")) != 0 {
		t.Errorf("ingest metric = %+v", hpa.Spec.Metrics[1])
	}
	p.Spec.Engine.Autoscaling.Metrics.IngestRate.MetricName = "engine_ingest_rate"
	if got := engineAutoscaler(p, autoscalingBounds(p, nil, 0)).Spec.Metrics[1].Pods.Metric.Name; got != "engine_ingest_rate" {
		t.Errorf("ingest metric name = %q", got)
	}
}

// TestAutoscalingBoundsFollowTheGPUQuota: a GPU program's maxReplicas is
// lowered to the pods whose GPUs the world's quota leaves it, never below
// minReplicas; CPU programs and other resources are not limited.
func TestAutoscalingBoundsFollowTheGPUQuota(t *testing.T) {
	cases := []struct {
		name        string
		program     *wellbeingv1alpha1.MeditationProgram
		world       *wellbeingv1alpha1.VirtualWorld
		others      int32
		wantMax     int32
		wantMessage []string
	}{
		{"CPU program under a quota", autoscaledProgram("w", "p", "w", 1, 5), quotaWorld(2), 0, 5, []string{"1 to 5 replicas, from spec.engine.autoscaling"}},
		{"GPU program without a quota", withGPUModel(autoscaledProgram("w", "p", "w", 1, 5), 1), plainWorld(), 0, 5, []string{"from spec.engine.autoscaling"}},
		{"GPU program within the quota", withGPUModel(autoscaledProgram("w", "p", "w", 1, 4), 2), quotaWorld(8), 0, 4, []string{"from spec.engine.autoscaling"}},
		{"GPU program above the quota", withGPUModel(autoscaledProgram("w", "p", "w", 1, 5), 2), quotaWorld(8), 2, 3,
			[]string{"maxReplicas lowered from 5 to 3", "GPU quota of 8 nvidia.com/gpu leaves 6", "other programs may use 2", "2 per pod"}},
		{"quota below minReplicas", withGPUModel(autoscaledProgram("w", "p", "w", 3, 5), 1), quotaWorld(4), 3, 3,
			[]string{"maxReplicas lowered from 5 to 3", "minReplicas 3 needs more, and the quota refuses the pods beyond 1"}},
		{"quota used up by others", withGPUModel(autoscaledProgram("w", "p", "w", 1, 5), 1), quotaWorld(4), 6, 1,
			[]string{"leaves 0 to this program"}},
	}
	mig := withGPUModel(autoscaledProgram("w", "p", "w", 1, 5), 1)
	mig.Spec.Engine.GPU.ResourceName = "nvidia.com/mig-1g.10gb"
	cases = append(cases, struct {
		name        string
		program     *wellbeingv1alpha1.MeditationProgram
		world       *wellbeingv1alpha1.VirtualWorld
		others      int32
		wantMax     int32
		wantMessage []string
	}{"GPU resource the quota does not count", mig, quotaWorld(1), 0, 5, []string{"from spec.engine.autoscaling"}})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := autoscalingBounds(tc.program, tc.world, tc.others)
			if b.MaxReplicas != tc.wantMax || b.MinReplicas != *tc.program.Spec.Engine.Autoscaling.MinReplicas {
				t.Errorf("bounds = %d..%d, want %d..%d", b.MinReplicas, b.MaxReplicas, *tc.program.Spec.Engine.Autoscaling.MinReplicas, tc.wantMax)
			}
			for _, want := range tc.wantMessage {
				if !strings.Contains(b.Message, want) {
					t.Errorf("message %q lacks %q", b.Message, want)
				}
			}
		})
	}
}

// Autoscaled siblings count at their maxReplicas, so that two autoscaled
// GPU programs under one quota can never each be given all of it; fixed
// and suspended siblings at their replicas.
func TestSiblingsCountAtTheirReplicaBound(t *testing.T) {
	autoscaled := withGPUModel(autoscaledProgram("w", "a", "w", 1, 4), 1)
	autoscaled.Spec.Engine.Replicas = ptr.To[int32](1) // its current size
	fixed := withGPUModel(autoscaledProgram("w", "f", "w", 1, 4), 1)
	fixed.Spec.Engine.Autoscaling = nil
	fixed.Spec.Engine.Replicas = ptr.To[int32](2)
	suspended := autoscaled.DeepCopy()
	suspended.Spec.Suspend = true
	for _, tc := range []struct {
		name string
		p    *wellbeingv1alpha1.MeditationProgram
		want int32
	}{{"autoscaled", autoscaled, 4}, {"fixed", fixed, 2}, {"suspended", suspended, 0}} {
		if got := siblingReplicaBound(tc.p); got != tc.want {
			t.Errorf("%s: bound %d, want %d", tc.name, got, tc.want)
		}
	}
	// Two programs autoscaled 1..4 under a quota of 4: each is bounded by
	// what the other may use, and together they fit.
	b := autoscalingBounds(autoscaled, quotaWorld(4), siblingReplicaBound(autoscaled))
	if b.MaxReplicas != 1 {
		t.Fatalf("bounds %d..%d: want maxReplicas lowered to minReplicas 1 (the sibling may use all 4)", b.MinReplicas, b.MaxReplicas)
	}
}
