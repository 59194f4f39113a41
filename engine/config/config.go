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
	"os"
	"slices"
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
	// PseudonymizationKeyFile holds the world's HMAC key for user IDs.
	PseudonymizationKeyFile string `json:"pseudonymizationKeyFile"`
	// DataDir holds the engine's database (the embedded store).
	DataDir string `json:"dataDir"`
	// Store selects where user state lives. Omitted: the embedded store in
	// DataDir.
	Store Store `json:"store,omitzero"`
	// ListenAddress is host:port of the HTTP API.
	ListenAddress string `json:"listenAddress"`
	// Model, when set, is the Open Inference Protocol text-emotion server.
	Model *Model `json:"model,omitempty"`
	// Seed makes recommendations reproducible; 0 seeds from the clock.
	Seed int64 `json:"seed,omitempty"`
	// Dose limits how often a user is offered an intervention and sets how
	// long after a decision its outcome is measured. Omitted fields take
	// the defaults below.
	Dose Dose `json:"dose,omitzero"`
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

// Privacy is the world's data-protection policy as the engine applies it.
type Privacy struct {
	// Retention is a Go duration ("720h").
	Retention     Duration `json:"retention"`
	MinCohortSize int      `json:"minCohortSize"`
}

// Model locates a KServe v2 text-emotion model server.
type Model struct {
	URL     string   `json:"url"`
	Name    string   `json:"name"`
	Timeout Duration `json:"timeout,omitempty"`
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
	if err := c.Store.validate(); err != nil {
		return err
	}
	if err := c.Dose.validate(); err != nil {
		return err
	}
	if c.Model != nil {
		if c.Model.URL == "" {
			return &FieldError{"model.url", "is required when model is set"}
		}
		if c.Model.Name == "" {
			return &FieldError{"model.name", "is required when model is set"}
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
