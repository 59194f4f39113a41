package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
)

// TestModelValidManifestsAreAccepted: each runtime with the storage it
// reads, and a shared endpoint, pass the schema; runtime and port default.
func TestModelValidManifestsAreAccepted(t *testing.T) {
	for i, patch := range []string{
		`engine: {model: {image: triton, modelName: emotion}}`,
		`engine: {model: {runtime: KServeHuggingFace, modelName: emotion, labels: [anger, joy, sadness], storage: {persistentVolumeClaim: {claimName: emotion-models, subPath: hf/distilroberta}}}}`,
		`engine: {model: {runtime: KServeHuggingFace, labels: [negative, neutral, positive], modelName: emotion, storage: {uri: "hf://j-hartmann/emotion-english-distilroberta-base"}}}`,
		`engine: {model: {runtime: KServeHuggingFace, labels: [negative, neutral, positive], modelName: emotion, storage: {uri: "https://models.example/emotion.tar.gz"}}}`,
		`engine: {model: {runtime: Triton, labels: [negative, neutral, positive], modelName: emotion_onnx.v2, port: 8500, storage: {uri: "s3://models/triton"}}, gpu: {count: 2, runtimeClassName: nvidia}}`,
		`engine: {model: {runtime: Triton, labels: [negative, neutral, positive], modelName: emotion, storage: {uri: "as://account/container/repo"}}, gpu: {resourceName: amd.com/gpu}}`,
		`engine: {model: {runtime: MLServerHuggingFace, modelName: emotion, storage: {uri: "hf://j-hartmann/emotion-english-distilroberta-base"}}}`,
		`engine: {model: {runtime: MLServerHuggingFace, modelName: emotion, storage: {persistentVolumeClaim: {claimName: models}}}, gpu: {count: 0}}`,
		`engine: {model: {runtime: Custom, image: "registry.example/emotion:1", modelName: emotion, storage: {uri: "oci://registry.example/emotion:1"}}}`,
		`engine: {model: {modelName: emotion, endpoint: "http://emotion.models.svc.cluster.local"}}`,
		`engine: {model: {runtime: KServeHuggingFace, labels: [negative, neutral, positive], modelName: emotion, endpoint: "https://kserve.example/serving/emotion"}, gpu: {runtimeClassName: nvidia.runtime.example}}`,
	} {
		obj := manifest(t, strings.Replace(validProgram, "NAME", fmt.Sprintf("model-%d", i), 1), patch)
		if err := k8s.Create(context.Background(), obj, client.DryRunAll); err != nil {
			t.Errorf("%s rejected: %v", patch, err)
			continue
		}
		if i == 0 {
			if got, _, _ := unstructured.NestedString(obj.Object, "spec", "engine", "model", "runtime"); got != "Custom" {
				t.Errorf("runtime defaulted to %q, want Custom", got)
			}
			if got, _, _ := unstructured.NestedInt64(obj.Object, "spec", "engine", "model", "port"); got != 8000 {
				t.Errorf("port defaulted to %d, want 8000", got)
			}
		}
	}
}

// TestModelStatusTextModel follows status.textModel and status.gpus as a
// program goes from VADER to a GPU sidecar to a shared endpoint.
func TestModelStatusTextModel(t *testing.T) {
	setupWorld(t, "textmodel", wellbeingv1alpha1.ContextSocial)
	p := newProgram("textmodel", "chatty", "textmodel")
	// An emptyDir store, so the strategy follows the GPUs alone (a claim
	// means Recreate).
	p.Spec.Engine.Store.Embedded = &wellbeingv1alpha1.EmbeddedStore{Ephemeral: true}
	create(t, p)
	d := waitDeployment(t, p)
	waitStatus := func(textModel string, gpus int32, containers int) {
		t.Helper()
		eventually(t, "status.textModel "+textModel, func() error {
			get(t, client.ObjectKeyFromObject(p), p)
			if p.Status.ObservedGeneration != p.Generation || p.Status.TextModel != textModel || p.Status.GPUs != gpus {
				return fmt.Errorf("generation %d/%d textModel %q gpus %d", p.Status.ObservedGeneration, p.Generation, p.Status.TextModel, p.Status.GPUs)
			}
			get(t, client.ObjectKeyFromObject(d), d)
			if n := len(d.Spec.Template.Spec.Containers); n != containers {
				return fmt.Errorf("%d containers, want %d", n, containers)
			}
			return nil
		})
	}
	waitStatus("VADER (CPU)", 0, 1)
	if c := engineContainer(t, d, "engine"); len(c.Resources.Limits) != 0 || c.Resources.Requests.Cpu().String() != "100m" {
		t.Errorf("engine resources = %+v, want default CPU and memory requests and no GPU", c.Resources)
	}
	if len(d.Spec.Template.Spec.Tolerations) != 0 {
		t.Errorf("tolerations = %v, want none without GPUs", d.Spec.Template.Spec.Tolerations)
	}

	updateSpec(t, p, func(p *wellbeingv1alpha1.MeditationProgram) {
		p.Spec.Engine.Model = &wellbeingv1alpha1.ModelSidecar{Runtime: wellbeingv1alpha1.ModelRuntimeTriton, ModelName: "emotion", Labels: []string{"negative", "neutral", "positive"},
			Storage: &wellbeingv1alpha1.ModelStorage{PersistentVolumeClaim: &wellbeingv1alpha1.ModelClaim{ClaimName: "models"}}}
	})
	waitStatus("Triton emotion (GPU)", 1, 2)
	if m := engineContainer(t, d, "model"); m.Image != controllers.TritonImage || m.Resources.Limits.Name("nvidia.com/gpu", resource.DecimalSI).Value() != 1 {
		t.Errorf("model container = %s %+v", m.Image, m.Resources)
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType || d.Spec.Strategy.RollingUpdate != nil {
		t.Errorf("strategy = %+v, want Recreate for one GPU replica", d.Spec.Strategy)
	}

	updateSpec(t, p, func(p *wellbeingv1alpha1.MeditationProgram) {
		p.Spec.Engine.Model = &wellbeingv1alpha1.ModelSidecar{ModelName: "emotion", Endpoint: "http://emotion.models.svc:8080"}
	})
	waitStatus("emotion at emotion.models.svc:8080", 0, 1)
	if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
		t.Errorf("strategy = %+v, want a rolling update without GPUs", d.Spec.Strategy)
	}
}

// TestModelGPURolloutFitsAFullQuota: a program whose two engine pods hold
// the world's whole GPU quota changes its spec, and the rollout its
// strategy prescribes never needs a GPU beyond the quota.
//
// envtest runs no kube-controller-manager (no Deployment, ReplicaSet or
// quota controller), no scheduler and no kubelet, so the test plays the
// Deployment controller: it creates the pods of the rendered template the
// way maxSurge 0 / maxUnavailable 1 allows, and the quota controller: it
// recomputes status.used after deletions (admission only ever adds to it).
// The API server's ResourceQuota admission, which is real here, admits or
// refuses each pod. It proves that the strategy's steps fit the quota and
// that one surge pod (what the default 25% surge would create) is refused;
// it does not prove that the Deployment controller takes those steps.
func TestModelGPURolloutFitsAFullQuota(t *testing.T) {
	ctx := context.Background()
	w := newWorld("fullquota", "fullquota", wellbeingv1alpha1.ContextSocial)
	w.Spec.GPUQuota.Limit = ptr.To[int32](2)
	createWorld(t, w)
	p := newProgram("fullquota", "gpu-roll", "fullquota")
	sharedStore(p, "gpu-roll-postgres", 2)
	p.Spec.Engine.Model = &wellbeingv1alpha1.ModelSidecar{Image: "registry.example/emotion:1", ModelName: "emotion"}
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "gpu-roll-postgres", Namespace: "fullquota"},
		StringData: map[string]string{"connectionString": "postgres://attune@db.example/attune"}})
	create(t, p)
	d := waitDeployment(t, p)
	waitReconciled(t, p)
	get(t, client.ObjectKeyFromObject(d), d)

	ru := d.Spec.Strategy.RollingUpdate
	if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || ru == nil || ru.MaxSurge.IntValue() != 0 || ru.MaxUnavailable.IntValue() != 1 {
		t.Fatalf("strategy = %+v, want RollingUpdate maxSurge 0 maxUnavailable 1", d.Spec.Strategy)
	}

	// The quota controller's first pass: status.hard and status.used.
	quotaKey := client.ObjectKey{Namespace: "fullquota", Name: controllers.GPUQuotaName}
	gpu := corev1.ResourceName("requests.nvidia.com/gpu")
	recountQuota := func() int64 {
		t.Helper()
		quota := &corev1.ResourceQuota{}
		get(t, quotaKey, quota)
		pods := &corev1.PodList{}
		if err := k8s.List(ctx, pods, client.InNamespace("fullquota")); err != nil {
			t.Fatal(err)
		}
		var used int64
		for _, pod := range pods.Items {
			for _, c := range pod.Spec.Containers {
				used += c.Resources.Requests.Name("nvidia.com/gpu", resource.DecimalSI).Value()
			}
		}
		quota.Status.Hard = quota.Spec.Hard
		quota.Status.Used = corev1.ResourceList{gpu: *resource.NewQuantity(used, resource.DecimalSI)}
		if err := k8s.Status().Update(ctx, quota); err != nil {
			t.Fatalf("quota status: %v", err)
		}
		return used
	}
	recountQuota()

	podOf := func(name string, tmpl corev1.PodTemplateSpec) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "fullquota", Labels: tmpl.Labels, Annotations: tmpl.Annotations}, Spec: *tmpl.Spec.DeepCopy()}
	}
	createPod := func(pod *corev1.Pod) error { return k8s.Create(ctx, pod) }
	deletePod := func(name string) {
		t.Helper()
		if err := k8s.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "fullquota"}}, client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
		eventually(t, "pod "+name+" gone", func() error {
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: "fullquota", Name: name}, &corev1.Pod{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("still there (err=%v)", err)
			}
			return nil
		})
	}

	// The running generation: two pods, one GPU each, the quota full.
	oldTemplate := d.Spec.Template
	for _, name := range []string{"old-0", "old-1"} {
		if err := createPod(podOf(name, oldTemplate)); err != nil {
			t.Fatalf("pod %s of the running generation refused: %v", name, err)
		}
	}
	if used := recountQuota(); used != 2 {
		t.Fatalf("quota used = %d, want 2 (full)", used)
	}

	// A spec change that rolls the pods.
	oldHash := oldTemplate.Annotations[controllers.ConfigHashKey]
	updateSpec(t, p, func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Target.Attention = 0.6 })
	eventually(t, "new pod template", func() error {
		get(t, client.ObjectKeyFromObject(d), d)
		if d.Spec.Template.Annotations[controllers.ConfigHashKey] == oldHash {
			return fmt.Errorf("config hash unchanged")
		}
		return nil
	})
	newTemplate := d.Spec.Template
	if got := d.Spec.Strategy.RollingUpdate; got == nil || got.MaxSurge.IntValue() != 0 {
		t.Fatalf("strategy after the change = %+v", d.Spec.Strategy)
	}

	// A surge pod, what maxSurge 25% (one of two) would create first, does
	// not fit.
	err := createPod(podOf("surge", newTemplate))
	if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "exceeded quota") {
		t.Fatalf("surge pod: err = %v, want Forbidden: exceeded quota", err)
	}

	// maxSurge 0, maxUnavailable 1: one old pod goes, one new pod comes,
	// twice. Each new pod is admitted and the quota is never exceeded.
	for i, old := range []string{"old-0", "old-1"} {
		deletePod(old)
		if used := recountQuota(); used != 1 {
			t.Fatalf("step %d: quota used = %d after deleting %s, want 1", i, used, old)
		}
		// The API server's quota admission reads quotas from its informer
		// cache: it may still see the usage written before the deletion for
		// a moment, so a refusal is retried until it sees the new one.
		eventually(t, fmt.Sprintf("step %d: new pod admitted", i), func() error {
			return createPod(podOf(fmt.Sprintf("new-%d", i), newTemplate))
		})
		if used := recountQuota(); used > 2 {
			t.Fatalf("step %d: quota used = %d, above the limit 2", i, used)
		}
	}
	pods := &corev1.PodList{}
	if err := k8s.List(ctx, pods, client.InNamespace("fullquota")); err != nil {
		t.Fatal(err)
	}
	for _, pod := range pods.Items {
		if pod.Annotations[controllers.ConfigHashKey] != newTemplate.Annotations[controllers.ConfigHashKey] {
			t.Errorf("pod %s is of the old generation", pod.Name)
		}
		for _, c := range pod.Spec.Containers {
			if gpus := c.Resources.Requests.Name("nvidia.com/gpu", resource.DecimalSI).Value(); (c.Name == "model") != (gpus == 1) {
				t.Errorf("pod %s container %s requests %d GPUs", pod.Name, c.Name, gpus)
			}
		}
	}
	if len(pods.Items) != 2 {
		t.Errorf("%d pods after the rollout, want 2", len(pods.Items))
	}
	for _, pod := range pods.Items {
		_ = k8s.Delete(ctx, &pod, client.GracePeriodSeconds(0))
	}
}
