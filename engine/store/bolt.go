package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/attune-io/attune/engine/config"
)

var (
	usersBucket = []byte("users")
	metaBucket  = []byte("meta")
	// decisionsBucket holds the decision log under user pseudonym + "/" +
	// decision ID, so one user's decisions are one contiguous range.
	decisionsBucket = []byte("decisions")
	// dataKeysBucket holds users' wrapped data keys (Sealed), one value
	// each, written when the user is created and deleted first when the
	// user is erased.
	dataKeysBucket = []byte("datakeys")
	// batchesBucket holds committed ingest batches by ID: the commit time
	// (8 bytes, Unix nanoseconds, big endian), then the record.
	batchesBucket = []byte("batches")
	// schemaBucket records the value format: formatVersioned means every
	// value in users and meta starts with its version (8 bytes, big
	// endian). Files written before versions existed are converted at open.
	schemaBucket    = []byte("schema")
	formatKey       = []byte("format")
	formatVersioned = []byte("versioned-1")
	// compactPendingKey (in schemaBucket) is set by every commit that
	// erases and cleared by the compaction that follows it. A process
	// killed in between leaves it set, and the next open compacts at once:
	// otherwise the erased user's wrapped data key would stay readable in
	// freed pages until some later erasure.
	compactPendingKey = []byte("compact-pending")
)

// versionLen is the size of the version prefix of a stored value.
const versionLen = 8

// FileName is the database file inside the data directory.
const FileName = "engine.db"

// Bolt is the embedded backend: a bbolt file in the data directory, owned
// by one engine process (bbolt locks the file). Commits from concurrent
// requests share one transaction and one fsync (group commit), and a commit
// returns only once that transaction is on disk, so an acknowledged request
// survives kill -9.
//
// bbolt never overwrites a freed page until it reuses it, so the bytes of
// an erased user (ciphertext under Sealed, and the wrapped data key) would
// stay in the file. Bolt therefore compacts the file after erasures: a
// commit that erases (a user's row or data key deleted) schedules a
// compaction CompactDelay later, at most one per CompactDelay, which
// copies the live pages to a new file and renames it over the old one.
type Bolt struct {
	// dbMu guards db: every transaction holds it shared, Compact
	// exclusively while it swaps the file.
	dbMu    sync.RWMutex
	db      *bolt.DB
	path    string
	commits chan commitRequest
	done    chan struct{}
	// closing guards commits: Close takes it exclusively, so no Commit
	// sends on the closed channel (a sweep racing a shutdown gets ErrClosed).
	closing sync.RWMutex
	closed  bool
	// rollback: see WithoutCommit.
	rollback bool
	noSync   bool
	// groupLimit bounds the changes of one transaction (maxGroup; 1:
	// WithoutGroupCommit).
	groupLimit int
	// erased signals the compactor that a commit erased something.
	erased chan struct{}
	// tombstones is the erasure journal (tombstones.go); Reapplied counts
	// the erasures it re-applied at open.
	tombstones    *os.File
	Reapplied     int
	stopCompactor chan struct{}
	compactorDone chan struct{}
	compactDelay  time.Duration
	// mapped bounds the store's pages mapped into the engine's memory
	// (mappedpages_linux.go).
	mapped mappedBudget
	// groups, changes, busy and applying (ns): CommitStats.
	groups, changes, busy, applying atomic.Int64
}

// CompactDelay is how long after an erasure the embedded store compacts
// its file (and the least time between two compactions).
const CompactDelay = 10 * time.Second

type commitRequest struct {
	change Change
	result chan error
}

// CommitStats are the committer's counters since the store opened: the
// groups committed (transactions), the changes they held, and the time
// the committer spent in them (applying and committing, fsync included),
// so that a benchmark can tell a disk-bound committer from an idle one.
type CommitStats struct {
	Groups, Changes int64
	Busy            time.Duration
	// Apply is the part of Busy spent applying the changes in the
	// transaction (our code); bbolt's own share is Spill (building the
	// pages), Write (writing them out and the first fsync; the meta
	// page's write and fsync follow) and Pages, the pages written
	// (bbolt's transaction statistics, since the file was last opened).
	Apply, Spill, Write time.Duration
	Pages               int64
}

// CommitStats returns the committer's counters.
func (s *Bolt) CommitStats() CommitStats {
	s.dbMu.RLock()
	tx := s.db.Stats().TxStats
	s.dbMu.RUnlock()
	return CommitStats{Groups: s.groups.Load(), Changes: s.changes.Load(), Busy: time.Duration(s.busy.Load()),
		Apply: time.Duration(s.applying.Load()), Spill: tx.GetSpillTime(), Write: tx.GetWriteTime(), Pages: tx.GetWrite()}
}

// Option adjusts how the store is opened. The options exist for
// benchmarks, which measure what the durable commit costs; never use them
// in production.
type Option func(*Bolt)

// WithoutSync commits without fsync: the pages are written, not flushed.
func WithoutSync() Option { return func(s *Bolt) { s.noSync = true } }

// WithoutGroupCommit commits every change in a transaction of its own (one
// fsync each): the baseline that shows what the group commit saves.
func WithoutGroupCommit() Option { return func(s *Bolt) { s.groupLimit = 1 } }

// WithCompactDelay sets the delay of the compaction after an erasure
// (CompactDelay by default; negative: never compact on its own, for tests
// that call Compact).
func WithCompactDelay(d time.Duration) Option { return func(s *Bolt) { s.compactDelay = d } }

// WithMappedPagesBudget bounds how much of the store file stays mapped
// into the engine's memory (DefaultMappedPagesBudget by default; 0 or
// negative: no bound): every read that misses the engine's cache maps in
// a few pages (and the kernel's fault-around their neighbours), so over a
// million users the whole file would end up counted in the engine's RSS.
func WithMappedPagesBudget(bytes int64) Option {
	return func(s *Bolt) { s.mapped.budget = bytes }
}

// WithoutCommit applies every change in a transaction that is then rolled
// back: nothing is written, and Commit still answers as if it had been
// (versions are checked but never conflict: nothing stays to conflict with).
func WithoutCommit() Option { return func(s *Bolt) { s.rollback = true } }

// OpenBolt opens (creating if needed) the database in dir.
func OpenBolt(dir string, opts ...Option) (*Bolt, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	path := filepath.Join(dir, FileName)
	// A compaction interrupted before its rename left only a partial copy.
	if err := os.Remove(path + compactingSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove an interrupted compaction: %w", err)
	}
	if err := removeBackups(dir); err != nil {
		return nil, fmt.Errorf("remove an interrupted backup: %w", err)
	}
	db, err := openBoltFile(path)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if err := db.Update(prepare); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("prepare database: %w", err)
	}
	st := &Bolt{db: db, path: path, commits: make(chan commitRequest, 256), done: make(chan struct{}),
		erased: make(chan struct{}, 1), stopCompactor: make(chan struct{}), compactorDone: make(chan struct{}), compactDelay: CompactDelay, groupLimit: maxGroup}
	st.mapped.budget, st.mapped.checkEvery = DefaultMappedPagesBudget, mappedCheckEvery
	for _, o := range opts {
		o(st)
	}
	st.mapped.baseline = fileResident()
	db.NoSync = st.noSync
	journal := filepath.Join(dir, TombstonesFileName)
	if !st.rollback {
		if st.Reapplied, err = reapplyErasures(db, journal); err != nil {
			_ = db.Close()
			return nil, err
		}
		if st.tombstones, err = openJournal(journal); err != nil {
			_ = db.Close()
			return nil, err
		}
	}
	if st.compactDelay >= 0 && compactionPending(db) {
		// The previous process erased and died before compacting. A
		// failure here leaves the compaction to the compactor.
		if err := st.Compact(); err != nil {
			st.erased <- struct{}{}
		}
	}
	go st.committer()
	go st.compactor()
	return st, nil
}

// openBoltFile opens a bbolt file as etcd runs it: the freelist is not
// written on every commit (it is rebuilt by scanning the file at open),
// which saves pages per sync.
func openBoltFile(path string) (*bolt.DB, error) {
	return bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true})
}

// compactionPending reports whether an erasure was committed and not yet
// compacted (compactPendingKey).
func compactionPending(db *bolt.DB) bool {
	pending := false
	_ = db.View(func(tx *bolt.Tx) error {
		pending = tx.Bucket(schemaBucket).Get(compactPendingKey) != nil
		return nil
	})
	return pending
}

// compactingSuffix names the copy a compaction writes before renaming it
// over the database.
const compactingSuffix = ".compacting"

// prepare creates the buckets and converts a file from before versions
// (plain values) to versioned values, each at version 1.
func prepare(tx *bolt.Tx) error {
	for _, name := range [][]byte{usersBucket, metaBucket, schemaBucket, decisionsBucket, dataKeysBucket, batchesBucket} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	schema := tx.Bucket(schemaBucket)
	if bytes.Equal(schema.Get(formatKey), formatVersioned) {
		return nil
	}
	for _, name := range [][]byte{usersBucket, metaBucket} {
		b := tx.Bucket(name)
		plain := map[string][]byte{}
		if err := b.ForEach(func(k, v []byte) error { plain[string(k)] = append([]byte(nil), v...); return nil }); err != nil {
			return err
		}
		for k, v := range plain {
			if err := b.Put([]byte(k), withVersion(1, v)); err != nil {
				return err
			}
		}
	}
	return schema.Put(formatKey, formatVersioned)
}

func withVersion(version int64, value []byte) []byte {
	out := make([]byte, versionLen+len(value))
	binary.BigEndian.PutUint64(out, uint64(version))
	copy(out[versionLen:], value)
	return out
}

// split separates a stored value into its version and payload (the
// payload aliases stored memory: valid only in the transaction).
func split(stored []byte) (int64, []byte) {
	if len(stored) < versionLen {
		return 0, nil
	}
	return int64(binary.BigEndian.Uint64(stored)), stored[versionLen:]
}

// Close stops the committer and the compactor and closes the database.
func (s *Bolt) Close() error {
	s.closing.Lock()
	if s.closed {
		s.closing.Unlock()
		return nil
	}
	s.closed = true
	close(s.commits)
	s.closing.Unlock()
	<-s.done
	close(s.stopCompactor)
	<-s.compactorDone
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	if s.tombstones != nil {
		_ = s.tombstones.Close()
	}
	return s.db.Close()
}

// view runs fn in a read transaction of the current file.
func (s *Bolt) view(fn func(*bolt.Tx) error) error {
	s.dbMu.RLock()
	err := s.db.View(fn)
	s.dbMu.RUnlock()
	s.noteRead()
	return err
}

// compactor compacts the file CompactDelay after an erasure, and then
// waits at least CompactDelay before the next.
func (s *Bolt) compactor() {
	defer close(s.compactorDone)
	if s.compactDelay < 0 {
		<-s.stopCompactor
		return
	}
	for {
		select {
		case <-s.stopCompactor:
			return
		case <-s.erased:
		}
		select {
		case <-s.stopCompactor:
			return
		case <-time.After(s.compactDelay):
		}
		select { // erasures meanwhile are covered by this compaction
		case <-s.erased:
		default:
		}
		// A failed compaction leaves the old file in use; the next
		// erasure tries again.
		_ = s.Compact()
	}
}

// Compact rewrites the file with only its live pages (bbolt.Compact into
// a new file, fsynced, renamed over the old one), so the bytes of deleted
// values, which bbolt's freed pages keep, are gone from it. Requests wait
// while it runs.
func (s *Bolt) Compact() error {
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	tmp := s.path + compactingSuffix
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("compact: %w", err)
	}
	dst, err := openBoltFile(tmp)
	if err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	if err := bolt.Compact(dst, s.db, 64<<20); err != nil {
		_ = dst.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("compact: %w", err)
	}
	// The copy holds no freed page: the erasures are compacted. (No commit
	// runs meanwhile: dbMu is held.)
	if err := dst.Update(func(tx *bolt.Tx) error { return tx.Bucket(schemaBucket).Delete(compactPendingKey) }); err != nil {
		_ = dst.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("compact: %w", err)
	}
	if err := dst.Close(); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("compact: %w", err)
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("compact: close the database: %w", err)
	}
	renameErr := os.Rename(tmp, s.path)
	if renameErr == nil {
		renameErr = syncDir(filepath.Dir(s.path))
	}
	// Reopen whichever file is now in place (the old one if the rename failed).
	db, err := openBoltFile(s.path)
	if err != nil {
		return fmt.Errorf("compact: reopen the database: %w", err)
	}
	db.NoSync = s.noSync
	s.db = db
	if renameErr != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("compact: %w", renameErr)
	}
	return nil
}

// CompactAll is Compact (a bbolt file is compacted whole).
func (s *Bolt) CompactAll(context.Context) error { return s.Compact() }

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer func() { _ = d.Close() }()
	return d.Sync()
}

// erases reports whether a change deletes a user's row or data key.
func erases(c Change) bool {
	if len(c.EraseDataKeys) > 0 || len(c.EraseDecisions) > 0 {
		return true
	}
	for _, w := range c.Users {
		if w.Value == nil && w.IfVersion != 0 {
			return true
		}
	}
	return false
}

// committer is the group commit: it takes the first waiting change at once
// and every change that queued meanwhile, writes them in one transaction
// (one fsync) and answers each. A lone writer never waits for company; under
// load, changes queue while the previous fsync runs and share the next one.
//
// bbolt's own DB.Batch does the same sharing, but it gathers calls for up
// to MaxBatchDelay (10 ms) before it runs them: a lone request would wait
// that long, and a few clients would be capped at a few batches per delay.
// commitGroup keeps DB.Batch's guarantees (each change atomic; a change
// whose writes fail does not fail the others).
func (s *Bolt) committer() {
	defer close(s.done)
	for first := range s.commits {
		group := []commitRequest{first}
	drain:
		for len(group) < s.groupLimit {
			select {
			case next, ok := <-s.commits:
				if !ok {
					break drain
				}
				group = append(group, next)
			default:
				break drain
			}
		}
		start := time.Now()
		s.commitGroup(group)
		s.groups.Add(1)
		s.changes.Add(int64(len(group)))
		s.busy.Add(int64(time.Since(start)))
	}
}

// maxGroup bounds the changes sharing one transaction (bbolt's
// DefaultMaxBatchSize).
const maxGroup = 1000

// commitGroup commits the changes of group in one transaction and answers
// each once it is durable. A change that conflicts (ErrConflict) fails
// alone: its versions are checked before any of its writes. A change whose
// writes fail (a write error, not a conflict) would roll back the whole
// transaction; as DB.Batch does (go.etcd.io/bbolt db.go, batch.run), it is
// then taken out and committed alone, so that its error is its own, and
// the others are committed together again. A failure of the commit itself
// (the fsync) fails every change in it: none is stored.
func (s *Bolt) commitGroup(group []commitRequest) {
	for len(group) > 0 {
		results, failed, err := s.commitOnce(group)
		if failed >= 0 && len(group) > 1 {
			solo := group[failed]
			group = slices.Delete(group, failed, failed+1)
			s.commitGroup([]commitRequest{solo})
			continue
		}
		for i, r := range group {
			if err != nil {
				results[i] = err
			}
			r.result <- results[i]
		}
		return
	}
}

// commitOnce applies the group's changes in arrival order in one
// transaction. results holds each change's conflict (nil: applied);
// failed is the index of the change whose writes failed the transaction
// (-1 when none did), and err the transaction's error.
func (s *Bolt) commitOnce(group []commitRequest) (results []error, failed int, err error) {
	results = make([]error, len(group))
	failed = -1
	erased := false
	apply := func(tx *bolt.Tx) error {
		defer func(start time.Time) { s.applying.Add(int64(time.Since(start))) }(time.Now())
		for i, r := range group {
			if results[i] = checkVersions(tx, r.change); results[i] != nil {
				if s.rollback {
					// Nothing was ever stored to conflict with.
					results[i] = nil
				} else {
					continue // this change conflicts; the others still commit
				}
			}
			if err := s.applyChange(tx, r.change, &erased); err != nil {
				failed = i
				return err
			}
		}
		return nil
	}
	s.dbMu.RLock()
	if s.rollback {
		err = s.applyAndRollback(apply)
	} else {
		err = s.db.Update(apply)
	}
	s.dbMu.RUnlock()
	s.noteRead() // a commit reads its users' pages through the map too
	if err == nil && erased && !s.rollback {
		select {
		case s.erased <- struct{}{}:
		default: // a compaction is already due
		}
	}
	return results, failed, err
}

// applyChange writes one change whose versions hold; erased records
// whether the transaction erases (set with compactPendingKey once).
func (s *Bolt) applyChange(tx *bolt.Tx, c Change, erased *bool) error {
	if erases(c) && !*erased {
		*erased = true
		if err := tx.Bucket(schemaBucket).Put(compactPendingKey, []byte{1}); err != nil {
			return err
		}
	}
	// The data keys first: erasure destroys the key before the rows it
	// decrypts, and journals it before it commits. (A transaction retried
	// after another change's failure journals its erasures again; the
	// journal is a set.)
	if err := s.journalErasures(tx, c.EraseDataKeys, time.Now()); err != nil {
		return err
	}
	if err := eraseDataKeys(tx, c.EraseDataKeys); err != nil {
		return err
	}
	if err := applyWrites(tx, dataKeysBucket, c.DataKeys); err != nil {
		return err
	}
	if err := applyWrites(tx, usersBucket, c.Users); err != nil {
		return err
	}
	if err := applyWrites(tx, metaBucket, c.Meta); err != nil {
		return err
	}
	if err := applyDecisionWrites(tx, c); err != nil {
		return err
	}
	return putBatches(tx, c.Batches)
}

// applyAndRollback runs apply in a write transaction and discards it
// (WithoutCommit).
func (s *Bolt) applyAndRollback(apply func(*bolt.Tx) error) error {
	tx, err := s.db.Begin(true)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	return apply(tx)
}

// Scope implements Store: a bbolt file is one process's.
func (s *Bolt) Scope() config.Scope { return config.ScopeReplica }

// Commit implements Store. Changes that share a transaction are applied in
// arrival order; a conflicting change, or one whose writes fail, fails
// alone (commitGroup), but if the commit itself fails, every change in it
// fails and none is stored.
func (s *Bolt) Commit(_ context.Context, c Change) error {
	result := make(chan error, 1)
	s.closing.RLock()
	if s.closed {
		s.closing.RUnlock()
		return ErrClosed
	}
	s.commits <- commitRequest{change: c, result: result}
	s.closing.RUnlock()
	return <-result
}

func checkVersions(tx *bolt.Tx, c Change) error {
	batches := tx.Bucket(batchesBucket)
	for id := range c.Batches {
		if batches.Get([]byte(id)) != nil {
			return ErrConflict
		}
	}
	keys := tx.Bucket(dataKeysBucket)
	for key, want := range c.DataKeyChecks {
		if _, current := split(keys.Get([]byte(key))); current == nil || !bytes.Equal(current, want) {
			return ErrConflict
		}
	}
	decisions := tx.Bucket(decisionsBucket)
	for key, w := range c.Decisions {
		if current, _ := split(decisions.Get(decisionKeyBytes(key))); current != w.IfVersion {
			return ErrConflict
		}
	}
	for _, part := range []struct {
		bucket []byte
		writes map[string]Write
	}{{usersBucket, c.Users}, {metaBucket, c.Meta}, {dataKeysBucket, c.DataKeys}} {
		b := tx.Bucket(part.bucket)
		for key, w := range part.writes {
			if current, _ := split(b.Get([]byte(key))); current != w.IfVersion {
				return ErrConflict
			}
		}
	}
	return nil
}

func applyWrites(tx *bolt.Tx, bucket []byte, writes map[string]Write) error {
	b := tx.Bucket(bucket)
	for key, w := range writes {
		var err error
		if w.Value == nil {
			err = b.Delete([]byte(key))
		} else {
			current, _ := split(b.Get([]byte(key)))
			err = b.Put([]byte(key), withVersion(current+1, w.Value))
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", bucket, err)
		}
	}
	return nil
}

func putBatches(tx *bolt.Tx, batches map[string]Batch) error {
	b := tx.Bucket(batchesBucket)
	for id, batch := range batches {
		v := make([]byte, 8, 8+len(batch.Value))
		binary.BigEndian.PutUint64(v, uint64(batch.At.UnixNano()))
		if err := b.Put([]byte(id), append(v, batch.Value...)); err != nil {
			return fmt.Errorf("write batch: %w", err)
		}
	}
	return nil
}

// Batch implements Store.
func (s *Bolt) Batch(_ context.Context, id string) (Batch, error) {
	var out Batch
	err := s.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(batchesBucket).Get([]byte(id)); len(v) >= 8 {
			out = Batch{At: time.Unix(0, int64(binary.BigEndian.Uint64(v))), Value: bytes.Clone(v[8:])}
		}
		return nil
	})
	return out, err
}

// DeleteBatchesBefore implements Store. The records are keyed by ID, so
// it scans them all (a small value each; the sweep runs at most hourly).
func (s *Bolt) DeleteBatchesBefore(_ context.Context, t time.Time) (int, error) {
	cutoff := uint64(t.UnixNano())
	var expired [][]byte
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(batchesBucket).ForEach(func(k, v []byte) error {
			if len(v) < 8 || binary.BigEndian.Uint64(v) < cutoff {
				expired = append(expired, bytes.Clone(k))
			}
			return nil
		})
	})
	if err != nil || len(expired) == 0 {
		return 0, err
	}
	// Directly, not through the committer: nothing else deletes a batch
	// record, and a retry that finds it gone is past its window anyway.
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(batchesBucket)
		for _, k := range expired {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("delete expired batches: %w", err)
	}
	return len(expired), nil
}

func eraseDataKeys(tx *bolt.Tx, users []string) error {
	b := tx.Bucket(dataKeysBucket)
	for _, user := range users {
		if err := b.Delete([]byte(user)); err != nil {
			return fmt.Errorf("erase data key: %w", err)
		}
	}
	return nil
}

// DataKeys implements Backend.
func (s *Bolt) DataKeys(_ context.Context, keys []string) (map[string]Item, error) {
	return s.read(dataKeysBucket, keys)
}

// EachDataKey implements Backend.
func (s *Bolt) EachDataKey(_ context.Context, fn func(key string, item Item) error) error {
	return s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(dataKeysBucket).ForEach(func(k, v []byte) error {
			version, value := split(v)
			return fn(string(k), Item{Value: value, Version: version})
		})
	})
}

func decisionKeyBytes(k DecisionKey) []byte { return []byte(k.User + "/" + k.ID) }

func parseDecisionKey(b []byte) DecisionKey {
	user, id, _ := bytes.Cut(b, []byte("/"))
	return DecisionKey{User: string(user), ID: string(id)}
}

// applyDecisionWrites erases the named users' decisions, then writes the
// change's decisions.
func applyDecisionWrites(tx *bolt.Tx, c Change) error {
	b := tx.Bucket(decisionsBucket)
	for _, user := range c.EraseDecisions {
		prefix := []byte(user + "/")
		cur := b.Cursor()
		for k, _ := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Seek(prefix) {
			if err := cur.Delete(); err != nil {
				return fmt.Errorf("erase decisions: %w", err)
			}
		}
	}
	for key, w := range c.Decisions {
		k := decisionKeyBytes(key)
		var err error
		if w.Value == nil {
			err = b.Delete(k)
		} else {
			current, _ := split(b.Get(k))
			err = b.Put(k, withVersion(current+1, w.Value))
		}
		if err != nil {
			return fmt.Errorf("write decisions: %w", err)
		}
	}
	return nil
}

// Decision implements Store.
func (s *Bolt) Decision(_ context.Context, key DecisionKey) (Item, error) {
	var out Item
	err := s.view(func(tx *bolt.Tx) error {
		if stored := tx.Bucket(decisionsBucket).Get(decisionKeyBytes(key)); stored != nil {
			version, value := split(stored)
			out = Item{Value: append([]byte(nil), value...), Version: version}
		}
		return nil
	})
	return out, err
}

// UserDecisions implements Store: one range of the log.
func (s *Bolt) UserDecisions(_ context.Context, user string) ([]DecisionEntry, error) {
	var out []DecisionEntry
	prefix := []byte(user + "/")
	err := s.view(func(tx *bolt.Tx) error {
		cur := tx.Bucket(decisionsBucket).Cursor()
		for k, v := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = cur.Next() {
			version, value := split(v)
			out = append(out, DecisionEntry{ID: string(k[len(prefix):]), Item: Item{Value: bytes.Clone(value), Version: version}})
		}
		return nil
	})
	return out, err
}

// decisionPage is how many decisions EachDecision copies per read
// transaction.
const decisionPage = 1024

// EachDecision implements Store. It reads the log in pages, each in its
// own short read transaction, and calls fn outside them: a slow consumer
// (an export streamed to a client) must not hold a read transaction, which
// would stall every commit that grows the file. The value passed to fn is
// a copy, valid until fn returns. There is no index by time (the log is
// keyed by user): IDs before sinceID are skipped.
func (s *Bolt) EachDecision(_ context.Context, sinceID string, fn func(DecisionKey, Item) error) error {
	type entry struct {
		key  DecisionKey
		item Item
	}
	var after []byte // the last key of the previous page
	for {
		var page []entry
		err := s.view(func(tx *bolt.Tx) error {
			cur := tx.Bucket(decisionsBucket).Cursor()
			k, v := cur.First()
			if after != nil {
				k, v = cur.Seek(after)
				if bytes.Equal(k, after) {
					k, v = cur.Next()
				}
			}
			for ; k != nil && len(page) < decisionPage; k, v = cur.Next() {
				after = append(after[:0], k...)
				key := parseDecisionKey(k)
				if key.ID < sinceID {
					continue
				}
				version, value := split(v)
				page = append(page, entry{key, Item{Value: bytes.Clone(value), Version: version}})
			}
			if k == nil {
				after = nil // the end: no further page
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, e := range page {
			if err := fn(e.key, e.item); err != nil {
				return err
			}
		}
		if after == nil {
			return nil
		}
	}
}

// DeleteDecisionsBefore implements Store. The deletes go through the
// committer, conditional on the versions read, so they are ordered with
// other writes; a decision rewritten meanwhile fails the sweep, which the
// next sweep retries.
func (s *Bolt) DeleteDecisionsBefore(ctx context.Context, beforeID string) (int, error) {
	writes := map[DecisionKey]Write{}
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(decisionsBucket).ForEach(func(k, v []byte) error {
			if key := parseDecisionKey(k); key.ID < beforeID {
				version, _ := split(v)
				writes[key] = Write{IfVersion: version}
			}
			return nil
		})
	})
	if err != nil || len(writes) == 0 {
		return 0, err
	}
	if err := s.Commit(ctx, Change{Decisions: writes}); err != nil {
		return 0, fmt.Errorf("delete expired decisions: %w", err)
	}
	return len(writes), nil
}

// Users implements Store.
func (s *Bolt) Users(_ context.Context, keys []string) (map[string]Item, error) {
	return s.read(usersBucket, keys)
}

// read copies the given keys' values out of a bucket.
func (s *Bolt) read(bucket []byte, keys []string) (map[string]Item, error) {
	out := make(map[string]Item, len(keys))
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		for _, key := range keys {
			if stored := b.Get([]byte(key)); stored != nil {
				version, value := split(stored)
				out[key] = Item{Value: append([]byte(nil), value...), Version: version}
			}
		}
		return nil
	})
	return out, err
}

// eachUserPage is how many users EachUser reads per read transaction.
const eachUserPage = 10_000

// EachUser implements Store. The value is only valid during fn. It reads
// eachUserPage users per read transaction, so a pass over a large store
// (the engine's aggregate refresh) never holds one open for long: an open
// one keeps bbolt from reusing pages freed since, and blocks a commit
// that must grow the file's memory map. Each user is read as committed,
// not all of them at one instant.
func (s *Bolt) EachUser(ctx context.Context, fn func(key string, item Item) error) error {
	var last []byte // the last key read; nil before the first page
	for done := false; !done; {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := s.view(func(tx *bolt.Tx) error {
			c := tx.Bucket(usersBucket).Cursor()
			k, v := c.First()
			if last != nil {
				if k, v = c.Seek(last); k != nil && bytes.Equal(k, last) {
					k, v = c.Next()
				}
			}
			for n := 0; n < eachUserPage; n++ {
				if k == nil {
					done = true
					return nil
				}
				version, value := split(v)
				if err := fn(string(k), Item{Value: value, Version: version}); err != nil {
					return err
				}
				last = append(last[:0], k...)
				k, v = c.Next()
			}
			done = k == nil
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// CountUsers implements Store.
func (s *Bolt) CountUsers(context.Context) (int, error) {
	var n int
	err := s.view(func(tx *bolt.Tx) error { n = tx.Bucket(usersBucket).Stats().KeyN; return nil })
	return n, err
}

// Meta implements Store.
func (s *Bolt) Meta(_ context.Context, key string) (Item, error) {
	var out Item
	err := s.view(func(tx *bolt.Tx) error {
		if stored := tx.Bucket(metaBucket).Get([]byte(key)); stored != nil {
			version, value := split(stored)
			out = Item{Value: append([]byte(nil), value...), Version: version}
		}
		return nil
	})
	return out, err
}

// Ping implements Store: an open file is ready.
func (s *Bolt) Ping(context.Context) error {
	s.closing.RLock()
	defer s.closing.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return nil
}

// Exclusive implements Store: the file has one owner, so fn always runs.
func (s *Bolt) Exclusive(ctx context.Context, _ string, fn func(context.Context) error) (bool, error) {
	return true, fn(ctx)
}

// Size returns the database file size in bytes.
func (s *Bolt) Size() (int64, error) {
	var size int64
	err := s.view(func(tx *bolt.Tx) error { size = tx.Size(); return nil })
	return size, err
}
