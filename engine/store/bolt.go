package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	usersBucket = []byte("users")
	metaBucket  = []byte("meta")
	// versionsBucket holds each key's version ("u/"+key, "m/"+key), apart
	// from the values so files written before versions existed still read
	// (a value without a version is at version 1).
	versionsBucket = []byte("versions")
)

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
}

type commitRequest struct {
	change Change
	result chan error
}

// Option adjusts how the store is opened.
type Option func(*bolt.DB)

// WithoutSync skips fsync on commit. Benchmarks use it to measure the cost
// of everything but the durable commit; never use it in production.
func WithoutSync() Option { return func(db *bolt.DB) { db.NoSync = true } }

// OpenBolt opens (creating if needed) the database in dir.
func OpenBolt(dir string, opts ...Option) (*Bolt, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	for _, o := range opts {
		o(db)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{usersBucket, metaBucket, versionsBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("create buckets: %w", err)
	}
	st := &Bolt{db: db, commits: make(chan commitRequest, 256), done: make(chan struct{})}
	go st.committer()
	return st, nil
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
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i, r := range group {
				if results[i] = checkVersions(tx, r.change); results[i] != nil {
					continue // this change conflicts; the others still commit
				}
				if err := applyWrites(tx, usersBucket, "u/", r.change.Users); err != nil {
					return err
				}
				if err := applyWrites(tx, metaBucket, "m/", r.change.Meta); err != nil {
					return err
				}
			}
			return nil
		})
		for i, r := range group {
			if err != nil {
				results[i] = err
			}
			r.result <- results[i]
		}
	}
}

// Scope implements Store: a bbolt file is one process's.
func (s *Bolt) Scope() Scope { return ScopeReplica }

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

func version(tx *bolt.Tx, bucket []byte, prefix, key string) int64 {
	if v := tx.Bucket(versionsBucket).Get([]byte(prefix + key)); len(v) == 8 {
		return int64(binary.BigEndian.Uint64(v))
	}
	if tx.Bucket(bucket).Get([]byte(key)) != nil {
		return 1
	}
	return 0
}

func checkVersions(tx *bolt.Tx, c Change) error {
	for _, part := range []struct {
		bucket, prefix string
		writes         map[string]Write
	}{{string(usersBucket), "u/", c.Users}, {string(metaBucket), "m/", c.Meta}} {
		for key, w := range part.writes {
			if w.IfVersion != AnyVersion && version(tx, []byte(part.bucket), part.prefix, key) != w.IfVersion {
				return ErrConflict
			}
		}
	}
	return nil
}

func applyWrites(tx *bolt.Tx, bucket []byte, prefix string, writes map[string]Write) error {
	values, versions := tx.Bucket(bucket), tx.Bucket(versionsBucket)
	for key, w := range writes {
		var err error
		if w.Value == nil {
			err = values.Delete([]byte(key))
			if err == nil {
				err = versions.Delete([]byte(prefix + key))
			}
		} else {
			next := make([]byte, 8)
			binary.BigEndian.PutUint64(next, uint64(version(tx, bucket, prefix, key)+1))
			err = values.Put([]byte(key), w.Value)
			if err == nil {
				err = versions.Put([]byte(prefix+key), next)
			}
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", bucket, err)
		}
	}
	return nil
}

// Users implements Store.
func (s *Bolt) Users(_ context.Context, keys []string) (map[string]Item, error) {
	out := make(map[string]Item, len(keys))
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(usersBucket)
		for _, key := range keys {
			if v := b.Get([]byte(key)); v != nil {
				out[key] = Item{Value: append([]byte(nil), v...), Version: version(tx, usersBucket, "u/", key)}
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
			return fn(string(k), Item{Value: v, Version: version(tx, usersBucket, "u/", string(k))})
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
		if v := tx.Bucket(metaBucket).Get([]byte(key)); v != nil {
			out = Item{Value: append([]byte(nil), v...), Version: version(tx, metaBucket, "m/", key)}
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
