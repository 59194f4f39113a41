// Package service is the engine's core: it ties configuration, consent,
// pseudonymisation, state estimation, loss, policy and storage together.
// The HTTP API (engine/api) is a thin layer over it.
package service

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"slices"

	"sync"
	"sync/atomic"
	"time"

	gojson "github.com/goccy/go-json"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/contract"
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

// ConsentError is telemetry for a scope the user has not consented to,
// or consented to under a privacy notice the program no longer accepts
// (Required set).
type ConsentError struct {
	Field string
	Scope telemetry.Scope
	// Given and Required are the policy versions of the user's consent and
	// of the program, when the program requires re-consent.
	Given, Required string
}

func (e *ConsentError) Error() string {
	if e.Required != "" {
		return fmt.Sprintf("no consent under the current privacy notice: the user consented to policy version %q, and the program asks consent to version %q again before accepting data (GDPR Art. 7)", e.Given, e.Required)
	}
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

// Consent is what a user has agreed to (engine/contract holds the wire type).
type Consent = contract.Consent

// Record is everything stored about one (pseudonymous) user.
type Record struct {
	Consent  Consent         `json:"consent"`
	LastSeen time.Time       `json:"seen"`
	Model    *estimate.Model `json:"model"`
	Policy   policy.User     `json:"policy"`
	// Samples counts the samples folded into this record.
	Samples int64 `json:"samples,omitempty"`
	// Open are the user's decisions whose outcome window has not closed,
	// oldest first (at most maxOpenDecisions).
	Open []Decision `json:"open,omitempty"`
	// Last is the user's latest decision, shown by GET state.
	Last *Decision `json:"last,omitempty"`
	// Idempotency remembers the latest Idempotency-Keys of decision
	// requests, oldest first (at most maxIdempotencyKeys).
	Idempotency []idempotentDecision `json:"idem,omitempty"`
	// Ledger is the user's consent ledger, oldest first: every grant and
	// withdrawal since the ledger exists (consent.go).
	Ledger []ConsentEvent `json:"ledger,omitempty"`
	// ConsentScheme is what the consented scopes mean (consentScheme);
	// 0: consent given while behaviour covered questionnaires.
	ConsentScheme int `json:"cs,omitempty"`
}

// Options configure a Service.
type Options struct {
	Store   store.Store
	Key     []byte // pseudonymisation key
	Scorer  textemotion.Scorer
	Metrics *metrics.Metrics
	Now     func() time.Time
	Logger  *slog.Logger
	// EffectsMinInterval is the least time between two scans of the
	// decision log for the effect estimates (default 5s; tests set a
	// negative value for none), so frequent cohort reads and scrapes do
	// not rescan it.
	EffectsMinInterval time.Duration
	// AggregateInterval fixes the time between two refreshes of the
	// aggregate snapshot (aggregates.go); 0 (the default) lets it follow
	// the refresh's cost, and tests set a negative value for a fresh pass
	// on every read.
	AggregateInterval time.Duration
	// UserCacheSize bounds the users whose decoded records replica scope
	// keeps in memory (usercache.go); 0 means DefaultUserCacheSize. The
	// others are read from the store when used.
	UserCacheSize int
}

// Service is the engine core. With an embedded store (replica scope) it
// keeps the recently used users in a bounded cache and writes through;
// with a shared store every
// operation reads the current rows, so replicas never act on stale state,
// and commits conditionally, retrying when another replica got there first.
type Service struct {
	cfg     atomic.Pointer[runningConfig]
	store   store.Store
	key     []byte
	scorer  textemotion.Scorer
	metrics *metrics.Metrics
	now     func() time.Time
	log     *slog.Logger

	// Replica scope only: the recently used users, always as stored.
	users      *userCache
	popMu      sync.Mutex // guards pop and popVersion
	pop        policy.Population
	popVersion int64

	// sharedPop is the prior as last read from a shared store, for
	// decisions that learn nothing (writes of the prior read it afresh).
	sharedPop atomic.Pointer[timedPopulation]
	// publication is the cohort aggregate last published (publication.go).
	publication publicationCache
	// effects caches the effect estimates, rescanned at most every
	// effectsMinInterval.
	effects            effectsCache
	effectsMinInterval time.Duration
	// aggregates is the aggregate snapshot (aggregates.go);
	// aggregateGeneration counts commits, so a snapshot knows whether it
	// saw them.
	aggregates          aggregateCache
	aggregateGeneration atomic.Uint64
	aggregateInterval   time.Duration
	// legacyPopulationRow makes a shared store's ingest write the prior
	// itself, the single hot row this replaced: the baseline of the
	// conflict benchmark, never set otherwise.
	legacyPopulationRow bool
	// conflicts counts commits that lost a race (ErrConflict) and were retried.
	conflicts atomic.Uint64
	// push is the operator's pushed strength over the file (push.go).
	push pushState
}

// runningConfig is the configuration in force with its generation and
// when this engine began running that generation (GET /v1/cohort reports
// both, so the operator can tell whether a loss was measured under the
// strength it decided).
type runningConfig struct {
	cfg        *config.Config
	generation string
	since      time.Time
}

type timedPopulation struct {
	pop policy.Population
	at  time.Time
}

// sharedPopMaxAge is how stale the prior behind a decision may be on
// a shared store: it moves by one reward at a time, so a second's lag
// changes nothing visible and saves a query per read.
const sharedPopMaxAge = time.Second

// recentPopulation is the shared store's prior, read at most once per
// sharedPopMaxAge of real time (not s.now: the age of a cached copy is
// about the wall clock, whatever clock the estimates run on). In replica
// scope it is the cache's own copy.
func (s *Service) recentPopulation(ctx context.Context) (policy.Population, error) {
	if !s.shared() {
		pop, _, err := s.population(ctx)
		return pop, err
	}
	if cached := s.sharedPop.Load(); cached != nil && time.Since(cached.at) < sharedPopMaxAge {
		return cached.pop, nil
	}
	pop, _, err := loadPopulation(ctx, s.store)
	if err != nil {
		return pop, err
	}
	s.sharedPop.Store(&timedPopulation{pop: pop, at: time.Now()})
	s.refreshPriorIfDue(ctx)
	return pop, nil
}

// writesPrior reports whether an operation that learns writes the
// population prior: in replica scope (this process owns it), and on a
// shared store only in the legacy baseline; otherwise the refresh
// computes it from the users' own arms (aggregates.go).
func (s *Service) writesPrior() bool { return !s.shared() || s.legacyPopulationRow }

const populationKey = "population"

// Stored records are encoded with go-json: the same JSON as encoding/json,
// several times faster, which matters because a user's record is rewritten
// on every batch that touches them.

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
	if o.EffectsMinInterval == 0 {
		o.EffectsMinInterval = defaultEffectsMinInterval
	}
	switch {
	case o.UserCacheSize == 0:
		o.UserCacheSize = DefaultUserCacheSize
	case o.UserCacheSize < 0:
		return nil, fmt.Errorf("userCacheSize: must be positive, got %d", o.UserCacheSize)
	}
	s := &Service{store: o.Store, key: o.Key, scorer: o.Scorer, effectsMinInterval: o.EffectsMinInterval, aggregateInterval: o.AggregateInterval,
		metrics: o.Metrics, now: o.Now, log: o.Logger}
	s.cfg.Store(&runningConfig{cfg: cfg, generation: cfg.Strength.Generation(), since: s.now()})
	if !s.shared() {
		// Users are read when first used, not at start: start-up reads
		// only the prior, whatever the number of stored users.
		s.users = newUserCache(o.UserCacheSize)
		var err error
		if s.pop, s.popVersion, err = loadPopulation(context.Background(), o.Store); err != nil {
			return nil, err
		}
	}
	if s.metrics != nil {
		s.metrics.Strength.Set(cfg.Strength.Value)
	}
	return s, nil
}

func decodeRecord(raw []byte) (*Record, error) {
	var rec Record
	if err := gojson.Unmarshal(raw, &rec); err != nil {
		return nil, fmt.Errorf("decode stored user: %w", err)
	}
	return &rec, nil
}

func loadPopulation(ctx context.Context, st store.Store) (policy.Population, int64, error) {
	var pop policy.Population
	item, err := st.Meta(ctx, populationKey)
	if err != nil {
		return pop, 0, fmt.Errorf("load population prior: %w", err)
	}
	if item.Value != nil {
		if err := gojson.Unmarshal(item.Value, &pop); err != nil {
			return pop, 0, fmt.Errorf("decode population prior: %w", err)
		}
	}
	return pop, item.Version, nil
}

// shared reports whether other replicas write the same store, so nothing
// may be cached between operations.
func (s *Service) shared() bool { return s.store.Scope() == config.ScopeShared }

// Scope says whether the cohort covers this replica's users or the whole
// program's (a shared store).
func (s *Service) Scope() config.Scope { return s.store.Scope() }

// Close stops the aggregate refreshes (aggregates.go) and waits for the
// one running, so that the store can close after it; reads that need a
// refresh fail from then on. The store is the caller's to close.
func (s *Service) Close() { s.closeAggregates() }

// Ready reports whether requests can be served: the store answers.
func (s *Service) Ready(ctx context.Context) error { return s.store.Ping(ctx) }

// Config returns the configuration in force.
func (s *Service) Config() *config.Config { return s.cfg.Load().cfg }

// SetConfig swaps in a new, already validated, configuration. A change of
// the tuned values (config.Strength.Generation) restarts the time the
// engine reports running them since; an unchanged generation keeps it.
//
// cfg is the configuration file's: a strength the operator pushed since
// (PushStrength) stays in force over it until the file holds the same
// generation or the push's hold ends (push.go).
func (s *Service) SetConfig(cfg *config.Config) {
	s.push.mu.Lock()
	defer s.push.mu.Unlock()
	s.push.file = cfg
	s.applyPushLocked()
}

// run puts cfg in force (push.mu held).
func (s *Service) run(cfg *config.Config) {
	next := &runningConfig{cfg: cfg, generation: cfg.Strength.Generation(), since: s.now()}
	if prev := s.cfg.Load(); prev.generation == next.generation {
		next.since = prev.since
	}
	s.cfg.Store(next)
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

// userTxn is one operation's view of some users: their records as read
// (nil when absent) and the versions its commit is conditional on. In
// replica scope it holds the users' cache entries pinned and locked until
// release.
type userTxn struct {
	svc *Service
	// keys are the users, sorted and unique: the order entries are locked in.
	keys     []string
	recs     map[string]*Record
	versions map[string]int64
	entries  map[string]*userEntry
	// decisions and eraseDecisions go into the next commit with the users.
	decisions      map[store.DecisionKey]store.Write
	eraseDecisions []string
	// batches records an ingest batch's answer with its commit.
	batches map[string]store.Batch
	// learnt says the commit folds outcomes into the users' arms (and so
	// into the population prior).
	learnt bool
}

// begin reads the users for one attempt of an operation. Keys are locked
// in sorted order, so two operations never deadlock.
func (s *Service) begin(ctx context.Context, keys []string) (*userTxn, error) {
	keys = slices.Clone(keys)
	slices.Sort(keys)
	keys = slices.Compact(keys)
	t := &userTxn{svc: s, keys: keys, recs: make(map[string]*Record, len(keys)), versions: make(map[string]int64, len(keys))}
	if s.shared() {
		err := s.eachStoredRecord(ctx, keys, func(key string, rec *Record, version int64) {
			t.recs[key], t.versions[key] = rec, version
		})
		if err != nil {
			return nil, err
		}
		return t, nil
	}
	entries, err := s.lockUsers(ctx, keys)
	if err != nil {
		return nil, err
	}
	t.entries = entries
	for key, e := range t.entries {
		if e.rec != nil {
			t.recs[key], t.versions[key] = e.rec, e.version
		}
	}
	return t, nil
}

// release unlocks and unpins the entries; the cache drops those that
// hold no user (created for a request that stored nothing, or deleted).
func (t *userTxn) release() {
	if t.svc.shared() {
		return
	}
	t.svc.unlockUsers(t.entries)
}

// commit durably writes the updated records (nil deletes), conditional on
// the versions read, plus the population prior when pop is non-nil; only
// then does the cache change.
func (t *userTxn) commit(ctx context.Context, updated map[string]*Record, pop *policy.Population, popVersion int64) error {
	change := store.Change{Users: make(map[string]store.Write, len(updated)), Decisions: t.decisions, EraseDecisions: t.eraseDecisions, Batches: t.batches}
	for key, rec := range updated {
		w := store.Write{IfVersion: t.versions[key]}
		if rec != nil {
			b, err := gojson.Marshal(rec)
			if err != nil {
				return fmt.Errorf("encode user: %w", err)
			}
			w.Value = b
		}
		change.Users[key] = w
	}
	if pop != nil {
		b, err := gojson.Marshal(pop)
		if err != nil {
			return fmt.Errorf("encode population prior: %w", err)
		}
		change.Meta = map[string]store.Write{populationKey: {Value: b, IfVersion: popVersion}}
	}
	if err := t.svc.store.Commit(ctx, change); err != nil {
		// The entries stay the store's: a failed commit may still have
		// been stored (ErrOutcomeUnknown), so the next operation reads
		// the users again.
		for key := range updated {
			if e := t.entries[key]; e != nil {
				e.loaded = false
			}
		}
		return fmt.Errorf("commit: %w", err)
	}
	t.svc.aggregateGeneration.Add(1)
	if t.learnt && t.svc.shared() && !t.svc.legacyPopulationRow {
		t.svc.afterLearning(ctx)
	}
	if len(change.Decisions) > 0 || len(change.EraseDecisions) > 0 {
		t.svc.effects.invalidate()
	}
	if t.svc.shared() {
		return nil
	}
	for key, rec := range updated {
		e := t.entries[key]
		e.rec, e.version = rec, t.versions[key]+1
		if rec == nil {
			e.version = 0
		}
	}
	if pop != nil {
		t.svc.popMu.Lock()
		if popVersion+1 > t.svc.popVersion {
			t.svc.pop, t.svc.popVersion = *pop, popVersion+1
		}
		t.svc.popMu.Unlock()
	}
	return nil
}

// commitDecisions is commit with decision-log writes.
func (t *userTxn) commitDecisions(ctx context.Context, updated map[string]*Record, decisions map[store.DecisionKey]store.Write, pop *policy.Population, popVersion int64) error {
	t.decisions = decisions
	return t.commit(ctx, updated, pop, popVersion)
}

// population is the prior and its version, for an operation that may
// change it: a private copy.
func (s *Service) population(ctx context.Context) (policy.Population, int64, error) {
	if s.shared() && s.legacyPopulationRow {
		return loadPopulation(ctx, s.store)
	}
	if s.shared() {
		// The prior is the refresh's merge of the users' arms
		// (aggregates.go): no operation writes it, so it is no hot row.
		pop, err := s.recentPopulation(ctx)
		return pop.Clone(), 0, err
	}
	s.popMu.Lock()
	defer s.popMu.Unlock()
	return s.pop.Clone(), s.popVersion, nil
}

// maxAttempts bounds retries of an operation that keeps losing races to
// other writers of the same user.
const maxAttempts = 20

// ErrBusy: an operation lost the race to other writers maxAttempts times.
var ErrBusy = errors.New("the user's state is being changed concurrently; nothing was stored, retry")

// update runs one read-modify-write operation on the users: begin, op,
// release, retrying from a fresh read when the commit conflicts.
func (s *Service) update(ctx context.Context, keys []string, op func(t *userTxn) error) error {
	for attempt := 1; ; attempt++ {
		t, err := s.begin(ctx, keys)
		if err != nil {
			return err
		}
		err = op(t)
		t.release()
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
		s.conflicts.Add(1)
		if s.metrics != nil {
			s.metrics.CommitConflicts.Inc()
		}
		if attempt == maxAttempts {
			return fmt.Errorf("%w (%d attempts)", ErrBusy, attempt)
		}
		// Jittered backoff so racing replicas do not collide again in step.
		time.Sleep(time.Duration(rand.Int64N(int64(attempt)*int64(time.Millisecond)) + 1))
	}
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
	out.Open = slices.Clone(r.Open)
	if r.Last != nil {
		last := *r.Last
		out.Last = &last
	}
	out.Idempotency = slices.Clone(r.Idempotency)
	out.Ledger = slices.Clone(r.Ledger)
	return &out
}

// SetConsent records the scopes a user consents to (replacing earlier
// ones): Grant without a policy version or source.
func (s *Service) SetConsent(ctx context.Context, userID string, scopes []telemetry.Scope) (Consent, error) {
	return s.Grant(ctx, userID, ConsentChange{Scopes: scopes})
}

// WithdrawConsent withdraws the given scopes (all when empty): Withdraw
// without a source.
func (s *Service) WithdrawConsent(ctx context.Context, userID string, scopes []telemetry.Scope) (Consent, error) {
	return s.Withdraw(ctx, userID, ConsentChange{Scopes: scopes})
}

func normaliseScopes(scopes []telemetry.Scope) []telemetry.Scope {
	out := slices.Clone(scopes)
	slices.Sort(out)
	return slices.Compact(out)
}

// Erase deletes everything about a user (GDPR Art. 17), their decision log
// with their record in one commit. On a shared store it is visible to
// every replica as soon as it returns.
func (s *Service) Erase(ctx context.Context, userID string) error {
	key := s.Pseudonym(userID)
	err := s.update(ctx, []string{key}, func(t *userTxn) error {
		if t.recs[key] == nil {
			return ErrUnknownUser
		}
		t.eraseDecisions = []string{key}
		return t.commit(ctx, map[string]*Record{key: nil}, nil, 0)
	})
	if err != nil {
		if errors.Is(err, ErrUnknownUser) {
			return err
		}
		return fmt.Errorf("erase: %w", err)
	}
	if s.metrics != nil {
		s.metrics.UsersErased.Inc()
	}
	return nil
}

// eachRecord calls fn for every stored user's record, freshly decoded
// from the store in both scopes: the replica-scope cache holds only the
// recently used users, and what it holds is the store's (commit writes
// the store first), so the store is the complete and current view. fn
// must not call the store. Afterwards a store that maps its file drops
// the pages the pass faulted in from the engine's memory.
func (s *Service) eachRecord(ctx context.Context, fn func(key string, rec *Record)) error {
	err := s.store.EachUser(ctx, func(key string, item store.Item) error {
		rec, err := decodeRecord(item.Value)
		if err != nil {
			return err
		}
		fn(key, rec)
		return nil
	})
	if err != nil {
		return err
	}
	if r, ok := s.store.(interface{ ReleaseMappedPages() error }); ok {
		if err := r.ReleaseMappedPages(); err != nil {
			s.log.Warn("the store's pages stay mapped after a full pass", "error", err)
		}
	}
	return nil
}

// IngestResult counts accepted samples (engine/contract holds the wire type).
type IngestResult = contract.IngestResult

// Ingest validates, checks consent and compliance for, estimates from and
// durably stores a batch. Any bad sample rejects the whole batch; nothing is
// stored until everything is valid, and nothing is acknowledged before it is
// committed.
func (s *Service) Ingest(ctx context.Context, samples []telemetry.Sample) (IngestResult, error) {
	res, _, err := s.IngestBatch(ctx, samples, BatchID{})
	return res, err
}

// IngestBatch is Ingest of a batch that may carry an ID (an
// Idempotency-Key): the batch's answer is recorded in its commit, and a
// batch whose ID was committed within IdempotencyWindow is answered from
// that record (replayed) without storing anything again.
func (s *Service) IngestBatch(ctx context.Context, samples []telemetry.Sample, id BatchID) (IngestResult, bool, error) {
	batch, err := s.pendingBatch(id, samples)
	if err != nil {
		return IngestResult{}, false, err
	}
	if batch != nil {
		// Before validating: a committed batch is answered as it was, even
		// if its users have since withdrawn consent.
		if res, found, err := s.replayBatch(ctx, batch); err != nil || found {
			return res, found, err
		}
	}
	cfg := s.Config()
	now := s.now()
	for i := range samples {
		if err := samples[i].Validate(i, now, cfg.Interventions); err != nil {
			return IngestResult{}, false, err
		}
		if samples[i].Kind.IsPhysiological() && cfg.ProhibitsBiometricEmotion() {
			return IngestResult{}, false, &ProhibitedError{Field: fmt.Sprintf("samples[%d].kind", i), Context: cfg.Context}
		}
	}
	byUser := map[string][]int{}
	pseudonyms := map[string]string{} // a batch carries a few samples per user
	for i := range samples {
		key, ok := pseudonyms[samples[i].User]
		if !ok {
			key = s.Pseudonym(samples[i].User)
			pseudonyms[samples[i].User] = key
		}
		byUser[key] = append(byUser[key], i)
	}
	var result IngestResult
	users := make([]string, 0, len(byUser))
	for key := range byUser {
		users = append(users, key)
	}
	// Texts are scored before the transaction, outside the users' locks:
	// a model server's latency must not hold them. Only texts of users
	// whose consent, as read now, covers every sample of theirs are sent;
	// the transaction's consent check below stays the authoritative one.
	textScores, err := s.scoreConsentedTexts(ctx, samples, byUser)
	if err != nil {
		return IngestResult{}, false, err
	}
	for attempt := 0; ; attempt++ {
		err = s.ingestTxn(ctx, cfg, now, samples, byUser, users, textScores, &result, batch)
		var missing *missingScoresError
		if !errors.As(err, &missing) || attempt == 2 {
			break
		}
		// Consent was granted between the read and the transaction:
		// score the texts now (outside the locks) and try again.
		more, err := s.scoreTexts(ctx, samples, missing.indices)
		if err != nil {
			return IngestResult{}, false, err
		}
		for i, v := range more {
			textScores[i] = v
		}
	}
	if err != nil {
		return IngestResult{}, false, err
	}
	if batch != nil && batch.replayed {
		return result, true, nil // committed meanwhile by a concurrent retry
	}
	if s.metrics != nil {
		for kind, n := range result.ByKind {
			s.metrics.SamplesIngested.WithLabelValues(kind).Add(float64(n))
		}
	}
	return result, false, nil
}

// missingScoresError: the transaction found consented text samples that
// were not scored (consent granted after the pre-scoring read).
type missingScoresError struct{ indices []int }

func (e *missingScoresError) Error() string {
	return fmt.Sprintf("%d text samples need scoring", len(e.indices))
}

// ingestTxn is the transaction of Ingest.
func (s *Service) ingestTxn(ctx context.Context, cfg *config.Config, now time.Time, samples []telemetry.Sample, byUser map[string][]int, users []string, textScores map[int]textemotion.Emotion, result *IngestResult, batch *pendingBatch) error {
	return s.update(ctx, users, func(t *userTxn) error {
		if batch != nil { // a concurrent retry of the batch may have committed it
			res, found, err := s.replayBatch(ctx, batch)
			if err != nil {
				return err
			}
			if found {
				*result, batch.replayed = res, true
				return nil
			}
		}
		// Consent for every sample before any processing (text scoring included).
		for _, k := range t.keys {
			rec := t.recs[k]
			var consent Consent
			if rec != nil {
				consent = effectiveConsent(rec)
			}
			for _, idx := range byUser[k] {
				scope := samples[idx].Kind.Scope()
				if rec == nil || !consent.Allows(scope) {
					field := "kind"
					if rec == nil {
						field = "user"
					}
					return &ConsentError{Field: fmt.Sprintf("samples[%d].%s", idx, field), Scope: scope}
				}
				if !consentCurrent(cfg, consent) {
					return &ConsentError{Field: fmt.Sprintf("samples[%d].user", idx), Scope: scope,
						Given: consent.PolicyVersion, Required: cfg.Consent.PolicyVersion}
				}
			}
		}
		var missing []int
		for _, k := range t.keys {
			for _, idx := range byUser[k] {
				if _, ok := textScores[idx]; !ok && samples[idx].Kind == telemetry.KindText {
					missing = append(missing, idx)
				}
			}
		}
		if len(missing) > 0 {
			return &missingScoresError{indices: missing}
		}
		// The prior is read (a query, on a shared store) only when an
		// outcome may be settled: a user with an open decision.
		var pop policy.Population
		var popVersion int64
		if s.mayLearn(t) {
			var err error
			if pop, popVersion, err = s.population(ctx); err != nil {
				return err
			}
		}
		updated := make(map[string]*Record, len(t.keys))
		decisions := map[store.DecisionKey]store.Write{}
		popChanged := false
		*result = IngestResult{ByKind: map[string]int{}, Users: len(t.keys)}
		for _, k := range t.keys {
			rec := cloneRecord(t.recs[k])
			for _, idx := range byUser[k] {
				smp := &samples[idx]
				if smp.Kind == telemetry.KindIntervention && smp.Decision != "" {
					dk, w, err := s.linkIntervention(ctx, k, rec, smp, idx)
					if err != nil {
						return err
					}
					if dk != nil {
						decisions[*dk] = w
					}
				}
				s.apply(rec, smp, textScores, idx, estimateTiming(cfg))
				result.ByKind[string(smp.Kind)]++
				result.Accepted++
				rec.Samples++
			}
			// Outcomes are measured once the batch is folded in: the
			// estimate then reflects everything the client has sent.
			writes, learnt := s.settle(k, rec, cfg, &pop, now)
			for dk, w := range writes {
				if linked, ok := decisions[dk]; ok {
					w.IfVersion = linked.IfVersion
				}
				decisions[dk] = w
			}
			popChanged = popChanged || learnt
			rec.LastSeen = now
			updated[k] = rec
		}
		var popToStore *policy.Population
		if popChanged && s.writesPrior() {
			popToStore = &pop
		}
		t.learnt = popChanged
		if batch != nil {
			record, err := batch.record(now, *result)
			if err != nil {
				return err
			}
			t.batches = record
		}
		return t.commitDecisions(ctx, updated, decisions, popToStore, popVersion)
	})
}

// mayLearn reports whether applying the batch can settle an outcome and
// so update the population prior: some user has an open decision.
func (s *Service) mayLearn(t *userTxn) bool {
	for _, rec := range t.recs {
		if len(rec.Open) > 0 {
			return true
		}
	}
	return false
}

// consents reads the users' consent without holding their locks past the
// read: replica scope from the cache (the entries locked just to copy them),
// shared scope from store.Users. A missing user has no entry.
func (s *Service) consents(ctx context.Context, keys []string) (map[string]Consent, error) {
	out := make(map[string]Consent, len(keys))
	if s.shared() {
		err := s.eachStoredRecord(ctx, keys, func(key string, rec *Record, _ int64) { out[key] = effectiveConsent(rec) })
		return out, err
	}
	keys = slices.Clone(keys)
	slices.Sort(keys)
	entries, err := s.lockUsers(ctx, slices.Compact(keys))
	if err != nil {
		return nil, err
	}
	defer s.unlockUsers(entries)
	for key, e := range entries {
		if e.rec != nil {
			out[key] = effectiveConsent(e.rec) // a copy
		}
	}
	return out, nil
}

// eachStoredRecord reads the given users from the shared store, one
// round trip, and calls f with each stored one's decoded record and
// version (missing users are skipped).
func (s *Service) eachStoredRecord(ctx context.Context, keys []string, f func(key string, rec *Record, version int64)) error {
	items, err := s.store.Users(ctx, keys)
	if err != nil {
		return err
	}
	for key, item := range items {
		rec, err := decodeRecord(item.Value)
		if err != nil {
			return err
		}
		f(key, rec, item.Version)
	}
	return nil
}

// scoreConsentedTexts scores, in one call to the scorer, the text samples
// of the batch when the users' consent as read now allows every sample of
// the batch (a batch the transaction would reject anyway sends nothing).
func (s *Service) scoreConsentedTexts(ctx context.Context, samples []telemetry.Sample, byUser map[string][]int) (map[int]textemotion.Emotion, error) {
	var keys []string
	for key, idxs := range byUser {
		for _, idx := range idxs {
			if samples[idx].Kind == telemetry.KindText {
				keys = append(keys, key)
				break
			}
		}
	}
	if len(keys) == 0 {
		return map[int]textemotion.Emotion{}, nil
	}
	consents, err := s.consents(ctx, slices.Collect(maps.Keys(byUser)))
	if err != nil {
		return nil, err
	}
	var texts []int
	for key, idxs := range byUser {
		c, ok := consents[key]
		for _, idx := range idxs {
			if !ok || !c.Allows(samples[idx].Kind.Scope()) || !consentCurrent(s.Config(), c) {
				return map[int]textemotion.Emotion{}, nil
			}
			if samples[idx].Kind == telemetry.KindText {
				texts = append(texts, idx)
			}
		}
	}
	slices.Sort(texts)
	return s.scoreTexts(ctx, samples, texts)
}

// scoreTexts scores the given text samples' affect, by sample index: one
// ScoreBatch call for all of them (the model server's one request of N
// inputs).
func (s *Service) scoreTexts(ctx context.Context, samples []telemetry.Sample, indices []int) (map[int]textemotion.Emotion, error) {
	scores := make(map[int]textemotion.Emotion, len(indices))
	if len(indices) == 0 {
		return scores, nil
	}
	texts := make([]string, len(indices))
	for i, idx := range indices {
		texts[i] = samples[idx].Text
	}
	out, err := textemotion.ScoreAll(ctx, s.scorer, texts)
	if err != nil {
		return nil, fmt.Errorf("score text: %w", err)
	}
	for i, idx := range indices {
		scores[idx] = out[i]
	}
	return scores, nil
}

// TextModelStatus is the text model server's state for /readyz; ok is
// false when no model server is configured (VADER only).
func (s *Service) TextModelStatus(ctx context.Context) (textemotion.Status, bool) {
	r, ok := s.scorer.(textemotion.StatusReporter)
	if !ok {
		return textemotion.Status{}, false
	}
	return r.TextModelStatus(ctx), true
}

// apply folds one sample into a record's model. Intervention samples carry
// no state evidence: they answer a decision (linkIntervention).
func (s *Service) apply(rec *Record, smp *telemetry.Sample, textScores map[int]textemotion.Emotion, idx int, timing estimate.Timing) {
	m := rec.Model
	switch smp.Kind {
	case telemetry.KindRR:
		m.AddRR(smp.At, smp.RRms, timing)
		if smp.BPM != nil {
			m.AddHeartRate(smp.At, *smp.BPM)
		}
	case telemetry.KindHeartRate:
		m.AddHeartRate(smp.At, *smp.BPM)
	case telemetry.KindText:
		e := textScores[idx]
		m.AddTextAffect(smp.At, e.Valence, e.Arousal, e.HasArousal, e.Confidence)
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
	}
}

func vec(v config.Vector) loss.Vector { return loss.Vector{v.Attention, v.Emotion, v.Resilience} }

// estimateTiming is the program's estimation time constants (zero fields:
// the estimator's defaults).
func estimateTiming(cfg *config.Config) estimate.Timing {
	e := cfg.Estimation
	return estimate.Timing{StateDecay: e.StateDecay.Duration, TraitDecay: e.TraitDecay.Duration, StressRecovery: e.StressRecovery.Duration}
}

// userLoss is the loss of a user's current estimate.
func userLoss(m *estimate.Model, cfg *config.Config, now time.Time) (float64, bool) {
	return stateLoss(m.Estimate(now, !cfg.ProhibitsBiometricEmotion(), estimateTiming(cfg)), cfg)
}

// stateLoss is L = Σw(s−s*)²/Σw over the dimensions the estimate knows.
func stateLoss(st estimate.State, cfg *config.Config) (float64, bool) {
	return loss.User(stateVector(st), knownVector(st), vec(cfg.Target), vec(cfg.Weights))
}

func stateVector(st estimate.State) loss.Vector {
	return loss.Vector{st.Attention.Value, st.Emotion.Value, st.Resilience.Value}
}

func knownVector(st estimate.State) [loss.Dims]bool {
	return [loss.Dims]bool{st.Attention.Known, st.Emotion.Known, st.Resilience.Known}
}

// UserState is the answer to GET /v1/users/{id}/state (engine/contract
// holds the wire type).
type UserState = contract.UserState

// State estimates a user's state. It reads only: no draw, no write, so a
// client may poll it.
func (s *Service) State(ctx context.Context, userID string) (UserState, error) {
	key := s.Pseudonym(userID)
	cfg := s.Config()
	now := s.now()
	var rec *Record
	if s.shared() {
		items, err := s.store.Users(ctx, []string{key})
		if err != nil {
			return UserState{}, err
		}
		item, ok := items[key]
		if !ok {
			return UserState{}, ErrUnknownUser
		}
		if rec, err = decodeRecord(item.Value); err != nil {
			return UserState{}, err
		}
	} else {
		entries, err := s.lockUsers(ctx, []string{key})
		if err != nil {
			return UserState{}, err
		}
		defer s.unlockUsers(entries)
		if rec = entries[key].rec; rec == nil {
			return UserState{}, ErrUnknownUser
		}
	}
	allowPhysio := !cfg.ProhibitsBiometricEmotion()
	st := rec.Model.Estimate(now, allowPhysio, estimateTiming(cfg))
	out := UserState{Attention: st.Attention, Emotion: st.Emotion, Resilience: st.Resilience, EstimatedAt: now, EmotionFromPhysiology: allowPhysio, Samples: rec.Samples}
	if l, ok := stateLoss(st, cfg); ok {
		out.Loss = &l
	}
	if rec.Last != nil {
		last := *rec.Last
		out.LastDecision = &last
	}
	return out, nil
}

// MinCurrentConfidence is the decayed confidence below which an estimate no
// longer counts toward the cohort.
const MinCurrentConfidence = 0.05

// CohortSummary is the answer to GET /v1/cohort (engine/contract holds the
// wire type).
type CohortSummary = contract.CohortSummary

// Means are per-dimension cohort means; null where no user of the cohort
// has an estimate of that dimension.
type Means = contract.Means

func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// Cohort aggregates the current estimates of all users. The size is not
// revealed below the minimum either: "3 users" is itself information.
func (s *Service) Cohort(ctx context.Context) (CohortSummary, error) {
	running := s.cfg.Load()
	cfg := running.cfg
	// What is published changes only with enough users (publication.go);
	// observedAt is when the published values were observed.
	// The snapshot (aggregates.go) answers in O(1) of the users.
	snap, err := s.snapshot(ctx, cfg)
	if err != nil {
		return CohortSummary{}, err
	}
	agg := snap.aggregate()
	out := CohortSummary{Published: agg.Published, MinCohortSize: cfg.Privacy.MinCohortSize, Strength: cfg.Strength.Value, Scope: s.Scope(), ObservedAt: snap.ObservedAt, PolicyVersion: policyVersion(cfg),
		Generation: running.generation, RunningSince: running.since}
	out.Effects = publishableEffects(snap.Effects, cfg.Privacy.MinCohortSize)
	if agg.Published {
		out.Size, out.Loss = &agg.Size, &agg.Loss
		out.Means = &Means{Attention: finite(agg.Means[0]), Emotion: finite(agg.Means[1]), Resilience: finite(agg.Means[2])}
	}
	return out, nil
}

func isCurrent(st estimate.State) bool {
	for _, d := range []estimate.Dimension{st.Attention, st.Emotion, st.Resilience} {
		if d.Known && d.Confidence >= MinCurrentConfidence {
			return true
		}
	}
	return false
}

// scrapeTimeout bounds the store reads a metrics scrape makes.
const scrapeTimeout = 10 * time.Second

// CohortMetrics implements metrics.CohortSource: one snapshot per scrape.
func (s *Service) CohortMetrics() metrics.Cohort {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	cfg := s.Config()
	snap, err := s.snapshot(ctx, cfg)
	if err != nil {
		s.log.Error("cohort for metrics failed", "error", err)
		n, _ := s.store.CountUsers(ctx) // 0 when the store fails too
		return metrics.Cohort{StoredUsers: n}
	}
	out := metrics.Cohort{Published: snap.Published, StoredUsers: snap.StoredUsers, Effects: publishableEffects(snap.Effects, cfg.Privacy.MinCohortSize)}
	if snap.Published {
		out.Loss, out.Size = snap.Loss, snap.Size
	}
	return out
}

// sweepLock names the retention sweep's lock: on a shared store one
// replica at a time sweeps.
const sweepLock = "retention-sweep"

// Sweep deletes users not seen within the retention period, with their
// decisions, and every decision older than it; it returns how many users
// were deleted (0 when another replica is sweeping).
func (s *Service) Sweep(ctx context.Context) (int, error) {
	deleted := 0
	_, err := s.store.Exclusive(ctx, sweepLock, func(ctx context.Context) error {
		cutoff := s.now().Add(-s.Config().Privacy.Retention.Duration)
		var expired []string
		if err := s.eachRecord(ctx, func(key string, rec *Record) {
			if rec.LastSeen.Before(cutoff) {
				expired = append(expired, key)
			}
		}); err != nil {
			return err
		}
		// Each user is re-read and deleted only if still expired: a user
		// seen meanwhile (here or on another replica) is kept.
		for _, key := range expired {
			err := s.update(ctx, []string{key}, func(t *userTxn) error {
				if rec := t.recs[key]; rec == nil || !rec.LastSeen.Before(cutoff) {
					return nil
				}
				t.eraseDecisions = []string{key}
				if err := t.commit(ctx, map[string]*Record{key: nil}, nil, 0); err != nil {
					return err
				}
				deleted++
				return nil
			})
			if err != nil {
				return err
			}
		}
		// Decisions older than the retention period go too, also those of
		// users still active.
		if _, err := s.store.DeleteDecisionsBefore(ctx, store.DecisionIDAt(cutoff)); err != nil {
			return err
		}
		// And the records of batches past their idempotency window.
		if _, err := s.store.DeleteBatchesBefore(ctx, s.now().Add(-IdempotencyWindow)); err != nil {
			return err
		}
		s.effects.invalidate()
		return nil
	})
	if s.metrics != nil {
		s.metrics.UsersExpired.Add(float64(deleted))
	}
	if err != nil {
		return deleted, fmt.Errorf("retention sweep: %w", err)
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
			if n, err := s.Sweep(ctx); err != nil {
				s.log.Error("retention sweep failed", "error", err)
			} else if n > 0 {
				s.log.Info("retention sweep deleted expired users", "count", n)
			}
		}
	}
}
