package v1alpha1

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// WorldContext is the kind of virtual world a tenant runs. It decides what the
// engines may infer: in Workplace and Education worlds, emotion inference from
// physiological signals is off (EU AI Act, Art. 5(1)(f)).
// +kubebuilder:validation:Enum=Social;Entertainment;Workplace;Education;Health
type WorldContext string

const (
	ContextSocial        WorldContext = "Social"
	ContextEntertainment WorldContext = "Entertainment"
	ContextWorkplace     WorldContext = "Workplace"
	ContextEducation     WorldContext = "Education"
	ContextHealth        WorldContext = "Health"
)

// ProhibitsBiometricEmotion reports whether inferring emotions from biometric
// data is prohibited in this context (EU AI Act, Regulation 2024/1689,
// Art. 5(1)(f): workplaces and education institutions).
func (c WorldContext) ProhibitsBiometricEmotion() bool {
	return c == ContextWorkplace || c == ContextEducation
}

// VirtualWorldSpec declares one tenant.
type VirtualWorldSpec struct {
	// namespace is the namespace the operator creates and owns for this
	// tenant; every MeditationProgram of the world lives in it. It must be a
	// DNS label and cannot be changed after creation. The namespaces of
	// Kubernetes (kube-*), default, and the operator's own namespace are
	// refused (the last by the ValidatingAdmissionPolicy the chart ships,
	// since the schema cannot know where the operator runs).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.namespace is immutable"
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('kube-')",message="spec.namespace must not be a kube-* namespace: those belong to Kubernetes"
	// +kubebuilder:validation:XValidation:rule="self != 'default'",message="spec.namespace must not be default: a world gets a namespace of its own"
	Namespace string `json:"namespace"`

	// displayName is a human-readable name shown in tooling. Optional.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	DisplayName string `json:"displayName,omitempty"`

	// context is the kind of world: Social, Entertainment, Workplace,
	// Education or Health. Required: in Workplace and Education worlds the
	// engines refuse physiological signals for emotion inference.
	// Immutable: data gathered under one context (physiology in a Social
	// world) must not carry over into one that forbids it (Workplace, EU
	// AI Act Art. 5(1)(f)); create a new world for a new context.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.context is immutable: create a new VirtualWorld for another context"
	Context WorldContext `json:"context"`

	// gpuQuota caps the GPUs that all engines of this world may request.
	// Defaults to nvidia.com/gpu with no explicit limit.
	// +optional
	// +kubebuilder:default={}
	GPUQuota GPUQuota `json:"gpuQuota,omitempty"`

	// privacy holds the data-protection settings every engine of the world
	// applies. Defaults: 720h retention, minimum cohort size 11, an
	// operator-generated pseudonymization key.
	// +optional
	// +kubebuilder:default={}
	Privacy PrivacyPolicy `json:"privacy,omitempty"`

	// isolation controls network isolation of the world's namespace.
	// Default: a NetworkPolicy is created.
	// +optional
	// +kubebuilder:default={}
	Isolation Isolation `json:"isolation,omitempty"`

	// tls says who signs the engines' serving certificates (the engines
	// serve HTTPS only). Default: the operator's own CA for the world
	// (docs/tls.md).
	// +optional
	TLS *WorldTLS `json:"tls,omitempty"`
}

// GPUQuota caps the GPUs requested in a world's namespace.
type GPUQuota struct {
	// resourceName is the extended resource counted by the quota.
	// Default nvidia.com/gpu; MIG profiles such as nvidia.com/mig-1g.10gb are
	// accepted.
	// +optional
	// +kubebuilder:default="nvidia.com/gpu"
	// +kubebuilder:validation:Pattern=`^(nvidia\.com/(gpu|mig-[1-7]g\.[0-9]+gb(\.me)?)|amd\.com/gpu|gpu\.intel\.com/[a-z0-9]+)$`
	ResourceName string `json:"resourceName,omitempty"`

	// limit is the maximum number of GPUs the world's pods may request in
	// total. It is a pointer because unset (no ResourceQuota is created) and
	// zero (no GPUs at all) mean different things.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Limit *int32 `json:"limit,omitempty"`
}

// DefaultRetention is the retention applied when privacy.retention is unset.
const DefaultRetention = 720 * time.Hour

// RetentionOrDefault returns the retention in force.
func (p PrivacyPolicy) RetentionOrDefault() time.Duration {
	if p.Retention == nil {
		return DefaultRetention
	}
	return p.Retention.Duration
}

// PrivacyPolicy is the data-protection policy of a world.
type PrivacyPolicy struct {
	// retention is how long the engines keep a user's data after the user
	// was last seen; a background sweep deletes older data. Default 720h.
	// +optional
	// +kubebuilder:default="720h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m')",message="spec.privacy.retention must be at least 1m"
	// A pointer so that an unset retention is omitted and defaulted by the
	// API server rather than sent as 0s.
	Retention *metav1.Duration `json:"retention,omitempty"`

	// minCohortSize is the k of k-anonymity: aggregates are published only
	// over at least this many users. Default 11, never below 2.
	// +optional
	// +kubebuilder:default=11
	// +kubebuilder:validation:Minimum=2
	MinCohortSize int32 `json:"minCohortSize,omitempty"`

	// pseudonymizationKeyRef selects the Secret key (in the world's namespace)
	// holding the HMAC key that pseudonymizes user IDs before storage. A
	// pointer because absence is meaningful: the operator then generates a
	// key Secret in the world's namespace and never rotates it.
	// +optional
	PseudonymizationKeyRef *corev1.SecretKeySelector `json:"pseudonymizationKeyRef,omitempty"`

	// keyEncryptionKeySecretRef names a Secret in the world's namespace
	// holding the key-encryption keys (KEKs) that wrap each user's data
	// key: one key per KEK (32 bytes, raw or base64) named by its ID, and
	// "primary" naming the one that wraps new data keys. Unset: the
	// operator generates the Secret attune-key-encryption-key with one KEK
	// and never rewrites it. Rotate by adding a KEK, then pointing
	// "primary" at it; engines re-wrap their data keys without a restart
	// (docs/data-protection.md).
	// +optional
	KeyEncryptionKeySecretRef *corev1.LocalObjectReference `json:"keyEncryptionKeySecretRef,omitempty"`
}

// Isolation is the network isolation of a world.
type Isolation struct {
	// networkPolicy, when true, creates a NetworkPolicy in the world's
	// namespace that admits ingress only from that namespace and from the
	// operator's namespace. A pointer so that an explicit false is kept
	// apart from unset (which defaults to true).
	// +optional
	// +kubebuilder:default=true
	NetworkPolicy *bool `json:"networkPolicy,omitempty"`

	// monitoringNamespaces may reach every engine of the world on its API
	// port (GET /metrics with a metrics-scoped client token), whatever its
	// program's clients. Default: none.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	MonitoringNamespaces []string `json:"monitoringNamespaces,omitempty"`
}

// VirtualWorldStatus is the observed state of a world.
type VirtualWorldStatus struct {
	// observedGeneration is the generation this status was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready is True when the namespace, quota, key Secret and
	// network policy are in place.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// programs is the number of MeditationPrograms in the world's namespace.
	// +optional
	Programs int32 `json:"programs,omitempty"`

	// gpusRequested is the number of GPUs the world's programs request.
	// +optional
	GPUsRequested int32 `json:"gpusRequested,omitempty"`

	// gpuQuotaLimit is spec.gpuQuota.limit in force (unset: no quota).
	// +optional
	GPUQuotaLimit *int32 `json:"gpuQuotaLimit,omitempty"`

	// gpusInUse is the GPUs requested by the namespace's admitted pods, as
	// the ResourceQuota counts them.
	// +optional
	GPUsInUse int32 `json:"gpusInUse,omitempty"`
}

// VirtualWorld is a tenant of the platform: its namespace, GPU quota,
// privacy policy and context.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=vw,categories=attune
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.spec.namespace`
// +kubebuilder:printcolumn:name="Context",type=string,JSONPath=`.spec.context`
// +kubebuilder:printcolumn:name="Programs",type=integer,JSONPath=`.status.programs`
// +kubebuilder:printcolumn:name="GPUs",type=integer,JSONPath=`.status.gpusRequested`
// +kubebuilder:printcolumn:name="Quota",type=integer,JSONPath=`.status.gpuQuotaLimit`
// +kubebuilder:printcolumn:name="In-Use",type=integer,JSONPath=`.status.gpusInUse`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VirtualWorld struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec   VirtualWorldSpec   `json:"spec"`
	Status VirtualWorldStatus `json:"status,omitempty"`
}

// VirtualWorldList is a list of VirtualWorlds.
// +kubebuilder:object:root=true
type VirtualWorldList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualWorld `json:"items"`
}
