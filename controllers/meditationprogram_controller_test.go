package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	engineconfig "github.com/attune-io/attune/engine/config"
)

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// setupWorld creates a world whose namespace equals its name.
func setupWorld(t *testing.T, name string, context wellbeingv1alpha1.WorldContext) *wellbeingv1alpha1.VirtualWorld {
	t.Helper()
	return createWorld(t, newWorld(name, name, context))
}

func waitDeployment(t *testing.T, p *wellbeingv1alpha1.MeditationProgram) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{}
	eventually(t, "engine deployment", func() error {
		return k8s.Get(context.Background(), client.ObjectKey{Namespace: p.Namespace, Name: p.Name + "-engine"}, d)
	})
	return d
}

func waitReconciled(t *testing.T, p *wellbeingv1alpha1.MeditationProgram) {
	t.Helper()
	eventually(t, "program reconciled", func() error {
		get(t, client.ObjectKeyFromObject(p), p)
		if p.Status.ObservedGeneration != p.Generation {
			return fmt.Errorf("observedGeneration %d, generation %d", p.Status.ObservedGeneration, p.Generation)
		}
		return conditionIs(p.Status.Conditions, wellbeingv1alpha1.ConditionReconciled, metav1.ConditionTrue, "")
	})
}

func engineContainer(t *testing.T, d *appsv1.Deployment, name string) corev1.Container {
	t.Helper()
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("deployment has no container %q", name)
	return corev1.Container{}
}

func TestProgramChildren(t *testing.T) {
	ctx := context.Background()
	setupWorld(t, "office", wellbeingv1alpha1.ContextWorkplace)
	p := newProgram("office", "deep-work", "office")
	p.Spec.Engine.GPU = wellbeingv1alpha1.GPUSpec{Count: ptr.To[int32](2), Product: "NVIDIA-H100-80GB-HBM3", RuntimeClassName: ptr.To("nvidia")}
	// The GPUs go to the model sidecar; the engine container runs on the CPU.
	p.Spec.Engine.Model = &wellbeingv1alpha1.ModelSidecar{Image: "example.test/emotion:v1", ModelName: "emotion"}
	p.Spec.Engine.NodeSelector = map[string]string{"pool": "wellbeing"}
	p.Spec.Engine.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "attune", Effect: corev1.TaintEffectNoSchedule}}
	p.Spec.Engine.PriorityClassName = "tenant-high"
	p.Spec.Engine.Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")}}
	create(t, p)
	d := waitDeployment(t, p)
	waitReconciled(t, p)
	if got := statusWriters(p); !slices.Equal(got, []string{controllers.FieldOwner}) {
		t.Errorf("status written by %v, want only %s", got, controllers.FieldOwner)
	}

	// Owner references: every child is controlled by the program.
	isOwned := func(obj metav1.Object) {
		t.Helper()
		ref := metav1.GetControllerOf(obj)
		if ref == nil || ref.Kind != "MeditationProgram" || ref.Name != p.Name || !ptr.Deref(ref.BlockOwnerDeletion, false) {
			t.Errorf("%s: controller = %+v, want MeditationProgram %s with blockOwnerDeletion", obj.GetName(), ref, p.Name)
		}
	}
	isOwned(d)

	pod := d.Spec.Template.Spec
	engine := engineContainer(t, d, "engine")
	gpu := corev1.ResourceName("nvidia.com/gpu")
	model := engineContainer(t, d, "model")
	if q := model.Resources.Requests[gpu]; q.Value() != 2 {
		t.Errorf("model gpu request = %s, want 2", q.String())
	}
	if q := model.Resources.Limits[gpu]; q.Value() != 2 {
		t.Errorf("model gpu limit = %s, want 2", q.String())
	}
	if _, ok := engine.Resources.Limits[gpu]; ok {
		t.Error("the engine container requests a GPU")
	}
	if q := engine.Resources.Requests[corev1.ResourceCPU]; q.String() != "250m" {
		t.Errorf("cpu request = %s, want the user's 250m kept", q.String())
	}
	if pod.NodeSelector[controllers.GPUProductLabel] != "NVIDIA-H100-80GB-HBM3" || pod.NodeSelector["pool"] != "wellbeing" {
		t.Errorf("node selector = %v, want product and pool", pod.NodeSelector)
	}
	if ptr.Deref(pod.RuntimeClassName, "") != "nvidia" {
		t.Errorf("runtimeClassName = %v, want nvidia", pod.RuntimeClassName)
	}
	if pod.PriorityClassName != "tenant-high" {
		t.Errorf("priorityClassName = %q", pod.PriorityClassName)
	}
	gpuToleration := corev1.Toleration{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}
	if !slices.Contains(pod.Tolerations, gpuToleration) || !slices.Contains(pod.Tolerations, p.Spec.Engine.Tolerations[0]) {
		t.Errorf("tolerations = %v, want the GPU taint and the user's", pod.Tolerations)
	}
	sc := engine.SecurityContext
	if !ptr.Deref(sc.RunAsNonRoot, false) || ptr.Deref(sc.AllowPrivilegeEscalation, true) || !ptr.Deref(sc.ReadOnlyRootFilesystem, false) ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("engine security context is not restricted: %+v", sc)
	}
	if !ptr.Deref(pod.SecurityContext.RunAsNonRoot, false) || pod.SecurityContext.SeccompProfile == nil {
		t.Errorf("pod security context is not restricted: %+v", pod.SecurityContext)
	}
	if engine.LivenessProbe.HTTPGet.Path != "/healthz" || engine.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("probes = %s, %s; want /healthz and /readyz", engine.LivenessProbe.HTTPGet.Path, engine.ReadinessProbe.HTTPGet.Path)
	}
	mounts := map[string]string{}
	for _, m := range engine.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	for _, want := range []string{"config", "token", "pseudonymization-key", "data"} {
		if mounts[want] == "" {
			t.Errorf("engine has no %s mount (mounts %v)", want, mounts)
		}
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	if volumes["config"].ConfigMap == nil || volumes["config"].ConfigMap.Name != "deep-work-engine-config" {
		t.Errorf("config volume = %+v", volumes["config"])
	}
	if volumes["token"].Secret == nil || volumes["token"].Secret.SecretName != "deep-work-engine-token" {
		t.Errorf("token volume = %+v", volumes["token"])
	}
	if v := volumes["backup-token"]; v.Secret == nil || v.Secret.SecretName != "deep-work-engine-backup-token" {
		t.Errorf("backup-token volume = %+v", v)
	}
	if volumes["pseudonymization-key"].Secret == nil || volumes["pseudonymization-key"].Secret.SecretName != controllers.PseudonymizationKeySecretName {
		t.Errorf("key volume = %+v", volumes["pseudonymization-key"])
	}
	if d.Spec.Template.Annotations[controllers.ConfigHashKey] == "" {
		t.Error("pod template has no config hash")
	}
	if engine.Image != "example.test/engine:v1" {
		t.Errorf("image = %s, want the operator's default engine image", engine.Image)
	}

	// The ConfigMap holds a valid engine configuration without secrets.
	cm := &corev1.ConfigMap{}
	get(t, client.ObjectKey{Namespace: "office", Name: "deep-work-engine-config"}, cm)
	isOwned(cm)
	cfg, err := engineconfig.Parse([]byte(cm.Data[engineconfig.FileName]))
	if err != nil {
		t.Fatalf("rendered config does not parse: %v", err)
	}
	if cfg.Context != "Workplace" || cfg.Strength.Value != 0.5 || cfg.Privacy.MinCohortSize != 11 || cfg.Target.Attention != 0.8 {
		t.Errorf("rendered config = %+v", cfg)
	}

	// The token Secret has both tokens; the engine's ServiceAccount, Service.
	token := &corev1.Secret{}
	get(t, client.ObjectKey{Namespace: "office", Name: "deep-work-engine-token"}, token)
	isOwned(token)
	if len(token.Data[controllers.TokenKey]) == 0 || len(token.Data[controllers.ReadOnlyTokenKey]) == 0 || string(token.Data[controllers.TokenKey]) == string(token.Data[controllers.ReadOnlyTokenKey]) {
		t.Error("token secret must hold two different non-empty tokens")
	}
	// The backup token: its own Secret, 32 random bytes in hex, named in
	// the configuration by its mount path.
	backup := &corev1.Secret{}
	get(t, client.ObjectKey{Namespace: "office", Name: "deep-work-engine-backup-token"}, backup)
	isOwned(backup)
	if b := backup.Data[controllers.BackupTokenKey]; len(b) != 64 || string(b) == string(token.Data[controllers.TokenKey]) {
		t.Errorf("backup token %d bytes, want 64 hex digits of its own", len(b))
	}
	if cfg.BackupTokenFile != "/etc/attune/backup-token/token" {
		t.Errorf("backupTokenFile = %q", cfg.BackupTokenFile)
	}
	for _, secretText := range []string{string(token.Data[controllers.TokenKey]), string(token.Data[controllers.ReadOnlyTokenKey]), string(backup.Data[controllers.BackupTokenKey])} {
		if strings.Contains(cm.Data[engineconfig.FileName], secretText) {
			t.Error("the ConfigMap contains a token")
		}
	}
	sa := &corev1.ServiceAccount{}
	get(t, client.ObjectKey{Namespace: "office", Name: "deep-work-engine"}, sa)
	isOwned(sa)
	svc := &corev1.Service{}
	get(t, client.ObjectKey{Namespace: "office", Name: "deep-work-engine"}, svc)
	isOwned(svc)
	if svc.Spec.Ports[0].Port != 8080 || svc.Spec.Selector[controllers.LabelInstance] != "deep-work" {
		t.Errorf("service = %+v", svc.Spec)
	}
	// One replica: no disruption budget.
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "office", Name: "deep-work-engine"}, &policyv1.PodDisruptionBudget{}); !apierrors.IsNotFound(err) {
		t.Errorf("PDB for one replica (err=%v)", err)
	}

	get(t, client.ObjectKeyFromObject(p), p)
	if p.Status.GPUs != 2 || p.Status.Replicas != 1 || p.Status.Selector == "" || ptr.Deref(p.Status.Strength, -1) != 0.5 {
		t.Errorf("status = %+v", p.Status)
	}
}

func TestProgramModelSidecarTakesTheMIGRequest(t *testing.T) {
	setupWorld(t, "lecture", wellbeingv1alpha1.ContextEducation)
	p := newProgram("lecture", "exam-calm", "lecture")
	p.Spec.Engine.GPU = wellbeingv1alpha1.GPUSpec{Count: ptr.To[int32](1), ResourceName: "nvidia.com/mig-1g.10gb"}
	p.Spec.Engine.Model = &wellbeingv1alpha1.ModelSidecar{Image: "nvcr.io/nvidia/tritonserver:25.01", ModelName: "emotion", Port: 8000}
	create(t, p)
	d := waitDeployment(t, p)
	mig := corev1.ResourceName("nvidia.com/mig-1g.10gb")
	engine := engineContainer(t, d, "engine")
	if _, ok := engine.Resources.Limits[mig]; ok {
		t.Error("the engine container still requests the GPU")
	}
	model := engineContainer(t, d, "model")
	if q := model.Resources.Limits[mig]; q.Value() != 1 {
		t.Errorf("model sidecar MIG limit = %s, want 1", q.String())
	}
	if q := model.Resources.Requests[mig]; q.Value() != 1 {
		t.Errorf("model sidecar MIG request = %s, want 1", q.String())
	}
	if model.ReadinessProbe.HTTPGet.Path != "/v2/health/ready" || !ptr.Deref(model.SecurityContext.RunAsNonRoot, false) {
		t.Errorf("model sidecar probe or security context wrong: %+v", model)
	}
	cm := &corev1.ConfigMap{}
	get(t, client.ObjectKey{Namespace: "lecture", Name: "exam-calm-engine-config"}, cm)
	cfg, err := engineconfig.Parse([]byte(cm.Data[engineconfig.FileName]))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Model == nil || cfg.Model.URL != "http://127.0.0.1:8000" || cfg.Model.Name != "emotion" {
		t.Errorf("config model = %+v", cfg.Model)
	}
}

func TestProgramChildrenAreRestoredAfterDeleteOrEdit(t *testing.T) {
	ctx := context.Background()
	setupWorld(t, "drift", wellbeingv1alpha1.ContextSocial)
	p := newProgram("drift", "steady", "drift")
	p.Spec.Engine.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "attune", Effect: corev1.TaintEffectNoSchedule}}
	create(t, p)
	d := waitDeployment(t, p)
	waitReconciled(t, p)

	// Delete the Service: it comes back.
	svcKey := client.ObjectKey{Namespace: "drift", Name: "steady-engine"}
	svc := &corev1.Service{}
	get(t, svcKey, svc)
	if err := k8s.Delete(ctx, svc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "service restored", func() error {
		restored := &corev1.Service{}
		if err := k8s.Get(ctx, svcKey, restored); err != nil {
			return err
		}
		if restored.UID == svc.UID {
			return fmt.Errorf("still the old service")
		}
		return nil
	})

	// Edit the Deployment's replicas and drop its toleration: restored.
	d.Spec.Replicas = ptr.To[int32](7)
	d.Spec.Template.Spec.Tolerations = nil
	if err := k8s.Update(ctx, d); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deployment restored", func() error {
		get(t, client.ObjectKeyFromObject(d), d)
		if ptr.Deref(d.Spec.Replicas, 0) != 1 || len(d.Spec.Template.Spec.Tolerations) == 0 {
			return fmt.Errorf("replicas=%d tolerations=%v", ptr.Deref(d.Spec.Replicas, 0), d.Spec.Template.Spec.Tolerations)
		}
		return nil
	})

	// Edit the ConfigMap: restored.
	cm := &corev1.ConfigMap{}
	get(t, client.ObjectKey{Namespace: "drift", Name: "steady-engine-config"}, cm)
	original := cm.Data[engineconfig.FileName]
	cm.Data[engineconfig.FileName] = "{}"
	if err := k8s.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	eventually(t, "config restored", func() error {
		get(t, client.ObjectKeyFromObject(cm), cm)
		if cm.Data[engineconfig.FileName] != original {
			return fmt.Errorf("config = %q", cm.Data[engineconfig.FileName])
		}
		return nil
	})

	// Delete the token Secret: a new one is issued.
	token := &corev1.Secret{}
	get(t, client.ObjectKey{Namespace: "drift", Name: "steady-engine-token"}, token)
	if err := k8s.Delete(ctx, token); err != nil {
		t.Fatal(err)
	}
	eventually(t, "token reissued", func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: "drift", Name: "steady-engine-token"}, &corev1.Secret{})
	})
}

func TestConfigHashFollowsSpecButNotStrength(t *testing.T) {
	setupWorld(t, "hashes", wellbeingv1alpha1.ContextSocial)
	p := newProgram("hashes", "tuned", "hashes")
	p.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual
	create(t, p)
	d := waitDeployment(t, p)
	waitReconciled(t, p)
	hash := d.Spec.Template.Annotations[controllers.ConfigHashKey]
	template := d.Spec.Template.DeepCopy()

	// Strength only (Manual mode holds strength.initial): the ConfigMap
	// changes, the pod template does not.
	updateSpec(t, p, func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Strength.Initial = 0.7 })
	eventually(t, "strength in config", func() error {
		cm := &corev1.ConfigMap{}
		get(t, client.ObjectKey{Namespace: "hashes", Name: "tuned-engine-config"}, cm)
		var cfg engineconfig.Config
		if err := json.Unmarshal([]byte(cm.Data[engineconfig.FileName]), &cfg); err != nil {
			return err
		}
		if cfg.Strength.Value != 0.7 {
			return fmt.Errorf("strength in config = %v", cfg.Strength.Value)
		}
		return nil
	})
	waitReconciled(t, p)
	get(t, client.ObjectKeyFromObject(d), d)
	if d.Spec.Template.Annotations[controllers.ConfigHashKey] != hash {
		t.Errorf("a strength change changed the config hash")
	}
	if d.Spec.Template.String() != template.String() {
		t.Errorf("a strength change changed the pod template")
	}

	// A target change restarts pods through the hash.
	updateSpec(t, p, func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Target.Emotion = 0.9 })
	eventually(t, "new hash", func() error {
		get(t, client.ObjectKeyFromObject(d), d)
		if d.Spec.Template.Annotations[controllers.ConfigHashKey] == hash {
			return fmt.Errorf("hash unchanged")
		}
		return nil
	})
}

func TestProgramWithoutWorldOrInWrongNamespace(t *testing.T) {
	ctx := context.Background()
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "orphans"}})
	lost := newProgram("orphans", "lost", "atlantis")
	create(t, lost)
	eventually(t, "WorldNotFound", func() error {
		get(t, client.ObjectKeyFromObject(lost), lost)
		return conditionIs(lost.Status.Conditions, wellbeingv1alpha1.ConditionReady, metav1.ConditionFalse, wellbeingv1alpha1.ReasonWorldNotFound)
	})

	setupWorld(t, "elsewhere", wellbeingv1alpha1.ContextSocial)
	misplaced := newProgram("orphans", "misplaced", "elsewhere")
	create(t, misplaced)
	eventually(t, "WrongNamespace", func() error {
		get(t, client.ObjectKeyFromObject(misplaced), misplaced)
		return conditionIs(misplaced.Status.Conditions, wellbeingv1alpha1.ConditionReady, metav1.ConditionFalse, wellbeingv1alpha1.ReasonWrongNamespace)
	})
	for _, name := range []string{"lost-engine", "misplaced-engine"} {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: "orphans", Name: name}, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
			t.Errorf("%s exists although the world is unusable (err=%v)", name, err)
		}
	}

	// The missing world appears: the world watch re-evaluates the program,
	// which now learns it is in the wrong namespace.
	createWorld(t, newWorld("atlantis", "atlantis", wellbeingv1alpha1.ContextSocial))
	eventually(t, "lost program now points at a world in another namespace", func() error {
		get(t, client.ObjectKeyFromObject(lost), lost)
		return conditionIs(lost.Status.Conditions, wellbeingv1alpha1.ConditionReady, metav1.ConditionFalse, wellbeingv1alpha1.ReasonWrongNamespace)
	})
}

func TestMissingWorldAppearsLater(t *testing.T) {
	p := newProgram("latecomer", "early", "latecomer")
	w := newWorld("latecomer", "latecomer", wellbeingv1alpha1.ContextSocial)
	createWorld(t, w)
	// Delete the world object but keep its namespace alive (envtest runs no
	// garbage collector), then create the program: WorldNotFound.
	if err := k8s.Delete(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	create(t, p)
	eventually(t, "WorldNotFound", func() error {
		get(t, client.ObjectKeyFromObject(p), p)
		return conditionIs(p.Status.Conditions, wellbeingv1alpha1.ConditionReady, metav1.ConditionFalse, wellbeingv1alpha1.ReasonWorldNotFound)
	})
}

func TestSuspendScalesToZero(t *testing.T) {
	ctx := context.Background()
	setupWorld(t, "nightly", wellbeingv1alpha1.ContextSocial)
	p := newProgram("nightly", "sleepy", "nightly")
	sharedStore(p, "sleepy-postgres", 3)
	create(t, p)
	d := waitDeployment(t, p)
	pdbKey := client.ObjectKey{Namespace: "nightly", Name: "sleepy-engine"}
	eventually(t, "PDB for 3 replicas", func() error { return k8s.Get(ctx, pdbKey, &policyv1.PodDisruptionBudget{}) })

	updateSpec(t, p, func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Suspend = true })
	eventually(t, "suspended", func() error {
		get(t, client.ObjectKeyFromObject(d), d)
		if ptr.Deref(d.Spec.Replicas, -1) != 0 {
			return fmt.Errorf("replicas = %d", ptr.Deref(d.Spec.Replicas, -1))
		}
		get(t, client.ObjectKeyFromObject(p), p)
		if p.Status.GPUs != 0 {
			return fmt.Errorf("gpus = %d", p.Status.GPUs)
		}
		return conditionIs(p.Status.Conditions, wellbeingv1alpha1.ConditionSuspended, metav1.ConditionTrue, wellbeingv1alpha1.ReasonSuspended)
	})
	eventually(t, "PDB removed while suspended", func() error {
		if err := k8s.Get(ctx, pdbKey, &policyv1.PodDisruptionBudget{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still present (err=%v)", err)
		}
		return nil
	})

	updateSpec(t, p, func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Suspend = false })
	eventually(t, "resumed", func() error {
		get(t, client.ObjectKeyFromObject(d), d)
		if ptr.Deref(d.Spec.Replicas, -1) != 3 {
			return fmt.Errorf("replicas = %d", ptr.Deref(d.Spec.Replicas, -1))
		}
		return nil
	})
}

func TestScaleSubresourceAndAvailability(t *testing.T) {
	ctx := context.Background()
	setupWorld(t, "scaled", wellbeingv1alpha1.ContextSocial)
	p := newProgram("scaled", "elastic", "scaled")
	create(t, p)
	d := waitDeployment(t, p)
	waitReconciled(t, p)

	scale := &autoscalingv1.Scale{}
	if err := k8s.SubResource("scale").Get(ctx, p, scale); err != nil {
		t.Fatalf("get scale: %v", err)
	}
	if scale.Status.Selector == "" {
		t.Error("scale subresource has no selector")
	}
	// kubectl scale goes through the same schema: more than one replica
	// needs the shared store.
	scale.Spec.Replicas = 2
	err := k8s.SubResource("scale").Update(ctx, p, client.WithSubResourceBody(scale))
	if err == nil || !strings.Contains(err.Error(), "spec.engine.replicas above 1 needs a shared store") {
		t.Fatalf("scaling an embedded-store program to 2: err = %v, want the schema to refuse it", err)
	}
	// kubectl scale sets the replicas below
	updateSpec(t, p, func(p *wellbeingv1alpha1.MeditationProgram) { sharedStore(p, "elastic-postgres", 1) })
	if err := k8s.SubResource("scale").Get(ctx, p, scale); err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = 2
	if err := k8s.SubResource("scale").Update(ctx, p, client.WithSubResourceBody(scale)); err != nil {
		t.Fatalf("update scale: %v", err)
	}
	eventually(t, "scaled to 2", func() error {
		get(t, client.ObjectKeyFromObject(d), d)
		if ptr.Deref(d.Spec.Replicas, 0) != 2 {
			return fmt.Errorf("replicas = %d", ptr.Deref(d.Spec.Replicas, 0))
		}
		return nil
	})
	eventually(t, "waiting on the missing store Secret", func() error {
		get(t, client.ObjectKeyFromObject(p), p)
		return conditionIs(p.Status.Conditions, wellbeingv1alpha1.ConditionEngineAvailable, metav1.ConditionFalse, wellbeingv1alpha1.ReasonStoreSecretInvalid)
	})

	// envtest runs no Deployment controller: report availability ourselves.
	d.Status.Replicas, d.Status.ReadyReplicas, d.Status.AvailableReplicas, d.Status.ObservedGeneration = 2, 2, 2, d.Generation
	if err := k8s.Status().Update(ctx, d); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ready", func() error {
		get(t, client.ObjectKeyFromObject(p), p)
		if p.Status.ReadyReplicas != 2 {
			return fmt.Errorf("readyReplicas = %d", p.Status.ReadyReplicas)
		}
		return conditionIs(p.Status.Conditions, wellbeingv1alpha1.ConditionReady, metav1.ConditionTrue, wellbeingv1alpha1.ReasonAvailable)
	})
}

func TestDeletionLeavesNothingBehind(t *testing.T) {
	ctx := context.Background()
	setupWorld(t, "ephemeral", wellbeingv1alpha1.ContextSocial)
	p := newProgram("ephemeral", "brief", "ephemeral")
	create(t, p)
	waitDeployment(t, p)
	waitReconciled(t, p)
	if len(p.Finalizers) != 0 {
		t.Errorf("finalizers = %v, want none: ownership cleans up", p.Finalizers)
	}
	if err := k8s.Delete(ctx, p); err != nil {
		t.Fatal(err)
	}
	eventually(t, "program gone", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(p), &wellbeingv1alpha1.MeditationProgram{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still present (err=%v)", err)
		}
		return nil
	})
	// Every child names the program as its controlling owner, so the garbage
	// collector (absent in envtest) removes them; check that it could.
	for _, obj := range []client.Object{&appsv1.Deployment{}, &corev1.Service{}, &corev1.ConfigMap{}, &corev1.Secret{}, &corev1.ServiceAccount{}} {
		name := "brief-engine"
		switch obj.(type) {
		case *corev1.ConfigMap:
			name = "brief-engine-config"
		case *corev1.Secret:
			name = "brief-engine-token"
		}
		get(t, client.ObjectKey{Namespace: "ephemeral", Name: name}, obj)
		if ref := metav1.GetControllerOf(obj); ref == nil || ref.UID != p.UID {
			t.Errorf("%T %s is not controlled by the deleted program", obj, name)
		}
	}
	eventually(t, "world count drops", func() error {
		w := &wellbeingv1alpha1.VirtualWorld{}
		get(t, client.ObjectKey{Name: "ephemeral"}, w)
		if w.Status.Programs != 0 {
			return fmt.Errorf("programs = %d", w.Status.Programs)
		}
		return nil
	})
}

func TestSteadyStateMakesNoWrites(t *testing.T) {
	setupWorld(t, "quiet", wellbeingv1alpha1.ContextSocial)
	p := newProgram("quiet", "still", "quiet")
	create(t, p)
	d := waitDeployment(t, p)
	waitReconciled(t, p)
	time.Sleep(time.Second)
	get(t, client.ObjectKeyFromObject(d), d)
	get(t, client.ObjectKeyFromObject(p), p)
	deploymentVersion, programVersion := d.ResourceVersion, p.ResourceVersion
	consistently(t, "no writes in steady state", 3*time.Second, func() error {
		get(t, client.ObjectKeyFromObject(d), d)
		get(t, client.ObjectKeyFromObject(p), p)
		if d.ResourceVersion != deploymentVersion || p.ResourceVersion != programVersion {
			return fmt.Errorf("resource versions moved: deployment %s→%s, program %s→%s", deploymentVersion, d.ResourceVersion, programVersion, p.ResourceVersion)
		}
		return nil
	})
}

func TestManualPausedAndBoundsClamp(t *testing.T) {
	setupWorld(t, "modes", wellbeingv1alpha1.ContextSocial)
	p := newProgram("modes", "steady-hand", "modes")
	p.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual
	p.Spec.Strength = wellbeingv1alpha1.StrengthBounds{Initial: 0.3, Min: 0.1, Max: 0.9}
	create(t, p)
	strengthIs := func(want float64) {
		t.Helper()
		eventually(t, fmt.Sprintf("strength %.2f", want), func() error {
			get(t, client.ObjectKeyFromObject(p), p)
			if got := ptr.Deref(p.Status.Strength, -1); got != want || p.Status.ObservedGeneration != p.Generation {
				return fmt.Errorf("strength %.3f (generation %d/%d)", got, p.Status.ObservedGeneration, p.Generation)
			}
			return nil
		})
	}
	update := func(mutate func(*wellbeingv1alpha1.MeditationProgram)) {
		t.Helper()
		updateSpec(t, p, mutate)
	}
	strengthIs(0.3)
	if err := conditionIs(p.Status.Conditions, wellbeingv1alpha1.ConditionLossObserved, metav1.ConditionUnknown, wellbeingv1alpha1.ReasonTuningDisabled); err != nil {
		t.Error(err)
	}
	// Paused freezes the strength in force even when initial changes…
	update(func(p *wellbeingv1alpha1.MeditationProgram) {
		p.Spec.Tuning.Mode = wellbeingv1alpha1.TuningPaused
		p.Spec.Strength.Initial = 0.5
	})
	strengthIs(0.3)
	// …but a change of bounds clamps it at once.
	update(func(p *wellbeingv1alpha1.MeditationProgram) {
		p.Spec.Strength = wellbeingv1alpha1.StrengthBounds{Initial: 0.5, Min: 0.45, Max: 0.9}
	})
	strengthIs(0.45)
	// Manual puts strength.initial in force.
	update(func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual })
	strengthIs(0.5)
}
