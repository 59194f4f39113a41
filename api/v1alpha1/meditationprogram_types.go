package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Intervention is one kind of attention-meditation intervention an engine may
// recommend.
// +kubebuilder:validation:Enum=FocusedAttention;ResonanceBreathing;BodyScan;CognitiveReappraisal;MicroBreak;ResilienceTraining
type Intervention string

const (
	FocusedAttention     Intervention = "FocusedAttention"
	ResonanceBreathing   Intervention = "ResonanceBreathing"
	BodyScan             Intervention = "BodyScan"
	CognitiveReappraisal Intervention = "CognitiveReappraisal"
	MicroBreak           Intervention = "MicroBreak"
	ResilienceTraining   Intervention = "ResilienceTraining"
)

// TuningMode says who sets the intervention strength in force.
// +kubebuilder:validation:Enum=Auto;Manual;Paused
type TuningMode string

const (
	// TuningAuto lets the operator search for the strength that minimises
	// the cohort loss.
	TuningAuto TuningMode = "Auto"
	// TuningManual holds strength.initial in force.
	TuningManual TuningMode = "Manual"
	// TuningPaused freezes the strength currently in force.
	TuningPaused TuningMode = "Paused"
)

// LossSourceType is where the operator reads a program's cohort loss.
// +kubebuilder:validation:Enum=Engine;Prometheus
type LossSourceType string

const (
	LossSourceEngine     LossSourceType = "Engine"
	LossSourcePrometheus LossSourceType = "Prometheus"
)

// MeditationProgramSpec declares an attention-meditation program for one world.
// +kubebuilder:validation:XValidation:rule="!has(self.tuning) || !has(self.tuning.source) || self.tuning.source.type != 'Prometheus' || (has(self.tuning.source.prometheus) && has(self.tuning.source.prometheus.address))",message="spec.tuning.source.prometheus.address is required when spec.tuning.source.type is Prometheus"
type MeditationProgramSpec struct {
	// worldRef names the VirtualWorld this program belongs to. The program
	// must live in that world's namespace; otherwise it gets no children and
	// Ready=False with reason WrongNamespace.
	// +required
	WorldRef WorldReference `json:"worldRef"`

	// target is the ideal state s* the program steers users toward; each
	// dimension is in [0,1].
	// +required
	Target StateVector `json:"target"`

	// weights are the per-dimension weights w of the loss
	// L = Σ w·(s − s*)² / Σ w. Each ≥ 0 and not all zero; each defaults to 1.
	// +optional
	// +kubebuilder:default={attention:1,emotion:1,resilience:1}
	Weights Weights `json:"weights,omitempty"`

	// interventions is the set of interventions the engines may recommend;
	// at least one, no duplicates.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=6
	Interventions []Intervention `json:"interventions"`

	// strength bounds the intervention strength: min ≤ initial ≤ max, all in
	// [0,1]. Defaults: initial 0.5, min 0.1, max 0.9.
	// +optional
	// +kubebuilder:default={initial:0.5,min:0.1,max:0.9}
	Strength StrengthBounds `json:"strength,omitempty"`

	// tuning configures how the strength in force is chosen. Default: Auto
	// every 60s, at most 0.05 per step, from the engines' own cohort loss.
	// +optional
	// +kubebuilder:default={}
	Tuning Tuning `json:"tuning,omitempty"`

	// dose limits how often each user is offered an intervention and sets
	// how long after a decision its outcome is measured. Default: at most 6
	// interventions a user in 24 hours, at least 1h apart, outcomes
	// measured over 10m.
	// +optional
	// +kubebuilder:default={}
	Dose Dose `json:"dose,omitempty"`

	// estimation sets the time constants of the engines' state estimation.
	// Default: attention and emotion evidence decays with τ = 30m,
	// resilience evidence with τ = 336h (14 days), and a stress episode's
	// recovery is scored against τ = 10m. A world whose users live on
	// another time scale (a simulated cohort in accelerated time) shortens
	// them; changing them rolls the engine pods.
	// +optional
	// +kubebuilder:default={}
	Estimation Estimation `json:"estimation,omitempty"`

	// consent is what the engines demand of a user's consent. Default: no
	// policy version (consent requests need not name one) and no
	// re-consent.
	// +optional
	Consent ConsentPolicy `json:"consent,omitempty"`

	// engine shapes the engine Deployment. Default: one replica running
	// VADER on the CPU, with no GPU; a model sidecar (engine.model) holds
	// the GPU.
	// +optional
	// +kubebuilder:default={}
	Engine EngineSpec `json:"engine,omitempty"`

	// suspend, when true, scales the engines to zero and stops tuning; the
	// configuration and data-protection objects stay. Default false.
	// +optional
	// +kubebuilder:default=false
	Suspend bool `json:"suspend,omitempty"`

	// access says who may call the engines and for what: clients with
	// their own tokens and scopes, the namespaces they connect from, and
	// the engines' egress (docs/access.md). Default: no clients; the
	// program token alone, from the world's namespace.
	// +optional
	Access ProgramAccess `json:"access,omitempty"`
}

// ConsentPolicy is the program's consent policy (docs/data-protection.md).
// +kubebuilder:validation:XValidation:rule="!has(self.requireReconsent) || !self.requireReconsent || has(self.policyVersion)",message="spec.consent.requireReconsent needs spec.consent.policyVersion: re-consent is asked for a new version",fieldPath=.requireReconsent
type ConsentPolicy struct {
	// policyVersion names the version of the privacy notice users consent
	// to now (for example "2026-12-01"). When set, every consent request
	// must name the version the user was shown, and the engines' consent
	// ledger records it. Unset by default.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[!-~]+$`
	PolicyVersion string `json:"policyVersion,omitempty"`

	// requireReconsent, when true, makes the engines refuse telemetry (403,
	// naming the user) from users whose consent was given for another
	// version than policyVersion, until they consent again. Default false:
	// earlier consents stay valid.
	// +optional
	RequireReconsent bool `json:"requireReconsent,omitempty"`
}

// WorldReference names a cluster-scoped VirtualWorld.
type WorldReference struct {
	// name of the VirtualWorld.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// StateVector is a point in the (attention, emotion, resilience) space, each
// dimension in [0,1].
type StateVector struct {
	// attention in [0,1]: sustained, undistracted focus.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1
	Attention float64 `json:"attention"`
	// emotion in [0,1]: emotional balance (0 distressed, 1 calm and positive).
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1
	Emotion float64 `json:"emotion"`
	// resilience in [0,1]: ability to recover from stress.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1
	Resilience float64 `json:"resilience"`
}

// Weights are the loss weights per dimension.
// +kubebuilder:validation:XValidation:rule="self.attention + self.emotion + self.resilience > 0.0",message="spec.weights must not all be zero"
type Weights struct {
	// attention weight, ≥ 0. Default 1.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	Attention float64 `json:"attention"`
	// emotion weight, ≥ 0. Default 1.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	Emotion float64 `json:"emotion"`
	// resilience weight, ≥ 0. Default 1.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	Resilience float64 `json:"resilience"`
}

// StrengthBounds bounds the intervention strength.
// +kubebuilder:validation:XValidation:rule="self.min <= self.initial && self.initial <= self.max",message="spec.strength must satisfy min <= initial <= max"
type StrengthBounds struct {
	// initial is the strength in force before any tuning, and the strength
	// held in Manual mode. Default 0.5.
	// +optional
	// +kubebuilder:default=0.5
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1
	Initial float64 `json:"initial"`
	// min is the lowest strength the tuner may choose. Default 0.1.
	// +optional
	// +kubebuilder:default=0.1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1
	Min float64 `json:"min"`
	// max is the highest strength the tuner may choose. Default 0.9.
	// +optional
	// +kubebuilder:default=0.9
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1
	Max float64 `json:"max"`
}

// Tuning configures the closed loop that chooses the strength in force.
// +kubebuilder:validation:XValidation:rule="!has(self.settle) || duration(self.settle) < (has(self.interval) ? duration(self.interval) : duration('60s'))",message="spec.tuning.settle must be shorter than spec.tuning.interval",fieldPath=.settle
type Tuning struct {
	// mode: Auto searches for the strength minimising the cohort loss;
	// Manual keeps strength.initial; Paused freezes the current strength.
	// Default Auto.
	// +optional
	// +kubebuilder:default=Auto
	Mode TuningMode `json:"mode,omitempty"`

	// interval between two measurements (and at most one strength change).
	// At least 10s. Default 60s.
	// +optional
	// +kubebuilder:default="60s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10s')",message="spec.tuning.interval must be at least 10s"
	// A pointer so that an unset interval is omitted and defaulted by the
	// API server rather than sent as 0s.
	Interval *metav1.Duration `json:"interval,omitempty"`

	// maxStep is the largest change of strength in one interval, in (0,1].
	// Default 0.05.
	// +optional
	// +kubebuilder:default=0.05
	// +kubebuilder:validation:ExclusiveMinimum=true
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1
	MaxStep float64 `json:"maxStep,omitempty"`

	// staleAfter: a measurement older than this is not acted on (the
	// strength is held). Default 5m.
	// +optional
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// A pointer for the same reason as interval.
	StaleAfter *metav1.Duration `json:"staleAfter,omitempty"`

	// settle is how long every engine a measurement counts must have run
	// the strength in force before the loss is credited to it: each engine
	// reports the strength it runs and since when (GET /v1/cohort), a
	// ConfigMap change reaches a pod only after the kubelet's sync (up to
	// about a minute), and the cohort needs time to respond. Until then
	// the strength is held with LossObserved=False, reason
	// StrengthPending. Greater than 0s and shorter than interval. Default:
	// half the interval.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="spec.tuning.settle must be greater than 0s"
	Settle *metav1.Duration `json:"settle,omitempty"`

	// source is where the cohort loss is read. Default: the engines' own
	// /v1/cohort endpoints.
	// +optional
	// +kubebuilder:default={}
	Source LossSource `json:"source,omitempty"`
}

// Estimation is the time constants of the engines' state estimation
// (docs/engine-model.md, "Fusion and decay").
type Estimation struct {
	// stateDecay is the time constant τ over which the confidence of
	// attention and emotion evidence decays (c·e^(−age/τ)): after about
	// 3τ without new evidence a user drops out of the cohort. Between 1s
	// and 24h. Default 30m.
	// +optional
	// +kubebuilder:default="30m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('24h')",message="spec.estimation.stateDecay must be between 1s and 24h"
	StateDecay *metav1.Duration `json:"stateDecay,omitempty"`

	// traitDecay is τ for resilience evidence (questionnaires, stress
	// recovery). Between 1m and 8760h (a year). Default 336h.
	// +optional
	// +kubebuilder:default="336h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m') && duration(self) <= duration('8760h')",message="spec.estimation.traitDecay must be between 1m and 8760h"
	TraitDecay *metav1.Duration `json:"traitDecay,omitempty"`

	// stressRecovery is τ of the recovery score e^(−t/τ) of a stress
	// episode (seen in heart-rate variability) that lasted t. Between 1s
	// and 24h. Default 10m.
	// +optional
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('24h')",message="spec.estimation.stressRecovery must be between 1s and 24h"
	StressRecovery *metav1.Duration `json:"stressRecovery,omitempty"`
}

// Dose is the per-user dose of interventions and the outcome window of
// the engines' micro-randomised decisions.
type Dose struct {
	// maxPerDay caps the interventions one user receives in any 24 hours,
	// in [1,96]. Default 6.
	// +optional
	// +kubebuilder:default=6
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=96
	MaxPerDay int32 `json:"maxPerDay,omitempty"`

	// cooldown is the least time between two interventions for one user,
	// between 0s (no cooldown) and 24h. Default 1h.
	// +optional
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('24h')",message="spec.dose.cooldown must be between 0s and 24h"
	// A pointer because 0s is a valid, deliberate value distinct from
	// unset.
	Cooldown *metav1.Duration `json:"cooldown,omitempty"`

	// outcomeWindow is how long after a decision the change of the user's
	// loss is measured: the proximal outcome whose difference between
	// treated and untreated decisions is status.effects. Between 1s and
	// 24h. Default 10m.
	// +optional
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('24h')",message="spec.dose.outcomeWindow must be between 1s and 24h"
	// A pointer for the same reason as spec.tuning.interval.
	OutcomeWindow *metav1.Duration `json:"outcomeWindow,omitempty"`
}

// LossSource says where to read a program's cohort loss.
type LossSource struct {
	// type: Engine reads GET /v1/cohort from every ready engine pod; Prometheus
	// runs an instant query. Default Engine.
	// +optional
	// +kubebuilder:default=Engine
	Type LossSourceType `json:"type,omitempty"`

	// prometheus is required when type is Prometheus.
	// +optional
	Prometheus *PrometheusSource `json:"prometheus,omitempty"`
}

// PrometheusSource is a Prometheus server to query for the cohort loss.
type PrometheusSource struct {
	// address is the base URL of the Prometheus HTTP API, e.g.
	// http://prometheus.monitoring.svc:9090. The operator queries only a
	// Service in the cluster (*.svc, *.svc.<cluster domain>) or an address
	// under its allowedPrometheusURLs (none by default); any other is
	// refused (LossObserved=False, MetricsUnavailable), and redirects are
	// not followed.
	// +required
	// +kubebuilder:validation:Pattern=`^https?://[^\s]+$`
	Address string `json:"address"`

	// query is a PromQL instant query returning exactly one series: the
	// program's cohort loss. Default: a size-weighted mean of
	// attune_engine_cohort_loss over the program's engines, selected by
	// their labels.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Query string `json:"query,omitempty"`
}

// EngineSpec shapes the engine Deployment.
// +kubebuilder:validation:XValidation:rule="!has(self.replicas) || self.replicas <= 1 || (has(self.store) && has(self.store.type) && self.store.type == 'PostgreSQL')",message="spec.engine.replicas above 1 needs a shared store: with the embedded store each replica would keep its own, partial copy of a user's state. Set spec.engine.store.type to PostgreSQL and spec.engine.store.postgres.secretRef",fieldPath=.replicas
// +kubebuilder:validation:XValidation:rule="!has(self.autoscaling) || (has(self.store) && has(self.store.type) && self.store.type == 'PostgreSQL')",message="spec.engine.autoscaling needs a shared store: with the embedded store each replica would keep its own, partial copy of a user's state. Set spec.engine.store.type to PostgreSQL and spec.engine.store.postgres.secretRef, or remove spec.engine.autoscaling",fieldPath=.autoscaling
type EngineSpec struct {
	// replicas is the number of engine pods. A pointer because 0 is a valid,
	// deliberate value distinct from unset (default 1). The scale
	// subresource writes it; with spec.engine.autoscaling the
	// HorizontalPodAutoscaler does, and a manifest should leave it out.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	Replicas *int32 `json:"replicas,omitempty"`

	// image of the engine container. Default: the engine image released with
	// this operator (the manager's --engine-image flag).
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Image string `json:"image,omitempty"`

	// resources of the engine container, which runs on the CPU and never
	// requests a GPU. Requests it leaves out default to cpu 100m and memory
	// 128Mi, so that engine pods are not BestEffort.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// gpu is what each engine pod requests from the GPU device plugin, for
	// its model sidecar only. Default: one nvidia.com/gpu when a model
	// sidecar runs, none otherwise.
	// +optional
	// +kubebuilder:default={}
	GPU GPUSpec `json:"gpu,omitempty"`

	// nodeSelector is merged with the GPU product selector.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// tolerations are added to the GPU taint toleration (which pods that
	// request GPUs get for the resource's vendor: nvidia.com/gpu for
	// nvidia.com/*, amd.com/gpu for amd.com/gpu, the resource name itself
	// for gpu.intel.com/*).
	// +optional
	// +listType=atomic
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// affinity of the engine pods.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// priorityClassName of the engine pods.
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// store is where the engines keep user state. Default: the embedded
	// store (one replica).
	// +optional
	// +kubebuilder:default={}
	Store EngineStore `json:"store,omitempty"`

	// model is the text-emotion model the engines call (Open Inference
	// Protocol / KServe v2): a model-server sidecar in each engine pod,
	// which holds the pod's GPU request, or, with model.endpoint, a shared
	// model server elsewhere (no sidecar, no GPU). A pointer because absence
	// means no model: the engine then uses VADER on the CPU and requests no
	// GPU.
	// +optional
	Model *ModelSidecar `json:"model,omitempty"`

	// autoscaling, when set, renders a HorizontalPodAutoscaler named after
	// the program that scales its scale subresource (spec.engine.replicas)
	// between minReplicas and maxReplicas; the operator then sets no
	// replica count of its own and follows the one the autoscaler writes.
	// Needs the PostgreSQL store. A pointer because absence means a fixed
	// spec.engine.replicas (removing it deletes the autoscaler).
	// +optional
	Autoscaling *EngineAutoscaling `json:"autoscaling,omitempty"`
}

// EngineAutoscaling bounds and drives the engines' HorizontalPodAutoscaler
// (docs/scale-out.md, "Autoscaling").
// +kubebuilder:validation:XValidation:rule="!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",message="spec.engine.autoscaling.minReplicas must not exceed spec.engine.autoscaling.maxReplicas",fieldPath=.minReplicas
type EngineAutoscaling struct {
	// minReplicas is the fewest engine pods the autoscaler keeps, 1 to
	// 1000. Default 1.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	MinReplicas *int32 `json:"minReplicas,omitempty"`

	// maxReplicas is the most engine pods the autoscaler may ask for, 1 to
	// 1000, at least minReplicas. For a program whose pods request GPUs
	// the operator lowers it further to what the world's GPU quota leaves
	// this program (reported in status.autoscaling).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	MaxReplicas int32 `json:"maxReplicas"`

	// metrics the autoscaler follows; it scales to the largest replica
	// count any of them asks for. Default: CPU utilisation of 70%.
	// +optional
	// +kubebuilder:default={}
	Metrics AutoscalingMetrics `json:"metrics,omitempty"`
}

// AutoscalingMetrics are the engines' load signals.
type AutoscalingMetrics struct {
	// cpuUtilization is the target mean CPU use of the engine container, in
	// percent of its CPU request (spec.engine.resources, default 100m), 1
	// to 100. Default 70. It reads metrics.k8s.io (metrics-server).
	// +optional
	// +kubebuilder:default=70
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	CPUUtilization *int32 `json:"cpuUtilization,omitempty"`

	// ingestRate, when set, also scales on the telemetry samples each
	// engine pod stores per second, a Pods metric read from
	// custom.metrics.k8s.io (a Prometheus adapter turning the engines'
	// attune_engine_samples_ingested_total into a rate). Absent: CPU only.
	// +optional
	IngestRate *IngestRateMetric `json:"ingestRate,omitempty"`
}

// IngestRateMetric is the per-pod ingest-rate target.
type IngestRateMetric struct {
	// metricName is the Pods metric's name as the custom metrics API serves
	// it. Default attune_engine_samples_ingested_per_second, the name the
	// adapter rule in docs/scale-out.md gives the rate.
	// +optional
	// +kubebuilder:default="attune_engine_samples_ingested_per_second"
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-zA-Z_:][a-zA-Z0-9_:]*$`
	MetricName string `json:"metricName,omitempty"`

	// averageValue is the target samples per second per engine pod, a
	// positive quantity such as 200 or 1500m.
	// +kubebuilder:validation:XValidation:rule="quantity(self).isGreaterThan(quantity('0'))",message="spec.engine.autoscaling.metrics.ingestRate.averageValue must be positive"
	AverageValue resource.Quantity `json:"averageValue"`
}

// AutoscalingStatus is what the operator gave the HorizontalPodAutoscaler.
type AutoscalingStatus struct {
	// minReplicas in force.
	MinReplicas int32 `json:"minReplicas"`
	// maxReplicas in force: spec.engine.autoscaling.maxReplicas, or fewer
	// when the world's GPU quota leaves this program fewer GPUs.
	MaxReplicas int32 `json:"maxReplicas"`
	// message says where maxReplicas comes from, naming the quota when it
	// lowered it.
	// +optional
	Message string `json:"message,omitempty"`
}

// GPUSpec is the GPU request of each engine pod.
type GPUSpec struct {
	// count of GPUs per pod, in the model sidecar's requests and limits,
	// ≥ 0. Default: 1 when a model sidecar runs (spec.engine.model without
	// endpoint), and ignored (no GPU anywhere in the pod) when none does:
	// the engine container itself runs on the CPU. 0 runs the sidecar on
	// the CPU (with its runtime's CPU image). Changed: the default used to
	// be 1 GPU on the engine container even without a model; a count stored
	// by that default is ignored for programs without a sidecar.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=16
	Count *int32 `json:"count,omitempty"`

	// resourceName of the GPU extended resource. Default nvidia.com/gpu; MIG
	// profiles such as nvidia.com/mig-1g.10gb are accepted.
	// +optional
	// +kubebuilder:default="nvidia.com/gpu"
	// +kubebuilder:validation:Pattern=`^(nvidia\.com/(gpu|mig-[1-7]g\.[0-9]+gb(\.me)?)|amd\.com/gpu|gpu\.intel\.com/[a-z0-9]+)$`
	ResourceName string `json:"resourceName,omitempty"`

	// product, when set, pins the pods to nodes whose nvidia.com/gpu.product
	// label equals it (e.g. NVIDIA-H100-80GB-HBM3). Ignored, like the GPU
	// count, when the pods request no GPU (no model sidecar).
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`
	Product string `json:"product,omitempty"`

	// runtimeClassName of the engine pods (e.g. nvidia): a DNS subdomain.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="spec.engine.gpu.runtimeClassName must be a DNS subdomain (lower-case letters, digits, '-' and '.')"
	RuntimeClassName *string `json:"runtimeClassName,omitempty"`
}

// StoreType names a state store.
// +kubebuilder:validation:Enum=Embedded;PostgreSQL
type StoreType string

const (
	// StoreEmbedded keeps state in a bbolt file in the engine pod's data
	// volume: a PersistentVolumeClaim (the default), which survives the
	// pod's replacement, or with embedded.ephemeral an emptyDir, which
	// survives container restarts only. It cannot be shared, so it allows
	// one replica.
	StoreEmbedded StoreType = "Embedded"
	// StorePostgreSQL keeps state in a PostgreSQL database shared by every
	// replica: one consistent state per user, whichever replica serves them.
	StorePostgreSQL StoreType = "PostgreSQL"
)

// EngineStore selects the engines' state store.
// +kubebuilder:validation:XValidation:rule="!has(self.type) || self.type != 'PostgreSQL' || has(self.postgres)",message="spec.engine.store.postgres is required when spec.engine.store.type is PostgreSQL",fieldPath=.postgres
// +kubebuilder:validation:XValidation:rule="(has(self.type) && self.type == 'PostgreSQL') || !has(self.postgres)",message="spec.engine.store.postgres is only allowed when spec.engine.store.type is PostgreSQL",fieldPath=.postgres
// +kubebuilder:validation:XValidation:rule="!has(self.embedded) || !has(self.type) || self.type == 'Embedded'",message="spec.engine.store.embedded is only allowed when spec.engine.store.type is Embedded",fieldPath=.embedded
type EngineStore struct {
	// type is Embedded (default: a bbolt file per engine pod, one replica
	// only) or PostgreSQL (a database shared by all replicas; needed for
	// replicas > 1). Changing it restarts the engines and does not move
	// data between stores.
	// +optional
	// +kubebuilder:default=Embedded
	Type StoreType `json:"type,omitempty"`

	// postgres locates the database for type PostgreSQL. A pointer because
	// it exists only for that type.
	// +optional
	Postgres *PostgresStore `json:"postgres,omitempty"`

	// embedded configures where the Embedded store's file lives. A pointer
	// because it exists only for that type; absent, the file is on a
	// PersistentVolumeClaim of the default size (1Gi) and StorageClass.
	// +optional
	Embedded *EmbeddedStore `json:"embedded,omitempty"`
}

// EmbeddedStore configures the Embedded store. By default the store is on
// a PersistentVolumeClaim named <program>-engine-data (1Gi, the cluster's
// default StorageClass), so that users' state and consent survive the pod
// being replaced, rescheduled or rolled. The program owns the claim:
// deleting the program deletes it and the data on it. With a claim the
// engine Deployment uses the Recreate strategy, so the old pod releases
// the ReadWriteOnce volume before the new one mounts it (a short gap in
// service on every rollout).
// +kubebuilder:validation:XValidation:rule="!has(self.ephemeral) || !self.ephemeral || !has(self.volume)",message="spec.engine.store.embedded.volume configures the claim, which ephemeral: true goes without: set one of them",fieldPath=.ephemeral
type EmbeddedStore struct {
	// ephemeral, when true, keeps the store on an emptyDir instead of a
	// claim: it survives container restarts but not the pod, so every
	// rollout, eviction or node drain loses every user's state and consent.
	// For tests and demos on clusters without a StorageClass. Switching to
	// it keeps the claim, with its data, until the program is deleted.
	// Default false.
	// +optional
	Ephemeral bool `json:"ephemeral,omitempty"`

	// volume sizes the claim and picks its StorageClass. A pointer: absent
	// (default) means 1Gi on the cluster's default StorageClass.
	// +optional
	Volume *StoreVolume `json:"volume,omitempty"`
}

// DefaultStoreVolumeSize is the size of the Embedded store's claim without
// embedded.volume: about 500,000 users at 2 kB each.
const DefaultStoreVolumeSize = "1Gi"

// StoreVolume is the PersistentVolumeClaim of an Embedded store.
// +kubebuilder:validation:XValidation:rule="quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0",message="spec.engine.store.embedded.volume.size may grow but not shrink",fieldPath=.size
// +kubebuilder:validation:XValidation:rule="has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",message="spec.engine.store.embedded.volume.storageClassName is immutable",fieldPath=.storageClassName
type StoreVolume struct {
	// size requested for the claim, e.g. 1Gi (about 2 kB per user). It may
	// grow, where the StorageClass allows expansion, but never shrink.
	// +required
	// +kubebuilder:validation:XValidation:rule="quantity(self).isGreaterThan(quantity('0'))",message="spec.engine.store.embedded.volume.size must be positive"
	Size resource.Quantity `json:"size"`

	// storageClassName of the claim. Default: the cluster's default
	// StorageClass. Immutable, as on the claim itself.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	StorageClassName *string `json:"storageClassName,omitempty"`
}

// PostgresStore is the connection to a PostgreSQL database.
type PostgresStore struct {
	// secretRef names a Secret in the program's namespace that holds either
	// the key connectionString (a postgres:// URL or key=value list) or the
	// keys host (required), port, user, password, dbname and sslmode. It is
	// mounted into the engine pods as files; the connection string never
	// enters the engine ConfigMap. The engines create and migrate their
	// tables at start.
	// +required
	SecretRef SecretReference `json:"secretRef"`
}

// SecretReference names a Secret in the same namespace.
type SecretReference struct {
	// name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// ModelRuntime is the model server a model sidecar runs; it decides the
// sidecar's command, arguments, environment, default image and the storage
// URIs it accepts.
// +kubebuilder:validation:Enum=KServeHuggingFace;Triton;MLServerHuggingFace;Custom
type ModelRuntime string

const (
	// ModelRuntimeKServeHuggingFace is KServe's huggingfaceserver
	// (python -m huggingfaceserver) with the Hugging Face backend, a
	// sequence-classification task and probabilities returned. Default
	// image kserve/huggingfaceserver:v0.20.0, or its -gpu tag when GPUs are
	// requested. Storage: a claim, or a gs://, s3://, hf:// or http(s)://
	// URI (KServe's storage library downloads it at start).
	ModelRuntimeKServeHuggingFace ModelRuntime = "KServeHuggingFace"
	// ModelRuntimeTriton is NVIDIA Triton Inference Server (tritonserver)
	// serving modelName from a model repository, explicitly loaded. Default
	// image nvcr.io/nvidia/tritonserver:26.07-py3 (Triton 2.71.0; one image
	// for CPU and GPU). Storage: a claim holding the model repository
	// (<modelName>/config.pbtxt and versions), or a gs://, s3:// or as://
	// URI of one.
	ModelRuntimeTriton ModelRuntime = "Triton"
	// ModelRuntimeMLServerHuggingFace is Seldon MLServer (mlserver start)
	// with its Hugging Face runtime and a text-classification pipeline,
	// configured through MLSERVER_* environment variables. Default image
	// seldonio/mlserver:1.7.1-huggingface (one image for CPU and GPU).
	// Storage: a claim holding the Hugging Face model files, or an
	// hf://<organisation>/<model> URI (downloaded from the Hub at start).
	ModelRuntimeMLServerHuggingFace ModelRuntime = "MLServerHuggingFace"
	// ModelRuntimeCustom runs image as it is, with MODEL_NAME, the port in
	// MODEL_PORT, the model directory in MODEL_DIR (with a claim) or the
	// URI in STORAGE_URI; image is then required. Storage: a claim or any
	// URI.
	ModelRuntimeCustom ModelRuntime = "Custom"
)

// ModelSidecar is the text-emotion model server the engines call over the
// Open Inference Protocol (KServe v2): a sidecar in each engine pod, or a
// shared server given by endpoint.
// +kubebuilder:validation:XValidation:rule="!(has(self.endpoint) && has(self.image))",message="spec.engine.model.endpoint and spec.engine.model.image are mutually exclusive: endpoint uses a shared model server, image runs a sidecar",fieldPath=.endpoint
// +kubebuilder:validation:XValidation:rule="has(self.endpoint) || has(self.image) || (has(self.runtime) && self.runtime != 'Custom')",message="spec.engine.model.image is required with runtime Custom unless spec.engine.model.endpoint is set",fieldPath=.image,reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="!has(self.endpoint) || !has(self.storage)",message="spec.engine.model.storage is only allowed for a sidecar, not with spec.engine.model.endpoint",fieldPath=.storage
// +kubebuilder:validation:XValidation:rule="has(self.endpoint) || has(self.storage) || !has(self.runtime) || self.runtime == 'Custom'",message="spec.engine.model.storage is required with runtimes KServeHuggingFace, Triton and MLServerHuggingFace",fieldPath=.storage,reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="!has(self.storage) || !has(self.storage.uri) || !has(self.runtime) || self.runtime == 'Custom' || (self.runtime == 'KServeHuggingFace' && self.storage.uri.matches('^(gs|s3|hf|https?)://')) || (self.runtime == 'Triton' && self.storage.uri.matches('^(gs|s3|as)://')) || (self.runtime == 'MLServerHuggingFace' && self.storage.uri.matches('^hf://[^/]+/[^/]+$'))",message="spec.engine.model.storage.uri has a scheme the runtime does not read: KServeHuggingFace accepts gs://, s3://, hf:// and http(s)://; Triton gs://, s3:// and as://; MLServerHuggingFace only hf://<organisation>/<model>",fieldPath=.storage.uri
// +kubebuilder:validation:XValidation:rule="!has(self.port) || !has(self.runtime) || self.runtime != 'MLServerHuggingFace' || (self.port != 8081 && self.port != 8082)",message="spec.engine.model.port must not be 8081 or 8082 with runtime MLServerHuggingFace: MLServer listens there for gRPC and metrics",fieldPath=.port
// +kubebuilder:validation:XValidation:rule="!has(self.labels) || (has(self.runtime) && self.runtime != 'Custom')",message="spec.engine.model.labels need a classifier runtime (KServeHuggingFace, Triton, MLServerHuggingFace): Custom returns one valence per text",fieldPath=.labels
// +kubebuilder:validation:XValidation:rule="!has(self.runtime) || !(self.runtime in ['KServeHuggingFace', 'Triton']) || (has(self.labels) && size(self.labels) >= 2)",message="spec.engine.model.labels (at least 2) are required with runtimes KServeHuggingFace and Triton: they answer with class indices only",fieldPath=.labels,reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="!has(self.labels) || self.labels.all(l, l.lowerAscii() in ['anger', 'disgust', 'fear', 'joy', 'neutral', 'sadness', 'surprise', 'negative', 'positive'])",message="spec.engine.model.labels must each be one the engine maps to a valence: anger, disgust, fear, joy, neutral, sadness, surprise (Ekman) or negative, neutral, positive (sentiment)",fieldPath=.labels
type ModelSidecar struct {
	// runtime is the model server, which sets the sidecar's command,
	// arguments, environment and default image: KServeHuggingFace, Triton,
	// MLServerHuggingFace, or Custom (default: the image runs as built).
	// +optional
	// +kubebuilder:default=Custom
	Runtime ModelRuntime `json:"runtime,omitempty"`

	// image of the model server sidecar. Default: the runtime's pinned
	// image (KServeHuggingFace kserve/huggingfaceserver:v0.20.0, with
	// GPUs v0.20.0-gpu; Triton nvcr.io/nvidia/tritonserver:26.07-py3;
	// MLServerHuggingFace seldonio/mlserver:1.7.1-huggingface). Required
	// with runtime Custom. Mutually exclusive with endpoint.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Image string `json:"image,omitempty"`

	// endpoint is the base URL of a shared model server of the world, e.g.
	// a KServe InferenceService (http://emotion.models.svc.cluster.local).
	// With it no sidecar runs and the engine pods request no GPU. An
	// http(s) URL; mutually exclusive with image and storage.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",message="spec.engine.model.endpoint must be an http:// or https:// URL with a host"
	Endpoint string `json:"endpoint,omitempty"`

	// modelName served at /v2/models/{modelName}/infer: a plain name of
	// letters, digits, '-', '_' and '.', with no '/' and no '..'.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$') && !self.contains('..')",message="spec.engine.model.modelName must be a plain name: letters, digits, '-', '_' and '.', starting and ending with a letter or digit, with no '/', no '..' and no URL characters"
	ModelName string `json:"modelName"`

	// labels are the model's class labels by output index: labels[i] names
	// the i-th probability the model returns (e.g. [anger, joy, sadness]),
	// so that the engine can turn them into a valence. Optional for a model
	// that returns the valence itself.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=63
	Labels []string `json:"labels,omitempty"`

	// storage is where the sidecar finds the model: a PersistentVolumeClaim
	// mounted read-only at /mnt/models (the model server then runs offline,
	// HF_HUB_OFFLINE=1), or a URI the runtime downloads at start (see
	// runtime). Required for every runtime except Custom; not allowed with
	// endpoint.
	// +optional
	Storage *ModelStorage `json:"storage,omitempty"`

	// port the model server listens on inside the pod, for HTTP. Default
	// 8000. Not 8080, the engine's port.
	// +optional
	// +kubebuilder:default=8000
	// +kubebuilder:validation:Minimum=1024
	// +kubebuilder:validation:Maximum=65535
	// +kubebuilder:validation:XValidation:rule="self != 8080",message="spec.engine.model.port must not be 8080, the engine's port"
	Port int32 `json:"port,omitempty"`

	// resources of the model sidecar. GPU requests are added from
	// spec.engine.gpu. Requests it leaves out default to cpu 1 and memory
	// 2Gi (KServe's huggingfaceserver runtime requests the same).
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// env is added to the sidecar's environment, e.g. credentials for a
	// storage URI (AWS_ACCESS_KEY_ID from a Secret). It may override the
	// runtime's variables.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Env []corev1.EnvVar `json:"env,omitempty"`
}

// ModelStorage is where a model sidecar finds its model: exactly one of a
// claim and a URI.
// +kubebuilder:validation:XValidation:rule="has(self.persistentVolumeClaim) != has(self.uri)",message="spec.engine.model.storage needs exactly one of persistentVolumeClaim and uri"
type ModelStorage struct {
	// persistentVolumeClaim holding the model, mounted read-only.
	// +optional
	PersistentVolumeClaim *ModelClaim `json:"persistentVolumeClaim,omitempty"`

	// uri of the model that the runtime downloads at start (see runtime for
	// the schemes each accepts).
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z][a-z0-9+.-]*://[^ ]+$')",message="spec.engine.model.storage.uri must be a URI such as s3://bucket/path or hf://org/model"
	URI string `json:"uri,omitempty"`
}

// ModelClaim is a PersistentVolumeClaim of the program's namespace that
// holds a model.
type ModelClaim struct {
	// claimName of the PersistentVolumeClaim.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="spec.engine.model.storage.persistentVolumeClaim.claimName must be a DNS subdomain"
	ClaimName string `json:"claimName"`

	// subPath inside the claim that holds the model (for Triton, the model
	// repository). Default: the claim's root. A relative path without '.'
	// or '..' segments.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$') && !self.matches('(^|/)[.][.]?(/|$)')",message="spec.engine.model.storage.persistentVolumeClaim.subPath must be a relative path without '.' or '..' segments"
	SubPath string `json:"subPath,omitempty"`
}

// LossObservation is one cohort-loss measurement.
type LossObservation struct {
	// value is the cohort loss L in [0,1].
	Value float64 `json:"value"`
	// cohortSize is the number of users the value rests on.
	CohortSize int32 `json:"cohortSize"`
	// observedAt is when the engines reported it.
	ObservedAt metav1.Time `json:"observedAt"`
}

// TuningRecord is one entry of the tuning history.
type TuningRecord struct {
	// time of the measurement.
	Time metav1.Time `json:"time"`
	// strength in force while the loss was measured.
	Strength float64 `json:"strength"`
	// loss measured.
	Loss float64 `json:"loss"`
	// cohortSize the loss rests on.
	CohortSize int32 `json:"cohortSize"`
}

// InterventionEffect is the estimated causal excursion effect of one
// intervention against no intervention on the proximal outcome: the change
// of a user's loss over spec.dose.outcomeWindow after a decision. The
// engines estimate it from their micro-randomised decisions by weighted and
// centred least squares; on the embedded store the operator combines the
// replicas' estimates by inverse-variance weighting.
type InterventionEffect struct {
	// intervention the effect is of.
	// +required
	Intervention Intervention `json:"intervention"`
	// estimate of the effect on the loss. Negative: the intervention
	// lowers the loss (helps); positive: it raises it.
	Estimate float64 `json:"estimate"`
	// stdErr is the estimate's standard error (cluster-robust by user).
	StdErr float64 `json:"stdErr"`
	// lower bound of the 95% confidence interval. Above zero: the
	// intervention raises the loss (harm; condition InterventionHarm).
	Lower float64 `json:"lower"`
	// upper bound of the 95% confidence interval. Below zero: the
	// intervention lowers the loss (help).
	Upper float64 `json:"upper"`
	// users is the number of distinct users whose decisions entered the
	// estimate.
	Users int32 `json:"users"`
	// decisions is the number of settled decisions that entered the
	// estimate: treated + control.
	Decisions int32 `json:"decisions"`
	// treated is the number of the estimate's decisions that gave the
	// intervention.
	Treated int32 `json:"treated"`
	// control is the number of the estimate's decisions that gave no
	// intervention.
	Control int32 `json:"control"`
	// observedAt is when the engines reported the estimate.
	ObservedAt metav1.Time `json:"observedAt"`
	// strength is the intervention strength in force when the estimate
	// was observed.
	Strength float64 `json:"strength"`
}

// MeditationProgramStatus is the observed state of a program.
type MeditationProgramStatus struct {
	// observedGeneration is the generation this status was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Reconciled, EngineAvailable, Ready, Degraded, Suspended,
	// LossObserved, Converged, InterventionHarm.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// strength is the intervention strength in force (written to the
	// engines' configuration). A pointer so that "not yet decided" is not
	// mistaken for 0.
	// +optional
	Strength *float64 `json:"strength,omitempty"`

	// strengthSince is when status.strength took its current value (the
	// operator then wrote it to the engines' configuration). A replica
	// still running another strength three intervals later is named in
	// LossObserved's StrengthPending message.
	// +optional
	StrengthSince *metav1.Time `json:"strengthSince,omitempty"`

	// replicas is the desired number of engine pods (scale subresource).
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// readyReplicas is the number of available engine pods.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// selector is the engine pods' label selector (scale subresource).
	// +optional
	Selector string `json:"selector,omitempty"`

	// gpus is the number of GPUs the program's engines request in total.
	// +optional
	GPUs int32 `json:"gpus,omitempty"`

	// autoscaling is the HorizontalPodAutoscaler's bounds in force (absent
	// without spec.engine.autoscaling).
	// +optional
	Autoscaling *AutoscalingStatus `json:"autoscaling,omitempty"`

	// textModel is the text-emotion model in use: "VADER (CPU)" without
	// spec.engine.model, "<runtime> <modelName> (GPU)" or "(CPU)" for a
	// sidecar, "<modelName> at <host>" for a shared endpoint.
	// +optional
	TextModel string `json:"textModel,omitempty"`

	// loss is the last valid cohort-loss measurement.
	// +optional
	Loss *LossObservation `json:"loss,omitempty"`

	// history of recent measurements credited to the strength in force,
	// newest last, capped at 20 entries (the tuner's HistoryLimit). The
	// tuner rebuilds its state from it after an operator restart.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=20
	History []TuningRecord `json:"history,omitempty"`

	// effects are the interventions' estimated effects on the loss at the
	// last valid measurement, one per intervention of spec.interventions
	// that the engines publish (an effect rests on at least the world's
	// minCohortSize users with both treated and untreated decisions),
	// sorted by intervention. Read from the engines' /v1/cohort with the
	// loss; the Prometheus source reports none.
	// +optional
	// +listType=map
	// +listMapKey=intervention
	// +kubebuilder:validation:MaxItems=6
	Effects []InterventionEffect `json:"effects,omitempty"`

	// lastTuneTime is when the tuner last measured and decided.
	// +optional
	LastTuneTime *metav1.Time `json:"lastTuneTime,omitempty"`

	// consecutiveErrors counts failed measurements since the last valid one.
	// +optional
	ConsecutiveErrors int32 `json:"consecutiveErrors,omitempty"`

	// tls names the engines' serving certificate and the CA bundle that
	// verifies them (docs/tls.md).
	// +optional
	TLS *ProgramTLSStatus `json:"tls,omitempty"`

	// clients are the tokens issued for spec.access.clients, sorted by
	// name: each one's Secret, token generation and, during a rotation's
	// grace period, when the previous token expires.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	Clients []ClientStatus `json:"clients,omitempty"`
}

// MeditationProgram declares an attention-meditation program for one world;
// the operator runs it as a GPU-backed engine Deployment and tunes its
// intervention strength from the cohort loss.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.engine.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=mp,categories=attune
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 50 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS label of at most 50 characters starting with a letter (it names the engine's Service)"
// +kubebuilder:printcolumn:name="World",type=string,JSONPath=`.spec.worldRef.name`
// +kubebuilder:printcolumn:name="Strength",type=number,JSONPath=`.status.strength`
// +kubebuilder:printcolumn:name="Loss",type=number,JSONPath=`.status.loss.value`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="GPUs",type=integer,JSONPath=`.status.gpus`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.tuning.mode`,priority=1
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.status.replicas`,priority=1
// +kubebuilder:printcolumn:name="Available",type=integer,JSONPath=`.status.readyReplicas`,priority=1
// +kubebuilder:printcolumn:name="Cohort",type=integer,JSONPath=`.status.loss.cohortSize`,priority=1
// +kubebuilder:printcolumn:name="Text Model",type=string,JSONPath=`.status.textModel`,priority=1
type MeditationProgram struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec   MeditationProgramSpec   `json:"spec"`
	Status MeditationProgramStatus `json:"status,omitempty"`
}

// MeditationProgramList is a list of MeditationPrograms.
// +kubebuilder:object:root=true
type MeditationProgramList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeditationProgram `json:"items"`
}
