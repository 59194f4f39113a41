package engineruntime

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	engineconfig "github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/textemotion"
	"github.com/attune-io/attune/internal/devstack/proc"
)

// renderedPod is the engine pod the operator renders for a program whose
// model runs on runtime, with the engine configuration it renders beside.
func renderedPod(t *testing.T, runtime wellbeingv1alpha1.ModelRuntime, port int32) (*corev1.Pod, *engineconfig.Config) {
	t.Helper()
	model := &wellbeingv1alpha1.ModelSidecar{Runtime: runtime, ModelName: "emotion", Port: port,
		Storage: &wellbeingv1alpha1.ModelStorage{PersistentVolumeClaim: &wellbeingv1alpha1.ModelClaim{ClaimName: "models", SubPath: "emotion"}}}
	if runtime != wellbeingv1alpha1.ModelRuntimeMLServerHuggingFace && runtime != wellbeingv1alpha1.ModelRuntimeCustom {
		model.Labels = []string{"anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"}
	}
	p := &wellbeingv1alpha1.MeditationProgram{
		ObjectMeta: metav1.ObjectMeta{Name: "calm", Namespace: "plaza"},
		Spec: wellbeingv1alpha1.MeditationProgramSpec{
			WorldRef:      wellbeingv1alpha1.WorldReference{Name: "plaza"},
			Target:        wellbeingv1alpha1.StateVector{Attention: 0.8, Emotion: 0.7, Resilience: 0.7},
			Weights:       wellbeingv1alpha1.Weights{Attention: 1, Emotion: 1, Resilience: 1},
			Interventions: []wellbeingv1alpha1.Intervention{wellbeingv1alpha1.BodyScan},
			Strength:      wellbeingv1alpha1.StrengthBounds{Initial: 0.5, Min: 0.1, Max: 0.9},
			Engine:        wellbeingv1alpha1.EngineSpec{Model: model},
		},
	}
	w := &wellbeingv1alpha1.VirtualWorld{ObjectMeta: metav1.ObjectMeta{Name: "plaza"},
		Spec: wellbeingv1alpha1.VirtualWorldSpec{Namespace: "plaza", Context: wellbeingv1alpha1.ContextSocial}}
	objs, err := controllers.EngineChildren(p, w, "attune-engine:test")
	if err != nil {
		t.Fatal(err)
	}
	var pod *corev1.Pod
	var cfg *engineconfig.Config
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.Deployment:
			pod = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "calm-engine-0", Namespace: "plaza"}, Spec: o.Spec.Template.Spec}
		case *corev1.ConfigMap:
			if cfg, err = engineconfig.Parse([]byte(o.Data[engineconfig.FileName])); err != nil {
				t.Fatal(err)
			}
		}
	}
	if pod == nil || cfg == nil || cfg.Model == nil {
		t.Fatalf("rendered children lack the deployment, the config or its model: %v", objs)
	}
	return pod, cfg
}

// TestRenderedSidecarsServeTheEnginesProtocol runs each runtime's model
// container as rendered, read as that stock server reads its command line
// (the replica of internal/oiptest answers in its wire format), and scores
// texts through it with the engine configuration rendered beside it: the
// rendering and the engine's decoder agree with each server.
func TestRenderedSidecarsServeTheEnginesProtocol(t *testing.T) {
	for _, runtime := range []wellbeingv1alpha1.ModelRuntime{
		wellbeingv1alpha1.ModelRuntimeKServeHuggingFace, wellbeingv1alpha1.ModelRuntimeTriton,
		wellbeingv1alpha1.ModelRuntimeMLServerHuggingFace, wellbeingv1alpha1.ModelRuntimeCustom,
	} {
		t.Run(string(runtime), func(t *testing.T) {
			port, err := proc.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			pod, cfg := renderedPod(t, runtime, int32(port))
			spec, ok, err := modelServerOf(pod, cfg.Model.Labels)
			if err != nil || !ok {
				t.Fatalf("model container as rendered: ok %v, %v", ok, err)
			}
			server, err := startModelServer(spec, "127.0.0.1")
			if err != nil {
				t.Fatal(err)
			}
			defer server.Stop()
			if !strings.HasSuffix(cfg.Model.URL, ":"+strings.TrimPrefix(server.URL, "http://127.0.0.1:")) {
				t.Fatalf("engine calls %s, the sidecar listens on %s", cfg.Model.URL, server.URL)
			}
			scorer := textemotion.NewKServe(*cfg.Model, &http.Client{Timeout: 5 * time.Second})
			ctx := context.Background()
			if err := scorer.Ready(ctx); err != nil {
				t.Fatalf("ready: %v", err)
			}
			got, err := scorer.ScoreBatch(ctx, []string{"I am so happy and calm", "this is awful, I am sad and miserable"})
			if err != nil {
				t.Fatalf("score through the rendered %s sidecar: %v", runtime, err)
			}
			if len(got) != 2 || got[0].Valence <= got[1].Valence {
				t.Fatalf("valences %+v: the happy text must score above the sad one", got)
			}
			if n := server.Server.Requests(); n != 1 {
				t.Fatalf("%d inference requests for one batch, want 1", n)
			}
		})
	}
}

// TestRenderedSidecarRefusals: what a kubelet or the stock server would
// refuse is refused here too, so an e2e run cannot pass on a broken
// rendering.
func TestRenderedSidecarRefusals(t *testing.T) {
	model := func(pod *corev1.Pod) *corev1.Container {
		for i := range pod.Spec.Containers {
			if pod.Spec.Containers[i].Name == ModelContainerName {
				return &pod.Spec.Containers[i]
			}
		}
		t.Fatal("no model container")
		return nil
	}
	cases := []struct {
		name    string
		runtime wellbeingv1alpha1.ModelRuntime
		break_  func(pod *corev1.Pod)
		want    string
	}{
		{"cache on the read-only root", wellbeingv1alpha1.ModelRuntimeKServeHuggingFace, func(pod *corev1.Pod) {
			c := model(pod)
			c.VolumeMounts = c.VolumeMounts[1:] // drop the cache mount
		}, "read-only root filesystem"},
		{"mount of an undeclared volume", wellbeingv1alpha1.ModelRuntimeTriton, func(pod *corev1.Pod) {
			pod.Spec.Volumes = pod.Spec.Volumes[:len(pod.Spec.Volumes)-1] // the model claim
		}, "does not declare"},
		{"port not declared", wellbeingv1alpha1.ModelRuntimeCustom, func(pod *corev1.Pod) {
			model(pod).Ports = nil
		}, "does not declare"},
		{"kserve without a model", wellbeingv1alpha1.ModelRuntimeKServeHuggingFace, func(pod *corev1.Pod) {
			c := model(pod)
			c.Args = c.Args[:1]
		}, "is not set"},
		{"triton without explicit mode", wellbeingv1alpha1.ModelRuntimeTriton, func(pod *corev1.Pod) {
			c := model(pod)
			for i, a := range c.Args {
				if strings.HasPrefix(a, "--model-control-mode") {
					c.Args[i] = "--model-control-mode=none"
				}
			}
		}, "explicit"},
		{"mlserver without a model name", wellbeingv1alpha1.ModelRuntimeMLServerHuggingFace, func(pod *corev1.Pod) {
			c := model(pod)
			for i := range c.Env {
				if c.Env[i].Name == "MLSERVER_MODEL_NAME" {
					c.Env[i].Value = ""
				}
			}
		}, "MLSERVER_MODEL_NAME"},
		{"readiness probe on another port", wellbeingv1alpha1.ModelRuntimeKServeHuggingFace, func(pod *corev1.Pod) {
			model(pod).ReadinessProbe.HTTPGet.Port = intstr.FromInt32(9999)
		}, "readiness probe"},
		{"unknown server", wellbeingv1alpha1.ModelRuntimeCustom, func(pod *corev1.Pod) {
			model(pod).Command = []string{"torchserve"}
		}, "no model server"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pod, cfg := renderedPod(t, c.runtime, 8000)
			if _, _, err := modelServerOf(pod, cfg.Model.Labels); err != nil {
				t.Fatalf("as rendered: %v", err)
			}
			c.break_(pod)
			_, _, err := modelServerOf(pod, cfg.Model.Labels)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}
