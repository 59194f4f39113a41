// Package contract holds everything the engine exchanges with its callers
// (the operator, world clients, tests): the JSON types of the HTTP API (the
// answers of the /v1 endpoints and the bodies they accept, with the limits
// and headers the API defines), the configuration file the operator
// renders, the keys of the Secrets the engine's files come from, and the
// enumerations both sides must spell alike (interventions, contexts, store
// types, model runtimes).
//
// It is deliberately light: it imports only pure engine packages (estimate,
// policy, effects, config, telemetry) and no storage driver, so a client
// (engine/client) or the operator can speak the API without linking bbolt
// or pgx. engine/service declares these types as aliases, so the engine and
// its callers cannot drift apart.
package contract

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/effects"
	"github.com/attune-io/attune/engine/estimate"
	"github.com/attune-io/attune/engine/policy"
	"github.com/attune-io/attune/engine/telemetry"
)

// The engine configuration: the file the operator renders into a
// program's ConfigMap and the engine reads (engine/config defines it and
// validates it; these names let the operator speak of it through the
// contract).
type (
	// Config is the whole engine configuration file.
	Config = config.Config
	// Strength is the strength in force and its bounds: the part of the
	// configuration the tuner rewrites while the engines run.
	Strength = config.Strength
	// Scope says what a cohort covers (the "scope" of GET /v1/cohort).
	Scope = config.Scope
)

// The cohort scopes.
const (
	// ScopeReplica: the cohort is this engine's own users; the operator
	// sums the replicas.
	ScopeReplica = config.ScopeReplica
	// ScopeShared: the cohort is the whole program's (a shared store); the
	// operator reads it from one replica.
	ScopeShared = config.ScopeShared
)

// Keys of the Secrets the engine's files come from. The operator writes
// them; the engine reads the files the kubelet mounts from them (the paths
// are in Config).
const (
	// TokenKey holds the read-write API token in the program's token
	// Secret.
	TokenKey = "token"
	// ReadOnlyTokenKey holds the token that may only read /v1/cohort and
	// /metrics (the operator's).
	ReadOnlyTokenKey = "read-only-token"
	// PseudonymizationKeyKey holds the world's HMAC key in the Secret the
	// operator generates, and names the file it is mounted as.
	PseudonymizationKeyKey = "key"
	// KeyringPrimaryKey names, in the world's key-encryption-key Secret,
	// the key that holds the primary KEK's ID; every other key of that
	// Secret is a KEK (32 bytes) named by its key (docs/data-protection.md).
	KeyringPrimaryKey = "primary"
	// PostgresConnectionStringKey and PostgresHostKey are the keys of a
	// PostgreSQL store's Secret: a connection string, or its parts
	// (PostgresPartKeys, host required).
	PostgresConnectionStringKey = config.PostgresConnectionStringKey
	PostgresHostKey             = config.PostgresHostKey
)

// PostgresPartKeys are the keys that make up a connection without
// PostgresConnectionStringKey.
var PostgresPartKeys = config.PostgresPartKeys

// Store types, named as in spec.engine.store.type.
const (
	StoreEmbedded   = config.StoreEmbedded
	StorePostgreSQL = config.StorePostgreSQL
)

// The enumerations the engine accepts, in the spelling of the API
// (api/v1alpha1 states them again as kubebuilder enums; a test there holds
// the two equal).
var (
	// Interventions the engine may recommend.
	Interventions = config.KnownInterventions
	// Contexts a world can have.
	Contexts = config.KnownContexts
	// StoreTypes the engine can keep state in.
	StoreTypes = []string{StoreEmbedded, StorePostgreSQL}
	// ModelRuntimes are the text-model servers the engine can read.
	ModelRuntimes = config.ModelRuntimes
	// AffectLabels are the class labels the engine maps to a valence
	// without a label map.
	AffectLabels = config.DefaultAffectLabels
)

// Limits of the API (engine/api enforces them; TestLimitsMatchTheAPI holds
// the copies here to the same values).
const (
	// MaxBodyBytes bounds a request body (413 beyond).
	MaxBodyBytes = 1 << 20
	// MaxIdempotencyKeyBytes bounds an Idempotency-Key header.
	MaxIdempotencyKeyBytes = 255
	// MaxBatchSamples bounds the samples of one telemetry request.
	MaxBatchSamples = telemetry.MaxBatchSamples
)

// Headers and media types of the API.
const (
	// HeaderIdempotencyKey makes a decision request or a telemetry batch
	// safe to retry.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderIdempotentReplayed is "true" on an answer the engine gave
	// again for a repeated Idempotency-Key (a decision from the log, a
	// committed batch from its record) without storing anything.
	HeaderIdempotentReplayed = "Idempotent-Replayed"
	// ContentTypeJSON is every JSON body.
	ContentTypeJSON = "application/json"
	// ContentTypeNDJSON is a telemetry batch of one sample per line, and
	// the decision log export.
	ContentTypeNDJSON = "application/x-ndjson"
)

// ErrorBody is every error response: {"error": "...", "field": "..."},
// where field names the offending input (samples[3].rr_ms[7], scopes[0],
// Authorization, id).
type ErrorBody struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
	// Outcome is OutcomeUnknown on a 503 whose request may or may not
	// have been stored (the store failed while its commit was in flight);
	// absent, an error answer means nothing was stored.
	Outcome string `json:"outcome,omitempty"`
}

// OutcomeUnknown is ErrorBody.Outcome when the engine cannot tell whether
// the request was stored.
const OutcomeUnknown = "unknown"

// IdempotencyWindow is how long the engine answers a retried telemetry
// batch (same Idempotency-Key) from the record of its commit.
const IdempotencyWindow = 24 * time.Hour

// ConsentRequest is the body of POST and DELETE /v1/users/{id}/consent.
type ConsentRequest struct {
	Scopes []telemetry.Scope `json:"scopes"`
	// PolicyVersion is the version of the privacy notice the user saw
	// when consenting (POST; required when the program declares one, as
	// spec.consent.policyVersion).
	PolicyVersion string `json:"policyVersion,omitempty"`
}

// Consent is what a user has agreed to.
type Consent struct {
	Scopes []telemetry.Scope `json:"scopes"`
	At     time.Time         `json:"at"`
	// PolicyVersion is the privacy notice's version the scopes were
	// granted under (absent when none was given).
	PolicyVersion string `json:"policyVersion,omitempty"`
}

// Consent ledger actions.
const (
	ConsentGrant    = "grant"
	ConsentWithdraw = "withdraw"
)

// ConsentEvent is one entry of a user's consent ledger: every grant and
// withdrawal, appended, never changed, erased with the user (GDPR Art.
// 7(1): the controller can demonstrate consent).
type ConsentEvent struct {
	At time.Time `json:"at"`
	// Action is ConsentGrant (POST: Scopes replace what was granted) or
	// ConsentWithdraw (DELETE: Scopes are withdrawn; every scope when the
	// request named none).
	Action string            `json:"action"`
	Scopes []telemetry.Scope `json:"scopes"`
	// InForce are the scopes granted after the change.
	InForce []telemetry.Scope `json:"inForce"`
	// PolicyVersion is the privacy notice's version the user saw (grants).
	PolicyVersion string `json:"policyVersion,omitempty"`
	// Source names the client that made the change: the client token's
	// name ("read-write", a client of clientTokensFile), or "user" for the
	// user's own user token.
	Source string `json:"source,omitempty"`
}

// Allows reports whether the consent covers scope.
func (c Consent) Allows(s telemetry.Scope) bool { return slices.Contains(c.Scopes, s) }

// IngestResult counts accepted samples.
type IngestResult struct {
	Accepted int            `json:"accepted"`
	Users    int            `json:"users"`
	ByKind   map[string]int `json:"byKind"`
}

// UserState is the answer to GET /v1/users/{id}/state.
type UserState struct {
	Attention  estimate.Dimension `json:"attention"`
	Emotion    estimate.Dimension `json:"emotion"`
	Resilience estimate.Dimension `json:"resilience"`
	Loss       *float64           `json:"loss"`
	// LastDecision is the user's latest decision (POST .../decisions), if any.
	LastDecision *Decision `json:"lastDecision,omitempty"`
	EstimatedAt  time.Time `json:"estimatedAt"`
	// EmotionFromPhysiology says whether physiological evidence may count
	// toward emotion in this world.
	EmotionFromPhysiology bool `json:"emotionFromPhysiology"`
	// Samples is how many telemetry samples the state rests on: every
	// acknowledged one since the user's record was created.
	Samples int64 `json:"samples"`
}

// CohortSummary is the answer to GET /v1/cohort.
type CohortSummary struct {
	Published     bool     `json:"published"`
	MinCohortSize int      `json:"minCohortSize"`
	Size          *int     `json:"size,omitempty"`
	Loss          *float64 `json:"loss,omitempty"`
	Means         *Means   `json:"means,omitempty"`
	Strength      float64  `json:"strength"`
	// Scope is "replica" when the cohort is this engine's own users (sum
	// over replicas) or "shared" when it is the whole program's, computed
	// over the shared store (read it from one replica only).
	Scope      config.Scope `json:"scope"`
	ObservedAt time.Time    `json:"observedAt"`
	// Effects are the interventions' causal excursion effects that meet
	// the cohort floor (effects.Publishable), by intervention name.
	Effects []effects.Effect `json:"effects,omitempty"`
	// PolicyVersion identifies the configuration that decides now.
	PolicyVersion string `json:"policyVersion"`
	// Generation identifies the tuned values this engine runs (Strength
	// with its bounds: config.Strength.Generation), and RunningSince is
	// when it began running them, on the same clock as ObservedAt: the
	// engine's start, or the reload that brought them. The operator
	// credits a loss to a strength only when every replica it counts
	// runs that strength's generation and has run it for the program's
	// settle time (ObservedAt − RunningSince).
	Generation   string    `json:"generation"`
	RunningSince time.Time `json:"runningSince"`
}

// Means are per-dimension cohort means; null where no user of the cohort
// has an estimate of that dimension.
type Means struct {
	Attention  *float64 `json:"attention"`
	Emotion    *float64 `json:"emotion"`
	Resilience *float64 `json:"resilience"`
}

// Decision is one decision point of one user, as logged and as answered
// by POST /v1/users/{id}/decisions. It never holds the user's ID: the log
// keys it by pseudonym.
type Decision struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
	// Available is what the client said: whether the user could take an
	// intervention now.
	Available bool     `json:"available"`
	Context   []string `json:"context,omitempty"`
	// Action is "none" or the intervention delivered.
	Action string `json:"action"`
	// Probability is the probability with which Action was chosen.
	Probability float64 `json:"probability"`
	// Candidate is the intervention randomised against none, and
	// TreatmentProbability the probability of delivering it: 0, with a
	// Reason, when the decision was not randomised (unavailable, cooldown,
	// daily cap).
	Candidate            string  `json:"candidate,omitempty"`
	TreatmentProbability float64 `json:"treatmentProbability"`
	Reason               string  `json:"reason,omitempty"`
	// Dose and Instructions say what to deliver.
	Dose         *policy.Dose `json:"dose,omitempty"`
	Instructions string       `json:"instructions"`
	// PolicyVersion identifies the configuration that decided.
	PolicyVersion string `json:"policyVersion"`
	// LossAtDecision is the user's loss when the decision was taken; the
	// outcome is measured from it (absent when the loss was unknown).
	LossAtDecision *float64 `json:"lossAtDecision,omitempty"`
	// OutcomeDue is when the outcome window closes.
	OutcomeDue time.Time `json:"outcomeDue"`
	// Outcome is the proximal outcome, once settled.
	Outcome *Outcome `json:"outcome,omitempty"`
	// Completed and Rating come from the intervention sample that answers
	// this decision.
	Completed *bool `json:"completed,omitempty"`
	Rating    *int  `json:"rating,omitempty"`
}

// Randomised reports whether the decision was drawn at random.
func (d *Decision) Randomised() bool {
	return d.Candidate != "" && d.TreatmentProbability > 0 && d.TreatmentProbability < 1
}

// Treated reports whether the decision delivers an intervention (Action is
// not "none").
func (d *Decision) Treated() bool { return d.Action != policy.ActionNone }

// Outcome is a decision's proximal outcome: the change of the user's loss
// over the outcome window, from the engine's own estimate.
type Outcome struct {
	At   time.Time `json:"at"`
	Loss float64   `json:"loss"`
	// Change is Loss − LossAtDecision: negative is better.
	Change float64 `json:"change"`
}

// DecisionRequest is the body of POST /v1/users/{id}/decisions.
type DecisionRequest struct {
	// Available defaults to true.
	Available *bool    `json:"available,omitempty"`
	Context   []string `json:"context,omitempty"`
}

// UserExportFormat names the format of UserExport.
const UserExportFormat = "attune.user-export/v1"

// UserExport is the answer to GET /v1/users/{id}/export: everything the
// engine stores about one user, decrypted for them (GDPR Art. 15 access,
// Art. 20 portability). docs/engine-api.md describes each field.
type UserExport struct {
	// Format is UserExportFormat.
	Format     string    `json:"format"`
	ExportedAt time.Time `json:"exportedAt"`
	// Program is the program that holds the data ("namespace/name").
	Program string `json:"program"`
	// Pseudonym is the user's ID as the engine keys it (an HMAC of it):
	// what the research export (GET /v1/decisions) calls the user.
	Pseudonym string `json:"pseudonym"`
	// Consent is what the user has agreed to now, and ConsentLedger every
	// grant and withdrawal, oldest first.
	Consent       Consent        `json:"consent"`
	ConsentLedger []ConsentEvent `json:"consentLedger"`
	// LastSeen is the user's last request; the retention period runs from
	// it.
	LastSeen time.Time `json:"lastSeen"`
	// Samples counts the telemetry samples folded into the user's state.
	Samples int64 `json:"samples"`
	// State is the current estimate, as GET /v1/users/{id}/state answers.
	State UserState `json:"state"`
	// Evidence is what the estimate is computed from, as stored: the
	// recent windows (RR intervals, SART trials, behaviour events) and the
	// per-dimension evidence and baselines (engine/estimate.Model).
	Evidence json.RawMessage `json:"evidence"`
	// Policy is the user's state in the intervention policy: the
	// per-intervention effect estimates, the randomised draws, the times
	// of their interventions in the last day (engine/policy.User).
	Policy json.RawMessage `json:"policy"`
	// Decisions are every logged decision of the user, oldest first, with
	// their outcomes once settled.
	Decisions []Decision `json:"decisions"`
}

// ExportedDecision is one line of GET /v1/decisions: a decision under the
// user's pseudonym.
type ExportedDecision struct {
	User string `json:"user"`
	Decision
}

// UserTokenRequest is the optional body of POST /v1/users/{id}/tokens.
type UserTokenRequest struct {
	// TTLSeconds is the token's lifetime: 0 or absent for the default
	// (15 minutes), at most 3600.
	TTLSeconds int64 `json:"ttlSeconds,omitempty"`
}

// UserToken is the answer of POST /v1/users/{id}/tokens: a bearer token
// (a JWT, HS256, aud the program) that may act only for that user.
type UserToken struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expiresAt"`
	// Scopes are what the token may do, each for its own user only.
	Scopes []string `json:"scopes"`
}

// PathStrength is the operator's push of the tuned values (PUT, scope
// auth.ScopeTune): docs/tuning.md, "Propagation and the push".
const PathStrength = "/v1/admin/strength"

// StrengthPush is the body of PUT /v1/admin/strength: the tuned values
// exactly as the operator rendered them into the program's ConfigMap
// (the "strength" object of Config) and their generation
// (Strength.Generation), which must match them.
type StrengthPush struct {
	Strength   Strength `json:"strength"`
	Generation string   `json:"generation"`
}

// StrengthPushResult is the answer of PUT /v1/admin/strength: the
// generation the engine runs now and since when (as GET /v1/cohort
// reports them); Applied is false when it already ran it.
type StrengthPushResult struct {
	Generation   string    `json:"generation"`
	RunningSince time.Time `json:"runningSince"`
	Applied      bool      `json:"applied"`
}

// StrengthPushHold is how long a pushed strength stays in force over a
// configuration file that still holds another: long enough for the
// kubelet to deliver the ConfigMap the push came from (its sync period
// plus cache TTL, about 60–90 s), short enough that the file, the durable
// source, wins soon after a push that no ConfigMap followed.
const StrengthPushHold = 3 * time.Minute
