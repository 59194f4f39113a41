// Package store keeps per-user engine state in a bbolt database under the
// data directory. Writes from concurrent requests are coalesced into one
// transaction (bbolt's Batch), and a write returns only once its transaction
// is committed to disk, so an acknowledged request survives kill -9.
package store

import (
	"fmt"
	"os"
	"path/filepath"
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
	db *bolt.DB
}

// Open opens (creating if needed) the database in dir.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	// Coalesce concurrent writers into one fsync; a short delay keeps
	// single-request latency low.
	db.MaxBatchDelay = 2 * time.Millisecond
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
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Change is one batch of writes applied atomically.
type Change struct {
	Users map[string][]byte // key → value; a nil value deletes the key
	Meta  map[string][]byte
}

// Commit applies the change in one transaction (coalesced with concurrent
// commits) and returns after it is durable.
func (s *Store) Commit(c Change) error {
	return s.db.Batch(func(tx *bolt.Tx) error {
		if err := apply(tx.Bucket(usersBucket), c.Users); err != nil {
			return err
		}
		return apply(tx.Bucket(metaBucket), c.Meta)
	})
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
