package service

import (
	"context"
	"time"

	"github.com/attune-io/attune/engine/loss"
	"github.com/attune-io/attune/engine/policy"
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
// on the spot (the way every read computed it before the snapshot).
func (s *Service) FullScanCohort(ctx context.Context) (loss.Aggregate, error) {
	agg, _, err := s.published(ctx, s.Config(), s.now())
	return agg, err
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
