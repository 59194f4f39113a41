package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
)

func autoscaledProgram(namespace, name, world string, minReplicas, maxReplicas int32) *wellbeingv1alpha1.MeditationProgram {
	p := newProgram(namespace, name, world)
	sharedStore(p, name+"-postgres", 1)
	p.Spec.Engine.Replicas = nil // the autoscaler's to write
	p.Spec.Engine.Autoscaling = &wellbeingv1alpha1.EngineAutoscaling{MinReplicas: ptr.To(minReplicas), MaxReplicas: maxReplicas}
	return p
}

func withGPUModel(p *wellbeingv1alpha1.MeditationProgram, perPod int32) *wellbeingv1alpha1.MeditationProgram {
	p.Spec.Engine.GPU = wellbeingv1alpha1.GPUSpec{Count: ptr.To(perPod)}
	p.Spec.Engine.Model = &wellbeingv1alpha1.ModelSidecar{Image: "nvcr.io/nvidia/tritonserver:25.01", ModelName: "emotion", Port: 8000}
	return p
}

func getAutoscaler(p *wellbeingv1alpha1.MeditationProgram) (*autoscalingv2.HorizontalPodAutoscaler, error) {
	hpa := &autoscalingv2.HorizontalPodAutoscaler{}
	return hpa, k8s.Get(context.Background(), client.ObjectKey{Namespace: p.Namespace, Name: p.Name}, hpa)
}

func deploymentReplicas(t *testing.T, p *wellbeingv1alpha1.MeditationProgram) int32 {
	t.Helper()
	d := &appsv1.Deployment{}
	get(t, client.ObjectKey{Namespace: p.Namespace, Name: p.Name + "-engine"}, d)
	return ptr.Deref(d.Spec.Replicas, -1)
}

// TestAutoscalerFollowsTheProgram: the operator renders the autoscaler
// (owned by the program, CRD defaults filled in), restores it when edited,
// deletes it when spec.engine.autoscaling goes, and follows the replica
// count the autoscaler writes through the scale subresource without ever
// writing one itself. envtest runs no HPA controller: the test writes the
// scale subresource as the HPA controller does (PUT .../scale).
func TestAutoscalerFollowsTheProgram(t *testing.T) {
	ctx := context.Background()
	setupWorld(t, "elastic-world", wellbeingv1alpha1.ContextSocial)
	p := autoscaledProgram("elastic-world", "breath", "elastic-world", 2, 5)
	p.Spec.Engine.Autoscaling.MinReplicas = nil // the CRD's default, 1
	create(t, p)
	get(t, client.ObjectKeyFromObject(p), p)
	as := p.Spec.Engine.Autoscaling
	if ptr.Deref(as.MinReplicas, 0) != 1 || ptr.Deref(as.Metrics.CPUUtilization, 0) != 70 {
		t.Errorf("defaults: minReplicas %v, cpuUtilization %v; want 1 and 70", as.MinReplicas, as.Metrics.CPUUtilization)
	}

	var hpa *autoscalingv2.HorizontalPodAutoscaler
	eventually(t, "autoscaler rendered", func() error {
		var err error
		hpa, err = getAutoscaler(p)
		return err
	})
	if owner := metav1.GetControllerOf(hpa); owner == nil || owner.Kind != "MeditationProgram" || owner.Name != "breath" {
		t.Errorf("autoscaler controller = %+v, want the program", owner)
	}
	if hpa.Spec.ScaleTargetRef.Kind != "MeditationProgram" || ptr.Deref(hpa.Spec.MinReplicas, 0) != 1 || hpa.Spec.MaxReplicas != 5 {
		t.Errorf("autoscaler spec = %+v", hpa.Spec)
	}
	eventually(t, "status.autoscaling", func() error {
		get(t, client.ObjectKeyFromObject(p), p)
		if a := p.Status.Autoscaling; a == nil || a.MinReplicas != 1 || a.MaxReplicas != 5 {
			return fmt.Errorf("status.autoscaling = %+v", a)
		}
		return nil
	})

	// The autoscaler scales the program up: the Deployment, the
	// disruption budget and status.replicas follow; the operator leaves
	// spec.engine.replicas as the autoscaler wrote it.
	scaleTo := func(n int32) {
		t.Helper()
		scale := &autoscalingv1.Scale{}
		if err := k8s.SubResource("scale").Get(ctx, p, scale); err != nil {
			t.Fatalf("get scale: %v", err)
		}
		scale.Spec.Replicas = n
		if err := k8s.SubResource("scale").Update(ctx, p, client.WithSubResourceBody(scale)); err != nil {
			t.Fatalf("scale to %d: %v", n, err)
		}
	}
	scaleTo(4)
	eventually(t, "deployment at 4", func() error {
		if got := deploymentReplicas(t, p); got != 4 {
			return fmt.Errorf("deployment replicas = %d", got)
		}
		get(t, client.ObjectKeyFromObject(p), p)
		if p.Status.Replicas != 4 {
			return fmt.Errorf("status.replicas = %d", p.Status.Replicas)
		}
		return k8s.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: p.Name + "-engine"}, &appsv1.Deployment{})
	})
	consistently(t, "the operator keeps the autoscaler's count", 2*time.Second, func() error {
		get(t, client.ObjectKeyFromObject(p), p)
		if got := ptr.Deref(p.Spec.Engine.Replicas, -1); got != 4 {
			return fmt.Errorf("spec.engine.replicas = %d, want the autoscaler's 4", got)
		}
		if got := deploymentReplicas(t, p); got != 4 {
			return fmt.Errorf("deployment replicas = %d, want 4", got)
		}
		return nil
	})
	scaleTo(2)
	eventually(t, "deployment down to 2", func() error {
		if got := deploymentReplicas(t, p); got != 2 {
			return fmt.Errorf("deployment replicas = %d", got)
		}
		return nil
	})

	// Drift is repaired.
	hpa, _ = getAutoscaler(p)
	hpa.Spec.MaxReplicas = 50
	if err := k8s.Update(ctx, hpa); err != nil {
		t.Fatal(err)
	}
	eventually(t, "autoscaler restored", func() error {
		hpa, err := getAutoscaler(p)
		if err != nil {
			return err
		}
		if hpa.Spec.MaxReplicas != 5 {
			return fmt.Errorf("maxReplicas = %d", hpa.Spec.MaxReplicas)
		}
		return nil
	})

	// Suspending deletes the autoscaler (it would scale engines that are
	// off); resuming re-creates it.
	setSuspend := func(on bool) {
		t.Helper()
		updateSpec(t, p, func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Suspend = on })
	}
	setSuspend(true)
	eventually(t, "autoscaler deleted while suspended", func() error {
		if _, err := getAutoscaler(p); !apierrors.IsNotFound(err) {
			return fmt.Errorf("get autoscaler: %v, want NotFound", err)
		}
		return nil
	})
	setSuspend(false)
	eventually(t, "autoscaler back on resume", func() error {
		hpa, err := getAutoscaler(p)
		if err != nil {
			return err
		}
		if hpa.Spec.MaxReplicas != 5 {
			return fmt.Errorf("maxReplicas = %d", hpa.Spec.MaxReplicas)
		}
		return nil
	})

	// Removing autoscaling deletes the autoscaler; the last count stays
	// as the program's fixed replicas.
	updateSpec(t, p, func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Engine.Autoscaling = nil })
	eventually(t, "autoscaler deleted", func() error {
		if _, err := getAutoscaler(p); !apierrors.IsNotFound(err) {
			return fmt.Errorf("get autoscaler: %v, want NotFound", err)
		}
		get(t, client.ObjectKeyFromObject(p), p)
		if p.Status.Autoscaling != nil {
			return fmt.Errorf("status.autoscaling = %+v", p.Status.Autoscaling)
		}
		return nil
	})
	if got := deploymentReplicas(t, p); got != 2 {
		t.Errorf("deployment replicas after autoscaling removed = %d, want the last count 2", got)
	}
}

// TestAutoscalerStaysWithinTheGPUQuota: a GPU program's autoscaler gets
// the maxReplicas the world's quota leaves after the other programs, and
// status.autoscaling says so.
func TestAutoscalerStaysWithinTheGPUQuota(t *testing.T) {
	w := newWorld("gpu-elastic", "gpu-elastic", wellbeingv1alpha1.ContextSocial)
	w.Spec.GPUQuota = wellbeingv1alpha1.GPUQuota{Limit: ptr.To[int32](5)}
	createWorld(t, w)
	fixed := withGPUModel(newProgram("gpu-elastic", "fixed", "gpu-elastic"), 1)
	create(t, fixed)
	p := withGPUModel(autoscaledProgram("gpu-elastic", "elastic", "gpu-elastic", 1, 8), 2)
	create(t, p)
	eventually(t, "autoscaler within the quota", func() error {
		hpa, err := getAutoscaler(p)
		if err != nil {
			return err
		}
		// 5 GPUs, 1 for the fixed program: 4 left, 2 per pod.
		if hpa.Spec.MaxReplicas != 2 {
			return fmt.Errorf("maxReplicas = %d, want 2", hpa.Spec.MaxReplicas)
		}
		get(t, client.ObjectKeyFromObject(p), p)
		if a := p.Status.Autoscaling; a == nil || a.MaxReplicas != 2 || !strings.Contains(a.Message, "GPU quota of 5") {
			return fmt.Errorf("status.autoscaling = %+v", a)
		}
		return nil
	})

	// A sibling growing re-bounds the autoscaler with no change to the
	// autoscaled program itself (the sibling watch).
	updateSpec(t, fixed, func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Engine.GPU.Count = ptr.To[int32](3) })
	eventually(t, "autoscaler re-bounded by its sibling", func() error {
		hpa, err := getAutoscaler(p)
		if err != nil {
			return err
		}
		// 5 GPUs, 3 for the fixed program's pod: 2 left, 2 per pod.
		if hpa.Spec.MaxReplicas != 1 {
			return fmt.Errorf("maxReplicas = %d, want 1", hpa.Spec.MaxReplicas)
		}
		return nil
	})

	// A second autoscaled GPU program counts the first at its
	// maxReplicas bound, not its current size: together they stay
	// within the quota.
	second := withGPUModel(autoscaledProgram("gpu-elastic", "second", "gpu-elastic", 1, 8), 1)
	create(t, second)
	eventually(t, "second autoscaler bounded by the first's maxReplicas", func() error {
		hpa, err := getAutoscaler(second)
		if err != nil {
			return err
		}
		// 5 GPUs, 3 fixed, the first autoscaler up to its 8 pods of 2: 0 left;
		// maxReplicas cannot go below minReplicas 1.
		if hpa.Spec.MaxReplicas != 1 {
			return fmt.Errorf("maxReplicas = %d, want 1", hpa.Spec.MaxReplicas)
		}
		get(t, client.ObjectKeyFromObject(second), second)
		if a := second.Status.Autoscaling; a == nil || !strings.Contains(a.Message, "other programs may use 19") {
			return fmt.Errorf("status.autoscaling = %+v", a)
		}
		return nil
	})
}
