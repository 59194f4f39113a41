package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ClientScope is one use of the engine API a client token may hold: the
// engine's scope names (engine/auth, docs/engine-api.md maps each route to
// one).
// +kubebuilder:validation:Enum=ingest;decide;read-state;consent;erase;export;cohort;metrics;research
type ClientScope string

// The scopes of the engine API, spelled as engine/auth spells them.
const (
	// ScopeIngest: POST /v1/telemetry, and minting user tokens.
	ScopeIngest ClientScope = "ingest"
	// ScopeDecide: POST /v1/users/{id}/decisions, and minting user tokens.
	ScopeDecide ClientScope = "decide"
	// ScopeReadState: GET /v1/users/{id}/state.
	ScopeReadState ClientScope = "read-state"
	// ScopeConsent: POST and DELETE /v1/users/{id}/consent.
	ScopeConsent ClientScope = "consent"
	// ScopeErase: DELETE /v1/users/{id}.
	ScopeErase ClientScope = "erase"
	// ScopeExport: GET /v1/users/{id}/export.
	ScopeExport ClientScope = "export"
	// ScopeCohort: GET /v1/cohort (k-anonymous aggregates).
	ScopeCohort ClientScope = "cohort"
	// ScopeMetrics: GET /metrics.
	ScopeMetrics ClientScope = "metrics"
	// ScopeResearch: GET /v1/decisions (the pseudonymous decision log).
	ScopeResearch ClientScope = "research"
)

// AllClientScopes are the scopes the CRD accepts, in engine/auth's order
// (a test holds the two lists equal).
var AllClientScopes = []ClientScope{ScopeIngest, ScopeDecide, ScopeReadState, ScopeConsent, ScopeErase, ScopeExport, ScopeCohort, ScopeMetrics, ScopeResearch}

// DefaultRotationGracePeriod is spec.access.rotationGracePeriod when unset.
const DefaultRotationGracePeriod = "1h"

// ProgramAccess says who may call the program's engines, for what, and
// where the engines may connect to (docs/access.md).
type ProgramAccess struct {
	// clients are the callers of the engines, each with its own token
	// (a Secret <program>-client-<name> in the program's namespace, key
	// "token"), the namespaces it connects from and its scopes. The
	// engines' NetworkPolicy admits exactly these namespaces (and pod
	// labels). Default: none; the engines' port is then open to the
	// world's namespace only, for the program token (<program>-engine-token).
	// Names are unique: the list is a map keyed by name, which the API
	// server enforces (a duplicate is refused as spec.access.clients[n]).
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	Clients []AccessClient `json:"clients,omitempty"`

	// rotationGracePeriod is how long a client's previous token stays
	// valid after its tokenGeneration is bumped: the time a client has to
	// pick up its new token. Between 0s (the old token stops at once) and
	// 168h. Default 1h.
	// +optional
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('168h')",message="spec.access.rotationGracePeriod must be between 0s and 168h"
	RotationGracePeriod *metav1.Duration `json:"rotationGracePeriod,omitempty"`

	// postgresPeer narrows the engines' egress to the PostgreSQL store
	// (spec.engine.store.type PostgreSQL) to one peer: pods of a namespace
	// or an address block. Default: the store's port (5432 unless set
	// here) to any address; DNS and the store are the only egress either
	// way.
	// +optional
	PostgresPeer *NetworkPeer `json:"postgresPeer,omitempty"`
}

// AccessClient is one caller of a program's engines.
// +kubebuilder:validation:XValidation:rule="!(self.name in ['user', 'read-write', 'read-only'])",message="spec.access.clients[].name must not be user, read-write or read-only: the engine reserves them",fieldPath=.name
type AccessClient struct {
	// name of the client, a DNS label: its token Secret is
	// <program>-client-<name>, and the engines count requests and consent
	// changes under it.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=40
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// namespaces the client connects from (at least one). The engines'
	// NetworkPolicy admits these namespaces' pods, narrowed by
	// podSelector when it is set.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespaces []string `json:"namespaces"`

	// podSelector, when set, admits only the pods with these labels in
	// the client's namespaces. Default: every pod of those namespaces.
	// +optional
	// +kubebuilder:validation:MaxProperties=16
	PodSelector map[string]LabelValue `json:"podSelector,omitempty"`

	// scopes the client's token holds (at least one): ingest, decide,
	// read-state, consent, erase, export, cohort, metrics, research. A
	// client with ingest or decide may mint user tokens
	// (POST /v1/users/{id}/tokens).
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=9
	Scopes []ClientScope `json:"scopes"`

	// tokenGeneration is the generation of the client's token: bump it to
	// rotate. The operator then issues a new token into the client's
	// Secret and keeps the previous one valid for
	// spec.access.rotationGracePeriod. It may only grow. Default 1.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:XValidation:rule="self >= oldSelf",message="spec.access.clients[].tokenGeneration may only grow: bump it to rotate the token"
	TokenGeneration int64 `json:"tokenGeneration,omitempty"`
}

// NetworkPeer is where the engines may connect to: pods of one namespace
// (optionally with labels), or an address block.
// +kubebuilder:validation:XValidation:rule="has(self.namespace) != has(self.cidr)",message="spec.access.postgresPeer needs exactly one of namespace and cidr"
// +kubebuilder:validation:XValidation:rule="!has(self.podSelector) || has(self.namespace)",message="spec.access.postgresPeer.podSelector needs spec.access.postgresPeer.namespace",fieldPath=.podSelector
type NetworkPeer struct {
	// namespace of the peer's pods.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace,omitempty"`

	// podSelector narrows namespace to the pods with these labels.
	// Default: every pod of the namespace.
	// +optional
	// +kubebuilder:validation:MaxProperties=16
	PodSelector map[string]LabelValue `json:"podSelector,omitempty"`

	// cidr is the peer's address block (a managed database outside the
	// cluster), e.g. 10.0.8.0/24.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="spec.access.postgresPeer.cidr must be a CIDR such as 10.0.8.0/24"
	CIDR string `json:"cidr,omitempty"`

	// port is the peer's TCP port. Default 5432.
	// +optional
	// +kubebuilder:default=5432
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port,omitempty"`
}

// LabelValue is a Kubernetes label value (the keys of a podSelector are
// checked by the operator, which names the field: a CEL rule over map
// keys costs more than the API server allows).
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`
type LabelValue string

// ClientStatus is the state of one client's token.
type ClientStatus struct {
	// name of the client (spec.access.clients[].name).
	Name string `json:"name"`
	// secretName is the Secret holding the client's token (key "token"),
	// in the program's namespace.
	SecretName string `json:"secretName"`
	// tokenGeneration is the generation of the token in that Secret.
	TokenGeneration int64 `json:"tokenGeneration"`
	// previousTokenExpiresAt, during a rotation's grace period, is when
	// the previous token stops being accepted.
	// +optional
	PreviousTokenExpiresAt *metav1.Time `json:"previousTokenExpiresAt,omitempty"`
}
