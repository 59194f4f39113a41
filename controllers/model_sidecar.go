package controllers

import (
	"fmt"
	"net/url"
	"path"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	engineconfig "github.com/attune-io/attune/engine/config"
)

// Default images of the model runtimes, pinned. Each was read from the
// project's release sources:
//   - KServe v0.20.0: .github/workflows/huggingface-cpu-docker-publish.yml
//     and huggingface-docker-publish.yml publish kserve/huggingfaceserver:<tag>
//     (CPU, python/huggingface_server_cpu.Dockerfile) and <tag>-gpu (CUDA,
//     python/huggingface_server.Dockerfile).
//   - Triton 2.71.0 (TRITON_VERSION) ships as the NGC container
//     nvcr.io/nvidia/tritonserver:26.07-py3 (README.md of v2.71.0), one
//     image for CPU and GPU.
//   - MLServer 1.7.1: the Makefile pushes seldonio/mlserver:<version>-<runtime>;
//     the huggingface image installs PyTorch with CUDA, one image for CPU
//     and GPU.
const (
	KServeHuggingFaceImage    = "kserve/huggingfaceserver:v0.20.0"
	KServeHuggingFaceGPUImage = "kserve/huggingfaceserver:v0.20.0-gpu"
	TritonImage               = "nvcr.io/nvidia/tritonserver:26.07-py3"
	MLServerHuggingFaceImage  = "seldonio/mlserver:1.7.1-huggingface"
)

// defaultModelPort is spec.engine.model.port when a program built in Go
// never went through the API server's defaulting.
const defaultModelPort = 8000

// Volumes of the model sidecar.
const (
	modelVolume      = "model"
	modelCacheVolume = "model-cache"
	modelTmpVolume   = "model-tmp"
	modelShmVolume   = "model-shm"
	modelPortName    = "model"
)

// Default requests of the containers, so that engine pods are not
// BestEffort: the engine is a small Go process; the model sidecar's match
// KServe's kserve-huggingfaceserver ClusterServingRuntime (1 CPU, 2Gi).
var (
	engineDefaultRequests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}
	modelDefaultRequests  = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("2Gi")}
)

// runsModelSidecar reports whether the program's engine pods carry a model
// server: a model without a shared endpoint.
func runsModelSidecar(p *wellbeingv1alpha1.MeditationProgram) bool {
	m := p.Spec.Engine.Model
	return m != nil && m.Endpoint == ""
}

// modelRuntime is the sidecar's runtime; unset (a program built in Go) is
// Custom, as the API server defaults it.
func modelRuntime(m *wellbeingv1alpha1.ModelSidecar) wellbeingv1alpha1.ModelRuntime {
	if m.Runtime == "" {
		return wellbeingv1alpha1.ModelRuntimeCustom
	}
	return m.Runtime
}

func modelPort(m *wellbeingv1alpha1.ModelSidecar) int32 {
	if m.Port == 0 {
		return defaultModelPort
	}
	return m.Port
}

// modelURL is the base URL the engine calls: the shared endpoint, or the
// sidecar on the pod's loopback.
func modelURL(m *wellbeingv1alpha1.ModelSidecar) string {
	if m.Endpoint != "" {
		return strings.TrimRight(m.Endpoint, "/")
	}
	return fmt.Sprintf("http://127.0.0.1:%d", modelPort(m))
}

// modelImage is the sidecar's image: the user's, or the runtime's pinned
// default (KServe's GPU tag when the sidecar requests GPUs).
func modelImage(m *wellbeingv1alpha1.ModelSidecar, gpus int32) string {
	if m.Image != "" {
		return m.Image
	}
	switch modelRuntime(m) {
	case wellbeingv1alpha1.ModelRuntimeKServeHuggingFace:
		if gpus > 0 {
			return KServeHuggingFaceGPUImage
		}
		return KServeHuggingFaceImage
	case wellbeingv1alpha1.ModelRuntimeTriton:
		return TritonImage
	case wellbeingv1alpha1.ModelRuntimeMLServerHuggingFace:
		return MLServerHuggingFaceImage
	}
	return "" // Custom without image: refused by the CRD
}

// gpuTolerationKey is the taint GPU nodes of the resource's vendor carry:
// nvidia.com/gpu for every NVIDIA resource (MIG profiles included, as the
// GPU operator and the managed clouds taint them), amd.com/gpu for AMD,
// and the resource name itself for Intel (gpu.intel.com/i915, /xe), whose
// device plugin prescribes no taint.
func gpuTolerationKey(resourceName corev1.ResourceName) string {
	name := string(resourceName)
	switch {
	case strings.HasPrefix(name, "nvidia.com/"):
		return GPUTaintKey
	case strings.HasPrefix(name, "amd.com/"):
		return AMDGPUTaintKey
	default:
		return name
	}
}

// withDefaultRequests fills the requests of defaults that res sets neither
// as a request nor as a limit (a limit alone makes the request equal to it).
func withDefaultRequests(res corev1.ResourceRequirements, defaults corev1.ResourceList) corev1.ResourceRequirements {
	out := *res.DeepCopy()
	for name, q := range defaults {
		if _, ok := out.Requests[name]; ok {
			continue
		}
		if _, ok := out.Limits[name]; ok {
			continue
		}
		if out.Requests == nil {
			out.Requests = corev1.ResourceList{}
		}
		out.Requests[name] = q.DeepCopy()
	}
	return out
}

// engineStrategy is how the engine Deployment rolls out.
//   - The Embedded store on a claim: Recreate, so that the old pod releases
//     the ReadWriteOnce volume before the new one mounts it.
//   - Pods that request GPUs: no surge, because a world's GPU quota, or its
//     nodes, often have no spare GPU for an extra pod. One replica:
//     Recreate (the old pod goes, then the new one comes); several:
//     RollingUpdate with maxSurge 0 and maxUnavailable 1, one pod at a
//     time, the others serving.
//   - Otherwise RollingUpdate 25%/25%, the Deployment's defaults, spelled
//     out so that the operator owns them (see dropRollingUpdate).
//
// The spec's replicas decide, not the desired count: suspending a program
// must not switch its strategy.
func engineStrategy(p *wellbeingv1alpha1.MeditationProgram, gpusPerPod int32) appsv1.DeploymentStrategy {
	recreate := appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
	if storeVolume(p) != nil {
		return recreate
	}
	if gpusPerPod > 0 {
		if ptr.Deref(p.Spec.Engine.Replicas, 1) <= 1 {
			return recreate
		}
		return appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
			MaxSurge: ptr.To(intstr.FromInt32(0)), MaxUnavailable: ptr.To(intstr.FromInt32(1)),
		}}
	}
	return appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
		MaxSurge: ptr.To(intstr.FromString("25%")), MaxUnavailable: ptr.To(intstr.FromString("25%")),
	}}
}

// textModel is status.textModel: the text-emotion model the engines use.
func textModel(p *wellbeingv1alpha1.MeditationProgram) string {
	m := p.Spec.Engine.Model
	if m == nil {
		return "VADER (CPU)"
	}
	if m.Endpoint != "" {
		host := m.Endpoint
		if u, err := url.Parse(m.Endpoint); err == nil && u.Host != "" {
			host = u.Host
		}
		return m.ModelName + " at " + host
	}
	device := "CPU"
	if _, gpus := gpuPerPod(p); gpus > 0 {
		device = "GPU"
	}
	return fmt.Sprintf("%s %s (%s)", modelRuntime(m), m.ModelName, device)
}

// modelSidecar is the model-server container of an engine pod and the
// volumes only it mounts. The root filesystem stays read-only: caches,
// downloads and temporary files go to emptyDirs.
func modelSidecar(m *wellbeingv1alpha1.ModelSidecar, gpuName corev1.ResourceName, gpus int32) (corev1.Container, []corev1.Volume) {
	port := modelPort(m)
	var claim *wellbeingv1alpha1.ModelClaim
	var uri string
	if m.Storage != nil {
		claim, uri = m.Storage.PersistentVolumeClaim, m.Storage.URI
	}
	// source is where the runtime reads the model: the mounted claim, or
	// the URI it downloads.
	source := uri
	if claim != nil {
		source = modelMountPath
	}

	env := []corev1.EnvVar{
		{Name: "MODEL_NAME", Value: m.ModelName},
		// Hugging Face and most Python tools write under HOME and
		// XDG_CACHE_HOME; the images' defaults are on the read-only root.
		{Name: "HOME", Value: modelCachePath},
		{Name: "XDG_CACHE_HOME", Value: modelCachePath},
		{Name: "HF_HOME", Value: path.Join(modelCachePath, "huggingface")},
		{Name: "TRANSFORMERS_CACHE", Value: path.Join(modelCachePath, "huggingface", "hub")},
		{Name: "HF_HUB_DISABLE_TELEMETRY", Value: "1"},
		{Name: "TMPDIR", Value: tmpMountPath},
	}
	if claim != nil {
		// The model is on the volume: nothing may be fetched from the Hub.
		env = append(env, corev1.EnvVar{Name: "HF_HUB_OFFLINE", Value: "1"}, corev1.EnvVar{Name: "TRANSFORMERS_OFFLINE", Value: "1"})
	}

	var command, args []string
	switch modelRuntime(m) {
	case wellbeingv1alpha1.ModelRuntimeKServeHuggingFace:
		// kserve python/huggingfaceserver/huggingfaceserver/__main__.py and
		// python/kserve/kserve/model_server.py (v0.20.0): --model_dir is a
		// local path or a URI that kserve_storage downloads (gs://, s3://,
		// hf://, http(s)://, Azure); the HTTP port defaults to 8080, the
		// engine's, and gRPC to 8081, so the port is set and gRPC is off.
		// The Hugging Face backend (not vLLM) with the
		// sequence_classification task returns class probabilities with
		// --return_probabilities. Requests carry users' texts: not logged.
		command = []string{"python", "-m", "huggingfaceserver"}
		args = []string{
			"--model_name=" + m.ModelName,
			"--model_dir=" + source,
			"--http_port=" + strconv.Itoa(int(port)),
			"--enable_grpc=false",
			"--backend=huggingface",
			"--task=sequence_classification",
			"--return_probabilities",
			"--disable_log_requests",
		}
	case wellbeingv1alpha1.ModelRuntimeTriton:
		// triton-inference-server/server src/command_line_parser.cc and
		// docs/user_guide/model_repository.md (v2.71.0): the repository is
		// a local path or gs://, s3://, as://; HTTP defaults to 8000, gRPC
		// 8001 and metrics 8002. Only HTTP is served, and only modelName
		// is loaded (explicit mode), so readiness means that model is
		// ready.
		command = []string{"tritonserver"}
		args = []string{
			"--model-repository=" + source,
			"--http-port=" + strconv.Itoa(int(port)),
			"--allow-grpc=false",
			"--allow-metrics=false",
			"--model-control-mode=explicit",
			"--load-model=" + m.ModelName,
		}
	case wellbeingv1alpha1.ModelRuntimeMLServerHuggingFace:
		// SeldonIO/MLServer 1.7.1: `mlserver start <folder>` reads
		// settings from MLSERVER_* (mlserver/settings.py: http 8080, gRPC
		// 8081, metrics 8082) and, with no model-settings.json in the
		// folder, the model from MLSERVER_MODEL_* (mlserver/repository/
		// repository.py); the Hugging Face runtime from
		// MLSERVER_MODEL_HUGGINGFACE_* (runtimes/huggingface/
		// mlserver_huggingface/settings.py). Metrics are off (an empty
		// endpoint), debug logging too (it would log users' texts).
		folder := modelMountPath
		pretrained := modelMountPath
		if claim == nil {
			folder = modelCachePath // no model-settings.json: the env's model
			pretrained = strings.TrimPrefix(uri, "hf://")
		}
		command = []string{"mlserver", "start", folder}
		env = append(env,
			corev1.EnvVar{Name: "MLSERVER_HTTP_PORT", Value: strconv.Itoa(int(port))},
			corev1.EnvVar{Name: "MLSERVER_METRICS_ENDPOINT", Value: ""},
			corev1.EnvVar{Name: "MLSERVER_METRICS_DIR", Value: path.Join(tmpMountPath, "mlserver-metrics")},
			corev1.EnvVar{Name: "MLSERVER_DEBUG", Value: "false"},
			corev1.EnvVar{Name: "MLSERVER_MODEL_NAME", Value: m.ModelName},
			corev1.EnvVar{Name: "MLSERVER_MODEL_IMPLEMENTATION", Value: "mlserver_huggingface.HuggingFaceRuntime"},
			corev1.EnvVar{Name: "MLSERVER_MODEL_HUGGINGFACE_TASK", Value: "text-classification"},
			corev1.EnvVar{Name: "MLSERVER_MODEL_HUGGINGFACE_PRETRAINED_MODEL", Value: pretrained},
			corev1.EnvVar{Name: "NUMBA_CACHE_DIR", Value: path.Join(modelCachePath, "numba")},
		)
		if gpus > 0 {
			env = append(env, corev1.EnvVar{Name: "MLSERVER_MODEL_HUGGINGFACE_DEVICE", Value: "cuda"})
		}
	default: // Custom: the image's own entrypoint, told where things are.
		env = append(env, corev1.EnvVar{Name: "MODEL_PORT", Value: strconv.Itoa(int(port))})
		if claim != nil {
			env = append(env, corev1.EnvVar{Name: "MODEL_DIR", Value: modelMountPath})
		}
		if uri != "" {
			env = append(env, corev1.EnvVar{Name: "STORAGE_URI", Value: uri})
		}
	}
	env = append(env, m.Env...)

	mounts := []corev1.VolumeMount{
		{Name: modelCacheVolume, MountPath: modelCachePath},
		{Name: modelTmpVolume, MountPath: tmpMountPath},
		{Name: modelShmVolume, MountPath: shmMountPath},
	}
	volumes := []corev1.Volume{
		{Name: modelCacheVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: modelTmpVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		// PyTorch and Triton's Python backend share tensors through
		// /dev/shm; the runtime's 64Mi default is too small.
		{Name: modelShmVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: ptr.To(resource.MustParse("1Gi"))}}},
	}
	if claim != nil {
		mounts = append(mounts, corev1.VolumeMount{Name: modelVolume, MountPath: modelMountPath, SubPath: claim.SubPath, ReadOnly: true})
		volumes = append(volumes, corev1.Volume{Name: modelVolume, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{
			ClaimName: claim.ClaimName, ReadOnly: true,
		}}})
	}

	// Every runtime serves the Open Inference Protocol's health endpoints.
	// Loading (or downloading) a model takes minutes: the startup probe
	// allows 15 of them before liveness applies.
	startup := httpProbe("/v2/health/live", modelPortName, 10)
	startup.FailureThreshold = 90
	return corev1.Container{
		Name:            "model",
		Image:           modelImage(m, gpus),
		Command:         command,
		Args:            args,
		Env:             env,
		Ports:           []corev1.ContainerPort{{Name: modelPortName, ContainerPort: port, Protocol: corev1.ProtocolTCP}},
		Resources:       withGPU(withDefaultRequests(m.Resources, modelDefaultRequests), gpuName, gpus),
		StartupProbe:    startup,
		LivenessProbe:   httpProbe("/v2/health/live", modelPortName, 10),
		ReadinessProbe:  httpProbe("/v2/health/ready", modelPortName, 10),
		SecurityContext: restrictedContainerSecurity(),
		VolumeMounts:    mounts,
	}, volumes
}

// engineModel is the model section of the engine configuration: where the
// engine calls the text-emotion model. Nil without spec.engine.model (the
// engine uses VADER).
func engineModel(m *wellbeingv1alpha1.ModelSidecar) *engineconfig.Model {
	if m == nil {
		return nil
	}
	out := &engineconfig.Model{URL: modelURL(m), Name: m.ModelName, Labels: m.Labels}
	if rt := modelRuntime(m); rt != wellbeingv1alpha1.ModelRuntimeCustom {
		out.Runtime = string(rt)
	}
	return out
}
