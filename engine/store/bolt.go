package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
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
	// schemaBucket records the value format: formatVersioned means every
	// value in users and meta starts with its version (8 bytes, big
	// endian). Files written before versions existed are converted at open.
	schemaBucket    = []byte("schema")
	formatKey       = []byte("format")
	formatVersioned = []byte("versioned-1")
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
type Bolt struct {
	db      *bolt.DB
	commits chan commitRequest
	done    chan struct{}
	// closing guards commits: Close takes it exclusively, so no Commit
	// sends on the closed channel (a sweep racing a shutdown gets ErrClosed).
	closing sync.RWMutex
	closed  bool
	// rollback: see WithoutCommit.
	rollback bool
}

type commitRequest struct {
	change Change
	result chan error
}

// Option adjusts how the store is opened. Both options exist for
// benchmarks, which measure what the durable commit costs; never use them
// in production.
type Option func(*Bolt)

// WithoutSync commits without fsync: the pages are written, not flushed.
func WithoutSync() Option { return func(s *Bolt) { s.db.NoSync = true } }

// WithoutCommit applies every change in a transaction that is then rolled
// back: nothing is written, and Commit still answers as if it had been
// (versions are checked but never conflict: nothing stays to conflict with).
func WithoutCommit() Option { return func(s *Bolt) { s.rollback = true } }

// OpenBolt opens (creating if needed) the database in dir.
func OpenBolt(dir string, opts ...Option) (*Bolt, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	// As etcd runs bbolt: the freelist is not written on every commit (it
	// is rebuilt by scanning the file at open), which saves pages per sync.
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, &bolt.Options{
		Timeout: 5 * time.Second, NoFreelistSync: true,
	})
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if err := db.Update(prepare); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("prepare database: %w", err)
	}
	st := &Bolt{db: db, commits: make(chan commitRequest, 256), done: make(chan struct{})}
	for _, o := range opts {
		o(st)
	}
	go st.committer()
	return st, nil
}

// prepare creates the buckets and converts a file from before versions
// (plain values) to versioned values, each at version 1.
func prepare(tx *bolt.Tx) error {
	for _, name := range [][]byte{usersBucket, metaBucket, schemaBucket, decisionsBucket} {
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

// Close stops the committer and closes the database.
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
	return s.db.Close()
}

// committer is the group commit: it takes the first waiting change at once
// and every change that queued meanwhile, writes them in one transaction
// (one fsync) and answers each. A lone writer never waits for company; under
// load, changes queue while the previous fsync runs and share the next one.
func (s *Bolt) committer() {
	defer close(s.done)
	for first := range s.commits {
		group := []commitRequest{first}
	drain:
		for len(group) < 1000 {
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
		results := make([]error, len(group))
		apply := func(tx *bolt.Tx) error {
			for i, r := range group {
				if results[i] = checkVersions(tx, r.change); results[i] != nil {
					if s.rollback {
						// Nothing was ever stored to conflict with.
						results[i] = nil
					} else {
						continue // this change conflicts; the others still commit
					}
				}
				if err := applyWrites(tx, usersBucket, r.change.Users); err != nil {
					return err
				}
				if err := applyWrites(tx, metaBucket, r.change.Meta); err != nil {
					return err
				}
				if err := applyDecisionWrites(tx, r.change); err != nil {
					return err
				}
			}
			return nil
		}
		var err error
		if s.rollback {
			err = s.applyAndRollback(apply)
		} else {
			err = s.db.Update(apply)
		}
		for i, r := range group {
			if err != nil {
				results[i] = err
			}
			r.result <- results[i]
		}
	}
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
// arrival order; a conflicting change fails alone, but if the transaction
// fails, every change in it fails and none is stored.
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
	decisions := tx.Bucket(decisionsBucket)
	for key, w := range c.Decisions {
		if current, _ := split(decisions.Get(decisionKeyBytes(key))); current != w.IfVersion {
			return ErrConflict
		}
	}
	for _, part := range []struct {
		bucket []byte
		writes map[string]Write
	}{{usersBucket, c.Users}, {metaBucket, c.Meta}} {
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
	err := s.db.View(func(tx *bolt.Tx) error {
		if stored := tx.Bucket(decisionsBucket).Get(decisionKeyBytes(key)); stored != nil {
			version, value := split(stored)
			out = Item{Value: append([]byte(nil), value...), Version: version}
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
		err := s.db.View(func(tx *bolt.Tx) error {
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
	err := s.db.View(func(tx *bolt.Tx) error {
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
	out := make(map[string]Item, len(keys))
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(usersBucket)
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

// EachUser implements Store. The value is only valid during fn.
func (s *Bolt) EachUser(_ context.Context, fn func(key string, item Item) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(usersBucket).ForEach(func(k, v []byte) error {
			version, value := split(v)
			return fn(string(k), Item{Value: value, Version: version})
		})
	})
}

// CountUsers implements Store.
func (s *Bolt) CountUsers(context.Context) (int, error) {
	var n int
	err := s.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(usersBucket).Stats().KeyN; return nil })
	return n, err
}

// Meta implements Store.
func (s *Bolt) Meta(_ context.Context, key string) (Item, error) {
	var out Item
	err := s.db.View(func(tx *bolt.Tx) error {
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
	err := s.db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil })
	return size, err
}
