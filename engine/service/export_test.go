package service

import (
	"context"
	"time"

	gojson "github.com/goccy/go-json"

	"github.com/attune-io/attune/engine/loss"
	"github.com/attune-io/attune/engine/policy"
	"github.com/attune-io/attune/engine/store"
)

// Internals for the tests and benchmarks of package service_test.

// RefreshAggregates runs the aggregate refresh as the periodic job does:
// on a shared store under the refresh lock (ran is false when another
// holder has it).
func (s *Service) RefreshAggregates(ctx context.Context) (ran bool, err error) {
	if !s.shared() {
		_, err := s.refresh(ctx, s.Config())
		return true, err
	}
	return s.store.Exclusive(ctx, refreshLock, func(ctx context.Context) error {
		_, err := s.refreshLocked(ctx, s.Config(), true)
		return err
	})
}

// FullScanCohort is the cohort aggregate as published from a full scan
// on the spot, the way every read computed it before the snapshot: the
// benchmarks' baseline (it may store a publication; tests compare with
// RecomputeCohort, which writes nothing).
func (s *Service) FullScanCohort(ctx context.Context) (loss.Aggregate, error) {
	agg, _, err := s.published(ctx, s.Config(), s.now())
	return agg, err
}

// Publication is a copy of the stored cohort publication.
type Publication = publication

// StoredPublication reads the stored publication (nil when none) from
// the store itself, past the publication cache, writing nothing.
func (s *Service) StoredPublication(ctx context.Context) (*Publication, error) {
	item, err := s.store.Meta(ctx, publicationKey)
	if err != nil || item.Value == nil {
		return nil, err
	}
	var p publication
	if err := gojson.Unmarshal(item.Value, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// RecomputeCohort is the cohort aggregate to publish now, recomputed for
// the tests without the refresh's code (fullPass, publish) and writing
// nothing: every stored record as the store holds it, each user's
// estimate by the published definition (within retention, current,
// with a loss), loss.Cohort over them, then the k-change rule of
// data-protection.md applied to last, a copy of the publication before
// the refresh: its values stand unless the floor is unmet, nothing was
// published, the basis changed, or at least k members joined, left or
// rest on other samples.
func (s *Service) RecomputeCohort(ctx context.Context, last *Publication) (loss.Aggregate, error) {
	cfg, now := s.Config(), s.now()
	var entries []loss.Entry
	members := map[string]int64{}
	err := s.store.EachUser(ctx, func(key string, item store.Item) error {
		rec, err := decodeRecord(item.Value)
		if err != nil {
			return err
		}
		if now.Sub(rec.LastSeen) > cfg.Privacy.Retention.Duration {
			return nil
		}
		st := rec.Model.Estimate(now, !cfg.ProhibitsBiometricEmotion(), estimateTiming(cfg))
		if !isCurrent(st) {
			return nil
		}
		if l, ok := stateLoss(st, cfg); ok {
			entries = append(entries, loss.Entry{Loss: l, State: stateVector(st), Known: knownVector(st)})
			members[s.memberID(key)] = rec.Samples
		}
		return nil
	})
	if err != nil {
		return loss.Aggregate{}, err
	}
	agg := loss.Cohort(entries, cfg.Privacy.MinCohortSize)
	if !agg.Published || last == nil || last.Basis != publicationBasis(cfg) {
		return agg, nil
	}
	changed := 0
	for m, n := range members {
		if was, ok := last.Members[m]; !ok || was != n {
			changed++
		}
	}
	for m := range last.Members {
		if _, ok := members[m]; !ok {
			changed++
		}
	}
	if changed < cfg.Privacy.MinCohortSize {
		return last.aggregate(), nil
	}
	return agg, nil
}

// SetAggregatePassHook makes hook run as each aggregate pass begins.
func (s *Service) SetAggregatePassHook(hook func(ctx context.Context)) {
	s.aggregates.mu.Lock()
	defer s.aggregates.mu.Unlock()
	s.aggregates.passHook = hook
}

// RefreshWaiters is the number of readers waiting on the running refresh
// and on the one after it.
func (s *Service) RefreshWaiters() (running, next int) {
	c := &s.aggregates
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.flight != nil {
		running = c.flight.waiters
	}
	if c.next != nil {
		next = c.next.waiters
	}
	return running, next
}

// SettleAggregateRefreshes runs a refresh that afterLearning scheduled
// for later at once and waits until no refresh runs or waits.
func (s *Service) SettleAggregateRefreshes() {
	c := &s.aggregates
	for {
		c.mu.Lock()
		idle := c.flight == nil && c.next == nil && !c.laterPending
		if c.laterPending && c.laterKick != nil {
			select {
			case c.laterKick <- struct{}{}:
			default:
			}
		}
		c.mu.Unlock()
		if idle {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// StoredPopulation is the population prior as stored.
func (s *Service) StoredPopulation(ctx context.Context) (policy.Population, error) {
	pop, _, err := loadPopulation(ctx, s.store)
	return pop, err
}

// Conflicts is the number of commits that lost a race and were retried.
func (s *Service) Conflicts() uint64 { return s.conflicts.Load() }

// UseLegacyPopulationRow makes a shared store's operations write the
// prior themselves (the single hot row: the conflict baseline).
func (s *Service) UseLegacyPopulationRow() { s.legacyPopulationRow = true }

// AggregateRefreshes counts the refreshes this process computed.
func (s *Service) AggregateRefreshes() int {
	s.aggregates.mu.Lock()
	defer s.aggregates.mu.Unlock()
	return s.aggregates.refreshes
}

// ExpireSnapshotCache makes the next read fetch the shared snapshot
// again instead of waiting sharedSnapshotMaxAge.
func (s *Service) ExpireSnapshotCache() {
	s.aggregates.mu.Lock()
	defer s.aggregates.mu.Unlock()
	s.aggregates.readAt = time.Time{}
}
