package controllers

import (
	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/engine/contract"
)

// FieldOwner is the server-side-apply field manager of every object the
// operator writes.
const FieldOwner = "attune-operator"

// Label keys and values shared by all children.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelComponent = "app.kubernetes.io/component"
	LabelWorld     = "wellbeing.attune.io/world"
	LabelProgram   = "wellbeing.attune.io/program"
	ManagedByValue = "attune-operator"
	EngineAppName  = "attune-engine"
	ConfigHashKey  = "wellbeing.attune.io/config-hash"
	// StoreSecretHashKey on the pod template rolls the engines when the
	// PostgreSQL Secret changes (rotated credentials): they connect at start.
	StoreSecretHashKey = "wellbeing.attune.io/store-secret-hash"
	GPUProductLabel    = "nvidia.com/gpu.product"
	GPUTaintKey        = "nvidia.com/gpu"
	// AMDGPUTaintKey is the taint of AMD GPU nodes (amd.com/gpu resources).
	AMDGPUTaintKey  = "amd.com/gpu"
	worldIndexField = "spec.worldRef.name"
	// enginePodIndexField indexes cached engine pods by program (the
	// value of their LabelInstance).
	enginePodIndexField = "attune.engine.program"
	engineHTTPPort      = 8080
	engineHTTPPortStr   = "http"
)

// Names of a world's children.
const (
	PseudonymizationKeySecretName = "attune-pseudonymization-key"
	// KeyEncryptionKeySecretName is the world's keyring: the KEKs that
	// wrap the users' data keys (contract.KeyringPrimaryKey names the
	// primary one).
	KeyEncryptionKeySecretName = "attune-key-encryption-key"
	// FirstKEKID names the KEK the operator generates with the keyring.
	FirstKEKID                   = "kek-1"
	PseudonymizationKeySecretKey = contract.PseudonymizationKeyKey
	GPUQuotaName                 = "attune-gpu-quota"
	NetworkPolicyName            = "attune-isolation"
)

// Keys of the engine token Secret: the contract's, named here too for the
// operator's callers.
const (
	TokenKey         = contract.TokenKey
	ReadOnlyTokenKey = contract.ReadOnlyTokenKey
	// BackupTokenKey is the key of the token in the backup token Secret.
	BackupTokenKey = "token"
)

// Paths inside the engine container.
const (
	configMountPath = "/etc/attune/config"
	tokenMountPath  = "/etc/attune/token"
	// backupTokenMountPath holds the backup-only token (BackupTokenSecretName).
	backupTokenMountPath = "/etc/attune/backup-token"
	keyMountPath         = "/etc/attune/key"
	// kekMountPath holds the world's keyring, the whole Secret (so that a
	// rotation reaches running engines).
	kekMountPath = "/etc/attune/kek"
	// postgresMountPath holds the PostgreSQL store's Secret, one file per key.
	postgresMountPath = "/etc/attune/postgres"
	dataMountPath     = "/var/lib/attune"
	tmpMountPath      = "/tmp"
	// Paths inside the model sidecar: the model (a claim, read-only, where
	// KServe and MLServer look by default), writable caches and shared
	// memory.
	modelMountPath = "/mnt/models"
	modelCachePath = "/var/cache/model"
	shmMountPath   = "/dev/shm"
)

// engineName is the name of a program's Deployment, Service, ServiceAccount,
// and the prefix of its ConfigMap and Secret.
func engineName(p *wellbeingv1alpha1.MeditationProgram) string { return p.Name + "-engine" }

func engineConfigName(p *wellbeingv1alpha1.MeditationProgram) string {
	return p.Name + "-engine-config"
}

func engineTokenName(p *wellbeingv1alpha1.MeditationProgram) string {
	return p.Name + "-engine-token"
}

// BackupTokenSecretName is the Secret holding the token with only the
// engines' backup scope: for the platform team's backup jobs, never for
// world apps (docs/operations.md).
func BackupTokenSecretName(p *wellbeingv1alpha1.MeditationProgram) string {
	return p.Name + "-engine-backup-token"
}

// engineDataClaimName is the PersistentVolumeClaim of the Embedded store.
func engineDataClaimName(p *wellbeingv1alpha1.MeditationProgram) string {
	return p.Name + "-engine-data"
}

// EngineSelectorLabels select a program's engine pods. They never change for
// the life of a program (a Deployment selector is immutable).
func EngineSelectorLabels(p *wellbeingv1alpha1.MeditationProgram) map[string]string {
	return map[string]string{
		LabelName:     EngineAppName,
		LabelInstance: p.Name,
	}
}

// engineLabels are the labels of every object belonging to a program.
func engineLabels(p *wellbeingv1alpha1.MeditationProgram) map[string]string {
	l := EngineSelectorLabels(p)
	l[LabelManagedBy] = ManagedByValue
	l[LabelComponent] = "engine"
	l[LabelProgram] = p.Name
	l[LabelWorld] = p.Spec.WorldRef.Name
	return l
}

// worldLabels are the labels of every object belonging to a world.
func worldLabels(w *wellbeingv1alpha1.VirtualWorld) map[string]string {
	return map[string]string{
		LabelManagedBy: ManagedByValue,
		LabelWorld:     w.Name,
	}
}

// worldKEKSecret returns the name of the Secret holding the world's
// key-encryption keys: the user's reference, or the generated one.
func worldKEKSecret(w *wellbeingv1alpha1.VirtualWorld) string {
	if ref := w.Spec.Privacy.KeyEncryptionKeySecretRef; ref != nil {
		return ref.Name
	}
	return KeyEncryptionKeySecretName
}

// worldKeySecret returns the Secret name and key holding the world's
// pseudonymization key: the user's reference, or the generated one.
func worldKeySecret(w *wellbeingv1alpha1.VirtualWorld) (name, key string) {
	if ref := w.Spec.Privacy.PseudonymizationKeyRef; ref != nil {
		return ref.Name, ref.Key
	}
	return PseudonymizationKeySecretName, PseudonymizationKeySecretKey
}
