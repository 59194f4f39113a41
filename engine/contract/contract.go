// Package contract holds the JSON types the engine's HTTP API exchanges
// with its callers (the operator, world clients, tests): the answers of the
// /v1 endpoints and the bodies they accept, with the limits and headers the
// API defines.
//
// It is deliberately light: it imports only pure engine packages (estimate,
// policy, effects, config, telemetry) and no storage driver, so a client
// (engine/client) or the operator can speak the API without linking bbolt
// or pgx. engine/service declares these types as aliases, so the engine and
// its callers cannot drift apart.
package contract

import (
	"slices"
	"time"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/effects"
	"github.com/attune-io/attune/engine/estimate"
	"github.com/attune-io/attune/engine/policy"
	"github.com/attune-io/attune/engine/telemetry"
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
	// HeaderIdempotencyKey makes a decision request safe to retry.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderIdempotentReplayed is "true" on a decision answered from the
	// log for a repeated Idempotency-Key.
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
}

// ConsentRequest is the body of POST and DELETE /v1/users/{id}/consent.
type ConsentRequest struct {
	Scopes []telemetry.Scope `json:"scopes"`
}

// Consent is what a user has agreed to.
type Consent struct {
	Scopes []telemetry.Scope `json:"scopes"`
	At     time.Time         `json:"at"`
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

// ExportedDecision is one line of GET /v1/decisions: a decision under the
// user's pseudonym.
type ExportedDecision struct {
	User string `json:"user"`
	Decision
}
