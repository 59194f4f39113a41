package store

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/attune-io/attune/engine/config"
)

// Sealed encrypts a backend's users and decisions at rest, each user's
// under a data key of their own, and erases a user by destroying that key
// (crypto-shredding): whatever copies of the user's rows remain afterwards
// (bbolt's freed pages, PostgreSQL's dead tuples, its WAL, a backup) are
// ciphertext under a key that no longer exists. docs/data-protection.md
// describes the scheme and what it does not cover.
//
// For its callers Sealed is a Store like any other: keys are the service's
// pseudonyms and values plaintext. Underneath:
//
//   - A user's row is stored under a row key, HMAC-SHA256(index key,
//     pseudonym), so the file or database holds no pseudonym either (the
//     decision log export hands pseudonyms out to researchers).
//   - Each user has a data key (AES-256-GCM, random nonces) in the
//     backend's data-key collection, wrapped by the world's key-encryption
//     key (KeyWrapper) and holding the user's pseudonym sealed under the
//     data key. A user's record and each of their decisions are sealed
//     under it, bound to their row key (and decision ID), so a value moved
//     to another row fails to open.
//   - Erasing a user deletes the data key first, in the same commit as the
//     rows; the backend then compacts (Bolt, Postgres.Compact) so that no
//     freed page or dead tuple keeps the wrapped key.
//   - The population prior (Meta) is an aggregate over users and is stored
//     as it is.
//
// Rewrap re-wraps every data key under the primary KEK after a rotation,
// without touching the data it encrypts; until it has finished, data keys
// under the old and the new KEK are both readable (the keyring holds both).
type Sealed struct {
	inner Backend
	// index derives row keys from pseudonyms; macs pools HMACs keyed by it.
	index []byte
	macs  sync.Pool
	keys  atomic.Pointer[keyWrapperBox]

	closed atomic.Bool
	mu     sync.Mutex
	// cache holds unwrapped data keys by row key. A cached key is only
	// used together with a check that the stored key is still the same
	// (DataKeyChecks), so another replica's erasure cannot be missed.
	cache map[string]*dataKey
}

type keyWrapperBox struct{ KeyWrapper }

// dataKey is one user's unwrapped data key.
type dataKey struct {
	id    [dataKeyIDLen]byte
	row   []byte // the stored data-key value, for DataKeyChecks
	kek   string
	dek   []byte
	aead  cipher.AEAD
	owner string // the caller's key (the pseudonym)
}

// dataKeyRecord is the stored form of a data key (JSON; every field is
// random or ciphertext).
type dataKeyRecord struct {
	// ID identifies the key in every value it seals, so a reader knows
	// whether its cached key is the one.
	ID []byte `json:"id"`
	// KEK names the key-encryption key that wrapped Key.
	KEK string `json:"kek"`
	// Key is the data key wrapped by the KEK.
	Key []byte `json:"key"`
	// Owner is the user's key (pseudonym) sealed under the data key.
	Owner []byte `json:"owner"`
}

const (
	// sealedFormat is the first byte of a sealed value: neither '{' (a
	// record as JSON) nor a decision's header byte, so plaintext written
	// before encryption is told apart and migrated (MigratePlaintext).
	sealedFormat = 0xA5
	dataKeyIDLen = 8
	dataKeySize  = 32
	// sealedHeaderLen is the format byte and the data key's ID; the AEAD's
	// nonce, ciphertext and tag follow.
	sealedHeaderLen = 1 + dataKeyIDLen
	// maxCachedDataKeys bounds the cache of unwrapped keys.
	maxCachedDataKeys = 1 << 17
	// indexKeyInfo separates the row-key HMAC from other uses of the key
	// it is derived from.
	indexKeyInfo = "attune/store/row-key/v1"
)

// NewSealed encrypts over inner. keys wraps the data keys; secret is the
// world's pseudonymisation key, from which the row keys' HMAC key is
// derived (so row keys are stable across KEK rotations). Plaintext left by
// an engine before encryption is encrypted first (MigratePlaintext).
func NewSealed(ctx context.Context, inner Backend, keys KeyWrapper, secret []byte) (*Sealed, error) {
	if keys == nil {
		return nil, errors.New("sealed store: no key-encryption key")
	}
	if len(secret) < 16 {
		return nil, fmt.Errorf("sealed store: the pseudonymisation key must be at least 16 bytes, got %d", len(secret))
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(indexKeyInfo))
	s := &Sealed{inner: inner, index: mac.Sum(nil), cache: map[string]*dataKey{}}
	s.macs.New = func() any { return hmac.New(sha256.New, s.index) }
	s.SetKeys(keys)
	// A failed compaction leaves the plaintext's dead copies to the next
	// one (or the database owner's VACUUM FULL); the store is usable.
	if _, _, err := s.MigratePlaintext(ctx); err != nil && !errors.Is(err, ErrCompactionFailed) {
		return nil, err
	}
	return s, nil
}

// ErrCompactionFailed: the rows were encrypted, but the backend could not
// be compacted afterwards (a PostgreSQL role that does not own the
// tables may not VACUUM FULL them), so deleted plaintext may remain in
// its free space until it is.
var ErrCompactionFailed = errors.New("compaction after encrypting plaintext failed")

// SetKeys swaps the key-encryption keys (a rotation: the new keyring
// holds the old KEK and the new primary). Call Rewrap afterwards.
func (s *Sealed) SetKeys(keys KeyWrapper) { s.keys.Store(&keyWrapperBox{keys}) }

func (s *Sealed) wrapper() KeyWrapper { return s.keys.Load().KeyWrapper }

// rowKey is where the caller's key is stored.
func (s *Sealed) rowKey(key string) string {
	mac := s.macs.Get().(hash.Hash)
	mac.Reset()
	mac.Write([]byte(key))
	var sum [sha256.Size]byte
	out := hex.EncodeToString(mac.Sum(sum[:0])[:16])
	s.macs.Put(mac)
	return out
}

func userAAD(rowKey string, header []byte) []byte {
	return append([]byte("attune/v1/user/"+rowKey+"/"), header...)
}

func decisionAAD(rowKey, id string, header []byte) []byte {
	return append([]byte("attune/v1/decision/"+rowKey+"/"+id+"/"), header...)
}

func dataKeyAAD(rowKey string, id []byte) []byte {
	return []byte("attune/v1/data-key/" + rowKey + "/" + hex.EncodeToString(id))
}

func ownerAAD(rowKey string) []byte { return []byte("attune/v1/owner/" + rowKey) }

// IsSealed reports whether a stored value is in the sealed format.
func IsSealed(value []byte) bool {
	return len(value) >= sealedHeaderLen+28 && value[0] == sealedFormat
}

func sealedKeyID(value []byte) (id [dataKeyIDLen]byte) {
	copy(id[:], value[1:sealedHeaderLen])
	return id
}

func (k *dataKey) seal(plain []byte, aad func(header []byte) []byte) []byte {
	header := make([]byte, sealedHeaderLen, sealedHeaderLen+len(plain)+k.aead.Overhead())
	header[0] = sealedFormat
	copy(header[1:], k.id[:])
	return k.aead.Seal(header, nil, plain, aad(header[:sealedHeaderLen]))
}

func (k *dataKey) open(value []byte, aad func(header []byte) []byte) ([]byte, error) {
	return k.openInto(nil, value, aad)
}

// openInto is open appending the plaintext to dst.
func (k *dataKey) openInto(dst, value []byte, aad func(header []byte) []byte) ([]byte, error) {
	plain, err := k.aead.Open(dst, nil, value[sealedHeaderLen:], aad(value[:sealedHeaderLen]))
	if err != nil {
		return nil, fmt.Errorf("open a sealed value: %w", err)
	}
	return plain, nil
}

func newAEAD(dek []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(dek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

// newDataKey creates a data key for a user: random key and ID, wrapped by
// the primary KEK.
func (s *Sealed) newDataKey(ctx context.Context, rowKey, owner string) (*dataKey, error) {
	k := &dataKey{dek: make([]byte, dataKeySize), owner: owner}
	_, _ = rand.Read(k.id[:]) // crypto/rand.Read never fails
	_, _ = rand.Read(k.dek)
	var err error
	if k.aead, err = newAEAD(k.dek); err != nil {
		return nil, err
	}
	if err := s.wrap(ctx, rowKey, k); err != nil {
		return nil, err
	}
	return k, nil
}

// wrap (re)wraps k under the primary KEK and sets its stored form.
func (s *Sealed) wrap(ctx context.Context, rowKey string, k *dataKey) error {
	kek, wrapped, err := s.wrapper().Wrap(ctx, k.dek, dataKeyAAD(rowKey, k.id[:]))
	if err != nil {
		return fmt.Errorf("wrap a data key: %w", err)
	}
	row, err := json.Marshal(dataKeyRecord{ID: k.id[:], KEK: kek, Key: wrapped, Owner: k.aead.Seal(nil, nil, []byte(k.owner), ownerAAD(rowKey))})
	if err != nil {
		return err
	}
	k.kek, k.row = kek, row
	return nil
}

// unwrap reads a stored data key.
func (s *Sealed) unwrap(ctx context.Context, rowKey string, row []byte) (*dataKey, error) {
	var rec dataKeyRecord
	if err := json.Unmarshal(row, &rec); err != nil {
		return nil, fmt.Errorf("decode a data key: %w", err)
	}
	if len(rec.ID) != dataKeyIDLen {
		return nil, fmt.Errorf("decode a data key: its id has %d bytes, want %d", len(rec.ID), dataKeyIDLen)
	}
	dek, err := s.wrapper().Unwrap(ctx, rec.KEK, rec.Key, dataKeyAAD(rowKey, rec.ID))
	if err != nil {
		return nil, err
	}
	k := &dataKey{row: slices.Clone(row), kek: rec.KEK, dek: dek}
	copy(k.id[:], rec.ID)
	if k.aead, err = newAEAD(dek); err != nil {
		return nil, err
	}
	owner, err := k.aead.Open(nil, nil, rec.Owner, ownerAAD(rowKey))
	if err != nil {
		return nil, fmt.Errorf("open a data key's owner: %w", err)
	}
	k.owner = string(owner)
	return k, nil
}

func (s *Sealed) cached(rowKey string) *dataKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cache[rowKey]
}

func (s *Sealed) remember(rowKey string, k *dataKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.cache) >= maxCachedDataKeys {
		n := 0
		for rk := range s.cache { // map order: a random tenth goes
			delete(s.cache, rk)
			if n++; n >= maxCachedDataKeys/10 {
				break
			}
		}
	}
	s.cache[rowKey] = k
}

func (s *Sealed) forget(rowKeys ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rk := range rowKeys {
		delete(s.cache, rk)
	}
}

// load reads and unwraps the stored data keys of rowKeys (absent ones are
// missing from the result) and caches them.
func (s *Sealed) load(ctx context.Context, rowKeys []string) (map[string]*dataKey, error) {
	out := make(map[string]*dataKey, len(rowKeys))
	for chunk := range slices.Chunk(rowKeys, 1000) {
		items, err := s.inner.DataKeys(ctx, chunk)
		if err != nil {
			return nil, err
		}
		for rk, item := range items {
			k, err := s.unwrap(ctx, rk, item.Value)
			if err != nil {
				return nil, err
			}
			s.remember(rk, k)
			out[rk] = k
		}
	}
	return out, nil
}

// keyFor is the data key that sealed value (stored at rowKey): the cached
// one when its ID matches, else read afresh.
func (s *Sealed) keyFor(ctx context.Context, rowKey string, value []byte) (*dataKey, error) {
	if k := s.cached(rowKey); k != nil && k.id == sealedKeyID(value) {
		return k, nil
	}
	loaded, err := s.load(ctx, []string{rowKey})
	if err != nil {
		return nil, err
	}
	k := loaded[rowKey]
	if k == nil || k.id != sealedKeyID(value) {
		return nil, fmt.Errorf("%w: a sealed value's data key is gone", errKeyGone)
	}
	return k, nil
}

// errKeyGone: a value outlived its data key (erased meanwhile); readers
// treat the value as absent.
var errKeyGone = errors.New("data key erased")

// Scope implements Store.
func (s *Sealed) Scope() config.Scope { return s.inner.Scope() }

// Users implements Store.
func (s *Sealed) Users(ctx context.Context, keys []string) (map[string]Item, error) {
	byRow := make(map[string]string, len(keys))
	for _, k := range keys {
		byRow[s.rowKey(k)] = k
	}
	items, err := s.inner.Users(ctx, slices.Collect(maps.Keys(byRow)))
	if err != nil {
		return nil, err
	}
	var missing []string
	for rk, item := range items {
		if !IsSealed(item.Value) {
			continue
		}
		if k := s.cached(rk); k == nil || k.id != sealedKeyID(item.Value) {
			missing = append(missing, rk)
		}
	}
	if len(missing) > 0 {
		if _, err := s.load(ctx, missing); err != nil {
			return nil, err
		}
	}
	out := make(map[string]Item, len(items))
	for rk, item := range items {
		if !IsSealed(item.Value) {
			continue // plaintext awaiting MigratePlaintext: stored under the pseudonym, not here
		}
		k := s.cached(rk)
		if k == nil || k.id != sealedKeyID(item.Value) {
			continue // erased between the two reads
		}
		plain, err := k.open(item.Value, func(h []byte) []byte { return userAAD(rk, h) })
		if err != nil {
			return nil, err
		}
		out[byRow[rk]] = Item{Value: plain, Version: item.Version}
	}
	return out, nil
}

// EachUser implements Store. Values whose key is not cached are collected
// and opened after the backend's scan, since fn runs inside it.
func (s *Sealed) EachUser(ctx context.Context, fn func(key string, item Item) error) error {
	type pending struct {
		rowKey string
		item   Item
	}
	var later []pending
	err := s.inner.EachUser(ctx, func(rk string, item Item) error {
		if !IsSealed(item.Value) {
			return nil
		}
		k := s.cached(rk)
		if k == nil || k.id != sealedKeyID(item.Value) {
			later = append(later, pending{rk, Item{Value: slices.Clone(item.Value), Version: item.Version}})
			return nil
		}
		plain, err := k.open(item.Value, func(h []byte) []byte { return userAAD(rk, h) })
		if err != nil {
			return err
		}
		return fn(k.owner, Item{Value: plain, Version: item.Version})
	})
	if err != nil || len(later) == 0 {
		return err
	}
	if len(later) > 64 {
		if err := s.preload(ctx); err != nil {
			return err
		}
	}
	for _, p := range later {
		k, err := s.keyFor(ctx, p.rowKey, p.item.Value)
		if errors.Is(err, errKeyGone) {
			continue
		}
		if err != nil {
			return err
		}
		plain, err := k.open(p.item.Value, func(h []byte) []byte { return userAAD(p.rowKey, h) })
		if err != nil {
			return err
		}
		if err := fn(k.owner, Item{Value: plain, Version: p.item.Version}); err != nil {
			return err
		}
	}
	return nil
}

// preload reads every data key not cached in one scan (a cold cache
// facing a whole-store read).
func (s *Sealed) preload(ctx context.Context) error {
	rows := map[string][]byte{}
	err := s.inner.EachDataKey(ctx, func(rk string, item Item) error {
		if k := s.cached(rk); k == nil || !slices.Equal(k.row, item.Value) {
			rows[rk] = slices.Clone(item.Value)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read data keys: %w", err)
	}
	for rk, row := range rows {
		k, err := s.unwrap(ctx, rk, row)
		if err != nil {
			return err
		}
		s.remember(rk, k)
	}
	return nil
}

// CountUsers implements Store.
func (s *Sealed) CountUsers(ctx context.Context) (int, error) { return s.inner.CountUsers(ctx) }

// Meta implements Store: aggregates, stored as they are.
func (s *Sealed) Meta(ctx context.Context, key string) (Item, error) { return s.inner.Meta(ctx, key) }

// Exclusive implements Store.
func (s *Sealed) Exclusive(ctx context.Context, name string, fn func(context.Context) error) (bool, error) {
	return s.inner.Exclusive(ctx, name, fn)
}

// Ping implements Store.
func (s *Sealed) Ping(ctx context.Context) error { return s.inner.Ping(ctx) }

// Close implements Store: it closes the backend.
func (s *Sealed) Close() error {
	s.closed.Store(true)
	s.mu.Lock()
	clear(s.cache)
	s.mu.Unlock()
	return s.inner.Close()
}

// Size is the backend's size, when it can tell.
func (s *Sealed) Size() (int64, error) {
	if sized, ok := s.inner.(interface{ Size() (int64, error) }); ok {
		return sized.Size()
	}
	return 0, errors.New("the backend does not report its size")
}

// Decision implements Store.
func (s *Sealed) Decision(ctx context.Context, key DecisionKey) (Item, error) {
	rk := s.rowKey(key.User)
	item, err := s.inner.Decision(ctx, DecisionKey{User: rk, ID: key.ID})
	if err != nil || item.Value == nil || !IsSealed(item.Value) {
		return Item{}, err
	}
	k, err := s.keyFor(ctx, rk, item.Value)
	if errors.Is(err, errKeyGone) {
		return Item{}, nil
	}
	if err != nil {
		return Item{}, err
	}
	plain, err := k.open(item.Value, func(h []byte) []byte { return decisionAAD(rk, key.ID, h) })
	if err != nil {
		return Item{}, err
	}
	return Item{Value: plain, Version: item.Version}, nil
}

// EachDecision implements Store. A decision whose user's key is gone
// (erased meanwhile) is skipped.
func (s *Sealed) EachDecision(ctx context.Context, sinceID string, fn func(DecisionKey, Item) error) error {
	preloaded := false
	var buf []byte // the value passed to fn is only valid during fn: one buffer serves all
	return s.inner.EachDecision(ctx, sinceID, func(dk DecisionKey, item Item) error {
		if !IsSealed(item.Value) {
			return nil
		}
		k := s.cached(dk.User)
		if (k == nil || k.id != sealedKeyID(item.Value)) && !preloaded {
			// A cold cache: one scan of the keys rather than a read per user.
			preloaded = true
			if err := s.preload(ctx); err != nil {
				return err
			}
		}
		k, err := s.keyFor(ctx, dk.User, item.Value)
		if errors.Is(err, errKeyGone) {
			return nil
		}
		if err != nil {
			return err
		}
		plain, err := k.openInto(buf[:0], item.Value, func(h []byte) []byte { return decisionAAD(dk.User, dk.ID, h) })
		if err != nil {
			return err
		}
		buf = plain
		return fn(DecisionKey{User: k.owner, ID: dk.ID}, Item{Value: plain, Version: item.Version})
	})
}

// UserDecisions implements Store.
func (s *Sealed) UserDecisions(ctx context.Context, user string) ([]DecisionEntry, error) {
	rk := s.rowKey(user)
	entries, err := s.inner.UserDecisions(ctx, rk)
	if err != nil {
		return nil, err
	}
	out := entries[:0]
	for _, e := range entries {
		if !IsSealed(e.Value) {
			continue
		}
		k, err := s.keyFor(ctx, rk, e.Value)
		if errors.Is(err, errKeyGone) {
			return nil, nil // erased meanwhile
		}
		if err != nil {
			return nil, err
		}
		id := e.ID
		plain, err := k.open(e.Value, func(h []byte) []byte { return decisionAAD(rk, id, h) })
		if err != nil {
			return nil, err
		}
		out = append(out, DecisionEntry{ID: e.ID, Item: Item{Value: plain, Version: e.Version}})
	}
	return out, nil
}

// DeleteDecisionsBefore implements Store.
func (s *Sealed) DeleteDecisionsBefore(ctx context.Context, beforeID string) (int, error) {
	return s.inner.DeleteDecisionsBefore(ctx, beforeID)
}

// Batch implements Store: batch records hold counts, no user data.
func (s *Sealed) Batch(ctx context.Context, id string) (Batch, error) { return s.inner.Batch(ctx, id) }

// DeleteBatchesBefore implements Store.
func (s *Sealed) DeleteBatchesBefore(ctx context.Context, t time.Time) (int, error) {
	return s.inner.DeleteBatchesBefore(ctx, t)
}

// Commit implements Store: it seals every value under its user's data key
// (creating the key with a new user), conditional on each key read
// earlier still being the stored one, and erases a deleted user's data
// key first.
func (s *Sealed) Commit(ctx context.Context, c Change) error {
	if s.closed.Load() {
		return ErrClosed
	}
	sealed, created, touched, err := s.seal(ctx, c)
	if err != nil {
		return err
	}
	return s.commitSealed(ctx, sealed, created, touched)
}

// commitSealed commits a sealed change and brings the cache in step: keys
// created by it are cached, those it erased or that conflicted are not.
func (s *Sealed) commitSealed(ctx context.Context, sealed Change, created map[string]*dataKey, touched []string) error {
	if err := s.inner.Commit(ctx, sealed); err != nil {
		// A conflict may be a key rewritten or erased by another writer:
		// the retry reads it afresh.
		s.forget(touched...)
		return err
	}
	s.forget(sealed.EraseDataKeys...)
	for rk, k := range created {
		s.remember(rk, k)
	}
	return nil
}

// seal turns a caller's change into the backend's.
func (s *Sealed) seal(ctx context.Context, c Change) (sealed Change, created map[string]*dataKey, touched []string, err error) {
	sealed = Change{Meta: c.Meta, Batches: c.Batches}
	rowKeys := make(map[string]string, len(c.Users))
	rowKey := func(key string) string {
		rk, ok := rowKeys[key]
		if !ok {
			rk = s.rowKey(key)
			rowKeys[key] = rk
		}
		return rk
	}
	erased := map[string]bool{}
	owners := map[string]string{} // row key → the caller's key, of the users whose values are sealed
	if len(c.Users) > 0 {
		sealed.Users = make(map[string]Write, len(c.Users))
	}
	for key, w := range c.Users {
		rk := rowKey(key)
		if w.Value == nil {
			if w.IfVersion != 0 {
				erased[rk] = true
			}
			continue
		}
		owners[rk] = key
	}
	for _, user := range c.EraseDecisions {
		rk := rowKey(user)
		erased[rk] = true
		sealed.EraseDecisions = append(sealed.EraseDecisions, rk)
	}
	if len(c.Decisions) > 0 {
		sealed.Decisions = make(map[DecisionKey]Write, len(c.Decisions))
	}
	for dk, w := range c.Decisions {
		if w.Value != nil {
			owners[rowKey(dk.User)] = dk.User
		}
	}
	for rk := range erased {
		sealed.EraseDataKeys = append(sealed.EraseDataKeys, rk)
		delete(owners, rk)
	}
	slices.Sort(sealed.EraseDataKeys)
	keys, created, err := s.keysToSeal(ctx, owners)
	if err != nil {
		return Change{}, nil, nil, err
	}
	for rk, k := range keys {
		if created[rk] != nil {
			if sealed.DataKeys == nil {
				sealed.DataKeys = map[string]Write{}
			}
			sealed.DataKeys[rk] = Write{Value: k.row}
			continue
		}
		if sealed.DataKeyChecks == nil {
			sealed.DataKeyChecks = map[string][]byte{}
		}
		sealed.DataKeyChecks[rk] = k.row
	}
	for key, w := range c.Users {
		rk := rowKey(key)
		if w.Value != nil {
			w.Value = keys[rk].seal(w.Value, func(h []byte) []byte { return userAAD(rk, h) })
		}
		sealed.Users[rk] = w
	}
	for dk, w := range c.Decisions {
		rk := rowKey(dk.User)
		if w.Value != nil {
			id := dk.ID
			w.Value = keys[rk].seal(w.Value, func(h []byte) []byte { return decisionAAD(rk, id, h) })
		}
		sealed.Decisions[DecisionKey{User: rk, ID: dk.ID}] = w
	}
	touched = append(slices.Collect(maps.Keys(owners)), sealed.EraseDataKeys...)
	return sealed, created, touched, nil
}

// keysToSeal finds the data key of each row key (cached, stored, or new).
func (s *Sealed) keysToSeal(ctx context.Context, owners map[string]string) (keys, created map[string]*dataKey, err error) {
	keys = make(map[string]*dataKey, len(owners))
	var unknown []string
	for rk := range owners {
		if k := s.cached(rk); k != nil {
			keys[rk] = k
		} else {
			unknown = append(unknown, rk)
		}
	}
	if len(unknown) == 0 {
		return keys, nil, nil
	}
	loaded, err := s.load(ctx, unknown)
	if err != nil {
		return nil, nil, err
	}
	for _, rk := range unknown {
		if k := loaded[rk]; k != nil {
			keys[rk] = k
			continue
		}
		k, err := s.newDataKey(ctx, rk, owners[rk])
		if err != nil {
			return nil, nil, err
		}
		if created == nil {
			created = map[string]*dataKey{}
		}
		keys[rk], created[rk] = k, k
	}
	return keys, created, nil
}

// rewrapBatch is how many data keys one commit of Rewrap rewrites.
const rewrapBatch = 256

// Rewrap re-wraps every data key that the primary KEK did not wrap, in
// commits of rewrapBatch keys conditional on the versions read (a key
// erased or rewritten meanwhile is left to the next run); the data the
// keys encrypt is not touched. It returns how many it re-wrapped and how
// many still need it. Requests go on meanwhile: readers accept either
// KEK. On a shared store one replica at a time runs it (ran is false when
// another was).
func (s *Sealed) Rewrap(ctx context.Context) (rewrapped, remaining int, err error) {
	_, err = s.inner.Exclusive(ctx, "rewrap-data-keys", func(ctx context.Context) error {
		primary := s.wrapper().Primary()
		type stale struct {
			rowKey string
			item   Item
		}
		var todo []stale
		err := s.inner.EachDataKey(ctx, func(rk string, item Item) error {
			var rec dataKeyRecord
			if err := json.Unmarshal(item.Value, &rec); err != nil {
				return fmt.Errorf("decode a data key: %w", err)
			}
			if rec.KEK != primary {
				todo = append(todo, stale{rk, Item{Value: slices.Clone(item.Value), Version: item.Version}})
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("read data keys: %w", err)
		}
		remaining = len(todo)
		for chunk := range slices.Chunk(todo, rewrapBatch) {
			change := Change{DataKeys: make(map[string]Write, len(chunk))}
			rewritten := make(map[string]*dataKey, len(chunk))
			for _, st := range chunk {
				k, err := s.unwrap(ctx, st.rowKey, st.item.Value)
				if err != nil {
					return err
				}
				if err := s.wrap(ctx, st.rowKey, k); err != nil {
					return err
				}
				change.DataKeys[st.rowKey] = Write{Value: k.row, IfVersion: st.item.Version}
				rewritten[st.rowKey] = k
			}
			err := s.inner.Commit(ctx, change)
			if errors.Is(err, ErrConflict) {
				s.forget(slices.Collect(maps.Keys(rewritten))...)
				continue
			}
			if err != nil {
				return fmt.Errorf("rewrap data keys: %w", err)
			}
			for rk, k := range rewritten {
				s.remember(rk, k)
			}
			rewrapped += len(chunk)
			remaining -= len(chunk)
		}
		return nil
	})
	return rewrapped, remaining, err
}

// migrateBatch is how many users one commit of MigratePlaintext moves.
const migrateBatch = 200

// MigratePlaintext encrypts what an engine without encryption stored:
// every user row and decision not in the sealed format is sealed under
// its user's (new) data key at its row key, and the plaintext deleted, in
// commits of migrateBatch users; then the backend is compacted
// (Bolt.Compact, Postgres.CompactAll) so the plaintext is gone from its
// files too. NewSealed runs it; an engine runs it again with its sweeps,
// for rows that an older replica wrote during a rolling upgrade. A
// plaintext row whose user has an encrypted row already (written by a new
// replica meanwhile) is dropped: the encrypted one is newer.
func (s *Sealed) MigratePlaintext(ctx context.Context) (users, decisions int, err error) {
	_, err = s.inner.Exclusive(ctx, "migrate-plaintext", func(ctx context.Context) error {
		type legacyUser struct {
			item      Item
			decisions map[string]Item
		}
		legacy := map[string]*legacyUser{}
		if err := s.inner.EachUser(ctx, func(key string, item Item) error {
			if !IsSealed(item.Value) {
				legacy[key] = &legacyUser{item: Item{Value: slices.Clone(item.Value), Version: item.Version}}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("find plaintext users: %w", err)
		}
		if err := s.inner.EachDecision(ctx, "", func(dk DecisionKey, item Item) error {
			if IsSealed(item.Value) {
				return nil
			}
			u := legacy[dk.User]
			if u == nil {
				u = &legacyUser{} // decisions without a user row
				legacy[dk.User] = u
			}
			if u.decisions == nil {
				u.decisions = map[string]Item{}
			}
			u.decisions[dk.ID] = Item{Value: slices.Clone(item.Value), Version: item.Version}
			return nil
		}); err != nil {
			return fmt.Errorf("find plaintext decisions: %w", err)
		}
		if len(legacy) == 0 {
			return nil
		}
		move := func(keys []string) error {
			var plain Change
			plain.Users, plain.Decisions = map[string]Write{}, map[DecisionKey]Write{}
			var deletes Change
			deletes.Users, deletes.Decisions = map[string]Write{}, map[DecisionKey]Write{}
			for _, key := range keys {
				u := legacy[key]
				if u.item.Value != nil {
					plain.Users[key] = Write{Value: u.item.Value}
					deletes.Users[key] = Write{IfVersion: u.item.Version}
				}
				for id, d := range u.decisions {
					plain.Decisions[DecisionKey{User: key, ID: id}] = Write{Value: d.Value}
					deletes.Decisions[DecisionKey{User: key, ID: id}] = Write{IfVersion: d.Version}
				}
			}
			sealed, created, touched, err := s.seal(ctx, plain)
			if err != nil {
				return err
			}
			// The plaintext goes in the same commit; its keys are the
			// pseudonyms, never equal to a row key.
			maps.Copy(sealed.Users, deletes.Users)
			maps.Copy(sealed.Decisions, deletes.Decisions)
			return s.commitSealed(ctx, sealed, created, touched)
		}
		all := slices.Sorted(maps.Keys(legacy))
		for chunk := range slices.Chunk(all, migrateBatch) {
			err := move(chunk)
			if errors.Is(err, ErrConflict) {
				// One at a time, to find the users already encrypted.
				for _, key := range chunk {
					if err := move([]string{key}); errors.Is(err, ErrConflict) {
						if err := s.dropPlaintext(ctx, key, legacy[key].item, legacy[key].decisions); err != nil {
							return err
						}
					} else if err != nil {
						return fmt.Errorf("encrypt stored users: %w", err)
					}
				}
			} else if err != nil {
				return fmt.Errorf("encrypt stored users: %w", err)
			}
		}
		for _, u := range legacy {
			if u.item.Value != nil {
				users++
			}
			decisions += len(u.decisions)
		}
		if compactor, ok := s.inner.(interface{ CompactAll(context.Context) error }); ok {
			if err := compactor.CompactAll(ctx); err != nil {
				return fmt.Errorf("%w: %w", ErrCompactionFailed, err)
			}
		}
		return nil
	})
	return users, decisions, err
}

// dropPlaintext deletes a user's plaintext rows that an encrypted copy
// superseded.
func (s *Sealed) dropPlaintext(ctx context.Context, key string, user Item, decisions map[string]Item) error {
	c := Change{Decisions: map[DecisionKey]Write{}}
	if user.Value != nil {
		c.Users = map[string]Write{key: {IfVersion: user.Version}}
	}
	for id, d := range decisions {
		c.Decisions[DecisionKey{User: key, ID: id}] = Write{IfVersion: d.Version}
	}
	if err := s.inner.Commit(ctx, c); err != nil && !errors.Is(err, ErrConflict) {
		return fmt.Errorf("drop superseded plaintext: %w", err)
	}
	return nil
}

// Compact compacts the backend now (Bolt: the file; Postgres: the
// data-key table), as it does on its own after erasures.
func (s *Sealed) Compact(ctx context.Context) error {
	switch b := s.inner.(type) {
	case *Bolt:
		return b.Compact()
	case *Postgres:
		return b.Compact(ctx)
	}
	return nil
}

// Encrypted reports whether a backend holds data keys, i.e. was written
// through Sealed: such a store must not be opened without its keys.
func Encrypted(ctx context.Context, b Backend) (bool, error) {
	found := false
	errFound := errors.New("found")
	err := b.EachDataKey(ctx, func(string, Item) error { found = true; return errFound })
	if errors.Is(err, errFound) {
		err = nil
	}
	return found, err
}

// ReleaseMappedPages releases the backend's mapped pages when it maps
// its file (Bolt.ReleaseMappedPages).
func (s *Sealed) ReleaseMappedPages() error {
	if r, ok := s.inner.(interface{ ReleaseMappedPages() error }); ok {
		return r.ReleaseMappedPages()
	}
	return nil
}
