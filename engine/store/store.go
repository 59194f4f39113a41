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
	"fmt"
	"time"

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
	// Decisions are decision-log entries, conditional like users' (an
	// entry is created at IfVersion 0 and rewritten when its outcome is
	// settled).
	Decisions map[DecisionKey]Write
	// EraseDecisions deletes every logged decision of these users (erasure,
	// with the user's own row in the same change).
	EraseDecisions []string
	// Batches record committed ingest batches by ID (an Idempotency-Key's
	// digest), so a retry is answered from the record. Each is created
	// once: the change conflicts when the ID exists.
	Batches map[string]Batch

	// The rest is Sealed's bookkeeping (backends store it; callers of a
	// Sealed store never set it).

	// DataKeys are users' wrapped data keys, conditional like users'.
	DataKeys map[string]Write
	// EraseDataKeys deletes these users' data keys whatever their version.
	// Backends apply it before anything else in the change: erasure
	// destroys the key first.
	EraseDataKeys []string
	// DataKeyChecks makes the change conditional on these data keys still
	// holding exactly these values (ErrConflict otherwise): a value sealed
	// under a key read earlier must not land after that key was erased,
	// or erased and replaced, by another writer.
	DataKeyChecks map[string][]byte
}

// Batch is the record of one committed ingest batch.
type Batch struct {
	// At is when it was committed; DeleteBatchesBefore sweeps by it.
	At    time.Time
	Value []byte
}

// DecisionEntry is one logged decision as read.
type DecisionEntry struct {
	ID string
	Item
}

// DecisionKey names one logged decision: the user's pseudonym and the
// decision's ID. IDs begin with the decision time (DecisionIDTime), so a
// user's decisions sort by time.
type DecisionKey struct {
	User string
	ID   string
}

var (
	// ErrConflict: another writer changed a key since it was read; nothing
	// of the change was written. Read again and retry.
	ErrConflict = errors.New("store: concurrent update, nothing written")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("store is closed")
	// ErrUnavailable: the store could not be reached (a shared store that
	// is down); nothing of the operation was written. Retry later.
	ErrUnavailable = errors.New("the state store is unavailable; nothing was written")
	// ErrOutcomeUnknown: the connection failed while the commit was in
	// flight and the store could not be asked afterwards whether it
	// committed: the change may or may not be stored.
	ErrOutcomeUnknown = errors.New("the state store failed during the commit; whether it was stored is unknown")
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
	// Decision reads one logged decision (version 0 and nil when absent).
	Decision(ctx context.Context, key DecisionKey) (Item, error)
	// EachDecision calls fn for every logged decision whose ID is at or
	// after sinceID (all when empty), grouped by user. The value is only
	// valid during fn.
	EachDecision(ctx context.Context, sinceID string, fn func(key DecisionKey, item Item) error) error
	// UserDecisions reads every logged decision of one user, in ID
	// (time) order.
	UserDecisions(ctx context.Context, user string) ([]DecisionEntry, error)
	// DeleteDecisionsBefore deletes every logged decision whose ID sorts
	// before beforeID (the retention sweep) and returns how many.
	DeleteDecisionsBefore(ctx context.Context, beforeID string) (int, error)
	// Batch reads a committed batch's record (nil Value when absent).
	Batch(ctx context.Context, id string) (Batch, error)
	// DeleteBatchesBefore deletes the batch records committed before t
	// and returns how many.
	DeleteBatchesBefore(ctx context.Context, t time.Time) (int, error)
	// Ping checks the store can serve requests now (readiness).
	Ping(ctx context.Context) error
	// Close releases the store.
	Close() error
}

// Backend is a store that also keeps users' wrapped data keys (Change's
// DataKeys): what Sealed encrypts over. Bolt and Postgres are backends.
type Backend interface {
	Store
	// DataKeys reads the given users' data keys; absent ones are missing.
	DataKeys(ctx context.Context, keys []string) (map[string]Item, error)
	// EachDataKey calls fn for every stored data key. The value is only
	// valid during fn, and fn must not call the store.
	EachDataKey(ctx context.Context, fn func(key string, item Item) error) error
}

var (
	_ Backend = (*Bolt)(nil)
	_ Backend = (*Postgres)(nil)
	_ Store   = (*Sealed)(nil)
)

// DecisionID is a decision's ID: its time as 16 hex digits of Unix
// nanoseconds, "-", and 8 hex digits of a random suffix. Sorting IDs sorts
// decisions by time, which the export and the retention sweep rely on.
func DecisionID(at time.Time, suffix uint32) string {
	return fmt.Sprintf("%s-%08x", DecisionIDAt(at), suffix)
}

// DecisionIDAt is the smallest ID of a decision taken at or after t.
func DecisionIDAt(t time.Time) string {
	n := t.UnixNano()
	if n < 0 {
		n = 0
	}
	return fmt.Sprintf("%016x", n)
}
