// Package store keeps per-user engine state durably. Two backends implement
// Store: Bolt, an embedded bbolt file owned by one engine process (the
// default, for a single replica), and Postgres, a database shared by every
// replica of a program.
//
// Both promise the same: a Commit returns only once it is durable, and it is
// conditional on the versions the writer read, so concurrent writers (two
// requests, or two replicas) never silently overwrite each other — the
// loser gets ErrConflict, nothing of its change is written, and it retries
// from a fresh read.
package store

import (
	"context"
	"errors"

	"github.com/attune-io/attune/engine/config"
)

// Item is a stored value and the version it was read at. Versions start at
// 1 and grow by one per write; a key that is absent has version 0.
type Item struct {
	Value   []byte
	Version int64
}

// Write is one key's new value, conditional on the version the writer read.
type Write struct {
	// Value is the new value; nil deletes the key.
	Value []byte
	// IfVersion is the version the writer read (0: the key was absent).
	IfVersion int64
}

// Change is a set of writes applied atomically: all of them or none.
type Change struct {
	Users map[string]Write
	Meta  map[string]Write
}

var (
	// ErrConflict: another writer changed a key since it was read; nothing
	// of the change was written. Read again and retry.
	ErrConflict = errors.New("store: concurrent update, nothing written")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("store is closed")
)

// Store is the engine's durable state.
type Store interface {
	// Scope says whether other replicas share the data.
	Scope() config.Scope
	// Users reads the given users; absent ones are missing from the map.
	Users(ctx context.Context, keys []string) (map[string]Item, error)
	// EachUser calls fn for every stored user.
	EachUser(ctx context.Context, fn func(key string, item Item) error) error
	// CountUsers is the number of stored users.
	CountUsers(ctx context.Context) (int, error)
	// Meta reads a metadata value (version 0 and nil when absent).
	Meta(ctx context.Context, key string) (Item, error)
	// Commit applies the change atomically if every write's IfVersion still
	// holds (ErrConflict otherwise) and returns once it is durable.
	Commit(ctx context.Context, change Change) error
	// Exclusive runs fn unless another holder of the named lock runs it
	// anywhere the data is shared; ran reports whether fn ran. Periodic
	// jobs (the retention sweep) use it so one replica at a time does them.
	Exclusive(ctx context.Context, name string, fn func(context.Context) error) (ran bool, err error)
	// Ping checks the store can serve requests now (readiness).
	Ping(ctx context.Context) error
	// Close releases the store.
	Close() error
}
