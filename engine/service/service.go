// Package service is the engine's core: it ties configuration, consent,
// pseudonymisation, state estimation, loss, policy and storage together.
// The HTTP API (engine/api) is a thin layer over it.
package service

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/estimate"
	"github.com/attune-io/attune/engine/loss"
	"github.com/attune-io/attune/engine/metrics"
	"github.com/attune-io/attune/engine/policy"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/engine/telemetry"
	"github.com/attune-io/attune/engine/textemotion"
)

// Errors the API maps to status codes.
var (
	ErrUnknownUser = errors.New("unknown user")
)

// ConsentError is telemetry for a scope the user has not consented to.
type ConsentError struct {
	Field string
	Scope telemetry.Scope
}

func (e *ConsentError) Error() string {
	return fmt.Sprintf("no consent for scope %q (GDPR Art. 9: health data needs explicit consent)", e.Scope)
}

// ProhibitedError is telemetry the world's context forbids processing.
type ProhibitedError struct {
	Field   string
	Context string
}

func (e *ProhibitedError) Error() string {
	return fmt.Sprintf("physiological signals are not accepted in %s worlds: emotion inference from biometric data is prohibited there (EU AI Act, Regulation 2024/1689, Art. 5(1)(f))", e.Context)
}

// Consent is what a user has agreed to.
type Consent struct {
	Scopes []telemetry.Scope `json:"scopes"`
	At     time.Time         `json:"at"`
}

func (c Consent) allows(s telemetry.Scope) bool { return slices.Contains(c.Scopes, s) }

// Record is everything stored about one (pseudonymous) user.
type Record struct {
	Consent  Consent         `json:"consent"`
	LastSeen time.Time       `json:"seen"`
	Model    *estimate.Model `json:"model"`
	Policy   policy.User     `json:"policy"`
}

type userEntry struct {
	mu  sync.Mutex
	rec *Record
}

// Options configure a Service.
type Options struct {
	Store   *store.Store
	Key     []byte // pseudonymisation key
	Scorer  textemotion.Scorer
	Metrics *metrics.Metrics
	Now     func() time.Time
	Logger  *slog.Logger
}

// Service is the engine core.
type Service struct {
	cfg     atomic.Pointer[config.Config]
	store   *store.Store
	key     []byte
	scorer  textemotion.Scorer
	metrics *metrics.Metrics
	now     func() time.Time
	log     *slog.Logger

	mu    sync.RWMutex // guards users (the map, not the entries)
	users map[string]*userEntry

	popMu sync.Mutex // guards pop from change through commit
	pop   policy.Population
}

const populationKey = "population"

// New loads the stored state and returns a Service.
func New(cfg *config.Config, o Options) (*Service, error) {
	if len(o.Key) < 16 {
		return nil, fmt.Errorf("pseudonymizationKeyFile: the key must be at least 16 bytes, got %d", len(o.Key))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Scorer == nil {
		o.Scorer = textemotion.NewVader()
	}
	s := &Service{store: o.Store, key: o.Key, scorer: o.Scorer, metrics: o.Metrics, now: o.Now, log: o.Logger, users: map[string]*userEntry{}}
	s.cfg.Store(cfg)
	err := o.Store.EachUser(func(key string, value []byte) error {
		var rec Record
		if err := json.Unmarshal(value, &rec); err != nil {
			return fmt.Errorf("decode stored user: %w", err)
		}
		s.users[key] = &userEntry{rec: &rec}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load users: %w", err)
	}
	if raw, err := o.Store.Meta(populationKey); err != nil {
		return nil, fmt.Errorf("load population prior: %w", err)
	} else if raw != nil {
		if err := json.Unmarshal(raw, &s.pop); err != nil {
			return nil, fmt.Errorf("decode population prior: %w", err)
		}
	}
	if s.metrics != nil {
		s.metrics.Strength.Set(cfg.Strength.Value)
	}
	return s, nil
}

// Config returns the configuration in force.
func (s *Service) Config() *config.Config { return s.cfg.Load() }

// SetConfig swaps in a new, already validated, configuration.
func (s *Service) SetConfig(cfg *config.Config) {
	s.cfg.Store(cfg)
	if s.metrics != nil {
		s.metrics.Strength.Set(cfg.Strength.Value)
	}
}

// Pseudonym is HMAC-SHA256(key, userID), hex; the only form in which a user
// identifier is stored.
func (s *Service) Pseudonym(userID string) string {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(userID))
	return hex.EncodeToString(mac.Sum(nil)[:16])
}

func (s *Service) entry(pseudonym string, create bool) *userEntry {
	s.mu.RLock()
	e := s.users[pseudonym]
	s.mu.RUnlock()
	if e != nil || !create {
		return e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e = s.users[pseudonym]; e == nil {
		e = &userEntry{}
		s.users[pseudonym] = e
	}
	return e
}

// dropIfEmpty removes an entry created for a request that stored nothing.
func (s *Service) dropIfEmpty(pseudonym string, e *userEntry) {
	s.mu.Lock()
	if e.rec == nil && s.users[pseudonym] == e {
		delete(s.users, pseudonym)
	}
	s.mu.Unlock()
}

// cloneRecord deep-copies a record so a request works on its own copy and
// the stored state changes only after the commit.
func cloneRecord(r *Record) *Record {
	if r == nil {
		return &Record{Model: estimate.NewModel()}
	}
	out := *r
	out.Consent.Scopes = slices.Clone(r.Consent.Scopes)
	out.Model = r.Model.Clone()
	out.Policy = r.Policy.Clone()
	return &out
}

// SetConsent records the scopes a user consents to (replacing earlier ones).
func (s *Service) SetConsent(userID string, scopes []telemetry.Scope) (Consent, error) {
	key := s.Pseudonym(userID)
	e := s.entry(key, true)
	e.mu.Lock()
	defer e.mu.Unlock()
	defer s.dropIfEmpty(key, e)
	rec := cloneRecord(e.rec)
	now := s.now()
	rec.Consent = Consent{Scopes: normaliseScopes(scopes), At: now}
	rec.LastSeen = now
	if err := s.commitUsers(map[string]*Record{key: rec}, nil); err != nil {
		return Consent{}, err
	}
	e.rec = rec
	return rec.Consent, nil
}

// WithdrawConsent withdraws the given scopes (all when empty). Data already
// stored stays until erased or expired; no new data of those scopes is
// accepted.
func (s *Service) WithdrawConsent(userID string, scopes []telemetry.Scope) (Consent, error) {
	key := s.Pseudonym(userID)
	e := s.entry(key, false)
	if e == nil {
		return Consent{}, ErrUnknownUser
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rec == nil {
		return Consent{}, ErrUnknownUser
	}
	rec := cloneRecord(e.rec)
	if len(scopes) == 0 {
		rec.Consent.Scopes = nil
	} else {
		rec.Consent.Scopes = slices.DeleteFunc(rec.Consent.Scopes, func(sc telemetry.Scope) bool { return slices.Contains(scopes, sc) })
	}
	rec.Consent.At = s.now()
	if err := s.commitUsers(map[string]*Record{key: rec}, nil); err != nil {
		return Consent{}, err
	}
	e.rec = rec
	return rec.Consent, nil
}

func normaliseScopes(scopes []telemetry.Scope) []telemetry.Scope {
	out := slices.Clone(scopes)
	slices.Sort(out)
	return slices.Compact(out)
}

// Erase deletes everything about a user (GDPR Art. 17).
func (s *Service) Erase(userID string) error {
	key := s.Pseudonym(userID)
	e := s.entry(key, false)
	if e == nil {
		return ErrUnknownUser
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rec == nil {
		return ErrUnknownUser
	}
	if err := s.remove(key, e); err != nil {
		return fmt.Errorf("erase: %w", err)
	}
	if s.metrics != nil {
		s.metrics.UsersErased.Inc()
	}
	return nil
}

// remove deletes a user from the store, then from memory. The caller holds
// e.mu.
func (s *Service) remove(key string, e *userEntry) error {
	if err := s.store.Commit(store.Change{Users: map[string][]byte{key: nil}}); err != nil {
		return err
	}
	e.rec = nil
	s.mu.Lock()
	delete(s.users, key)
	s.mu.Unlock()
	return nil
}

// snapshot lists the entries without holding s.mu afterwards: never hold
// s.mu while locking an entry (writers lock the entry, then the map).
func (s *Service) snapshot() map[string]*userEntry {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]*userEntry, len(s.users))
	for key, e := range s.users {
		out[key] = e
	}
	return out
}

// commitUsers encodes and durably stores records (and the population prior
// when pop is non-nil).
func (s *Service) commitUsers(records map[string]*Record, pop *policy.Population) error {
	change := store.Change{Users: make(map[string][]byte, len(records))}
	for key, rec := range records {
		b, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("encode user: %w", err)
		}
		change.Users[key] = b
	}
	if pop != nil {
		b, err := json.Marshal(pop)
		if err != nil {
			return fmt.Errorf("encode population prior: %w", err)
		}
		change.Meta = map[string][]byte{populationKey: b}
	}
	if err := s.store.Commit(change); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// IngestResult counts accepted samples.
type IngestResult struct {
	Accepted int            `json:"accepted"`
	Users    int            `json:"users"`
	ByKind   map[string]int `json:"byKind"`
}

// Ingest validates, checks consent and compliance for, estimates from and
// durably stores a batch. Any bad sample rejects the whole batch; nothing is
// stored until everything is valid, and nothing is acknowledged before it is
// committed.
func (s *Service) Ingest(ctx context.Context, samples []telemetry.Sample) (IngestResult, error) {
	cfg := s.Config()
	now := s.now()
	for i := range samples {
		if err := samples[i].Validate(i, now, cfg.Interventions); err != nil {
			return IngestResult{}, err
		}
		if samples[i].Kind.IsPhysiological() && cfg.ProhibitsBiometricEmotion() {
			return IngestResult{}, &ProhibitedError{Field: fmt.Sprintf("samples[%d].kind", i), Context: cfg.Context}
		}
	}

	// Group by pseudonym and lock users in a fixed order (no deadlocks).
	byUser := map[string][]int{}
	for i := range samples {
		key := s.Pseudonym(samples[i].User)
		byUser[key] = append(byUser[key], i)
	}
	keys := make([]string, 0, len(byUser))
	for k := range byUser {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	entries := make([]*userEntry, len(keys))
	for i, k := range keys {
		entries[i] = s.entry(k, false)
		if entries[i] == nil {
			first := byUser[k][0]
			return IngestResult{}, &ConsentError{Field: fmt.Sprintf("samples[%d].user", first), Scope: samples[first].Kind.Scope()}
		}
	}
	for _, e := range entries {
		e.mu.Lock()
		defer e.mu.Unlock()
	}

	// Consent for every sample before any processing (text scoring included).
	for i, k := range keys {
		rec := entries[i].rec
		for _, idx := range byUser[k] {
			scope := samples[idx].Kind.Scope()
			if rec == nil || !rec.Consent.allows(scope) {
				return IngestResult{}, &ConsentError{Field: fmt.Sprintf("samples[%d].kind", idx), Scope: scope}
			}
		}
	}

	textScores := map[int]float64{}
	for i := range samples {
		if samples[i].Kind == telemetry.KindText {
			v, err := s.scorer.Score(ctx, samples[i].Text)
			if err != nil {
				return IngestResult{}, fmt.Errorf("score text: %w", err)
			}
			textScores[i] = (v + 1) / 2
		}
	}

	updated := make(map[string]*Record, len(keys))
	popChanged := false
	s.popMu.Lock()
	defer s.popMu.Unlock()
	pop := s.pop.Clone() // changed only if a reward is observed; swapped in after the commit
	result := IngestResult{ByKind: map[string]int{}, Users: len(keys)}
	for i, k := range keys {
		rec := cloneRecord(entries[i].rec)
		for _, idx := range byUser[k] {
			if s.apply(rec, &samples[idx], textScores, idx, cfg, &pop, now) {
				popChanged = true
			}
			result.ByKind[string(samples[idx].Kind)]++
			result.Accepted++
		}
		rec.LastSeen = now
		updated[k] = rec
	}
	var popToStore *policy.Population
	if popChanged {
		popToStore = &pop
	}
	if err := s.commitUsers(updated, popToStore); err != nil {
		return IngestResult{}, err
	}
	for i, k := range keys {
		entries[i].rec = updated[k]
	}
	if popChanged {
		s.pop = pop
	}
	if s.metrics != nil {
		for kind, n := range result.ByKind {
			s.metrics.SamplesIngested.WithLabelValues(kind).Add(float64(n))
		}
	}
	return result, nil
}

// apply folds one sample into a record; it reports whether the population
// prior changed (an intervention's reward was observed).
func (s *Service) apply(rec *Record, smp *telemetry.Sample, textScores map[int]float64, idx int, cfg *config.Config, pop *policy.Population, now time.Time) bool {
	m := rec.Model
	switch smp.Kind {
	case telemetry.KindRR:
		m.AddRR(smp.At, smp.RRms)
		if smp.BPM != nil {
			m.AddHeartRate(smp.At, *smp.BPM)
		}
	case telemetry.KindHeartRate:
		m.AddHeartRate(smp.At, *smp.BPM)
	case telemetry.KindText:
		m.AddTextEmotion(smp.At, textScores[idx])
	case telemetry.KindQuestionnaire:
		if smp.BRS != nil {
			_ = m.AddBRS(smp.At, smp.BRS) // validated already
		}
		if smp.Mood != nil {
			m.AddMood(smp.At, *smp.Mood)
		}
	case telemetry.KindSART:
		trials := make([]estimate.SARTTrial, len(smp.Trials))
		for i, t := range smp.Trials {
			trials[i] = estimate.SARTTrial{Digit: t.Digit, Responded: t.Responded, RTms: t.RTms}
		}
		m.AddSART(smp.At, trials)
	case telemetry.KindBehaviour:
		events := make([]estimate.BehaviourEvent, len(smp.Events))
		for i, e := range smp.Events {
			events[i] = estimate.BehaviourEvent{Type: e.Type, At: e.At}
		}
		m.AddBehaviour(events)
	case telemetry.KindIntervention:
		current, _ := userLoss(m, cfg, now)
		policy.Start(&rec.Policy, smp.Intervention, smp.At, *smp.Completed, current)
		return false
	}
	if rec.Policy.Pending == nil {
		return false
	}
	current, ok := userLoss(m, cfg, now)
	return ok && policy.Observe(&rec.Policy, pop, now, current)
}

func vec(v config.Vector) loss.Vector { return loss.Vector{v.Attention, v.Emotion, v.Resilience} }

// userLoss is the loss of a user's current estimate.
func userLoss(m *estimate.Model, cfg *config.Config, now time.Time) (float64, bool) {
	st := m.Estimate(now, !cfg.ProhibitsBiometricEmotion())
	return loss.User(stateVector(st), knownVector(st), vec(cfg.Target), vec(cfg.Weights))
}

func stateVector(st estimate.State) loss.Vector {
	return loss.Vector{st.Attention.Value, st.Emotion.Value, st.Resilience.Value}
}

func knownVector(st estimate.State) [loss.Dims]bool {
	return [loss.Dims]bool{st.Attention.Known, st.Emotion.Known, st.Resilience.Known}
}

// UserState is the answer to GET /v1/users/{id}/state.
type UserState struct {
	Attention      estimate.Dimension    `json:"attention"`
	Emotion        estimate.Dimension    `json:"emotion"`
	Resilience     estimate.Dimension    `json:"resilience"`
	Loss           *float64              `json:"loss"`
	Recommendation policy.Recommendation `json:"recommendation"`
	EstimatedAt    time.Time             `json:"estimatedAt"`
	// EmotionFromPhysiology says whether physiological evidence may count
	// toward emotion in this world.
	EmotionFromPhysiology bool `json:"emotionFromPhysiology"`
}

// State estimates a user's state and recommends the next intervention.
func (s *Service) State(userID string) (UserState, error) {
	key := s.Pseudonym(userID)
	e := s.entry(key, false)
	if e == nil {
		return UserState{}, ErrUnknownUser
	}
	cfg := s.Config()
	now := s.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rec == nil {
		return UserState{}, ErrUnknownUser
	}
	allowPhysio := !cfg.ProhibitsBiometricEmotion()
	st := e.rec.Model.Estimate(now, allowPhysio)
	out := UserState{Attention: st.Attention, Emotion: st.Emotion, Resilience: st.Resilience, EstimatedAt: now, EmotionFromPhysiology: allowPhysio}
	if l, ok := loss.User(stateVector(st), knownVector(st), vec(cfg.Target), vec(cfg.Weights)); ok {
		out.Loss = &l
	}
	s.popMu.Lock()
	pop := s.pop
	s.popMu.Unlock()
	// Draws advance in memory only: a read never writes to disk.
	out.Recommendation = policy.Recommend(&e.rec.Policy, &pop, cfg.Interventions, key, uint64(cfg.Seed), policy.Strength{
		Value: cfg.Strength.Value, Min: cfg.Strength.Min, Max: cfg.Strength.Max,
	})
	return out, nil
}

// MinCurrentConfidence is the decayed confidence below which an estimate no
// longer counts toward the cohort.
const MinCurrentConfidence = 0.05

// CohortSummary is the answer to GET /v1/cohort.
type CohortSummary struct {
	Published     bool      `json:"published"`
	MinCohortSize int       `json:"minCohortSize"`
	Size          *int      `json:"size,omitempty"`
	Loss          *float64  `json:"loss,omitempty"`
	Means         *Means    `json:"means,omitempty"`
	Strength      float64   `json:"strength"`
	ObservedAt    time.Time `json:"observedAt"`
}

// Means are per-dimension cohort means; null where no user of the cohort
// has an estimate of that dimension.
type Means struct {
	Attention  *float64 `json:"attention"`
	Emotion    *float64 `json:"emotion"`
	Resilience *float64 `json:"resilience"`
}

func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// Cohort aggregates the current estimates of all users. The size is not
// revealed below the minimum either: "3 users" is itself information.
func (s *Service) Cohort() CohortSummary {
	cfg := s.Config()
	now := s.now()
	agg := s.aggregate(cfg, now)
	out := CohortSummary{Published: agg.Published, MinCohortSize: cfg.Privacy.MinCohortSize, Strength: cfg.Strength.Value, ObservedAt: now}
	if agg.Published {
		out.Size, out.Loss = &agg.Size, &agg.Loss
		out.Means = &Means{Attention: finite(agg.Means[0]), Emotion: finite(agg.Means[1]), Resilience: finite(agg.Means[2])}
	}
	return out
}

func (s *Service) aggregate(cfg *config.Config, now time.Time) loss.Aggregate {
	entries := s.snapshot()
	allowPhysio := !cfg.ProhibitsBiometricEmotion()
	retention := cfg.Privacy.Retention.Duration
	current := make([]loss.Entry, 0, len(entries))
	for _, e := range entries {
		e.mu.Lock()
		rec := e.rec
		var st estimate.State
		if rec != nil && now.Sub(rec.LastSeen) <= retention {
			st = rec.Model.Estimate(now, allowPhysio)
		}
		e.mu.Unlock()
		if rec == nil || !isCurrent(st) {
			continue
		}
		l, ok := loss.User(stateVector(st), knownVector(st), vec(cfg.Target), vec(cfg.Weights))
		if !ok {
			continue
		}
		current = append(current, loss.Entry{Loss: l, State: stateVector(st), Known: knownVector(st)})
	}
	return loss.Cohort(current, cfg.Privacy.MinCohortSize)
}

func isCurrent(st estimate.State) bool {
	for _, d := range []estimate.Dimension{st.Attention, st.Emotion, st.Resilience} {
		if d.Known && d.Confidence >= MinCurrentConfidence {
			return true
		}
	}
	return false
}

// PublishedCohort implements metrics.CohortSource.
func (s *Service) PublishedCohort() (float64, int, bool) {
	agg := s.aggregate(s.Config(), s.now())
	return agg.Loss, agg.Size, agg.Published
}

// StoredUsers implements metrics.CohortSource.
func (s *Service) StoredUsers() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.users)
}

// Sweep deletes users not seen within the retention period and returns how
// many were deleted.
func (s *Service) Sweep() (int, error) {
	cfg := s.Config()
	cutoff := s.now().Add(-cfg.Privacy.Retention.Duration)
	deleted := 0
	for key, e := range s.snapshot() {
		e.mu.Lock()
		var err error
		if e.rec != nil && e.rec.LastSeen.Before(cutoff) {
			if err = s.remove(key, e); err == nil {
				deleted++
			}
		}
		e.mu.Unlock()
		if err != nil {
			return deleted, fmt.Errorf("retention sweep: %w", err)
		}
	}
	if s.metrics != nil {
		s.metrics.UsersExpired.Add(float64(deleted))
	}
	return deleted, nil
}

// RunSweeper sweeps every interval until ctx ends.
func (s *Service) RunSweeper(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := s.Sweep(); err != nil {
				s.log.Error("retention sweep failed", "error", err)
			} else if n > 0 {
				s.log.Info("retention sweep deleted expired users", "count", n)
			}
		}
	}
}
