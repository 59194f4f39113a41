package store

import (
	"sync"
	"sync/atomic"
)

// DefaultMappedPagesBudget is how much of the store file may stay mapped
// into the engine's memory before the mapped pages are released: enough
// for the pages the users in the engine's cache live on to stay mapped
// between checks, small against the 1 GiB an engine of a million users
// is sized for (docs/scale-out.md, "Capacity").
const DefaultMappedPagesBudget = 256 << 20

// mappedCheckEvery is how many transactions pass between two looks at the
// process's file-backed resident memory (one read of /proc/self/statm,
// a few microseconds).
const mappedCheckEvery = 512

// mappedBudget keeps the pages of the store file mapped into the engine's
// memory under a budget. bbolt reads through a memory map, so every read
// of a user the engine's cache does not hold maps that user's pages (and
// the kernel's fault-around maps up to 16 neighbours); they stay counted
// in the engine's RSS until released. Releasing them (madvise
// MADV_DONTNEED) keeps them in the kernel's page cache, so the next read
// of one is a minor fault, not a disk read.
type mappedBudget struct {
	budget int64 // bytes; ≤ 0: no bound
	// baseline is the process's file-backed resident memory when the
	// store opened (the binary's own pages), not counted against budget.
	baseline int64
	// checkEvery is how many transactions pass between two checks
	// (mappedCheckEvery; tests set fewer).
	checkEvery uint64
	reads      atomic.Uint64
	// releasing is held from a check until its release is done.
	releasing sync.Mutex
}

// noteRead counts a transaction and, every checkEvery, looks at the mapped
// pages and releases them when they exceed the budget, both in the
// background, so no request reads /proc or waits for the release. A check
// still not done at the next one (a busy machine had no thread free for
// it) is waited for there: the mapped pages then never exceed the budget
// by more than two check intervals' faults (each fault maps at most the
// kernel's fault-around of 16 pages), however loaded the machine is.
func (s *Bolt) noteRead() {
	m := &s.mapped
	if m.budget <= 0 || m.reads.Add(1)%m.checkEvery != 0 {
		return
	}
	// Waits only while the check started at the last interval runs.
	m.releasing.Lock()
	go func() {
		defer m.releasing.Unlock()
		if fileResident()-m.baseline > m.budget {
			// After Close this fails on the closed file, with nothing
			// to release.
			_ = s.ReleaseMappedPages()
		}
	}()
}

// withMappedCheckEvery sets how many transactions pass between two checks
// of the mapped pages (mappedCheckEvery by default), for tests that bound
// them tighter than the default's slack allows.
func withMappedCheckEvery(n uint64) Option {
	return func(s *Bolt) { s.mapped.checkEvery = max(n, 1) }
}
