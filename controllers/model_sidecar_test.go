package controllers

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
)

// These builder tests are pure functions of the program (in the style of
// KubeRay's pod_test.go): they render the engine Deployment and look at
// the pod template. They run in the envtest binary but touch no API server.

func modelTestWorld() *wellbeingv1alpha1.VirtualWorld {
	return &wellbeingv1alpha1.VirtualWorld{
		ObjectMeta: metav1.ObjectMeta{Name: "plaza"},
		Spec:       wellbeingv1alpha1.VirtualWorldSpec{Namespace: "plaza", Context: wellbeingv1alpha1.ContextSocial},
	}
}

func modelTestProgram(model *wellbeingv1alpha1.ModelSidecar) *wellbeingv1alpha1.MeditationProgram {
	return &wellbeingv1alpha1.MeditationProgram{
		ObjectMeta: metav1.ObjectMeta{Name: "calm", Namespace: "plaza"},
		Spec: wellbeingv1alpha1.MeditationProgramSpec{
			WorldRef:      wellbeingv1alpha1.WorldReference{Name: "plaza"},
			Target:        wellbeingv1alpha1.StateVector{Attention: 0.8, Emotion: 0.7, Resilience: 0.7},
			Weights:       wellbeingv1alpha1.Weights{Attention: 1, Emotion: 1, Resilience: 1},
			Interventions: []wellbeingv1alpha1.Intervention{wellbeingv1alpha1.FocusedAttention},
			Strength:      wellbeingv1alpha1.StrengthBounds{Initial: 0.5, Min: 0.1, Max: 0.9},
			Engine: wellbeingv1alpha1.EngineSpec{
				Replicas: ptr.To[int32](1),
				GPU:      wellbeingv1alpha1.GPUSpec{ResourceName: "nvidia.com/gpu"},
				Model:    model,
				// Rolling updates are for stores off the pod's claim.
				Store: wellbeingv1alpha1.EngineStore{Embedded: &wellbeingv1alpha1.EmbeddedStore{Ephemeral: true}},
			},
		},
	}
}

func renderPod(t *testing.T, p *wellbeingv1alpha1.MeditationProgram) (*appsv1.Deployment, map[string]corev1.Container) {
	t.Helper()
	d := engineDeployment(p, modelTestWorld(), "example.test/engine:v1", "hash")
	byName := map[string]corev1.Container{}
	for _, c := range d.Spec.Template.Spec.Containers {
		byName[c.Name] = c
	}
	if _, ok := byName["engine"]; !ok {
		t.Fatal("no engine container")
	}
	return d, byName
}

func envOf(c corev1.Container) map[string]string {
	out := map[string]string{}
	for _, e := range c.Env {
		out[e.Name] = e.Value
	}
	return out
}

func mountsOf(c corev1.Container) map[string]corev1.VolumeMount {
	out := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		out[m.Name] = m
	}
	return out
}

func volumesOf(d *appsv1.Deployment) map[string]corev1.Volume {
	out := map[string]corev1.Volume{}
	for _, v := range d.Spec.Template.Spec.Volumes {
		out[v.Name] = v
	}
	return out
}

// gpuRequests lists every container that requests or limits any GPU-like
// extended resource.
func gpuRequests(d *appsv1.Deployment) map[string]corev1.ResourceList {
	out := map[string]corev1.ResourceList{}
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, list := range []corev1.ResourceList{c.Resources.Requests, c.Resources.Limits} {
			for name, q := range list {
				if strings.Contains(string(name), "gpu") || strings.HasPrefix(string(name), "nvidia.com/") {
					if out[c.Name] == nil {
						out[c.Name] = corev1.ResourceList{}
					}
					out[c.Name][name] = q
				}
			}
		}
	}
	return out
}

func pvcStorage(claim, subPath string) *wellbeingv1alpha1.ModelStorage {
	return &wellbeingv1alpha1.ModelStorage{PersistentVolumeClaim: &wellbeingv1alpha1.ModelClaim{ClaimName: claim, SubPath: subPath}}
}

// checkCommonSidecar asserts what every runtime's sidecar has: the OIP
// probes on the named port, the restricted security context, writable
// caches on emptyDirs, and the GPU in requests and limits.
func checkCommonSidecar(t *testing.T, d *appsv1.Deployment, model corev1.Container, port int32, gpus int64) {
	t.Helper()
	if len(model.Ports) != 1 || model.Ports[0].ContainerPort != port || model.Ports[0].Name != "model" {
		t.Errorf("ports = %+v, want model:%d", model.Ports, port)
	}
	for what, probe := range map[string]*corev1.Probe{"readiness": model.ReadinessProbe, "liveness": model.LivenessProbe, "startup": model.StartupProbe} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Port != intstr.FromString("model") {
			t.Errorf("%s probe = %+v, want an HTTP probe on the model port", what, probe)
		}
	}
	if model.ReadinessProbe.HTTPGet.Path != "/v2/health/ready" || model.LivenessProbe.HTTPGet.Path != "/v2/health/live" || model.StartupProbe.HTTPGet.Path != "/v2/health/live" {
		t.Errorf("probe paths = %s, %s, %s", model.ReadinessProbe.HTTPGet.Path, model.LivenessProbe.HTTPGet.Path, model.StartupProbe.HTTPGet.Path)
	}
	if model.StartupProbe.FailureThreshold*model.StartupProbe.PeriodSeconds < 600 {
		t.Errorf("startup probe allows %ds to load a model, want at least 10 minutes", model.StartupProbe.FailureThreshold*model.StartupProbe.PeriodSeconds)
	}
	if !ptr.Deref(model.SecurityContext.ReadOnlyRootFilesystem, false) || !ptr.Deref(model.SecurityContext.RunAsNonRoot, false) {
		t.Errorf("model security context = %+v, want read-only root, non-root", model.SecurityContext)
	}
	mounts, volumes := mountsOf(model), volumesOf(d)
	for name, path := range map[string]string{"model-cache": "/var/cache/model", "model-tmp": "/tmp", "model-shm": "/dev/shm"} {
		if mounts[name].MountPath != path || mounts[name].ReadOnly {
			t.Errorf("mount %s = %+v, want writable at %s", name, mounts[name], path)
		}
		if volumes[name].EmptyDir == nil {
			t.Errorf("volume %s = %+v, want an emptyDir", name, volumes[name])
		}
	}
	if volumes["model-shm"].EmptyDir.Medium != corev1.StorageMediumMemory {
		t.Error("/dev/shm is not memory-backed")
	}
	env := envOf(model)
	for k, v := range map[string]string{"HF_HOME": "/var/cache/model/huggingface", "TRANSFORMERS_CACHE": "/var/cache/model/huggingface/hub", "HOME": "/var/cache/model", "TMPDIR": "/tmp"} {
		if env[k] != v {
			t.Errorf("env %s = %q, want %q", k, env[k], v)
		}
	}
	gpu := corev1.ResourceName("nvidia.com/gpu")
	if q := model.Resources.Requests[gpu]; q.Value() != gpus {
		t.Errorf("model GPU request = %s, want %d", q.String(), gpus)
	}
	if q := model.Resources.Limits[gpu]; q.Value() != gpus {
		t.Errorf("model GPU limit = %s, want %d", q.String(), gpus)
	}
	if got := gpuRequests(d); len(got) > 1 || (gpus > 0 && got["model"] == nil) || got["engine"] != nil {
		t.Errorf("GPU requests by container = %v, want them on the model container only", got)
	}
	if q := model.Resources.Requests[corev1.ResourceCPU]; q.IsZero() {
		t.Error("model container has no CPU request")
	}
}

func checkOffline(t *testing.T, model corev1.Container, offline bool) {
	t.Helper()
	env := envOf(model)
	if got := env["HF_HUB_OFFLINE"] == "1" && env["TRANSFORMERS_OFFLINE"] == "1"; got != offline {
		t.Errorf("offline = %v (env %v), want %v", got, env, offline)
	}
}

func checkClaimMount(t *testing.T, d *appsv1.Deployment, model corev1.Container, claim, subPath string) {
	t.Helper()
	m := mountsOf(model)["model"]
	if m.MountPath != "/mnt/models" || !m.ReadOnly || m.SubPath != subPath {
		t.Errorf("model mount = %+v, want /mnt/models read-only with subPath %q", m, subPath)
	}
	v := volumesOf(d)["model"]
	if v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != claim || !v.PersistentVolumeClaim.ReadOnly {
		t.Errorf("model volume = %+v, want claim %s read-only", v, claim)
	}
	if _, ok := mountsOf(renderEngine(d))["model"]; ok {
		t.Error("the engine container mounts the model")
	}
}

func renderEngine(d *appsv1.Deployment) corev1.Container {
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == "engine" {
			return c
		}
	}
	return corev1.Container{}
}

func TestModelSidecarKServeHuggingFace(t *testing.T) {
	p := modelTestProgram(&wellbeingv1alpha1.ModelSidecar{
		Runtime: wellbeingv1alpha1.ModelRuntimeKServeHuggingFace, ModelName: "emotion", Port: 8000, Labels: []string{"negative", "neutral", "positive"},
		Storage: pvcStorage("emotion-models", "distilroberta"),
	})
	d, cs := renderPod(t, p)
	model := cs["model"]
	if model.Image != KServeHuggingFaceGPUImage {
		t.Errorf("image = %s, want the GPU image %s", model.Image, KServeHuggingFaceGPUImage)
	}
	if !slices.Equal(model.Command, []string{"python", "-m", "huggingfaceserver"}) {
		t.Errorf("command = %v", model.Command)
	}
	wantArgs := []string{"--model_name=emotion", "--model_dir=/mnt/models", "--http_port=8000", "--enable_grpc=false", "--backend=huggingface", "--task=sequence_classification", "--return_probabilities", "--disable_log_requests"}
	if !slices.Equal(model.Args, wantArgs) {
		t.Errorf("args = %v\nwant %v", model.Args, wantArgs)
	}
	checkCommonSidecar(t, d, model, 8000, 1)
	checkOffline(t, model, true)
	checkClaimMount(t, d, model, "emotion-models", "distilroberta")

	// On the CPU (count 0): KServe's CPU image, no GPU anywhere, no GPU
	// toleration.
	p.Spec.Engine.GPU.Count = ptr.To[int32](0)
	p.Spec.Engine.Model.Storage = &wellbeingv1alpha1.ModelStorage{URI: "hf://j-hartmann/emotion-english-distilroberta-base"}
	d, cs = renderPod(t, p)
	if cs["model"].Image != KServeHuggingFaceImage {
		t.Errorf("CPU image = %s, want %s", cs["model"].Image, KServeHuggingFaceImage)
	}
	if !slices.Contains(cs["model"].Args, "--model_dir=hf://j-hartmann/emotion-english-distilroberta-base") {
		t.Errorf("args = %v, want the URI as --model_dir", cs["model"].Args)
	}
	checkOffline(t, cs["model"], false)
	if _, ok := volumesOf(d)["model"]; ok {
		t.Error("a URI model still mounts a claim")
	}
	if got := gpuRequests(d); len(got) != 0 || len(d.Spec.Template.Spec.Tolerations) != 0 {
		t.Errorf("CPU sidecar: GPU requests %v, tolerations %v; want none", got, d.Spec.Template.Spec.Tolerations)
	}
}

func TestModelSidecarTriton(t *testing.T) {
	p := modelTestProgram(&wellbeingv1alpha1.ModelSidecar{
		Runtime: wellbeingv1alpha1.ModelRuntimeTriton, ModelName: "emotion_onnx", Port: 8500,
		Storage: pvcStorage("triton-repo", ""),
	})
	p.Spec.Engine.GPU.Count = ptr.To[int32](2)
	d, cs := renderPod(t, p)
	model := cs["model"]
	if model.Image != TritonImage {
		t.Errorf("image = %s, want %s", model.Image, TritonImage)
	}
	if !slices.Equal(model.Command, []string{"tritonserver"}) {
		t.Errorf("command = %v", model.Command)
	}
	wantArgs := []string{"--model-repository=/mnt/models", "--http-port=8500", "--allow-grpc=false", "--allow-metrics=false", "--model-control-mode=explicit", "--load-model=emotion_onnx"}
	if !slices.Equal(model.Args, wantArgs) {
		t.Errorf("args = %v\nwant %v", model.Args, wantArgs)
	}
	checkCommonSidecar(t, d, model, 8500, 2)
	checkOffline(t, model, true)
	checkClaimMount(t, d, model, "triton-repo", "")

	// A cloud repository: the URI is the repository; nothing offline.
	p.Spec.Engine.Model.Storage = &wellbeingv1alpha1.ModelStorage{URI: "s3://models/triton"}
	_, cs = renderPod(t, p)
	if cs["model"].Args[0] != "--model-repository=s3://models/triton" {
		t.Errorf("args = %v", cs["model"].Args)
	}
	checkOffline(t, cs["model"], false)
}

func TestModelSidecarMLServerHuggingFace(t *testing.T) {
	p := modelTestProgram(&wellbeingv1alpha1.ModelSidecar{
		Runtime: wellbeingv1alpha1.ModelRuntimeMLServerHuggingFace, ModelName: "emotion", Port: 9000,
		Storage: pvcStorage("emotion-models", "hf/emotion"),
	})
	d, cs := renderPod(t, p)
	model := cs["model"]
	if model.Image != MLServerHuggingFaceImage {
		t.Errorf("image = %s, want %s", model.Image, MLServerHuggingFaceImage)
	}
	if !slices.Equal(model.Command, []string{"mlserver", "start", "/mnt/models"}) || len(model.Args) != 0 {
		t.Errorf("command = %v args = %v", model.Command, model.Args)
	}
	env := envOf(model)
	for k, v := range map[string]string{
		"MLSERVER_HTTP_PORT":                          "9000",
		"MLSERVER_METRICS_ENDPOINT":                   "",
		"MLSERVER_METRICS_DIR":                        "/tmp/mlserver-metrics",
		"MLSERVER_DEBUG":                              "false",
		"MLSERVER_MODEL_NAME":                         "emotion",
		"MLSERVER_MODEL_IMPLEMENTATION":               "mlserver_huggingface.HuggingFaceRuntime",
		"MLSERVER_MODEL_HUGGINGFACE_TASK":             "text-classification",
		"MLSERVER_MODEL_HUGGINGFACE_PRETRAINED_MODEL": "/mnt/models",
		"MLSERVER_MODEL_HUGGINGFACE_DEVICE":           "cuda",
	} {
		if got, ok := env[k]; !ok || got != v {
			t.Errorf("env %s = %q (set %v), want %q", k, got, ok, v)
		}
	}
	checkCommonSidecar(t, d, model, 9000, 1)
	checkOffline(t, model, true)
	checkClaimMount(t, d, model, "emotion-models", "hf/emotion")

	// From the Hub on the CPU: the model id, no device, online.
	p.Spec.Engine.GPU.Count = ptr.To[int32](0)
	p.Spec.Engine.Model.Storage = &wellbeingv1alpha1.ModelStorage{URI: "hf://j-hartmann/emotion-english-distilroberta-base"}
	_, cs = renderPod(t, p)
	env = envOf(cs["model"])
	if env["MLSERVER_MODEL_HUGGINGFACE_PRETRAINED_MODEL"] != "j-hartmann/emotion-english-distilroberta-base" {
		t.Errorf("pretrained model = %q", env["MLSERVER_MODEL_HUGGINGFACE_PRETRAINED_MODEL"])
	}
	if _, ok := env["MLSERVER_MODEL_HUGGINGFACE_DEVICE"]; ok {
		t.Error("a CPU sidecar is told to use cuda")
	}
	if cs["model"].Command[2] != "/var/cache/model" {
		t.Errorf("command = %v, want an empty writable folder", cs["model"].Command)
	}
	checkOffline(t, cs["model"], false)
}

func TestModelSidecarCustom(t *testing.T) {
	p := modelTestProgram(&wellbeingv1alpha1.ModelSidecar{
		Image: "registry.example/emotion:1.2", ModelName: "emotion", Port: 8000,
		Env: []corev1.EnvVar{{Name: "EXTRA", Value: "yes"}},
	})
	d, cs := renderPod(t, p)
	model := cs["model"]
	if model.Image != "registry.example/emotion:1.2" || len(model.Command) != 0 || len(model.Args) != 0 {
		t.Errorf("custom sidecar = image %s command %v args %v, want the image as built", model.Image, model.Command, model.Args)
	}
	env := envOf(model)
	if env["MODEL_NAME"] != "emotion" || env["MODEL_PORT"] != "8000" || env["EXTRA"] != "yes" {
		t.Errorf("env = %v", env)
	}
	if _, ok := env["MODEL_DIR"]; ok {
		t.Error("MODEL_DIR without a claim")
	}
	checkCommonSidecar(t, d, model, 8000, 1)
	checkOffline(t, model, false)

	p.Spec.Engine.Model.Storage = pvcStorage("models", "")
	_, cs = renderPod(t, p)
	if envOf(cs["model"])["MODEL_DIR"] != "/mnt/models" {
		t.Errorf("env = %v, want MODEL_DIR", envOf(cs["model"]))
	}
	p.Spec.Engine.Model.Storage = &wellbeingv1alpha1.ModelStorage{URI: "oci://registry.example/models/emotion:1"}
	_, cs = renderPod(t, p)
	if envOf(cs["model"])["STORAGE_URI"] != "oci://registry.example/models/emotion:1" {
		t.Errorf("env = %v, want STORAGE_URI", envOf(cs["model"]))
	}

	// The user's image wins over a runtime's default.
	p.Spec.Engine.Model.Runtime = wellbeingv1alpha1.ModelRuntimeTriton
	p.Spec.Engine.Model.Image = "nvcr.io/nvidia/tritonserver:25.01-py3"
	_, cs = renderPod(t, p)
	if cs["model"].Image != "nvcr.io/nvidia/tritonserver:25.01-py3" {
		t.Errorf("image = %s, want the user's", cs["model"].Image)
	}
}

func TestModelEndpointRunsNoSidecarAndNoGPU(t *testing.T) {
	p := modelTestProgram(&wellbeingv1alpha1.ModelSidecar{
		Runtime: wellbeingv1alpha1.ModelRuntimeKServeHuggingFace, ModelName: "emotion", Port: 8000, Labels: []string{"negative", "neutral", "positive"},
		Endpoint: "http://emotion.models.svc.cluster.local/",
	})
	p.Spec.Engine.GPU.Count = ptr.To[int32](1) // ignored: no sidecar
	d, cs := renderPod(t, p)
	if len(cs) != 1 {
		t.Errorf("containers = %d, want the engine alone", len(cs))
	}
	if got := gpuRequests(d); len(got) != 0 {
		t.Errorf("GPU requests = %v, want none", got)
	}
	if len(d.Spec.Template.Spec.Tolerations) != 0 {
		t.Errorf("tolerations = %v, want none", d.Spec.Template.Spec.Tolerations)
	}
	for name := range volumesOf(d) {
		if strings.HasPrefix(name, "model") {
			t.Errorf("volume %s without a sidecar", name)
		}
	}
	cfg := renderEngineConfig(p, modelTestWorld(), 0.5)
	if cfg.Model == nil || cfg.Model.URL != "http://emotion.models.svc.cluster.local" || cfg.Model.Name != "emotion" {
		t.Errorf("config model = %+v, want the shared endpoint", cfg.Model)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("config invalid: %v", err)
	}
	if _, gpus := gpuPerPod(p); gpus != 0 {
		t.Errorf("gpuPerPod = %d, want 0", gpus)
	}
	if got := textModel(p); got != "emotion at emotion.models.svc.cluster.local" {
		t.Errorf("textModel = %q", got)
	}
	if s := engineStrategy(p, 0); s.Type != appsv1.RollingUpdateDeploymentStrategyType || s.RollingUpdate.MaxSurge.String() != "25%" {
		t.Errorf("strategy = %+v, want the CPU rolling update", s)
	}
}

func TestModelNoneRequestsNoGPUAnywhere(t *testing.T) {
	p := modelTestProgram(nil)
	p.Spec.Engine.GPU.Count = ptr.To[int32](1)          // stored by the old default: ignored
	p.Spec.Engine.GPU.Product = "NVIDIA-H100-80GB-HBM3" // ignored too: no GPU node needed
	d, cs := renderPod(t, p)
	if _, pinned := d.Spec.Template.Spec.NodeSelector[GPUProductLabel]; pinned {
		t.Errorf("node selector = %v: a pod without GPUs is pinned to GPU nodes", d.Spec.Template.Spec.NodeSelector)
	}
	if len(cs) != 1 {
		t.Errorf("containers = %d, want the engine alone", len(cs))
	}
	if got := gpuRequests(d); len(got) != 0 {
		t.Errorf("GPU requests = %v, want none", got)
	}
	if len(d.Spec.Template.Spec.Tolerations) != 0 {
		t.Errorf("tolerations = %v, want none", d.Spec.Template.Spec.Tolerations)
	}
	engine := cs["engine"]
	if q := engine.Resources.Requests[corev1.ResourceCPU]; q.String() != "100m" {
		t.Errorf("engine cpu request = %s, want 100m", q.String())
	}
	if q := engine.Resources.Requests[corev1.ResourceMemory]; q.String() != "128Mi" {
		t.Errorf("engine memory request = %s, want 128Mi", q.String())
	}
	if cfg := renderEngineConfig(p, modelTestWorld(), 0.5); cfg.Model != nil {
		t.Errorf("config model = %+v, want none (VADER)", cfg.Model)
	}
	if got := textModel(p); got != "VADER (CPU)" {
		t.Errorf("textModel = %q", got)
	}
	if _, gpus := gpuPerPod(p); gpus != 0 {
		t.Errorf("gpuPerPod = %d, want 0", gpus)
	}
}

func TestEngineResourcesKeepTheUsersAndDefaultTheRest(t *testing.T) {
	p := modelTestProgram(nil)
	p.Spec.Engine.Resources = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
	}
	_, cs := renderPod(t, p)
	res := cs["engine"].Resources
	if q := res.Requests[corev1.ResourceCPU]; q.String() != "250m" {
		t.Errorf("cpu request = %s, want the user's 250m", q.String())
	}
	// A memory limit alone: the request is the limit (Kubernetes' rule),
	// so no default request that could exceed it.
	if _, ok := res.Requests[corev1.ResourceMemory]; ok {
		t.Errorf("memory request = %v, want none beside the user's limit", res.Requests)
	}
	if p.Spec.Engine.Resources.Requests[corev1.ResourceMemory] != (resource.Quantity{}) {
		t.Error("defaulting changed the program's spec")
	}

	// The model sidecar: the user's requests and limits, defaults for the
	// rest, the GPU added.
	p.Spec.Engine.Model = &wellbeingv1alpha1.ModelSidecar{Runtime: wellbeingv1alpha1.ModelRuntimeTriton, ModelName: "m", Storage: pvcStorage("c", ""),
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("6Gi")}}}
	_, cs = renderPod(t, p)
	model := cs["model"].Resources
	if q := model.Requests[corev1.ResourceMemory]; q.String() != "6Gi" {
		t.Errorf("model memory request = %s, want 6Gi", q.String())
	}
	if q := model.Requests[corev1.ResourceCPU]; q.String() != "1" {
		t.Errorf("model cpu request = %s, want the default 1", q.String())
	}
	if cs["model"].Ports[0].ContainerPort != 8000 {
		t.Errorf("port = %d, want the default 8000 for a program built in Go", cs["model"].Ports[0].ContainerPort)
	}
}

func TestEngineGPUTolerationFollowsTheVendor(t *testing.T) {
	for resourceName, key := range map[string]string{
		"nvidia.com/gpu":         "nvidia.com/gpu",
		"nvidia.com/mig-1g.10gb": "nvidia.com/gpu",
		"amd.com/gpu":            "amd.com/gpu",
		"gpu.intel.com/i915":     "gpu.intel.com/i915",
		"gpu.intel.com/xe":       "gpu.intel.com/xe",
	} {
		p := modelTestProgram(&wellbeingv1alpha1.ModelSidecar{Image: "m:1", ModelName: "emotion"})
		p.Spec.Engine.GPU.ResourceName = resourceName
		p.Spec.Engine.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "attune", Effect: corev1.TaintEffectNoSchedule}}
		d, cs := renderPod(t, p)
		want := corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}
		tol := d.Spec.Template.Spec.Tolerations
		if len(tol) != 2 || !slices.Contains(tol, want) || !slices.Contains(tol, p.Spec.Engine.Tolerations[0]) {
			t.Errorf("%s: tolerations = %v, want the user's and %+v", resourceName, tol, want)
		}
		if q := cs["model"].Resources.Limits[corev1.ResourceName(resourceName)]; q.Value() != 1 {
			t.Errorf("%s: model limit = %s, want 1", resourceName, q.String())
		}
		if _, ok := cs["engine"].Resources.Limits[corev1.ResourceName(resourceName)]; ok {
			t.Errorf("%s: the engine container requests the GPU", resourceName)
		}
	}
}

func TestEngineRolloutStrategy(t *testing.T) {
	sidecar := func() *wellbeingv1alpha1.ModelSidecar {
		return &wellbeingv1alpha1.ModelSidecar{Image: "m:1", ModelName: "emotion"}
	}
	shared := func(p *wellbeingv1alpha1.MeditationProgram, replicas int32) {
		p.Spec.Engine.Replicas = ptr.To(replicas)
		p.Spec.Engine.Store = wellbeingv1alpha1.EngineStore{Type: wellbeingv1alpha1.StorePostgreSQL, Postgres: &wellbeingv1alpha1.PostgresStore{SecretRef: wellbeingv1alpha1.SecretReference{Name: "db"}}}
	}
	rolling := func(surge, unavailable intstr.IntOrString) appsv1.DeploymentStrategy {
		return appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &surge, MaxUnavailable: &unavailable}}
	}
	recreate := appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
	cases := []struct {
		name  string
		setup func(p *wellbeingv1alpha1.MeditationProgram)
		want  appsv1.DeploymentStrategy
	}{
		{"CPU, one replica (the default claim)", func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Engine.Store.Embedded = nil }, recreate},
		{"CPU, one replica, ephemeral", func(p *wellbeingv1alpha1.MeditationProgram) {
			p.Spec.Engine.Store.Embedded = &wellbeingv1alpha1.EmbeddedStore{Ephemeral: true}
		}, rolling(intstr.FromString("25%"), intstr.FromString("25%"))},
		{"CPU, three replicas", func(p *wellbeingv1alpha1.MeditationProgram) { shared(p, 3) }, rolling(intstr.FromString("25%"), intstr.FromString("25%"))},
		{"GPU, one replica", func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Engine.Model = sidecar() }, recreate},
		{"GPU, one replica, suspended", func(p *wellbeingv1alpha1.MeditationProgram) {
			p.Spec.Engine.Model = sidecar()
			p.Spec.Suspend = true
		}, recreate},
		{"GPU, three replicas", func(p *wellbeingv1alpha1.MeditationProgram) {
			p.Spec.Engine.Model = sidecar()
			shared(p, 3)
		}, rolling(intstr.FromInt32(0), intstr.FromInt32(1))},
		{"GPU, three replicas, suspended", func(p *wellbeingv1alpha1.MeditationProgram) {
			p.Spec.Engine.Model = sidecar()
			shared(p, 3)
			p.Spec.Suspend = true
		}, rolling(intstr.FromInt32(0), intstr.FromInt32(1))},
		{"CPU sidecar (count 0), three replicas", func(p *wellbeingv1alpha1.MeditationProgram) {
			p.Spec.Engine.Model = sidecar()
			p.Spec.Engine.GPU.Count = ptr.To[int32](0)
			shared(p, 3)
		}, rolling(intstr.FromString("25%"), intstr.FromString("25%"))},
		{"embedded store on a claim", func(p *wellbeingv1alpha1.MeditationProgram) {
			p.Spec.Engine.Store.Embedded = &wellbeingv1alpha1.EmbeddedStore{Volume: &wellbeingv1alpha1.StoreVolume{Size: resource.MustParse("1Gi")}}
		}, recreate},
		{"GPU and a claim", func(p *wellbeingv1alpha1.MeditationProgram) {
			p.Spec.Engine.Model = sidecar()
			p.Spec.Engine.Store.Embedded = &wellbeingv1alpha1.EmbeddedStore{Volume: &wellbeingv1alpha1.StoreVolume{Size: resource.MustParse("1Gi")}}
		}, recreate},
		{"shared endpoint, three replicas", func(p *wellbeingv1alpha1.MeditationProgram) {
			p.Spec.Engine.Model = &wellbeingv1alpha1.ModelSidecar{ModelName: "emotion", Endpoint: "https://models.example"}
			shared(p, 3)
		}, rolling(intstr.FromString("25%"), intstr.FromString("25%"))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := modelTestProgram(nil)
			tc.setup(p)
			d, _ := renderPod(t, p)
			got := d.Spec.Strategy
			if got.Type != tc.want.Type || (got.RollingUpdate == nil) != (tc.want.RollingUpdate == nil) {
				t.Fatalf("strategy = %+v, want %+v", got, tc.want)
			}
			if got.RollingUpdate != nil && (*got.RollingUpdate.MaxSurge != *tc.want.RollingUpdate.MaxSurge || *got.RollingUpdate.MaxUnavailable != *tc.want.RollingUpdate.MaxUnavailable) {
				t.Errorf("rollingUpdate = %s/%s, want %s/%s", got.RollingUpdate.MaxSurge.String(), got.RollingUpdate.MaxUnavailable.String(),
					tc.want.RollingUpdate.MaxSurge.String(), tc.want.RollingUpdate.MaxUnavailable.String())
			}
		})
	}
}

func TestModelTextModelNamesRuntimeAndDevice(t *testing.T) {
	p := modelTestProgram(&wellbeingv1alpha1.ModelSidecar{Runtime: wellbeingv1alpha1.ModelRuntimeTriton, ModelName: "emotion_onnx", Storage: pvcStorage("c", "")})
	if got := textModel(p); got != "Triton emotion_onnx (GPU)" {
		t.Errorf("textModel = %q", got)
	}
	p.Spec.Engine.GPU.Count = ptr.To[int32](0)
	if got := textModel(p); got != "Triton emotion_onnx (CPU)" {
		t.Errorf("textModel = %q", got)
	}
	p.Spec.Engine.Model = &wellbeingv1alpha1.ModelSidecar{Image: "m:1", ModelName: "emotion"}
	p.Spec.Engine.GPU.Count = nil
	if got := textModel(p); got != "Custom emotion (GPU)" {
		t.Errorf("textModel = %q", got)
	}
	cfg := renderEngineConfig(p, modelTestWorld(), 0.5)
	if cfg.Model == nil || cfg.Model.URL != "http://127.0.0.1:8000" || cfg.Model.Name != "emotion" {
		t.Errorf("config model = %+v, want the sidecar on the loopback", cfg.Model)
	}
}
