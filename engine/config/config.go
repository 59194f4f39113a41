// Package config is the engine's configuration file: the one Go type that the
// operator renders into a program's ConfigMap and the engine reads, validates
// and watches. It has no Kubernetes imports.
package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// FileName is the key of the configuration in the program's ConfigMap and
// the name of the file the engine reads.
const FileName = "config.json"

// Interventions the engine knows, in the spelling of the API.
var KnownInterventions = []string{
	"FocusedAttention", "ResonanceBreathing", "BodyScan",
	"CognitiveReappraisal", "MicroBreak", "ResilienceTraining",
}

// Contexts a world can have.
var KnownContexts = []string{"Social", "Entertainment", "Workplace", "Education", "Health"}

// Config is the whole engine configuration.
type Config struct {
	// Program identifies the program for logs and metric labels
	// ("namespace/name"); never a user.
	Program string `json:"program"`
	// Target is the ideal state s*.
	Target Vector `json:"target"`
	// Weights are the loss weights.
	Weights Vector `json:"weights"`
	// Interventions the engine may recommend.
	Interventions []string `json:"interventions"`
	// Strength is the program's intervention strength in force and its bounds.
	Strength Strength `json:"strength"`
	// Context of the world (Social, Entertainment, Workplace, Education, Health).
	Context string `json:"context"`
	// Privacy settings of the world.
	Privacy Privacy `json:"privacy"`
	// TokenFile holds the read-write API bearer token.
	TokenFile string `json:"tokenFile"`
	// ReadOnlyTokenFile holds the token that may only read /v1/cohort and /metrics.
	ReadOnlyTokenFile string `json:"readOnlyTokenFile"`
	// ClientTokensFile, when set, names the world's clients: JSON
	// {"clients": [{"name", "tokenSHA256", "scopes"}]} (engine/auth,
	// docs/engine-api.md). The engine re-reads it, like the token files,
	// without a restart. Optional: without it only the two tokens above.
	ClientTokensFile string `json:"clientTokensFile,omitempty"`
	// BackupTokenFile, when set (an absolute path), holds the token with
	// only the backup scope (GET /v1/admin/backup), held by the platform
	// team, never by world apps; re-read like the token files. Optional:
	// without it no token can take a backup.
	BackupTokenFile string `json:"backupTokenFile,omitempty"`
	// UserTokenKeyFile, when set, holds the program's signing key for user
	// tokens (HS256; at least 32 raw bytes) and turns on POST
	// /v1/users/{id}/tokens. Optional: without it user tokens are off.
	UserTokenKeyFile string `json:"userTokenKeyFile,omitempty"`
	// PseudonymizationKeyFile holds the world's HMAC key for user IDs.
	PseudonymizationKeyFile string `json:"pseudonymizationKeyFile"`
	// KeyEncryptionKeyDir holds the world's key-encryption keys (a mounted
	// Secret: one file per key, and "primary" naming the one that wraps
	// new data keys; docs/data-protection.md). With it every user's data is
	// encrypted at rest under a data key of their own; without it (an
	// engine run by hand) it is stored in the clear, which the engine logs
	// at start, and a store that holds encrypted data is refused.
	KeyEncryptionKeyDir string `json:"keyEncryptionKeyDir,omitempty"`
	// Consent is the program's consent policy.
	Consent ConsentPolicy `json:"consent,omitzero"`
	// DataDir holds the engine's database (the embedded store).
	DataDir string `json:"dataDir"`
	// Store selects where user state lives. Omitted: the embedded store in
	// DataDir.
	Store Store `json:"store,omitzero"`
	// ListenAddress is host:port of the HTTP API.
	ListenAddress string `json:"listenAddress"`
	// TLS, when set, makes the engine serve HTTPS only, with the
	// certificate and key in these files (the program's serving
	// certificate, a mounted Secret), re-read when they change without a
	// restart. The operator always sets it; without it (an engine run by
	// hand, a local test) the engine serves plain HTTP and logs so at start.
	TLS *TLS `json:"tls,omitempty"`
	// Model, when set, is the Open Inference Protocol text-emotion server.
	Model *Model `json:"model,omitempty"`
	// Seed makes recommendations reproducible; 0 seeds from the clock.
	Seed int64 `json:"seed,omitempty"`
	// Dose limits how often a user is offered an intervention and sets how
	// long after a decision its outcome is measured. Omitted fields take
	// the defaults below.
	Dose Dose `json:"dose,omitzero"`
	// Estimation sets the time constants of state estimation. Omitted
	// fields take the estimator's defaults (engine/estimate).
	Estimation Estimation `json:"estimation,omitzero"`
	// App serves a static web client (the reference client, web/dist) at
	// /app/. Off unless App.Dir is set.
	App App `json:"app,omitzero"`
	// CORS lets pages of other origins call the API from a browser. Off
	// unless origins are listed.
	CORS CORS `json:"cors,omitzero"`
}

// TLS names the engine's serving certificate files.
type TLS struct {
	// CertFile is the PEM certificate chain, leaf first (tls.crt).
	CertFile string `json:"certFile"`
	// KeyFile is the PEM private key (tls.key).
	KeyFile string `json:"keyFile"`
}

func (t *TLS) validate() error {
	if !filepath.IsAbs(t.CertFile) {
		return &FieldError{"tls.certFile", fmt.Sprintf("must be an absolute path, got %q", t.CertFile)}
	}
	if !filepath.IsAbs(t.KeyFile) {
		return &FieldError{"tls.keyFile", fmt.Sprintf("must be an absolute path, got %q", t.KeyFile)}
	}
	return nil
}

// App is the static web client the engine serves at /app/ (docs/engine-api.md).
type App struct {
	// Dir is the absolute path of the built client, with index.html at its
	// root. Empty: /app/ answers 404.
	Dir string `json:"dir,omitempty"`
}

// CORS lists the origins whose pages may call the API from a browser.
type CORS struct {
	// AllowedOrigins are exact origins, scheme://host[:port] such as
	// "https://world.example" (no wildcard, no path). None by default.
	AllowedOrigins []string `json:"allowedOrigins,omitempty"`
}

func (a App) validate() error {
	if a.Dir != "" && !filepath.IsAbs(a.Dir) {
		return &FieldError{"app.dir", fmt.Sprintf("must be an absolute path, got %q", a.Dir)}
	}
	return nil
}

func (c CORS) validate() error {
	for i, origin := range c.AllowedOrigins {
		field := fmt.Sprintf("cors.allowedOrigins[%d]", i)
		u, err := url.Parse(origin)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
			u.Path != "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(origin, "?") || strings.HasSuffix(origin, "#") {
			return &FieldError{field, fmt.Sprintf("must be an origin such as https://world.example (scheme, host, optional port; no wildcard or path), got %q", origin)}
		}
		if origin != strings.ToLower(origin) {
			return &FieldError{field, fmt.Sprintf("must be lower case as browsers send it, got %q", origin)}
		}
	}
	return nil
}

// Estimation is the program's time constants of state estimation, each
// zero for the default: StateDecay 30m, TraitDecay 336h (14 days),
// StressRecovery 10m (estimate.DefaultStateDecay and the rest). A world
// on another time scale than the default's sets them, for example a
// simulated population that lives in accelerated time.
type Estimation struct {
	// StateDecay is the time constant τ over which the confidence of
	// attention and emotion evidence decays (c·e^(−age/τ)).
	StateDecay Duration `json:"stateDecay,omitzero"`
	// TraitDecay is τ for resilience evidence.
	TraitDecay Duration `json:"traitDecay,omitzero"`
	// StressRecovery is τ of the recovery score e^(−t/τ) of a stress
	// episode that lasted t.
	StressRecovery Duration `json:"stressRecovery,omitzero"`
}

func (e Estimation) validate() error {
	for _, f := range []struct {
		field   string
		d       time.Duration
		lo, hi  time.Duration
		between string
	}{
		{"estimation.stateDecay", e.StateDecay.Duration, time.Second, 24 * time.Hour, "[1s,24h]"},
		{"estimation.traitDecay", e.TraitDecay.Duration, time.Minute, 365 * 24 * time.Hour, "[1m,8760h]"},
		{"estimation.stressRecovery", e.StressRecovery.Duration, time.Second, 24 * time.Hour, "[1s,24h]"},
	} {
		if f.d != 0 && (f.d < f.lo || f.d > f.hi) {
			return &FieldError{f.field, fmt.Sprintf("must be in %s, got %v", f.between, f.d)}
		}
	}
	return nil
}

// ConsentPolicy is what the engine demands of a user's consent.
type ConsentPolicy struct {
	// PolicyVersion names the privacy notice users consent to now. When
	// set, a consent request must say which version the user saw (its
	// policyVersion), and the consent ledger records it.
	PolicyVersion string `json:"policyVersion,omitempty"`
	// RequireReconsent refuses telemetry of users whose consent was given
	// for another version than PolicyVersion, until they consent again.
	RequireReconsent bool `json:"requireReconsent,omitempty"`
}

// MaxPolicyVersionLen bounds a policy version.
const MaxPolicyVersionLen = 64

// ValidPolicyVersion checks a policy version: 1 to MaxPolicyVersionLen
// printable ASCII characters without spaces.
func ValidPolicyVersion(v string) error {
	if v == "" || len(v) > MaxPolicyVersionLen {
		return fmt.Errorf("must be 1 to %d characters, got %d", MaxPolicyVersionLen, len(v))
	}
	for i := range len(v) {
		if v[i] < 0x21 || v[i] > 0x7e {
			return errors.New("must be printable ASCII without spaces")
		}
	}
	return nil
}

func (c ConsentPolicy) validate() error {
	if c.PolicyVersion != "" {
		if err := ValidPolicyVersion(c.PolicyVersion); err != nil {
			return &FieldError{"consent.policyVersion", err.Error()}
		}
	}
	if c.RequireReconsent && c.PolicyVersion == "" {
		return &FieldError{"consent.requireReconsent", "needs consent.policyVersion: re-consent is asked for a new version"}
	}
	return nil
}

// Dose defaults: at most DefaultMaxPerDay interventions a user a day, none
// within DefaultCooldown of the last one, outcomes measured over
// DefaultOutcomeWindow (the HeartSteps proximal-outcome horizon we adopt).
const (
	DefaultMaxPerDay     = 6
	DefaultCooldown      = time.Hour
	DefaultOutcomeWindow = 10 * time.Minute
)

// Dose is the program's per-user dose limits and outcome window.
type Dose struct {
	// MaxPerDay caps the interventions one user receives in 24 hours
	// (default DefaultMaxPerDay).
	MaxPerDay int `json:"maxPerDay,omitempty"`
	// Cooldown is the least time between two interventions for one user
	// (default DefaultCooldown; "0s" is spelled as a zero duration).
	Cooldown *Duration `json:"cooldown,omitempty"`
	// OutcomeWindow is how long after a decision the change of the user's
	// loss is measured (default DefaultOutcomeWindow).
	OutcomeWindow Duration `json:"outcomeWindow,omitzero"`
}

// MaxPerDayOrDefault is the daily cap in force.
func (d Dose) MaxPerDayOrDefault() int {
	if d.MaxPerDay == 0 {
		return DefaultMaxPerDay
	}
	return d.MaxPerDay
}

// CooldownOrDefault is the cooldown in force.
func (d Dose) CooldownOrDefault() time.Duration {
	if d.Cooldown == nil {
		return DefaultCooldown
	}
	return d.Cooldown.Duration
}

// OutcomeWindowOrDefault is the outcome window in force.
func (d Dose) OutcomeWindowOrDefault() time.Duration {
	if d.OutcomeWindow.Duration == 0 {
		return DefaultOutcomeWindow
	}
	return d.OutcomeWindow.Duration
}

func (d Dose) validate() error {
	if d.MaxPerDay < 0 || d.MaxPerDay > 96 {
		return &FieldError{"dose.maxPerDay", fmt.Sprintf("must be in [1,96], got %d", d.MaxPerDay)}
	}
	if d.Cooldown != nil && (d.Cooldown.Duration < 0 || d.Cooldown.Duration > 24*time.Hour) {
		return &FieldError{"dose.cooldown", fmt.Sprintf("must be in [0s,24h], got %v", d.Cooldown.Duration)}
	}
	if w := d.OutcomeWindow.Duration; w < 0 || w > 24*time.Hour || (w > 0 && w < time.Second) {
		return &FieldError{"dose.outcomeWindow", fmt.Sprintf("must be in [1s,24h], got %v", w)}
	}
	return nil
}

// Vector is a value per state dimension.
type Vector struct {
	Attention  float64 `json:"attention"`
	Emotion    float64 `json:"emotion"`
	Resilience float64 `json:"resilience"`
}

// Strength is the intervention strength in force and its bounds.
type Strength struct {
	Value float64 `json:"value"`
	Min   float64 `json:"min"`
	Max   float64 `json:"max"`
}

// Generation identifies the tuned values: the strength in force and its
// bounds, the part of the configuration the operator's tuner rewrites
// while the engines run (a change of anything else rolls the pods: see
// RestartHash). Engines report it in GET /v1/cohort, and the operator
// computes it from the strength it put in force, so equal generations mean
// that an engine runs what the operator decided. It hashes the values
// rather than naming the ConfigMap's resourceVersion: an engine sees only
// its mounted file, never the object, and the operator can compute the
// hash before its write lands.
func (s Strength) Generation() string {
	b, _ := json.Marshal(s) // three floats: cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}

// Privacy is the world's data-protection policy as the engine applies it.
type Privacy struct {
	// Retention is a Go duration ("720h").
	Retention     Duration `json:"retention"`
	MinCohortSize int      `json:"minCohortSize"`
}

// Model runtimes: which model server answers at Model.URL, and so which
// request it expects and which answers it sends (engine/textemotion).
const (
	// ModelRuntimeKServeHuggingFace is KServe's huggingfaceserver with a
	// sequence-classification model: class indices (INT64), or with
	// --return_probabilities / --return_raw_logits one Python dict repr per
	// text. Needs Labels (it returns indices only).
	ModelRuntimeKServeHuggingFace = "KServeHuggingFace"
	// ModelRuntimeTriton is Triton Inference Server: FP logits or
	// probabilities [N, K], or with Classification the classification
	// extension's "value:index[:label]" strings. Needs Labels.
	ModelRuntimeTriton = "Triton"
	// ModelRuntimeMLServerHuggingFace is MLServer's HuggingFace runtime with
	// a text-classification pipeline: hg_jsonlist {"label", "score"}.
	ModelRuntimeMLServerHuggingFace = "MLServerHuggingFace"
	// ModelRuntimeCustom (also the empty runtime) is the original
	// contract: one BYTES input "text" of N texts, one FP output of N
	// valences in [-1, 1].
	ModelRuntimeCustom = "Custom"
)

// ModelRuntimes are the runtimes Model.Runtime may name.
var ModelRuntimes = []string{ModelRuntimeKServeHuggingFace, ModelRuntimeTriton, ModelRuntimeMLServerHuggingFace, ModelRuntimeCustom}

// Output kinds of a classifier's numeric scores.
const (
	// ModelOutputLogits: scores are logits; the engine applies softmax.
	ModelOutputLogits = "Logits"
	// ModelOutputProbabilities: scores are a probability distribution.
	ModelOutputProbabilities = "Probabilities"
)

// DefaultAffectLabels are the class labels engine/textemotion maps to
// valence and arousal without a LabelMap (NRC VAD Lexicon entries, see
// textemotion.DefaultAffects): the 7-class Ekman emotion model and
// 3-class sentiment. Matching ignores case.
var DefaultAffectLabels = []string{"anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise", "negative", "positive"}

// Model locates an Open Inference Protocol (KServe v2) text-emotion model
// server and says how to read its answers.
type Model struct {
	URL     string   `json:"url"`
	Name    string   `json:"name"`
	Timeout Duration `json:"timeout,omitempty"`
	// Runtime is KServeHuggingFace, Triton, MLServerHuggingFace or Custom
	// (empty: Custom, the single-valence contract).
	Runtime string `json:"runtime,omitempty"`
	// Labels name the model's classes by index (the model's id2label).
	// Required for KServeHuggingFace and Triton, which answer with indices.
	Labels []string `json:"labels,omitempty"`
	// OutputKind says whether numeric class scores are Logits (softmax is
	// applied) or Probabilities. Empty: a row that is a distribution is
	// taken as probabilities, any other row as logits.
	OutputKind string `json:"outputKind,omitempty"`
	// LabelMap overrides or extends the default label → affect map.
	// Keys match labels ignoring case.
	LabelMap map[string]Affect `json:"labelMap,omitempty"`
	// InputName and OutputName override the runtime's tensor names
	// (KServeHuggingFace input-0/output-0, Triton TEXT/logits,
	// MLServerHuggingFace args/output, Custom text/any).
	InputName  string `json:"inputName,omitempty"`
	OutputName string `json:"outputName,omitempty"`
	// Classification (Triton only) asks for the output through Triton's
	// classification extension, top len(Labels) classes.
	Classification bool `json:"classification,omitempty"`
}

// Affect is a label's place in the circumplex: valence and arousal in [-1, 1].
type Affect struct {
	Valence float64 `json:"valence"`
	Arousal float64 `json:"arousal"`
}

// RuntimeOrDefault is the runtime in force (empty means Custom).
func (m *Model) RuntimeOrDefault() string {
	if m.Runtime == "" {
		return ModelRuntimeCustom
	}
	return m.Runtime
}

func (m *Model) validate() error {
	if m.URL == "" {
		return &FieldError{"model.url", "is required when model is set"}
	}
	if m.Name == "" {
		return &FieldError{"model.name", "is required when model is set"}
	}
	if m.Timeout.Duration < 0 {
		return &FieldError{"model.timeout", fmt.Sprintf("must not be negative, got %v", m.Timeout.Duration)}
	}
	rt := m.RuntimeOrDefault()
	if !slices.Contains(ModelRuntimes, rt) {
		return &FieldError{"model.runtime", fmt.Sprintf("must be one of %v, got %q", ModelRuntimes, m.Runtime)}
	}
	switch m.OutputKind {
	case "", ModelOutputLogits, ModelOutputProbabilities:
	default:
		return &FieldError{"model.outputKind", fmt.Sprintf("must be Logits or Probabilities, got %q", m.OutputKind)}
	}
	if m.Classification && rt != ModelRuntimeTriton {
		return &FieldError{"model.classification", "is only allowed with runtime Triton"}
	}
	if rt == ModelRuntimeCustom {
		if len(m.Labels) > 0 || len(m.LabelMap) > 0 || m.OutputKind != "" {
			return &FieldError{"model.runtime", "labels, labelMap and outputKind need a classifier runtime (KServeHuggingFace, Triton, MLServerHuggingFace); Custom reads one valence per text"}
		}
		return nil
	}
	if len(m.Labels) == 0 && rt != ModelRuntimeMLServerHuggingFace {
		return &FieldError{"model.labels", fmt.Sprintf("is required for runtime %s: the server answers with class indices only", rt)}
	}
	for label, a := range m.LabelMap {
		if label == "" {
			return &FieldError{"model.labelMap", "keys must not be empty"}
		}
		for name, v := range map[string]float64{"valence": a.Valence, "arousal": a.Arousal} {
			if math.IsNaN(v) || v < -1 || v > 1 {
				return &FieldError{fmt.Sprintf("model.labelMap[%s].%s", label, name), fmt.Sprintf("must be in [-1,1], got %v", v)}
			}
		}
	}
	known := func(label string) bool {
		for k := range m.LabelMap {
			if strings.EqualFold(k, label) {
				return true
			}
		}
		return slices.ContainsFunc(DefaultAffectLabels, func(d string) bool { return strings.EqualFold(d, label) })
	}
	seen := map[string]bool{}
	for i, label := range m.Labels {
		field := fmt.Sprintf("model.labels[%d]", i)
		if label == "" {
			return &FieldError{field, "must not be empty"}
		}
		if seen[strings.ToLower(label)] {
			return &FieldError{field, fmt.Sprintf("duplicate label %q", label)}
		}
		seen[strings.ToLower(label)] = true
		if !known(label) {
			return &FieldError{field, fmt.Sprintf("label %q has no default valence/arousal (defaults: %v); add it to model.labelMap", label, DefaultAffectLabels)}
		}
	}
	if len(m.Labels) == 1 {
		return &FieldError{"model.labels", "a classifier needs at least 2 labels"}
	}
	return nil
}

// Duration is a time.Duration written as a Go duration string.
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as a string such as "720h0m0s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"720h\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// FieldError is a validation error that names the offending field.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Validate checks every field and returns the first problem as a *FieldError.
func (c *Config) Validate() error {
	unit := func(field string, v float64) error {
		if math.IsNaN(v) || v < 0 || v > 1 {
			return &FieldError{field, fmt.Sprintf("must be in [0,1], got %v", v)}
		}
		return nil
	}
	checks := []error{
		unit("target.attention", c.Target.Attention),
		unit("target.emotion", c.Target.Emotion),
		unit("target.resilience", c.Target.Resilience),
		unit("strength.value", c.Strength.Value),
		unit("strength.min", c.Strength.Min),
		unit("strength.max", c.Strength.Max),
	}
	for _, err := range checks {
		if err != nil {
			return err
		}
	}
	for field, w := range map[string]float64{"weights.attention": c.Weights.Attention, "weights.emotion": c.Weights.Emotion, "weights.resilience": c.Weights.Resilience} {
		if math.IsNaN(w) || math.IsInf(w, 0) || w < 0 {
			return &FieldError{field, fmt.Sprintf("must be a finite number >= 0, got %v", w)}
		}
	}
	if c.Weights.Attention+c.Weights.Emotion+c.Weights.Resilience <= 0 {
		return &FieldError{"weights", "must not all be zero"}
	}
	if c.Strength.Min > c.Strength.Value || c.Strength.Value > c.Strength.Max {
		return &FieldError{"strength", fmt.Sprintf("must satisfy min <= value <= max, got %v <= %v <= %v", c.Strength.Min, c.Strength.Value, c.Strength.Max)}
	}
	if len(c.Interventions) == 0 {
		return &FieldError{"interventions", "must name at least one intervention"}
	}
	seen := map[string]bool{}
	for i, iv := range c.Interventions {
		if !slices.Contains(KnownInterventions, iv) {
			return &FieldError{fmt.Sprintf("interventions[%d]", i), fmt.Sprintf("unknown intervention %q", iv)}
		}
		if seen[iv] {
			return &FieldError{fmt.Sprintf("interventions[%d]", i), fmt.Sprintf("duplicate intervention %q", iv)}
		}
		seen[iv] = true
	}
	if !slices.Contains(KnownContexts, c.Context) {
		return &FieldError{"context", fmt.Sprintf("must be one of %v, got %q", KnownContexts, c.Context)}
	}
	if c.Privacy.Retention.Duration < time.Minute {
		return &FieldError{"privacy.retention", "must be at least 1m"}
	}
	if c.Privacy.MinCohortSize < 2 {
		return &FieldError{"privacy.minCohortSize", fmt.Sprintf("must be at least 2, got %d", c.Privacy.MinCohortSize)}
	}
	for field, path := range map[string]string{"tokenFile": c.TokenFile, "readOnlyTokenFile": c.ReadOnlyTokenFile, "pseudonymizationKeyFile": c.PseudonymizationKeyFile, "dataDir": c.DataDir, "listenAddress": c.ListenAddress} {
		if path == "" {
			return &FieldError{field, "is required"}
		}
	}
	if c.BackupTokenFile != "" && !filepath.IsAbs(c.BackupTokenFile) {
		return &FieldError{"backupTokenFile", fmt.Sprintf("must be an absolute path, got %q", c.BackupTokenFile)}
	}
	if err := c.Store.validate(); err != nil {
		return err
	}
	if err := c.Dose.validate(); err != nil {
		return err
	}
	if err := c.Consent.validate(); err != nil {
		return err
	}
	if err := c.Estimation.validate(); err != nil {
		return err
	}
	if err := c.App.validate(); err != nil {
		return err
	}
	if err := c.CORS.validate(); err != nil {
		return err
	}
	if c.Model != nil {
		if err := c.Model.validate(); err != nil {
			return err
		}
	}
	if c.TLS != nil {
		if err := c.TLS.validate(); err != nil {
			return err
		}
	}
	return nil
}

// Store types, named as in the MeditationProgram's spec.engine.store.type.
const (
	StoreEmbedded   = "Embedded"
	StorePostgreSQL = "PostgreSQL"
)

// Store selects the state store.
type Store struct {
	// Type is Embedded (bbolt in DataDir; one replica) or PostgreSQL
	// (shared by all replicas). Empty means Embedded.
	Type string `json:"type,omitempty"`
	// Postgres is required for type PostgreSQL.
	Postgres *PostgresStore `json:"postgres,omitempty"`
}

// Keys of the PostgreSQL store's Secret, one file each in SecretDir: the
// connection string alone, or its parts (host required).
const (
	PostgresConnectionStringKey = "connectionString"
	PostgresHostKey             = "host"
)

// PostgresPartKeys are the keys that make up a connection without
// PostgresConnectionStringKey, in the order they are read.
var PostgresPartKeys = []string{PostgresHostKey, "port", "user", "password", "dbname", "sslmode"}

// PostgresStore locates the PostgreSQL connection: never the string itself,
// which holds a password, but the directory its Secret is mounted at.
type PostgresStore struct {
	// SecretDir holds the file connectionString, or host, port, user,
	// password, dbname and sslmode.
	SecretDir string `json:"secretDir"`
}

// Scope says who else reads and writes an engine's store, and so what its
// cohort covers (the "scope" of GET /v1/cohort). It is part of the contract
// between operator and engine, so it lives here: the operator reads it
// without importing the store.
type Scope string

const (
	// ScopeReplica: one engine process owns the data; its cohort is its own
	// users only.
	ScopeReplica Scope = "replica"
	// ScopeShared: every replica of the program reads and writes the same
	// data; any replica's cohort is the whole program's.
	ScopeShared Scope = "shared"
)

// IsShared reports whether the store is shared by several replicas.
func (s Store) IsShared() bool { return s.Type == StorePostgreSQL }

func (s Store) validate() error {
	switch s.Type {
	case "", StoreEmbedded:
		if s.Postgres != nil {
			return &FieldError{"store.postgres", "is only allowed with store.type PostgreSQL"}
		}
	case StorePostgreSQL:
		if s.Postgres == nil || s.Postgres.SecretDir == "" {
			return &FieldError{"store.postgres.secretDir", "is required when store.type is PostgreSQL"}
		}
	default:
		return &FieldError{"store.type", fmt.Sprintf("must be Embedded or PostgreSQL, got %q", s.Type)}
	}
	return nil
}

// ProhibitsBiometricEmotion reports whether the world's context forbids
// emotion inference from physiological signals (EU AI Act, Art. 5(1)(f)).
func (c *Config) ProhibitsBiometricEmotion() bool {
	return c.Context == "Workplace" || c.Context == "Education"
}

// Parse decodes and validates a configuration. Unknown fields are errors so
// that a typo is not silently ignored.
func Parse(data []byte) (*Config, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return nil, &FieldError{typeErr.Field, fmt.Sprintf("wrong type: want %s", typeErr.Type)}
		}
		return nil, fmt.Errorf("decode configuration: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Load reads and parses a configuration file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Render serialises the configuration as the operator writes it.
func (c *Config) Render() ([]byte, error) {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render engine config: %w", err)
	}
	return append(b, '\n'), nil
}

// RestartHash hashes the parts of the configuration whose change should roll
// the engine pods. The strength is left out: the tuner changes it every few
// intervals and engines reload it from the file without a restart.
func (c *Config) RestartHash() string {
	clone := *c
	clone.Strength.Value = 0
	b, _ := json.Marshal(clone) // a plain struct: cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
