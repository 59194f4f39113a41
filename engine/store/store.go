// Package store keeps per-user engine state in a bbolt database under the
// data directory. Writes from concurrent requests are coalesced into one
// transaction (bbolt's Batch), and a write returns only once its transaction
// is committed to disk, so an acknowledged request survives kill -9.
package store

import (
	"errors"
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
)

// FileName is the database file inside the data directory.
const FileName = "engine.db"

// Store is the engine's durable state.
type Store struct {
	db      *bolt.DB
	commits chan commitRequest
	done    chan struct{}
	// closing guards commits: Close takes it exclusively, so no Commit
	// sends on the closed channel (a sweep racing a shutdown gets ErrClosed).
	closing sync.RWMutex
	closed  bool
}

// ErrClosed is returned by Commit after Close.
var ErrClosed = errors.New("store is closed")

type commitRequest struct {
	change Change
	result chan error
}

// Option adjusts how the store is opened.
type Option func(*bolt.DB)

// WithoutSync skips fsync on commit. Benchmarks use it to measure the cost
// of everything but the durable commit; never use it in production.
func WithoutSync() Option { return func(db *bolt.DB) { db.NoSync = true } }

// Open opens (creating if needed) the database in dir.
func Open(dir string, opts ...Option) (*Store, error) {
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
		for _, b := range [][]byte{usersBucket, metaBucket} {
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
	st := &Store{db: db, commits: make(chan commitRequest, 256), done: make(chan struct{})}
	go st.committer()
	return st, nil
}

// Close stops the committer and closes the database.
func (s *Store) Close() error {
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
func (s *Store) committer() {
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
		err := s.db.Update(func(tx *bolt.Tx) error {
			for _, r := range group {
				if err := apply(tx.Bucket(usersBucket), r.change.Users); err != nil {
					return err
				}
				if err := apply(tx.Bucket(metaBucket), r.change.Meta); err != nil {
					return err
				}
			}
			return nil
		})
		for _, r := range group {
			r.result <- err
		}
	}
}

// Change is one batch of writes applied atomically.
type Change struct {
	Users map[string][]byte // key → value; a nil value deletes the key
	Meta  map[string][]byte
}

// Commit applies the change atomically (sharing a transaction with
// concurrent commits) and returns once it is durable. Changes in one group
// are applied in arrival order; if the transaction fails, every change in
// it fails and none is stored.
func (s *Store) Commit(c Change) error {
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

func apply(b *bolt.Bucket, kv map[string][]byte) error {
	for k, v := range kv {
		var err error
		if v == nil {
			err = b.Delete([]byte(k))
		} else {
			err = b.Put([]byte(k), v)
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", b, err)
		}
	}
	return nil
}

// EachUser calls fn for every stored user.
func (s *Store) EachUser(fn func(key string, value []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(usersBucket).ForEach(func(k, v []byte) error { return fn(string(k), v) })
	})
}

// Meta reads a metadata value (nil when absent).
func (s *Store) Meta(key string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(metaBucket).Get([]byte(key)); v != nil {
			out = append([]byte(nil), v...)
		}
		return nil
	})
	return out, err
}

// Size returns the database file size in bytes.
func (s *Store) Size() (int64, error) {
	var size int64
	err := s.db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil })
	return size, err
}
