package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"path"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	engineconfig "github.com/attune-io/attune/engine/config"
)

// engineUID is the non-root user the engine and model containers run as.
const engineUID = 65532

// renderEngineConfig is the engine's configuration file for a program, with
// the strength in force. It holds no secrets: tokens and keys are files
// mounted from Secrets, referenced here by path.
func renderEngineConfig(p *wellbeingv1alpha1.MeditationProgram, w *wellbeingv1alpha1.VirtualWorld, strength float64) *engineconfig.Config {
	cfg := &engineconfig.Config{
		Program:                 p.Namespace + "/" + p.Name,
		Target:                  engineconfig.Vector{Attention: p.Spec.Target.Attention, Emotion: p.Spec.Target.Emotion, Resilience: p.Spec.Target.Resilience},
		Weights:                 engineconfig.Vector{Attention: p.Spec.Weights.Attention, Emotion: p.Spec.Weights.Emotion, Resilience: p.Spec.Weights.Resilience},
		Strength:                engineconfig.Strength{Value: strength, Min: p.Spec.Strength.Min, Max: p.Spec.Strength.Max},
		Context:                 string(w.Spec.Context),
		Privacy:                 engineconfig.Privacy{Retention: engineconfig.Duration{Duration: w.Spec.Privacy.RetentionOrDefault()}, MinCohortSize: minCohortSize(w)},
		TokenFile:               path.Join(tokenMountPath, TokenKey),
		ReadOnlyTokenFile:       path.Join(tokenMountPath, ReadOnlyTokenKey),
		BackupTokenFile:         path.Join(backupTokenMountPath, BackupTokenKey),
		PseudonymizationKeyFile: path.Join(keyMountPath, PseudonymizationKeySecretKey),
		KeyEncryptionKeyDir:     kekMountPath,
		ClientTokensFile:        path.Join(clientsMountPath, ClientsFileKey), // always: see withAccessVolumes
		UserTokenKeyFile:        path.Join(userTokenKeyMountPath, UserTokenKeyKey),
		DataDir:                 dataMountPath,
		ListenAddress:           fmt.Sprintf(":%d", engineHTTPPort),
		// HTTPS only, with the program's serving certificate (a mounted
		// Secret the engine re-reads: renewals need no restart).
		TLS: &engineconfig.TLS{CertFile: path.Join(tlsMountPath, corev1.TLSCertKey), KeyFile: path.Join(tlsMountPath, corev1.TLSPrivateKeyKey)},
	}
	for _, iv := range p.Spec.Interventions {
		cfg.Interventions = append(cfg.Interventions, string(iv))
	}
	cfg.Dose = engineDose(p.Spec.Dose)
	cfg.Estimation = engineEstimation(p.Spec.Estimation)
	cfg.Model = engineModel(p.Spec.Engine.Model)
	cfg.Consent = engineconfig.ConsentPolicy{PolicyVersion: p.Spec.Consent.PolicyVersion, RequireReconsent: p.Spec.Consent.RequireReconsent}
	if usesPostgres(p) {
		cfg.Store = engineconfig.Store{Type: engineconfig.StorePostgreSQL, Postgres: &engineconfig.PostgresStore{SecretDir: postgresMountPath}}
	}
	return cfg
}

// engineDose is spec.dose as the engine reads it. The API server defaults
// every field (also, when read, in objects stored before spec.dose
// existed); one still unset, as in a program built in Go that never went
// through the API server, is left out and the engine applies the same
// defaults. A cooldown of 0s is kept: it means no cooldown, not the
// default.
func engineDose(d wellbeingv1alpha1.Dose) engineconfig.Dose {
	out := engineconfig.Dose{MaxPerDay: int(d.MaxPerDay)}
	if d.Cooldown != nil {
		out.Cooldown = &engineconfig.Duration{Duration: d.Cooldown.Duration}
	}
	if d.OutcomeWindow != nil {
		out.OutcomeWindow = engineconfig.Duration{Duration: d.OutcomeWindow.Duration}
	}
	return out
}

// engineEstimation is spec.estimation as the engine reads it; as with
// spec.dose, a field still unset (a program that never went through the
// API server) is left out and the engine applies the same default.
func engineEstimation(e wellbeingv1alpha1.Estimation) engineconfig.Estimation {
	var out engineconfig.Estimation
	for _, f := range []struct {
		from *metav1.Duration
		to   *engineconfig.Duration
	}{{e.StateDecay, &out.StateDecay}, {e.TraitDecay, &out.TraitDecay}, {e.StressRecovery, &out.StressRecovery}} {
		if f.from != nil {
			f.to.Duration = f.from.Duration
		}
	}
	return out
}

// usesPostgres reports whether the program's engines share a PostgreSQL store.
func usesPostgres(p *wellbeingv1alpha1.MeditationProgram) bool {
	return p.Spec.Engine.Store.Type == wellbeingv1alpha1.StorePostgreSQL && p.Spec.Engine.Store.Postgres != nil
}

// storeVolume is the claim the Embedded store asks for: embedded.volume,
// or by default DefaultStoreVolumeSize on the default StorageClass; nil
// for an emptyDir (embedded.ephemeral) or the PostgreSQL store.
func storeVolume(p *wellbeingv1alpha1.MeditationProgram) *wellbeingv1alpha1.StoreVolume {
	if usesPostgres(p) {
		return nil
	}
	if e := p.Spec.Engine.Store.Embedded; e != nil {
		if e.Ephemeral {
			return nil
		}
		if e.Volume != nil {
			return e.Volume
		}
	}
	return &wellbeingv1alpha1.StoreVolume{Size: resource.MustParse(wellbeingv1alpha1.DefaultStoreVolumeSize)}
}

// explicitStoreVolume reports whether the program sizes its claim itself.
func explicitStoreVolume(p *wellbeingv1alpha1.MeditationProgram) bool {
	return p.Spec.Engine.Store.Embedded != nil && p.Spec.Engine.Store.Embedded.Volume != nil
}

// engineDataClaim is the Embedded store's PersistentVolumeClaim.
func engineDataClaim(p *wellbeingv1alpha1.MeditationProgram, v *wellbeingv1alpha1.StoreVolume) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: engineDataClaimName(p), Namespace: p.Namespace, Labels: engineLabels(p)},
		Spec: corev1.PersistentVolumeClaimSpec{
			// One engine pod mounts it at a time (the Embedded store allows
			// one replica, and the Deployment recreates rather than rolls).
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: v.Size}},
			StorageClassName: v.StorageClassName,
		},
	}
}

// desiredReplicas is the engine replica count: zero while suspended.
func desiredReplicas(p *wellbeingv1alpha1.MeditationProgram) int32 {
	if p.Spec.Suspend {
		return 0
	}
	return ptr.Deref(p.Spec.Engine.Replicas, 1)
}

// gpuPerPod is the GPU resource and the number of it each engine pod
// requests, all on the model sidecar: spec.engine.gpu.count (default 1)
// when a sidecar runs, none otherwise. The engine container runs on the
// CPU.
func gpuPerPod(p *wellbeingv1alpha1.MeditationProgram) (corev1.ResourceName, int32) {
	name := p.Spec.Engine.GPU.ResourceName
	if name == "" {
		name = "nvidia.com/gpu"
	}
	if !runsModelSidecar(p) {
		return corev1.ResourceName(name), 0
	}
	return corev1.ResourceName(name), max(ptr.Deref(p.Spec.Engine.GPU.Count, 1), 0)
}

// restrictedContainerSecurity satisfies Pod Security "restricted".
func restrictedContainerSecurity() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsNonRoot:             ptr.To(true),
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// withGPU returns resources with count GPUs of name in requests and limits
// (extended resources must be equal in both).
func withGPU(base corev1.ResourceRequirements, name corev1.ResourceName, count int32) corev1.ResourceRequirements {
	out := *base.DeepCopy()
	if count <= 0 {
		return out
	}
	q := *resource.NewQuantity(int64(count), resource.DecimalSI)
	if out.Requests == nil {
		out.Requests = corev1.ResourceList{}
	}
	if out.Limits == nil {
		out.Limits = corev1.ResourceList{}
	}
	out.Requests[name], out.Limits[name] = q, q
	return out
}

func httpProbe(path, port string, period int32) *corev1.Probe {
	return &corev1.Probe{
		// HTTPS: the engines serve nothing else (a kubelet does not verify
		// a probe's certificate).
		ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString(port), Scheme: corev1.URISchemeHTTPS}},
		PeriodSeconds:    period,
		TimeoutSeconds:   2,
		FailureThreshold: 3,
	}
}

// engineDeployment is the program's engine Deployment. configHash goes on the
// pod template so that configuration changes that need a restart roll the
// pods; the strength is not part of it.
func engineDeployment(p *wellbeingv1alpha1.MeditationProgram, w *wellbeingv1alpha1.VirtualWorld, image, configHash string) *appsv1.Deployment {
	labels := engineLabels(p)
	gpuName, gpuCount := gpuPerPod(p)
	spec := p.Spec.Engine
	keySecret, keyKey := worldKeySecret(w)

	if spec.Image != "" {
		image = spec.Image
	}
	containers := []corev1.Container{{
		Name:            "engine",
		Image:           image,
		Args:            []string{"--config=" + path.Join(configMountPath, engineconfig.FileName)},
		Ports:           []corev1.ContainerPort{{Name: engineHTTPPortStr, ContainerPort: engineHTTPPort, Protocol: corev1.ProtocolTCP}},
		Resources:       withDefaultRequests(spec.Resources, engineDefaultRequests),
		LivenessProbe:   httpProbe("/healthz", engineHTTPPortStr, 10),
		ReadinessProbe:  httpProbe("/readyz", engineHTTPPortStr, 5),
		SecurityContext: restrictedContainerSecurity(),
		VolumeMounts: []corev1.VolumeMount{
			{Name: "config", MountPath: configMountPath, ReadOnly: true},
			{Name: "token", MountPath: tokenMountPath, ReadOnly: true},
			{Name: "backup-token", MountPath: backupTokenMountPath, ReadOnly: true},
			{Name: "pseudonymization-key", MountPath: keyMountPath, ReadOnly: true},
			{Name: "key-encryption-key", MountPath: kekMountPath, ReadOnly: true},
			{Name: "tls", MountPath: tlsMountPath, ReadOnly: true},
			{Name: "data", MountPath: dataMountPath},
			{Name: "tmp", MountPath: tmpMountPath},
		},
	}}
	var modelVolumes []corev1.Volume
	if runsModelSidecar(p) {
		model, volumes := modelSidecar(spec.Model, gpuName, gpuCount)
		containers = append(containers, model)
		modelVolumes = volumes
	}

	// The strategy is always spelled out: the operator then owns its type
	// and rollingUpdate, so server-side apply sets and removes them when the
	// strategy switches (dropRollingUpdate covers a rollingUpdate that is not
	// ours alone). A claim or GPUs make it Recreate or surge-free.
	strategy := engineStrategy(p, gpuCount)
	// The embedded store's file: an emptyDir survives container restarts,
	// not the pod's replacement; a claim survives both (docs/scale-out.md).
	data := corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
	if storeVolume(p) != nil {
		data = corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: engineDataClaimName(p)}}
	}

	volumes := []corev1.Volume{
		{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: engineConfigName(p)}}}},
		{Name: "token", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: engineTokenName(p)}}},
		// Mounted by name, like the token Secret: its content is in no
		// hash, so issuing it restarts nothing.
		{Name: "backup-token", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: BackupTokenSecretName(p)}}},
		{Name: "pseudonymization-key", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: keySecret, Items: []corev1.KeyToPath{{Key: keyKey, Path: PseudonymizationKeySecretKey}},
		}}},
		// The whole keyring, not items: a rotation adds keys, and a
		// directory mount follows the Secret's changes.
		{Name: "key-encryption-key", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: worldKEKSecret(w)}}},
		// The serving certificate, a directory mount (never subPath) so
		// that a renewed Secret reaches the running engines.
		{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: engineTLSSecretName(p)}}},
		{Name: "data", VolumeSource: data},
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	volumes, containers[0].VolumeMounts = withAccessVolumes(p, volumes, containers[0].VolumeMounts)
	volumes = append(volumes, modelVolumes...)

	if usesPostgres(p) {
		volumes = append(volumes, corev1.Volume{Name: "postgres", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: spec.Store.Postgres.SecretRef.Name,
		}}})
		containers[0].VolumeMounts = append(containers[0].VolumeMounts, corev1.VolumeMount{Name: "postgres", MountPath: postgresMountPath, ReadOnly: true})
	}

	nodeSelector := maps.Clone(spec.NodeSelector)
	// A pod without GPUs (no model) must not be pinned to GPU nodes,
	// whose taint it does not tolerate either.
	if spec.GPU.Product != "" && gpuCount > 0 {
		if nodeSelector == nil {
			nodeSelector = map[string]string{}
		}
		nodeSelector[GPUProductLabel] = spec.GPU.Product
	}
	tolerations := append([]corev1.Toleration(nil), spec.Tolerations...)
	if gpuCount > 0 {
		tolerations = append(tolerations, corev1.Toleration{Key: gpuTolerationKey(gpuName), Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule})
	}

	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: engineName(p), Namespace: p.Namespace, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(desiredReplicas(p)),
			Selector: &metav1.LabelSelector{MatchLabels: EngineSelectorLabels(p)},
			Strategy: strategy,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{ConfigHashKey: configHash}},
				Spec: corev1.PodSpec{
					ServiceAccountName:           engineName(p),
					AutomountServiceAccountToken: ptr.To(false), // the engine never talks to the API server
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						RunAsUser:      ptr.To[int64](engineUID),
						RunAsGroup:     ptr.To[int64](engineUID),
						FSGroup:        ptr.To[int64](engineUID),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers:        containers,
					NodeSelector:      nodeSelector,
					Tolerations:       tolerations,
					Affinity:          spec.Affinity,
					PriorityClassName: spec.PriorityClassName,
					RuntimeClassName:  spec.GPU.RuntimeClassName,
					Volumes:           volumes,
				},
			},
		},
	}
}

// engineServiceAccount is the engines' identity; they never call the API
// server, so no token is mounted.
func engineServiceAccount(p *wellbeingv1alpha1.MeditationProgram) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		ObjectMeta:                   metav1.ObjectMeta{Name: engineName(p), Namespace: p.Namespace, Labels: engineLabels(p)},
		AutomountServiceAccountToken: ptr.To(false),
	}
}

// engineTokenSecret holds the engine's read-write and read-only API tokens.
func engineTokenSecret(p *wellbeingv1alpha1.MeditationProgram, readWrite, readOnly string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: engineTokenName(p), Namespace: p.Namespace, Labels: engineLabels(p)},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{TokenKey: []byte(readWrite), ReadOnlyTokenKey: []byte(readOnly)},
	}
}

// backupTokenSecret holds the engines' backup-only token.
func backupTokenSecret(p *wellbeingv1alpha1.MeditationProgram, token string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: BackupTokenSecretName(p), Namespace: p.Namespace, Labels: engineLabels(p)},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{BackupTokenKey: []byte(token)},
	}
}

// engineConfigMap holds the rendered engine configuration; it also returns
// the configuration's restart hash for the pod template.
func engineConfigMap(p *wellbeingv1alpha1.MeditationProgram, w *wellbeingv1alpha1.VirtualWorld, strength float64) (*corev1.ConfigMap, string, error) {
	cfg := renderEngineConfig(p, w, strength)
	data, err := cfg.Render()
	if err != nil {
		return nil, "", err
	}
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: engineConfigName(p), Namespace: p.Namespace, Labels: engineLabels(p)},
		Data:       map[string]string{engineconfig.FileName: string(data)},
	}, cfg.RestartHash(), nil
}

func engineService(p *wellbeingv1alpha1.MeditationProgram) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: engineName(p), Namespace: p.Namespace, Labels: engineLabels(p)},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: EngineSelectorLabels(p),
			// The port keeps its name "http" (clients and policies name
			// it); appProtocol says it speaks HTTPS (KEP-3726's
			// convention, read by ingress controllers and meshes).
			Ports: []corev1.ServicePort{{Name: engineHTTPPortStr, Port: engineHTTPPort, TargetPort: intstr.FromString(engineHTTPPortStr), Protocol: corev1.ProtocolTCP, AppProtocol: ptr.To("https")}},
		},
	}
}

func enginePDB(p *wellbeingv1alpha1.MeditationProgram) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: engineName(p), Namespace: p.Namespace, Labels: engineLabels(p)},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: ptr.To(intstr.FromInt32(1)),
			Selector:       &metav1.LabelSelector{MatchLabels: EngineSelectorLabels(p)},
		},
	}
}

// minCohortSize is the world's k-anonymity threshold; the API server defaults
// it to 11, and a Go client that sends 0 gets the same.
func minCohortSize(w *wellbeingv1alpha1.VirtualWorld) int {
	if w.Spec.Privacy.MinCohortSize < 2 {
		return 11
	}
	return int(w.Spec.Privacy.MinCohortSize)
}

// EngineChildren returns the objects the operator writes for a program, as a
// plain client would create them (benchmarks compare the two).
func EngineChildren(p *wellbeingv1alpha1.MeditationProgram, w *wellbeingv1alpha1.VirtualWorld, image string) ([]client.Object, error) {
	cm, hash, err := engineConfigMap(p, w, StrengthInForce(p))
	if err != nil {
		return nil, err
	}
	children := []client.Object{
		engineServiceAccount(p),
		cm,
		engineTokenSecret(p, "benchmark-read-write-token", "benchmark-read-only-token"),
		backupTokenSecret(p, "benchmark-backup-token"),
		tuningTokenSecret(p, "benchmark-tuning-token"),
		engineDeployment(p, w, image, hash),
		engineService(p),
	}
	children = append(children, accessChildren(p, w)...)
	if desiredReplicas(p) > 1 {
		children = append(children, enginePDB(p))
	}
	if v := storeVolume(p); v != nil {
		children = append(children, engineDataClaim(p, v))
	}
	return children, nil
}

// secretDigest is a short digest of a Secret's data (sorted keys), so the
// pod template changes when the data does without revealing it.
func secretDigest(data map[string][]byte) string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(data)) {
		fmt.Fprintf(h, "%d:%s=%d:", len(k), k, len(data[k]))
		h.Write(data[k])
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// minPositive is the smaller of two durations, ignoring zeros (no requeue).
func minPositive(a, b time.Duration) time.Duration {
	if a <= 0 || (b > 0 && b < a) {
		return b
	}
	return a
}
