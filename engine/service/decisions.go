package service

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	gojson "github.com/goccy/go-json"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/effects"
	"github.com/attune-io/attune/engine/policy"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/engine/telemetry"
)

// Decision is one decision point of one user, as logged and as answered
// by POST /v1/users/{id}/decisions (engine/contract holds the wire type).
type Decision = contract.Decision

// Outcome is a decision's proximal outcome (engine/contract holds the wire
// type).
type Outcome = contract.Outcome

// DecisionRequest is the body of POST /v1/users/{id}/decisions
// (engine/contract holds the wire type).
type DecisionRequest = contract.DecisionRequest

// idempotentDecision remembers which decision answered an Idempotency-Key.
type idempotentDecision struct {
	Key string `json:"k"`
	// Request hashes the request body, so a key reused for a different
	// request is refused rather than answered with the wrong decision.
	Request string `json:"r"`
	ID      string `json:"d"`
}

// Bounds on what a user's record keeps of their decisions.
const (
	// maxOpenDecisions: decisions awaiting their outcome. A client that
	// asks more often than this within one outcome window loses the
	// oldest outcomes (their decisions stay logged, unsettled).
	maxOpenDecisions = 32
	// maxIdempotencyKeys: the most recent keys whose retries are answered
	// from the log.
	maxIdempotencyKeys = 32
	// MaxContextTags bounds the context tags of one decision request.
	MaxContextTags = 8
)

// ErrIdempotencyMismatch: an Idempotency-Key was reused for a different
// request.
var ErrIdempotencyMismatch = errors.New("this Idempotency-Key was used for a different request")

// RequestError is a decision request that names its bad field.
type RequestError struct{ Field, Message string }

func (e *RequestError) Error() string { return e.Field + ": " + e.Message }

func validateDecisionRequest(r DecisionRequest) error {
	if len(r.Context) > MaxContextTags {
		return &RequestError{"context", fmt.Sprintf("at most %d tags, got %d", MaxContextTags, len(r.Context))}
	}
	for i, tag := range r.Context {
		if !slices.Contains(policy.ContextTags, tag) {
			return &RequestError{fmt.Sprintf("context[%d]", i), fmt.Sprintf("unknown context tag %q; known tags: %v", tag, policy.ContextTags)}
		}
	}
	return nil
}

func hashDecisionRequest(r DecisionRequest) string {
	// The default is spelled out, so {} and {"available": true} are the
	// same request.
	available := r.Available == nil || *r.Available
	r.Available = &available
	b, _ := json.Marshal(r) // a plain struct: cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// policyVersion identifies what decides: the enabled interventions, the
// strength and its bounds, the dose limits and the seed.
func policyVersion(cfg *config.Config) string {
	b, _ := json.Marshal(struct {
		Interventions []string
		Strength      config.Strength
		Dose          config.Dose
		Seed          int64
	}{cfg.Interventions, cfg.Strength, cfg.Dose, cfg.Seed})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}

// Decide answers a decision point: it settles the user's due outcomes,
// draws the action (or none, with the reason, for an ineligible user) and
// logs the decision durably before answering. A retry with the same
// idempotency key returns the logged decision and writes nothing; replayed
// says so.
func (s *Service) Decide(ctx context.Context, userID string, req DecisionRequest, idempotencyKey string) (d Decision, replayed bool, err error) {
	if err := validateDecisionRequest(req); err != nil {
		return Decision{}, false, err
	}
	key := s.Pseudonym(userID)
	reqHash := hashDecisionRequest(req)
	cfg := s.Config()
	err = s.update(ctx, []string{key}, func(t *userTxn) error {
		old := t.recs[key]
		if old == nil {
			return ErrUnknownUser
		}
		if idempotencyKey != "" {
			if i := slices.IndexFunc(old.Idempotency, func(e idempotentDecision) bool { return e.Key == idempotencyKey }); i >= 0 {
				if old.Idempotency[i].Request != reqHash {
					return ErrIdempotencyMismatch
				}
				var err error
				d, err = s.loggedDecision(ctx, key, old, old.Idempotency[i].ID)
				replayed = true
				return err
			}
		}
		now := s.now()
		rec := cloneRecord(old)
		// The prior is read for writing only when an outcome may be
		// learnt; a draw alone may use a recent copy.
		var pop policy.Population
		var popVersion int64
		var err error
		if dueOutcomes(rec, now) {
			pop, popVersion, err = s.population(ctx)
		} else {
			pop, err = s.recentPopulation(ctx)
		}
		if err != nil {
			return err
		}
		writes, learnt := s.settle(key, rec, cfg, &pop, now)
		d = s.draw(key, rec, cfg, &pop, req, now)
		writes[store.DecisionKey{User: key, ID: d.ID}] = encodeDecision(&d)
		if d.LossAtDecision != nil {
			rec.Open = append(rec.Open, d)
			if over := len(rec.Open) - maxOpenDecisions; over > 0 {
				// The oldest open decisions close without an outcome; what
				// was linked to them (completed, rating) goes to the log.
				for _, evicted := range rec.Open[:over] {
					w := encodeDecision(&evicted)
					w.IfVersion = 1
					writes[store.DecisionKey{User: key, ID: evicted.ID}] = w
				}
				rec.Open = rec.Open[over:]
			}
		}
		rec.Last = &d
		if idempotencyKey != "" {
			rec.Idempotency = append(rec.Idempotency, idempotentDecision{Key: idempotencyKey, Request: reqHash, ID: d.ID})
			if len(rec.Idempotency) > maxIdempotencyKeys {
				rec.Idempotency = rec.Idempotency[len(rec.Idempotency)-maxIdempotencyKeys:]
			}
		}
		rec.LastSeen = now
		var popToStore *policy.Population
		if learnt && s.writesPrior() {
			popToStore = &pop
		}
		t.learnt = learnt
		return t.commitDecisions(ctx, map[string]*Record{key: rec}, writes, popToStore, popVersion)
	})
	if err != nil {
		return Decision{}, false, err
	}
	if s.metrics != nil && !replayed {
		s.metrics.Decisions.WithLabelValues(decisionLabel(&d), d.Reason).Inc()
	}
	return d, replayed, nil
}

func decisionLabel(d *Decision) string {
	if d.Treated() {
		return "intervention"
	}
	return policy.ActionNone
}

// draw takes the decision itself: the policy's choice, with what the log
// needs around it. It changes the record's policy state.
func (s *Service) draw(key string, rec *Record, cfg *config.Config, pop *policy.Population, req DecisionRequest, now time.Time) Decision {
	available := req.Available == nil || *req.Available
	c := policy.Decide(&rec.Policy, pop, cfg.Interventions, key, uint64(cfg.Seed),
		policy.Strength{Value: cfg.Strength.Value, Min: cfg.Strength.Min, Max: cfg.Strength.Max},
		policy.Limits{MaxPerDay: cfg.Dose.MaxPerDayOrDefault(), Cooldown: cfg.Dose.CooldownOrDefault()},
		available, now)
	d := Decision{
		ID: store.DecisionID(now, rand.Uint32()), At: now, Available: available, Context: slices.Clone(req.Context),
		Action: c.Action, Probability: c.Probability, Candidate: c.Candidate, TreatmentProbability: c.TreatP,
		Reason: c.Reason, Dose: c.Dose, Instructions: c.Instructions, PolicyVersion: policyVersion(cfg),
		OutcomeDue: now.Add(cfg.Dose.OutcomeWindowOrDefault()),
	}
	if l, ok := userLoss(rec.Model, cfg, now); ok {
		d.LossAtDecision = &l
	}
	return d
}

// loggedDecision finds a decision of the user: in the record while it is
// open or the last, else in the log.
func (s *Service) loggedDecision(ctx context.Context, key string, rec *Record, id string) (Decision, error) {
	if rec.Last != nil && rec.Last.ID == id {
		return *rec.Last, nil
	}
	if i := slices.IndexFunc(rec.Open, func(d Decision) bool { return d.ID == id }); i >= 0 {
		return rec.Open[i], nil
	}
	item, err := s.store.Decision(ctx, store.DecisionKey{User: key, ID: id})
	if err != nil {
		return Decision{}, fmt.Errorf("read decision: %w", err)
	}
	if item.Value == nil {
		return Decision{}, ErrUnknownDecision
	}
	return DecodeDecision(item.Value)
}

// ErrUnknownDecision: no decision of this user has that ID.
var ErrUnknownDecision = errors.New("unknown decision")

func encodeDecision(d *Decision) store.Write { return store.Write{Value: EncodeDecision(d)} }

// A logged decision is stored as a fixed header that the effect estimate
// reads without decoding JSON, then the decision's JSON:
//
//	byte 0      decisionFormat
//	byte 1      flags: analysedFlag (randomised, with an outcome), treatedFlag
//	byte 2      the candidate: 1 + its index in config.KnownInterventions (0: none)
//	bytes 3–10  treatment probability, float64 little endian
//	bytes 11–18 outcome change, float64 little endian
//	bytes 19–   the Decision as JSON
//
// Values that start with '{' are plain JSON (read as well).
const (
	decisionFormat         = 0x01
	decisionHeaderLen      = 19
	analysedFlag      byte = 1 << 0
	treatedFlag       byte = 1 << 1
)

// EncodeDecision is a decision's stored form.
func EncodeDecision(d *Decision) []byte {
	body, _ := gojson.Marshal(d) // plain data: cannot fail
	out := make([]byte, decisionHeaderLen, decisionHeaderLen+len(body))
	out[0] = decisionFormat
	if i := slices.Index(config.KnownInterventions, d.Candidate); i >= 0 && d.Outcome != nil && d.Randomised() {
		out[1] |= analysedFlag
		out[2] = byte(i + 1)
		binary.LittleEndian.PutUint64(out[3:], math.Float64bits(d.TreatmentProbability))
		binary.LittleEndian.PutUint64(out[11:], math.Float64bits(d.Outcome.Change))
	}
	if d.Treated() {
		out[1] |= treatedFlag
	}
	return append(out, body...)
}

// DecodeDecision reads a stored decision.
func DecodeDecision(value []byte) (Decision, error) {
	var d Decision
	body := value
	if len(value) > 0 && value[0] == decisionFormat {
		if len(value) < decisionHeaderLen {
			return d, errors.New("decode decision: truncated header")
		}
		body = value[decisionHeaderLen:]
	}
	if err := gojson.Unmarshal(body, &d); err != nil {
		return d, fmt.Errorf("decode decision: %w", err)
	}
	return d, nil
}

// analysed is what the effect estimate needs of a stored decision; ok is
// false for one that does not enter it (not randomised, no outcome).
func analysed(value []byte) (candidate string, treated bool, p, change float64, ok bool, err error) {
	if len(value) > 0 && value[0] == decisionFormat {
		if len(value) < decisionHeaderLen {
			return "", false, 0, 0, false, errors.New("decode decision: truncated header")
		}
		if value[1]&analysedFlag == 0 || int(value[2]) > len(config.KnownInterventions) || value[2] == 0 {
			return "", false, 0, 0, false, nil
		}
		return config.KnownInterventions[value[2]-1], value[1]&treatedFlag != 0,
			math.Float64frombits(binary.LittleEndian.Uint64(value[3:])),
			math.Float64frombits(binary.LittleEndian.Uint64(value[11:])), true, nil
	}
	d, err := DecodeDecision(value)
	if err != nil || d.Outcome == nil || !d.Randomised() {
		return "", false, 0, 0, false, err
	}
	return d.Candidate, d.Treated(), d.TreatmentProbability, d.Outcome.Change, true, nil
}

// dueOutcomes reports whether any open decision's window has closed.
func dueOutcomes(rec *Record, now time.Time) bool {
	return slices.ContainsFunc(rec.Open, func(d Decision) bool { return !now.Before(d.OutcomeDue) })
}

// settle measures the outcome of every open decision whose window has
// closed, from the user's current estimate, folds randomised ones into the
// policy's learning (learnt reports whether pop changed) and returns the
// log rewrites. A decision whose window closed more than one window ago,
// or whose user has no current loss, is closed without an outcome: a
// late measurement would credit it with whatever happened since.
func (s *Service) settle(key string, rec *Record, cfg *config.Config, pop *policy.Population, now time.Time) (writes map[store.DecisionKey]store.Write, learnt bool) {
	writes = map[store.DecisionKey]store.Write{}
	if !dueOutcomes(rec, now) {
		return writes, false
	}
	window := cfg.Dose.OutcomeWindowOrDefault()
	loss, known := userLoss(rec.Model, cfg, now)
	// A decision older than the retention period is gone from the log (or
	// about to be: the sweep deletes by the same cutoff); it is closed
	// without a write, which could only conflict with the deletion.
	expired := now.Add(-cfg.Privacy.Retention.Duration)
	open := rec.Open[:0:0]
	for _, d := range rec.Open {
		if now.Before(d.OutcomeDue) {
			open = append(open, d)
			continue
		}
		if d.At.Before(expired) {
			continue
		}
		if known && now.Sub(d.OutcomeDue) <= window && d.LossAtDecision != nil {
			d.Outcome = &Outcome{At: now, Loss: loss, Change: loss - *d.LossAtDecision}
			if d.Randomised() && policy.Learn(&rec.Policy, pop, d.Candidate, d.Treated(), d.TreatmentProbability, -d.Outcome.Change) {
				learnt = true
			}
		}
		w := encodeDecision(&d)
		w.IfVersion = 1 // written once when decided; links before now went to the open copy
		writes[store.DecisionKey{User: key, ID: d.ID}] = w
		if rec.Last != nil && rec.Last.ID == d.ID {
			last := d
			rec.Last = &last
		}
	}
	rec.Open = open
	return writes, learnt
}

// linkIntervention records that an intervention sample answers a decision:
// on the open copy while its outcome is pending, else by rewriting the log
// entry (returned as a write).
func (s *Service) linkIntervention(ctx context.Context, key string, rec *Record, smp *telemetry.Sample, idx int) (*store.DecisionKey, store.Write, error) {
	check := func(d *Decision) error {
		if d.Action != smp.Intervention {
			return &telemetry.Error{Field: fmt.Sprintf("samples[%d].intervention", idx), Message: fmt.Sprintf("decision %s delivered %q, not %q", d.ID, d.Action, smp.Intervention)}
		}
		d.Completed, d.Rating = smp.Completed, smp.Rating
		return nil
	}
	for i := range rec.Open {
		if rec.Open[i].ID == smp.Decision {
			if err := check(&rec.Open[i]); err != nil {
				return nil, store.Write{}, err
			}
			if rec.Last != nil && rec.Last.ID == smp.Decision {
				last := rec.Open[i]
				rec.Last = &last
			}
			return nil, store.Write{}, nil
		}
	}
	dk := store.DecisionKey{User: key, ID: smp.Decision}
	item, err := s.store.Decision(ctx, dk)
	if err != nil {
		return nil, store.Write{}, fmt.Errorf("read decision: %w", err)
	}
	if item.Value == nil {
		return nil, store.Write{}, &telemetry.Error{Field: fmt.Sprintf("samples[%d].decision", idx), Message: fmt.Sprintf("this user has no decision %s", smp.Decision)}
	}
	d, err := DecodeDecision(item.Value)
	if err != nil {
		return nil, store.Write{}, err
	}
	if err := check(&d); err != nil {
		return nil, store.Write{}, err
	}
	if rec.Last != nil && rec.Last.ID == d.ID {
		last := d
		rec.Last = &last
	}
	w := encodeDecision(&d)
	w.IfVersion = item.Version
	return &dk, w, nil
}

// ExportedDecision is one line of GET /v1/decisions: a decision under the
// user's pseudonym (engine/contract holds the wire type).
type ExportedDecision = contract.ExportedDecision

// ExportDecisions calls fn with every logged decision taken at or after
// since, of users who granted the research scope, in pseudonymous form.
// Consent is read first, for every user at once: the scan of the log then
// takes no user lock (a lock taken inside a store read could wait on a
// writer that waits on that read).
func (s *Service) ExportDecisions(ctx context.Context, since time.Time, fn func(ExportedDecision) error) error {
	consented := map[string]bool{}
	if err := s.eachRecord(ctx, func(key string, rec *Record) {
		if rec.Consent.Allows(telemetry.ScopeResearch) {
			consented[key] = true
		}
	}); err != nil {
		return fmt.Errorf("read consent: %w", err)
	}
	return s.store.EachDecision(ctx, store.DecisionIDAt(since), func(k store.DecisionKey, item store.Item) error {
		if !consented[k.User] {
			return nil
		}
		d, err := DecodeDecision(item.Value)
		if err != nil {
			return err
		}
		return fn(ExportedDecision{User: k.User, Decision: d})
	})
}

// effectsCache holds the last effect estimates. In replica scope every
// settled outcome passes through this process, which bumps the generation;
// on a shared store other replicas settle too, so an estimate is also
// recomputed once it is older than sharedEffectsMaxAge.
type effectsCache struct {
	mu         sync.Mutex
	generation atomic.Uint64
	computed   uint64
	at         time.Time
	valid      bool
	all        []effects.Effect
}

// defaultEffectsMinInterval is Options.EffectsMinInterval's default.
const defaultEffectsMinInterval = 5 * time.Second

// sharedEffectsMaxAge bounds how stale a shared store's effect estimates
// may be.
const sharedEffectsMaxAge = 10 * time.Second

func (c *effectsCache) invalidate() { c.generation.Add(1) }

// Effects estimates every enabled intervention's causal excursion effect
// on the proximal outcome by WCLS over the decision log (randomised,
// settled decisions whose candidate it was), whether publishable or not.
func (s *Service) Effects(ctx context.Context) ([]effects.Effect, error) {
	c := &s.effects
	c.mu.Lock()
	defer c.mu.Unlock()
	gen := c.generation.Load()
	age := time.Since(c.at)
	if c.valid && age < s.effectsMinInterval {
		return c.all, nil // at most one scan of the log per interval
	}
	if c.valid && c.computed == gen && (!s.shared() || age < sharedEffectsMaxAge) {
		return c.all, nil
	}
	all, err := EstimateEffects(ctx, s.store)
	if err != nil {
		return nil, err
	}
	c.all, c.computed, c.at, c.valid = all, gen, time.Now(), true
	return all, nil
}

// EstimateEffects reads the whole decision log once and estimates each
// candidate's effect (WCLS) from its randomised, settled decisions. Memory
// grows with users and interventions, not with decisions.
func EstimateEffects(ctx context.Context, st store.Store) ([]effects.Effect, error) {
	estimators := map[string]*effects.Estimator{}
	err := st.EachDecision(ctx, "", func(k store.DecisionKey, item store.Item) error {
		candidate, treated, p, change, ok, err := analysed(item.Value)
		if err != nil || !ok {
			return err
		}
		e := estimators[candidate]
		if e == nil {
			e = effects.NewEstimator(candidate, effects.DefaultRefP)
			estimators[candidate] = e
		}
		e.Add(effects.Observation{User: k.User, Available: true, Treated: treated, P: p, Outcome: change})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("effects: %w", err)
	}
	var all []effects.Effect
	for _, e := range estimators {
		if est, ok := e.Estimate(); ok {
			all = append(all, est)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Intervention < all[j].Intervention })
	return all, nil
}

// publishableEffects are the effects of all that meet the world's cohort floor.
func publishableEffects(all []effects.Effect, floor int) []effects.Effect {
	return slices.DeleteFunc(slices.Clone(all), func(e effects.Effect) bool { return !effects.Publishable(e, floor) })
}
