package service

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	gojson "github.com/goccy/go-json"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/effects"
	"github.com/attune-io/attune/engine/loss"
	"github.com/attune-io/attune/engine/policy"
	"github.com/attune-io/attune/engine/store"
)

// Aggregates by a bounded periodic job (docs/engine-model.md, "Scale").
//
// The cohort summary, the effects of the decisions and the stored-users
// gauge are computed by one full pass over the users and the decision
// log, the refresh, and readers (GET /v1/cohort, every /metrics scrape)
// answer from its last result, the snapshot, in O(1) of the users.
//
// Why a job and not sums kept on commit: a user's contribution to the
// cohort is their estimate now, which decays with the time since their
// last sample and leaves the cohort when its confidence falls below
// MinCurrentConfidence or the user passes the retention period, all
// without any commit. A sum kept on commit would be wrong the moment the
// clock moves. The refresh recomputes from scratch, so an erased or
// swept user's contribution is gone from the next snapshot, and nothing
// per user is kept outside their own (encrypted) record.
//
// How stale: a refresh runs when a read finds the snapshot older than
// refreshInterval, which grows with the last refresh's cost
// (refreshDutyCycle), so the job takes a bounded share of one core
// whatever the number of users. Where the last refresh found at most
// syncRefreshUsers users, reads refresh first, as before the job existed:
// a small program sees every change at once (a count, not a time, so
// that which one a program gets does not depend on the machine's load).
// Refreshes are single flight (requestRefresh): one pass at a time, and
// everyone who asks during it shares one pass after it. They run on a
// base context that Service.Close cancels and waits on.
//
// On a shared store one replica at a time refreshes, under an advisory
// lock (store.Exclusive), and stores the snapshot (store meta
// aggregateSnapshotKey, aggregates only) for every replica to read. The
// k-anonymity rules are unchanged: the refresh publishes through
// published (publication.go), the snapshot holds only what is published.

const (
	// aggregateSnapshotKey is the store meta key of the shared snapshot.
	aggregateSnapshotKey = "aggregate-snapshot"
	// refreshLock names the refresh's lock on a shared store.
	refreshLock = "aggregate-refresh"
	// syncRefreshUsers: a refresh over at most this many users runs
	// within the read (a few ms: the goal for a cohort read is 5 ms).
	syncRefreshUsers = 256
	// refreshDutyCycle bounds the job's share of one core: the next
	// refresh is due refreshDutyCycle times the last one's duration later.
	refreshDutyCycle = 10
	// minRefreshInterval and maxRefreshInterval clamp the interval.
	minRefreshInterval = time.Second
	maxRefreshInterval = 15 * time.Minute
	// refreshTimeout bounds one refresh (a pass over 1,000,000 users on
	// PostgreSQL took 72 s on 2 cores).
	refreshTimeout = 10 * time.Minute
	// sharedSnapshotMaxAge is how long a replica keeps the shared
	// snapshot it read before reading it again.
	sharedSnapshotMaxAge = time.Second
)

// aggregateSnapshot is what readers answer from.
type aggregateSnapshot struct {
	// Started and RefreshedAt are the wall-clock times the refresh began
	// and ended, Took its cost.
	Started     time.Time     `json:"started"`
	RefreshedAt time.Time     `json:"refreshedAt"`
	Took        time.Duration `json:"took"`
	// Basis is the configuration the snapshot was computed under
	// (publicationBasis): a change of it refreshes before answering.
	Basis string `json:"basis"`
	// Generation is this process's commit generation the snapshot saw
	// and Now the service's clock then (replica scope; not stored).
	Generation uint64    `json:"-"`
	Now        time.Time `json:"-"`
	// Published, Size, Loss, Means and ObservedAt are the published
	// cohort aggregate (published), as GET /v1/cohort reports it.
	Published  bool                `json:"published"`
	Size       int                 `json:"size,omitempty"`
	Loss       float64             `json:"loss,omitempty"`
	Means      [loss.Dims]*float64 `json:"means"`
	ObservedAt time.Time           `json:"observedAt"`
	// StoredUsers is the number of users with stored data.
	StoredUsers int `json:"storedUsers"`
	// Effects are the effects that met the cohort floor of Basis.
	Effects []effects.Effect `json:"effects,omitempty"`
}

func (a *aggregateSnapshot) aggregate() loss.Aggregate {
	agg := loss.Aggregate{Published: a.Published, Size: a.Size, Loss: a.Loss}
	for i, m := range a.Means {
		agg.Means[i] = math.NaN()
		if m != nil {
			agg.Means[i] = *m
		}
	}
	return agg
}

// interval is how long after this snapshot the next refresh is due.
func (a *aggregateSnapshot) interval() time.Duration {
	return min(max(refreshDutyCycle*a.Took, minRefreshInterval), maxRefreshInterval)
}

// aggregateCache is the snapshot this process answers from.
type aggregateCache struct {
	mu   sync.Mutex // guards the fields below
	snap *aggregateSnapshot
	// readAt is when snap was read from the shared store.
	readAt time.Time
	// flight is the refresh running now (nil when none) and next the one
	// that follows it, shared by everyone who asked for a pass that starts
	// after they asked while flight ran (single flight: at most one pass
	// runs and one waits, however many readers ask).
	flight, next *refreshFlight
	// ctx is the refreshes' base context, cancelled by Service.Close;
	// running counts the goroutines refreshes run on.
	ctx     context.Context
	stop    context.CancelFunc
	closed  bool
	running sync.WaitGroup
	// learnPassAt is when a commit that learnt last ran a pass, and
	// laterPending whether a pass after the rate limit is scheduled
	// (afterLearning).
	learnPassAt  time.Time
	laterPending bool
	// refreshMu serialises passes in this process and guards storedAt,
	// when this process last stored the shared snapshot.
	refreshMu sync.Mutex
	storedAt  time.Time
	// refreshes counts refreshes this process computed (tests, benches).
	refreshes int
	// passHook, when set (tests), runs as each pass begins.
	passHook func(ctx context.Context)
	// laterKick makes a scheduled refreshLater run at once (tests).
	laterKick chan struct{}
}

// refreshFlight is one refresh that readers wait on.
type refreshFlight struct {
	done chan struct{} // closed when snap and err are set
	snap *aggregateSnapshot
	err  error
	// basis is the publication basis the pass runs under (set when it
	// starts); job makes it the job's pass on a shared store (under the
	// refresh lock, storing the snapshot and the prior); wanted says a
	// reader waits for its snapshot, and skipped that it made no pass
	// (another replica held the lock and no reader wanted one).
	basis           string
	job             bool
	wanted, skipped bool
	// waiters counts the readers that joined it (tests).
	waiters int
}

// errServiceClosed answers reads that need a refresh after Close.
var errServiceClosed = errors.New("the engine is shutting down")

// refreshWhen is what a caller of requestRefresh needs.
type refreshWhen int

const (
	// ifIdle: a pass when none runs (the snapshot is due; nobody waits).
	ifIdle refreshWhen = iota
	// anyPass: a snapshot of the caller's basis, from the pass running
	// now if it has that basis (there is none yet, or the basis changed).
	anyPass
	// passAfter: a pass that starts after the call, so that it sees every
	// commit the caller could have seen.
	passAfter
)

// snapshot is the aggregate snapshot to answer from now.
func (s *Service) snapshot(ctx context.Context, cfg *config.Config) (*aggregateSnapshot, error) {
	if s.aggregateInterval < 0 {
		return s.awaitRefresh(ctx, publicationBasis(cfg), passAfter) // tests: always a fresh pass
	}
	basis := publicationBasis(cfg)
	c := &s.aggregates
	c.mu.Lock()
	snap := c.snap
	if s.shared() && snap != nil && time.Since(c.readAt) >= sharedSnapshotMaxAge {
		snap = nil // read the shared one again
	}
	c.mu.Unlock()
	if s.shared() && snap == nil {
		stored, err := s.storedSnapshot(ctx)
		if err != nil {
			return nil, err
		}
		snap = stored
		c.mu.Lock()
		c.snap, c.readAt = stored, time.Now()
		c.mu.Unlock()
	}
	switch {
	case snap == nil || snap.Basis != basis:
		return s.awaitRefresh(ctx, basis, anyPass)
	case snap.StoredUsers <= syncRefreshUsers && s.changedSince(snap):
		return s.awaitRefresh(ctx, basis, passAfter)
	}
	if time.Since(snap.RefreshedAt) >= s.refreshInterval(snap) {
		_, _ = s.requestRefresh(ifIdle, "", false, false) // only fails after Close
	}
	return snap, nil
}

// awaitRefresh waits for a refresh as when asks, or the read's end. The
// refresh runs on past the read's deadline (a scrape's timeout could
// otherwise stop a large program's first refresh every time), bounded by
// refreshTimeout and Close, and every reader asking meanwhile shares it.
func (s *Service) awaitRefresh(ctx context.Context, basis string, when refreshWhen) (*aggregateSnapshot, error) {
	for attempt := 0; ; attempt++ {
		f, err := s.requestRefresh(when, basis, true, false)
		if err != nil {
			return nil, err
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("aggregate refresh: %w", ctx.Err())
		}
		// A pass under the configuration now in force answers too: the
		// caller's may have been replaced meanwhile.
		if f.err != nil || f.snap != nil && (f.snap.Basis == basis || f.snap.Basis == publicationBasis(s.Config()) || attempt >= 2) {
			return f.snap, f.err
		}
		if attempt >= 2 {
			return nil, errors.New("aggregate refresh: no pass made a snapshot")
		}
		// The pass made none (another replica's job held the lock) or ran
		// under an older configuration: the next one.
		when = passAfter
	}
}

// requestRefresh joins or starts a refresh as when asks and returns it
// (nil for ifIdle when one runs). wanted: the caller waits for its
// snapshot; job: the job's pass on a shared store is asked for.
func (s *Service) requestRefresh(when refreshWhen, basis string, wanted, job bool) (*refreshFlight, error) {
	c := &s.aggregates
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errServiceClosed
	}
	var f *refreshFlight
	switch {
	case c.flight == nil:
		f = &refreshFlight{done: make(chan struct{}), basis: publicationBasis(s.Config())}
		c.flight = f
		c.baseContext()
		c.running.Add(1)
		go s.runRefreshes()
	case when == ifIdle:
		return nil, nil
	case when == anyPass && c.flight.basis == basis && !c.flight.skipped:
		f = c.flight
	default:
		if c.next == nil {
			c.next = &refreshFlight{done: make(chan struct{})}
		}
		f = c.next
	}
	f.wanted = f.wanted || wanted
	if wanted {
		f.waiters++
	}
	f.job = f.job || job || !wanted // a pass nobody waits for is the job's
	return f, nil
}

// runRefreshes runs c.flight, then c.next while one was asked for.
func (s *Service) runRefreshes() {
	c := &s.aggregates
	defer c.running.Done()
	for {
		c.mu.Lock()
		f, ctx := c.flight, c.ctx
		cfg := s.Config()
		f.basis = publicationBasis(cfg)
		c.mu.Unlock()
		s.runRefresh(ctx, cfg, f)
		close(f.done)
		c.mu.Lock()
		c.flight, c.next = c.next, nil
		if c.flight == nil || c.closed {
			if c.flight != nil {
				c.flight.err = errServiceClosed
				close(c.flight.done)
				c.flight = nil
			}
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
}

// runRefresh makes f's pass and sets its result.
func (s *Service) runRefresh(base context.Context, cfg *config.Config, f *refreshFlight) {
	ctx, cancel := context.WithTimeout(base, refreshTimeout)
	defer cancel()
	c := &s.aggregates
	c.mu.Lock()
	job := f.job
	c.mu.Unlock()
	switch {
	case !s.shared() || !job:
		f.snap, f.err = s.refresh(ctx, cfg)
	default:
		// One replica makes the job's pass; the others read its snapshot.
		var snap *aggregateSnapshot
		ran, err := s.store.Exclusive(ctx, refreshLock, func(ctx context.Context) error {
			var err error
			snap, err = s.refreshLocked(ctx, cfg, true)
			return err
		})
		f.snap, f.err = snap, err
		if err == nil && !ran {
			c.mu.Lock()
			f.skipped = !f.wanted
			c.mu.Unlock()
			if !f.skipped {
				f.snap, f.err = s.refresh(ctx, cfg) // a reader needs one now
			}
		}
	}
	c.mu.Lock()
	wanted := f.wanted
	c.mu.Unlock()
	if f.err != nil && !wanted {
		s.log.Error("aggregate refresh failed", "error", f.err)
	}
}

// baseContext is the refreshes' base context; the caller holds c.mu.
func (c *aggregateCache) baseContext() context.Context {
	if c.ctx == nil {
		c.ctx, c.stop = context.WithCancel(context.Background())
	}
	return c.ctx
}

// closeAggregates stops the refreshes and waits for them (Service.Close).
func (s *Service) closeAggregates() {
	c := &s.aggregates
	c.mu.Lock()
	c.closed = true
	if c.stop != nil {
		c.stop()
	}
	c.mu.Unlock()
	c.running.Wait()
}

// refreshInterval is snap's interval, or Options.AggregateInterval when set.
func (s *Service) refreshInterval(snap *aggregateSnapshot) time.Duration {
	if s.aggregateInterval > 0 {
		return s.aggregateInterval
	}
	return snap.interval()
}

// changedSince reports whether snap may differ from a fresh pass: on a
// shared store always (other replicas write), in replica scope when a
// commit happened since or the clock moved on.
func (s *Service) changedSince(snap *aggregateSnapshot) bool {
	return s.shared() || s.aggregateGeneration.Load() != snap.Generation || !snap.Now.Equal(s.now())
}

// storedSnapshot reads the shared snapshot (nil when none).
func (s *Service) storedSnapshot(ctx context.Context) (*aggregateSnapshot, error) {
	item, err := s.store.Meta(ctx, aggregateSnapshotKey)
	if err != nil {
		return nil, fmt.Errorf("read the aggregate snapshot: %w", err)
	}
	if item.Value == nil {
		return nil, nil
	}
	var snap aggregateSnapshot
	if err := gojson.Unmarshal(item.Value, &snap); err != nil {
		return nil, fmt.Errorf("decode the aggregate snapshot: %w", err)
	}
	return &snap, nil
}

// refresh makes one full pass and answers from it. On a shared store the
// replica holding the refresh lock stores the snapshot and the population
// prior for the others; the rest answer from their own pass.
func (s *Service) refresh(ctx context.Context, cfg *config.Config) (*aggregateSnapshot, error) {
	return s.refreshLocked(ctx, cfg, false)
}

// refreshLocked is refresh; locked says the caller holds the refresh lock.
func (s *Service) refreshLocked(ctx context.Context, cfg *config.Config, locked bool) (*aggregateSnapshot, error) {
	c := &s.aggregates
	// Passes of this process run one at a time (requestRefresh shares
	// them among readers).
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	c.mu.Lock()
	hook := c.passHook
	c.mu.Unlock()
	if hook != nil {
		hook(ctx)
	}
	start := time.Now()
	gen := s.aggregateGeneration.Load()
	now := s.now()
	pass, err := s.fullPass(ctx, cfg, now)
	if err == nil {
		err = ctx.Err() // cancelled (Close) or past refreshTimeout: publish nothing
	}
	if err != nil {
		return nil, fmt.Errorf("aggregate refresh: %w", err)
	}
	agg, observedAt, err := s.publish(ctx, cfg, now, pass.agg, pass.members)
	if err != nil {
		return nil, err
	}
	all, err := s.refreshEffects(ctx, locked)
	if err != nil {
		return nil, err
	}
	snap := &aggregateSnapshot{Basis: publicationBasis(cfg), Generation: gen, Now: now, Published: agg.Published, ObservedAt: observedAt,
		StoredUsers: pass.users, Effects: publishableEffects(all, cfg.Privacy.MinCohortSize)}
	if agg.Published {
		snap.Size, snap.Loss = agg.Size, agg.Loss
		for i, m := range agg.Means {
			snap.Means[i] = finite(m)
		}
	}
	snap.Started, snap.RefreshedAt, snap.Took = start, time.Now(), time.Since(start)
	// A refresh within reads (a small program) stores at most once per
	// sharedSnapshotMaxAge: the others compute their own meanwhile.
	switch {
	case s.shared() && locked:
		if err := s.storeShared(ctx, snap, pass.population); err != nil {
			return nil, err
		}
		c.storedAt = time.Now()
	case s.shared() && time.Since(c.storedAt) >= sharedSnapshotMaxAge:
		if _, err := s.store.Exclusive(ctx, refreshLock, func(ctx context.Context) error {
			return s.storeShared(ctx, snap, pass.population)
		}); err != nil {
			return nil, err
		}
		c.storedAt = time.Now()
	}
	c.mu.Lock()
	c.snap, c.readAt, c.refreshes = snap, time.Now(), c.refreshes+1
	c.mu.Unlock()
	return snap, nil
}

// storeShared writes the snapshot and the population prior (the merge
// of every stored user's arms) over the stored ones; the caller holds
// the refresh lock, so no other replica writes them meanwhile (a legacy
// writer of the prior makes the write conflict: it is tried again at
// the next refresh).
func (s *Service) storeShared(ctx context.Context, snap *aggregateSnapshot, pop policy.Population) error {
	meta := map[string]store.Write{}
	for key, value := range map[string]any{aggregateSnapshotKey: snap, populationKey: pop} {
		if key == populationKey && s.legacyPopulationRow {
			continue // the baseline: ingest writes the prior itself
		}
		item, err := s.store.Meta(ctx, key)
		if err != nil {
			return fmt.Errorf("read %s: %w", key, err)
		}
		b, err := gojson.Marshal(value)
		if err != nil {
			return fmt.Errorf("encode %s: %w", key, err)
		}
		meta[key] = store.Write{Value: b, IfVersion: item.Version}
	}
	err := s.store.Commit(ctx, store.Change{Meta: meta})
	if errors.Is(err, store.ErrConflict) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store the aggregate snapshot: %w", err)
	}
	return nil
}

// pass is what one full pass over the users finds.
type pass struct {
	agg     loss.Aggregate
	members map[string]int64
	users   int
	// population merges every user's arms (shared scope only).
	population policy.Population
}

// fullPass reads every stored user once: the cohort now and its members
// (each user in it with the samples their estimate rests on), the number
// of stored users and, on a shared store, the population prior as the
// merge of the users' own arms.
func (s *Service) fullPass(ctx context.Context, cfg *config.Config, now time.Time) (pass, error) {
	allowPhysio := !cfg.ProhibitsBiometricEmotion()
	retention := cfg.Privacy.Retention.Duration
	var current []loss.Entry
	out := pass{members: map[string]int64{}, population: policy.Population{Arms: map[string]*policy.Stats{}}}
	err := s.eachRecord(ctx, func(key string, rec *Record) {
		out.users++
		if s.shared() {
			for name, st := range rec.Policy.Arms {
				mergeStats(out.population.Arms, name, st)
			}
		}
		if now.Sub(rec.LastSeen) > retention {
			return
		}
		st := rec.Model.Estimate(now, allowPhysio, estimateTiming(cfg))
		if !isCurrent(st) {
			return
		}
		if l, ok := stateLoss(st, cfg); ok {
			current = append(current, loss.Entry{Loss: l, State: stateVector(st), Known: knownVector(st)})
			out.members[key] = rec.Samples
		}
	})
	if err != nil {
		return pass{}, fmt.Errorf("cohort: %w", err)
	}
	out.agg = loss.Cohort(current, cfg.Privacy.MinCohortSize)
	return out, nil
}

// mergeStats folds st into arms[name]: the Welford statistics of the
// union of both samples (Chan, Golub & LeVeque 1979, the pairwise update).
func mergeStats(arms map[string]*policy.Stats, name string, st *policy.Stats) {
	if st == nil || st.N == 0 {
		return
	}
	a := arms[name]
	if a == nil {
		c := *st
		arms[name] = &c
		return
	}
	n := a.N + st.N
	delta := st.Mean - a.Mean
	a.M2 += st.M2 + delta*delta*float64(a.N)*float64(st.N)/float64(n)
	a.Mean += delta * float64(st.N) / float64(n)
	a.N = n
}

// refreshPriorIfDue starts a background refresh when the shared
// snapshot of a large program, and with it the prior, is due: decisions
// keep the prior current even where nothing reads the cohort. (A small
// program's prior is refreshed after commits that learn.)
func (s *Service) refreshPriorIfDue(ctx context.Context) {
	if s.legacyPopulationRow {
		return
	}
	snap := s.cachedSharedSnapshot(ctx)
	if snap != nil && snap.StoredUsers > syncRefreshUsers && time.Since(snap.RefreshedAt) >= s.refreshInterval(snap) {
		_, _ = s.requestRefresh(ifIdle, "", false, true)
	}
}

// afterLearning runs after a shared store's commit that folded outcomes
// into users' arms, within the request. A small program's prior is
// refreshed now (a pass over at most syncRefreshUsers users: a few ms),
// so the next decision anywhere learns from it as when every commit wrote
// the prior, but at most once per sharedSnapshotMaxAge: commits that
// learn within that time share one pass after it, in the background, so
// the prior's row is written at most once a second whatever the commit
// rate. A large program's prior, or one with no readable snapshot (after
// a deploy or a restore, or a read error), is refreshed in the
// background: a full pass never runs inside a request.
func (s *Service) afterLearning(ctx context.Context) {
	snap := s.cachedSharedSnapshot(ctx)
	switch {
	case snap == nil:
		_, _ = s.requestRefresh(passAfter, "", false, true)
		return
	case snap.StoredUsers > syncRefreshUsers:
		if time.Since(snap.RefreshedAt) >= s.refreshInterval(snap) {
			_, _ = s.requestRefresh(ifIdle, "", false, true)
		}
		return
	}
	c := &s.aggregates
	c.mu.Lock()
	wait := time.Until(c.learnPassAt.Add(sharedSnapshotMaxAge))
	if wait <= 0 {
		c.learnPassAt = time.Now()
	}
	later := wait > 0 && !c.laterPending && !c.closed
	if later {
		c.laterPending = true
		c.running.Add(1)
	}
	c.mu.Unlock()
	if wait > 0 {
		if later {
			go s.refreshLater(wait)
		}
		return
	}
	f, err := s.requestRefresh(passAfter, "", false, true)
	if err != nil {
		return
	}
	select {
	case <-f.done:
	case <-ctx.Done():
	}
	// A failed pass is logged by runRefresh; the commit stands and the
	// prior follows at the next refresh.
}

// refreshLater asks for the job's pass after wait (afterLearning's rate
// limit), unless the service closes first.
func (s *Service) refreshLater(wait time.Duration) {
	c := &s.aggregates
	defer c.running.Done()
	c.mu.Lock()
	ctx := c.baseContext()
	if c.laterKick == nil {
		c.laterKick = make(chan struct{}, 1)
	}
	kick := c.laterKick
	c.mu.Unlock()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-kick:
	case <-ctx.Done():
	}
	c.mu.Lock()
	c.laterPending = false
	c.learnPassAt = time.Now()
	c.mu.Unlock()
	if ctx.Err() == nil {
		_, _ = s.requestRefresh(passAfter, "", false, true)
	}
}

// cachedSharedSnapshot is the shared snapshot, read again when the copy
// is older than sharedSnapshotMaxAge (nil when none, or unreadable now).
func (s *Service) cachedSharedSnapshot(ctx context.Context) *aggregateSnapshot {
	c := &s.aggregates
	c.mu.Lock()
	snap, fresh := c.snap, time.Since(c.readAt) < sharedSnapshotMaxAge
	c.mu.Unlock()
	if fresh {
		return snap
	}
	stored, err := s.storedSnapshot(ctx)
	if err != nil {
		return nil // the next read tries again
	}
	c.mu.Lock()
	c.snap, c.readAt = stored, time.Now()
	c.mu.Unlock()
	return stored
}

// refreshEffects are the effect estimates for a refresh. The job on a
// shared store (locked) scans the decision log afresh, since other
// replicas settle outcomes too; otherwise the effects cache bounds the
// scans (Options.EffectsMinInterval), which in replica scope sees every
// settled outcome.
func (s *Service) refreshEffects(ctx context.Context, locked bool) ([]effects.Effect, error) {
	if !s.shared() || !locked && s.effectsMinInterval >= 0 {
		return s.Effects(ctx)
	}
	c := &s.effects
	gen := c.generation.Load() // before the scan: a commit during it invalidates
	all, err := EstimateEffects(ctx, s.store)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.all, c.computed, c.at, c.valid = all, gen, time.Now(), true
	c.mu.Unlock()
	return all, nil
}
