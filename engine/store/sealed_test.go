package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/attune-io/attune/test/pgfault"
	"github.com/attune-io/attune/test/postgres"
)

// rawBackend is a backend whose bytes at rest a test can read: the bbolt
// file, or the PostgreSQL server's data directory.
type rawBackend struct {
	name string
	// open opens the backend on the same location each time (a fresh one
	// per rawBackend).
	open func(t *testing.T) Backend
	// files lists the files at rest, after flushing what the backend
	// holds in memory (PostgreSQL: CHECKPOINT). tables restricts them to
	// the table files (PostgreSQL: base/, without the WAL).
	files func(t *testing.T, tables bool) []string
}

var rawBackendNames = []string{"bolt", "postgres"}

// newRawBackend makes a fresh location of the named backend for t (a
// PostgreSQL server of its own, stopped with t).
func newRawBackend(t *testing.T, name string) rawBackend {
	if name == "bolt" {
		dir := t.TempDir()
		return rawBackend{
			name: name,
			open: func(t *testing.T) Backend {
				s, err := OpenBolt(dir, WithCompactDelay(-1))
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
			files: func(*testing.T, bool) []string { return []string{filepath.Join(dir, FileName)} },
		}
	}
	server := postgres.Start(t)
	return rawBackend{
		name: name,
		open: func(t *testing.T) Backend {
			s, err := OpenPostgres(context.Background(), server.ConnString, "ns/program")
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		files: func(t *testing.T, tables bool) []string {
			checkpoint(t, server.ConnString)
			root := filepath.Join(server.Dir, "data")
			if tables {
				root = filepath.Join(root, "base")
			}
			var files []string
			err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // removed meanwhile (a recycled WAL segment)
				}
				if err != nil {
					return err
				}
				if d.Type().IsRegular() {
					files = append(files, path)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			return files
		},
	}
}

// checkpoint writes every dirty page of the server to its table files.
func checkpoint(t *testing.T, connString string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, `CHECKPOINT`); err != nil {
		t.Fatal(err)
	}
}

// findInFiles returns which of needles occur in the files, and where.
func findInFiles(t *testing.T, files []string, needles map[string][]byte) map[string]string {
	t.Helper()
	found := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue // removed meanwhile (a recycled WAL segment)
		}
		if err != nil {
			t.Fatal(err)
		}
		for name, needle := range needles {
			if bytes.Contains(b, needle) {
				found[name] = f
			}
		}
	}
	return found
}

// userRecord is what the service would store for a user: their consent
// and a distinctive sample value.
func userRecord(pseudonym string) []byte {
	return []byte(`{"consent":{"scopes":["physiology","text"],"at":"2026-12-01T09:00:00Z"},"model":{"rr":"sample-873.25-` + pseudonym + `"}}`)
}

// TestSealedLeavesNothingReadable: with encryption, a raw scan of the
// bbolt file, and of PostgreSQL's table files and WAL, finds none of a
// user's pseudonym, consent or sample values, before and after the user's
// erasure; without it the same scan finds them (the scan works). After
// erasure and compaction the erased user's wrapped data key is gone from
// the bbolt file and the PostgreSQL table files too, so not even a holder
// of the key-encryption key can open what copies of the ciphertext remain.
func TestSealedLeavesNothingReadable(t *testing.T) {
	ctx := context.Background()
	const alice, bob = "5f0c2a9e4b1d8c7a6e3f2b1a0d9c8b7a", "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
	needles := func(user string) map[string][]byte {
		return map[string][]byte{
			user + " pseudonym":  []byte(user),
			user + " consent":    []byte(`"scopes":["physiology","text"]`),
			user + " sample":     []byte("sample-873.25-" + user),
			user + " decision":   []byte("decision-of-" + user),
			user + " consent at": []byte("2026-12-01T09:00:00Z"),
		}
	}
	write := func(t *testing.T, s Store) {
		t.Helper()
		change := Change{Users: map[string]Write{}, Decisions: map[DecisionKey]Write{}}
		for _, u := range []string{alice, bob} {
			change.Users[u] = Write{Value: userRecord(u)}
			change.Decisions[DecisionKey{u, DecisionID(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC), 7)}] = Write{Value: []byte(`{"action":"decision-of-` + u + `"}`)}
		}
		if err := s.Commit(ctx, change); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range rawBackendNames {
		t.Run(name+"/plain", func(t *testing.T) {
			b := newRawBackend(t, name)
			inner := b.open(t)
			defer func() { _ = inner.Close() }()
			write(t, inner)
			found := findInFiles(t, b.files(t, false), needles(alice))
			if len(found) != len(needles(alice)) {
				t.Fatalf("the scan found only %v of the plaintext it should see", found)
			}
		})
		t.Run(name+"/sealed", func(t *testing.T) {
			b := newRawBackend(t, name)
			inner := b.open(t)
			defer func() { _ = inner.Close() }()
			s, err := NewSealed(ctx, inner, testKeyring(t, "k1"), testSecret)
			if err != nil {
				t.Fatal(err)
			}
			write(t, s)
			if found := findInFiles(t, b.files(t, false), needles(alice)); len(found) > 0 {
				t.Errorf("readable at rest before erasure: %v", found)
			}
			got, err := s.Users(ctx, []string{alice, bob})
			if err != nil || string(got[alice].Value) != string(userRecord(alice)) {
				t.Fatalf("read back: %q, %v", got[alice].Value, err)
			}

			// The wrapped data key, as stored, before the erasure.
			keyRows, err := inner.DataKeys(ctx, []string{s.rowKey(alice)})
			if err != nil || len(keyRows) != 1 {
				t.Fatalf("alice's data key: %v, %v", keyRows, err)
			}
			var rec dataKeyRecord
			if err := json.Unmarshal(keyRows[s.rowKey(alice)].Value, &rec); err != nil {
				t.Fatal(err)
			}
			wrapped := map[string][]byte{
				"alice's wrapped data key":           []byte(base64.StdEncoding.EncodeToString(rec.Key)),
				"alice's wrapped data key (raw)":     rec.Key,
				"alice's stored data-key record (v)": keyRows[s.rowKey(alice)].Value,
			}
			if found := findInFiles(t, b.files(t, true), wrapped); len(found) == 0 {
				t.Fatal("the scan does not find the stored data key before erasure: it cannot show it gone after")
			}

			if err := s.Commit(ctx, Change{Users: map[string]Write{alice: {IfVersion: 1}}, EraseDecisions: []string{alice}}); err != nil {
				t.Fatal(err)
			}
			if err := s.Compact(ctx); err != nil {
				t.Fatal(err)
			}
			if found := findInFiles(t, b.files(t, false), needles(alice)); len(found) > 0 {
				t.Errorf("readable at rest after erasure: %v", found)
			}
			if found := findInFiles(t, b.files(t, true), wrapped); len(found) > 0 {
				t.Errorf("the erased user's data key is still at rest: %v", found)
			}
			if got, err := s.Users(ctx, []string{alice, bob}); err != nil || len(got) != 1 || string(got[bob].Value) != string(userRecord(bob)) {
				t.Errorf("after erasing alice: %v, %v; want bob alone", got, err)
			}
		})
	}
}

// TestKEKRotationWithoutDowntime: two replicas share a PostgreSQL store
// (on bbolt, one engine alone) while the KEK rotates the documented way —
// the new KEK is added, then made primary, then the old one retired, each
// step reaching the replicas at different times — and writers and readers
// keep going throughout without an error. Afterwards every data key is
// under the new KEK, so a keyring without the old one reads everything and
// one with only the old one reads nothing.
func TestKEKRotationWithoutDowntime(t *testing.T) {
	ctx := context.Background()
	for _, name := range rawBackendNames {
		t.Run(name, func(t *testing.T) {
			b := newRawBackend(t, name)
			old := testKeyring(t, "k1")
			both, err := NewKeyring("k1", map[string][]byte{"k1": kekOf("k1"), "k2": kekOf("k2")})
			if err != nil {
				t.Fatal(err)
			}
			rotated, err := NewKeyring("k2", map[string][]byte{"k1": kekOf("k1"), "k2": kekOf("k2")})
			if err != nil {
				t.Fatal(err)
			}
			retired := testKeyring(t, "k2")

			first := b.open(t)
			replicas := []*Sealed{mustSeal(t, first, old)}
			if first.Scope() == "shared" {
				replicas = append(replicas, mustSeal(t, b.open(t), old))
			}
			defer func() {
				for _, r := range replicas {
					_ = r.Close()
				}
			}()
			const users = 300
			for i := range users {
				if err := replicas[i%len(replicas)].Commit(ctx, Change{Users: map[string]Write{fmt.Sprintf("u%03d", i): {Value: []byte("v1")}}}); err != nil {
					t.Fatal(err)
				}
			}

			// Load: every replica keeps updating and reading users, and
			// creating new ones, until the rotation is over.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var failures sync.Map
			for w, r := range replicas {
				wg.Go(func() {
					for n := 0; ; n++ {
						select {
						case <-stop:
							return
						default:
						}
						key := fmt.Sprintf("u%03d", (n*7+w)%users)
						if err := increment(ctx, r, key); err != nil {
							failures.Store(fmt.Sprintf("replica %d update: %v", w, err), true)
						}
						if err := r.Commit(ctx, Change{Users: map[string]Write{fmt.Sprintf("new-%d-%d", w, n): {Value: []byte("x")}}}); err != nil {
							failures.Store(fmt.Sprintf("replica %d create: %v", w, err), true)
						}
					}
				})
			}
			step := func(k *Keyring) {
				for _, r := range replicas { // one replica after the other, as the kubelet updates them
					r.SetKeys(k)
					time.Sleep(20 * time.Millisecond)
				}
			}
			step(both)
			step(rotated)
			var rewrapped, remaining int
			for _, r := range replicas { // each replica's periodic rewrap
				n, _, err := r.Rewrap(ctx)
				if err != nil {
					t.Fatalf("rewrap: %v", err)
				}
				rewrapped += n
			}
			close(stop)
			wg.Wait()
			// Keys created under k1 by a replica that had not yet seen the
			// new primary are rewrapped by the next run.
			if _, remaining, err = replicas[0].Rewrap(ctx); err != nil || remaining != 0 {
				t.Fatalf("after the load: %d keys still under the old KEK, %v", remaining, err)
			}
			failures.Range(func(k, _ any) bool { t.Error(k); return true })
			if rewrapped < users {
				t.Errorf("rewrapped %d data keys, want at least the %d users'", rewrapped, users)
			}
			step(retired)

			var keks []string
			if err := first.EachDataKey(ctx, func(_ string, it Item) error {
				var rec dataKeyRecord
				if err := json.Unmarshal(it.Value, &rec); err != nil {
					return err
				}
				keks = append(keks, rec.KEK)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if strings.Count(strings.Join(keks, ","), "k2") != len(keks) {
				t.Errorf("data keys by KEK: %v, want all under k2", keks)
			}
			// Fresh handles (no cached keys): the new KEK alone reads every
			// user; the old one alone reads none.
			for _, r := range replicas {
				_ = r.Close()
			}
			replicas = nil
			fresh := mustSeal(t, b.open(t), retired)
			n := 0
			if err := fresh.EachUser(ctx, func(string, Item) error { n++; return nil }); err != nil || n < users {
				t.Errorf("with the new KEK alone: %d users, %v", n, err)
			}
			_ = fresh.Close()
			stale := mustSeal(t, b.open(t), old)
			defer func() { _ = stale.Close() }()
			if _, err := stale.Users(ctx, []string{"u001"}); !errors.Is(err, ErrKeyUnavailable) {
				t.Errorf("with the retired KEK alone: err = %v, want ErrKeyUnavailable", err)
			}
		})
	}
}

func kekOf(id string) []byte { return []byte(fmt.Sprintf("%-32s", "kek "+id)) }

func mustSeal(t *testing.T, inner Backend, keys KeyWrapper) *Sealed {
	t.Helper()
	s, err := NewSealed(context.Background(), inner, keys, testSecret)
	if err != nil {
		_ = inner.Close()
		t.Fatal(err)
	}
	return s
}

// increment appends a byte to a user's value, retrying conflicts.
func increment(ctx context.Context, s Store, key string) error {
	for range 50 {
		cur, err := s.Users(ctx, []string{key})
		if err != nil {
			return err
		}
		it := cur[key]
		err = s.Commit(ctx, Change{Users: map[string]Write{key: {Value: append(it.Value, '+'), IfVersion: it.Version}}})
		if !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return errors.New("50 conflicts in a row")
}

// TestSealedEraseAndRecreateRace: a replica that read a user (and cached
// their data key) before another replica erased and re-created them must
// not write under the erased key: its commit conflicts, and the retry
// seals under the new one.
func TestSealedEraseAndRecreateRace(t *testing.T) {
	ctx := context.Background()
	b := newRawBackend(t, "postgres")
	keys := testKeyring(t, "k1")
	a, other := mustSeal(t, b.open(t), keys), mustSeal(t, b.open(t), keys)
	defer func() { _ = a.Close(); _ = other.Close() }()
	if err := a.Commit(ctx, Change{Users: map[string]Write{"u": {Value: []byte("first")}}}); err != nil {
		t.Fatal(err)
	}
	read, err := a.Users(ctx, []string{"u"})
	if err != nil || read["u"].Version != 1 {
		t.Fatalf("read: %v, %v", read, err)
	}
	// The other replica erases the user, and the user consents again.
	if err := other.Commit(ctx, Change{Users: map[string]Write{"u": {IfVersion: 1}}, EraseDecisions: []string{"u"}}); err != nil {
		t.Fatal(err)
	}
	if err := other.Commit(ctx, Change{Users: map[string]Write{"u": {Value: []byte("second life")}}}); err != nil {
		t.Fatal(err)
	}
	// The same version number, under another key: the stale write conflicts.
	if err := a.Commit(ctx, Change{Users: map[string]Write{"u": {Value: []byte("stale"), IfVersion: 1}}}); !errors.Is(err, ErrConflict) {
		t.Fatalf("a write under the erased user's key: err = %v, want ErrConflict", err)
	}
	if err := increment(ctx, a, "u"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*Sealed{a, other} {
		got, err := r.Users(ctx, []string{"u"})
		if err != nil || string(got["u"].Value) != "second life+" {
			t.Errorf("after the retry: %q, %v", got["u"].Value, err)
		}
	}
}

// TestSealedValueBoundToItsRow: a sealed value copied into another user's
// row (by someone with write access to the database) does not open.
func TestSealedValueBoundToItsRow(t *testing.T) {
	ctx := context.Background()
	inner, err := OpenBolt(t.TempDir(), WithCompactDelay(-1))
	if err != nil {
		t.Fatal(err)
	}
	s := mustSeal(t, inner, testKeyring(t, "k1"))
	defer func() { _ = s.Close() }()
	if err := s.Commit(ctx, Change{Users: map[string]Write{"a": {Value: []byte("a's")}, "b": {Value: []byte("b's")}}}); err != nil {
		t.Fatal(err)
	}
	raw, _ := inner.Users(ctx, []string{s.rowKey("a"), s.rowKey("b")})
	if err := inner.Commit(ctx, Change{Users: map[string]Write{s.rowKey("b"): {Value: raw[s.rowKey("a")].Value, IfVersion: 1}}}); err != nil {
		t.Fatal(err)
	}
	// Copied with a's key ID it is not b's key, and read as nothing.
	if got, err := s.Users(ctx, []string{"b"}); err == nil && len(got) > 0 {
		t.Errorf("a's value opened in b's row: %q", got["b"].Value)
	}
	// Relabelled with b's key ID it does not open either.
	forged := append([]byte(nil), raw[s.rowKey("b")].Value[:sealedHeaderLen]...)
	forged = append(forged, raw[s.rowKey("a")].Value[sealedHeaderLen:]...)
	if err := inner.Commit(ctx, Change{Users: map[string]Write{s.rowKey("b"): {Value: forged, IfVersion: 2}}}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Users(ctx, []string{"b"}); err == nil {
		t.Errorf("a's ciphertext opened in b's row: %q", got["b"].Value)
	}
}

// TestMigratePlaintext: a store written before encryption is encrypted
// when opened with keys: every user and decision reads back the same
// through Sealed, and the plaintext is gone from the files; a store that
// holds data keys is recognised, so an engine refuses it without keys.
func TestMigratePlaintext(t *testing.T) {
	ctx := context.Background()
	for _, name := range rawBackendNames {
		t.Run(name, func(t *testing.T) {
			b := newRawBackend(t, name)
			inner := b.open(t)
			const user = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"
			d := DecisionKey{user, DecisionID(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC), 1)}
			orphan := DecisionKey{"0f0e0d0c0b0a09080706050403020100", DecisionID(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), 2)}
			if err := inner.Commit(ctx, Change{
				Users:     map[string]Write{user: {Value: userRecord(user)}},
				Decisions: map[DecisionKey]Write{d: {Value: []byte(`{"action":"decision-of-` + user + `"}`)}, orphan: {Value: []byte("orphan")}},
			}); err != nil {
				t.Fatal(err)
			}
			if enc, err := Encrypted(ctx, inner); err != nil || enc {
				t.Fatalf("a plaintext store: Encrypted = %v, %v", enc, err)
			}
			s := mustSeal(t, inner, testKeyring(t, "k1"))
			defer func() { _ = s.Close() }()
			got, err := s.Users(ctx, []string{user})
			if err != nil || string(got[user].Value) != string(userRecord(user)) || got[user].Version != 1 {
				t.Fatalf("user after migration: %q v%d, %v", got[user].Value, got[user].Version, err)
			}
			var decisions []string
			if err := s.EachDecision(ctx, "", func(k DecisionKey, it Item) error {
				decisions = append(decisions, k.User+":"+string(it.Value))
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if len(decisions) != 2 {
				t.Errorf("decisions after migration: %v", decisions)
			}
			if it, err := s.Decision(ctx, d); err != nil || !strings.Contains(string(it.Value), "decision-of-") {
				t.Errorf("decision after migration: %q, %v", it.Value, err)
			}
			if found := findInFiles(t, b.files(t, true), map[string][]byte{"pseudonym": []byte(user), "sample": []byte("sample-873.25-"), "decision": []byte("decision-of-")}); len(found) > 0 {
				t.Errorf("plaintext left in the table files after migration: %v", found)
			}
			if enc, err := Encrypted(ctx, inner); err != nil || !enc {
				t.Errorf("an encrypted store: Encrypted = %v, %v", enc, err)
			}
			// Idempotent: nothing more to do.
			if u, n, err := s.MigratePlaintext(ctx); err != nil || u != 0 || n != 0 {
				t.Errorf("second migration moved %d users, %d decisions, %v", u, n, err)
			}
		})
	}
}

// TestPostgresOutcomeOfALostCommit: a PostgreSQL store tells apart what a
// failing connection did. The connection is cut right after the server
// received the COMMIT: the store asks the server and reports success (it
// committed); when it cannot ask (the database unreachable from then on)
// it reports ErrOutcomeUnknown, never "nothing stored" — and indeed the
// change was stored. A database that cannot be reached at all is
// ErrUnavailable, for reads and writes.
func TestPostgresOutcomeOfALostCommit(t *testing.T) {
	ctx := context.Background()
	server := postgres.Start(t)
	proxy := pgfault.Start(t, server.ConnString)
	s, err := OpenPostgres(ctx, proxy.ConnString, "ns/p")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	defer func(d time.Duration) { resolveTimeout = d }(resolveTimeout)
	resolveTimeout = time.Second

	proxy.CutNextCommit(false)
	if err := s.Commit(ctx, Change{Users: map[string]Write{"a": {Value: []byte("a")}}}); err != nil {
		t.Fatalf("a commit whose answer was cut, resolved by asking: %v", err)
	}
	select {
	case <-proxy.Cut():
	default:
		t.Fatal("the proxy cut no COMMIT")
	}
	if got, err := s.Users(ctx, []string{"a"}); err != nil || string(got["a"].Value) != "a" {
		t.Fatalf("after the resolved commit: %v, %v", got, err)
	}

	proxy.CutNextCommit(true)
	err = s.Commit(ctx, Change{Users: map[string]Write{"b": {Value: []byte("b")}}})
	if !errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("a cut commit that cannot be resolved: err = %v, want ErrOutcomeUnknown only", err)
	}
	// Still unreachable: reads and writes are ErrUnavailable.
	if _, err := s.Users(ctx, []string{"a"}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("read while unreachable: err = %v, want ErrUnavailable", err)
	}
	if err := s.Commit(ctx, Change{Users: map[string]Write{"c": {Value: []byte("c")}}}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("commit while unreachable: err = %v, want ErrUnavailable", err)
	}
	proxy.Refuse(false)
	got, err := s.Users(ctx, []string{"b", "c"})
	if err != nil || string(got["b"].Value) != "b" || len(got) != 1 {
		t.Errorf("after the outage: %v, %v; want b (its outcome was unknown, and it had committed) and no c", got, err)
	}
}
