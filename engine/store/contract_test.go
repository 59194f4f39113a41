package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/test/postgres"
)

// backend opens a store on the same durable location each time it is
// called, so a test can close and reopen it.
type backend struct {
	name string
	open func(t *testing.T) Store
}

// backends are the implementations the contract runs against: bbolt in a
// temporary directory and PostgreSQL in a throwaway server, each plain and
// encrypted (Sealed).
func backends(t *testing.T) []backend {
	// One server for the test, started here (the test's goroutine) so that
	// it outlives each subtest; without the binaries the subtests skip.
	var conn string
	if postgres.Installed() {
		conn = postgres.Start(t).ConnString
	}
	openBolt := func(dir string) func(t *testing.T) Backend {
		return func(t *testing.T) Backend {
			s, err := OpenBolt(dir)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}
	plain := func(open func(t *testing.T) Backend) func(t *testing.T) Store {
		return func(t *testing.T) Store { return open(t) }
	}
	keys := testKeyring(t, "k1")
	sealed := func(open func(t *testing.T) Backend) func(t *testing.T) Store {
		return func(t *testing.T) Store {
			inner := open(t)
			s, err := NewSealed(context.Background(), inner, keys, testSecret)
			if err != nil {
				_ = inner.Close()
				t.Fatal(err)
			}
			return s
		}
	}
	return []backend{
		{"bolt", plain(openBolt(t.TempDir()))},
		{"postgres", plain(openPostgresDatabase(&conn, ""))},
		{"bolt-sealed", sealed(openBolt(t.TempDir()))},
		{"postgres-sealed", sealed(openPostgresDatabase(&conn, "sealed"))},
	}
}

// testSecret stands for the world's pseudonymisation key.
var testSecret = []byte("0123456789abcdef0123456789abcdef")

// testKeyring is a keyring of KEKs named ids (each derived from its
// name), the first primary.
func testKeyring(t testing.TB, ids ...string) *Keyring {
	t.Helper()
	keys := map[string][]byte{}
	for _, id := range ids {
		keys[id] = []byte(fmt.Sprintf("%-32s", "kek "+id))
	}
	k, err := NewKeyring(ids[0], keys)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// openPostgresDatabase opens the program's store on one test server
// (started at the first open), in a database of its own (created at its
// first open) unless database is empty.
func openPostgresDatabase(conn *string, database string) func(t *testing.T) Backend {
	var dbConn string
	return func(t *testing.T) Backend {
		if *conn == "" {
			*conn = postgres.Start(t).ConnString
		}
		if database == "" {
			dbConn = *conn
		}
		if dbConn == "" {
			server := &postgres.Server{ConnString: *conn}
			var err error
			if dbConn, err = server.CreateDatabase(context.Background(), database); err != nil {
				t.Fatal(err)
			}
		}
		s, err := OpenPostgres(context.Background(), dbConn, "ns/program")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

// TestStoreContract runs the same promises against both backends.
func TestStoreContract(t *testing.T) {
	ctx := context.Background()
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			s := b.open(t)
			t.Cleanup(func() { _ = s.Close() })

			// New keys are written at version 1.
			if err := s.Commit(ctx, Change{
				Users: map[string]Write{"a": {Value: []byte("a1")}, "b": {Value: []byte("b1")}},
				Meta:  map[string]Write{"population": {Value: []byte("p1")}},
			}); err != nil {
				t.Fatalf("first commit: %v", err)
			}
			got, err := s.Users(ctx, []string{"a", "b", "missing"})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 || string(got["a"].Value) != "a1" || got["a"].Version != 1 || got["b"].Version != 1 {
				t.Fatalf("users after first commit = %+v", got)
			}

			// Inserting a key that exists conflicts.
			if err := s.Commit(ctx, Change{Users: map[string]Write{"a": {Value: []byte("again")}}}); !errors.Is(err, ErrConflict) {
				t.Errorf("insert over an existing key: err = %v, want ErrConflict", err)
			}
			// A stale version conflicts, and nothing of that change is written,
			// not even its writes that would have been fine on their own.
			err = s.Commit(ctx, Change{Users: map[string]Write{
				"a": {Value: []byte("a2"), IfVersion: 1},
				"b": {Value: []byte("b-stale"), IfVersion: 7},
				"c": {Value: []byte("c1")},
			}})
			if !errors.Is(err, ErrConflict) {
				t.Fatalf("stale version: err = %v, want ErrConflict", err)
			}
			got, _ = s.Users(ctx, []string{"a", "b", "c"})
			if string(got["a"].Value) != "a1" || string(got["b"].Value) != "b1" || len(got) != 2 {
				t.Fatalf("a conflicting change was partly written: %+v", got)
			}

			// Current versions succeed and advance.
			if err := s.Commit(ctx, Change{Users: map[string]Write{"a": {Value: []byte("a2"), IfVersion: 1}}, Meta: map[string]Write{"population": {Value: []byte("p2"), IfVersion: 1}}}); err != nil {
				t.Fatal(err)
			}
			if m, _ := s.Meta(ctx, "population"); string(m.Value) != "p2" || m.Version != 2 {
				t.Errorf("meta = %q v%d, want p2 v2", m.Value, m.Version)
			}
			if m, _ := s.Meta(ctx, "absent"); m.Value != nil || m.Version != 0 {
				t.Errorf("absent meta = %+v", m)
			}
			// A conditional delete with a stale version conflicts; a current one deletes.
			if err := s.Commit(ctx, Change{Users: map[string]Write{"a": {IfVersion: 1}}}); !errors.Is(err, ErrConflict) {
				t.Errorf("stale delete: err = %v, want ErrConflict", err)
			}
			if err := s.Commit(ctx, Change{Users: map[string]Write{"a": {IfVersion: 2}}}); err != nil {
				t.Fatal(err)
			}
			if n, err := s.CountUsers(ctx); err != nil || n != 1 {
				t.Errorf("count = %d, %v; want 1 (only b)", n, err)
			}

			// Everything survives close and reopen.
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := s.Commit(ctx, Change{Users: map[string]Write{"d": {Value: []byte("d")}}}); !errors.Is(err, ErrClosed) {
				t.Errorf("commit after close: err = %v, want ErrClosed", err)
			}
			s = b.open(t)
			t.Cleanup(func() { _ = s.Close() })
			var keys []string
			if err := s.EachUser(ctx, func(k string, it Item) error {
				keys = append(keys, k+"="+string(it.Value)+"@"+strconv.FormatInt(it.Version, 10))
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(keys) != "[b=b1@1]" {
				t.Errorf("users after reopen = %v, want [b=b1@1]", keys)
			}
			if m, _ := s.Meta(ctx, "population"); string(m.Value) != "p2" {
				t.Errorf("meta after reopen = %q", m.Value)
			}
		})
	}
}

// TestConcurrentUpdatesLoseNothing: writers that read, change and commit
// with retry on conflict never overwrite each other.
func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	ctx := context.Background()
	const writers, increments = 8, 25
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			// Separate handles on PostgreSQL act as separate replicas.
			handles := []Store{b.open(t)}
			if handles[0].Scope() == config.ScopeShared {
				handles = append(handles, b.open(t), b.open(t))
			}
			for _, h := range handles {
				t.Cleanup(func() { _ = h.Close() })
			}
			var conflicts atomic.Int64
			var wg sync.WaitGroup
			for w := range writers {
				s := handles[w%len(handles)]
				wg.Go(func() {
					for range increments {
						for {
							cur, err := s.Users(ctx, []string{"counter"})
							if err != nil {
								t.Error(err)
								return
							}
							n, _ := strconv.Atoi(string(cur["counter"].Value))
							err = s.Commit(ctx, Change{Users: map[string]Write{"counter": {Value: []byte(strconv.Itoa(n + 1)), IfVersion: cur["counter"].Version}}})
							if errors.Is(err, ErrConflict) {
								conflicts.Add(1)
								continue
							}
							if err != nil {
								t.Error(err)
							}
							break
						}
					}
				})
			}
			wg.Wait()
			got, _ := handles[0].Users(ctx, []string{"counter"})
			if string(got["counter"].Value) != strconv.Itoa(writers*increments) {
				t.Errorf("counter = %s after %d increments (%d conflicts retried)", got["counter"].Value, writers*increments, conflicts.Load())
			}
			if got["counter"].Version != writers*increments {
				t.Errorf("version = %d, want %d", got["counter"].Version, writers*increments)
			}
		})
	}
}

// TestExclusive: on a shared store only one holder runs a job at a time;
// an embedded store has one process, so the job always runs.
func TestExclusive(t *testing.T) {
	ctx := context.Background()
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			first := b.open(t)
			if first.Scope() == config.ScopeReplica {
				ran, err := first.Exclusive(ctx, "sweep", func(context.Context) error { return nil })
				if !ran || err != nil {
					t.Errorf("embedded Exclusive: ran=%v err=%v, want it to run", ran, err)
				}
				_ = first.Close()
				return
			}
			second := b.open(t)
			defer func() { _ = first.Close(); _ = second.Close() }()
			var innerRan bool
			ran, err := first.Exclusive(ctx, "sweep", func(ctx context.Context) error {
				var err error
				innerRan, err = second.Exclusive(ctx, "sweep", func(context.Context) error { return nil })
				if err != nil {
					return err
				}
				// A different job is not blocked.
				other, err := second.Exclusive(ctx, "other", func(context.Context) error { return nil })
				if !other {
					return fmt.Errorf("a different lock name was blocked (err %v)", err)
				}
				return err
			})
			if !ran || err != nil {
				t.Fatalf("first holder: ran=%v err=%v", ran, err)
			}
			if innerRan {
				t.Error("a second replica ran the job while the first held it")
			}
			// Released afterwards: the second replica now runs it.
			if ran, err := second.Exclusive(ctx, "sweep", func(context.Context) error { return nil }); !ran || err != nil {
				t.Errorf("after release: ran=%v err=%v", ran, err)
			}
		})
	}
}

// TestPostgresMigrationsAndPrograms: replicas starting together migrate the
// schema once; programs sharing a database do not see each other's users.
func TestPostgresMigrationsAndPrograms(t *testing.T) {
	ctx := context.Background()
	conn := postgres.Start(t).ConnString
	stores := make([]*Postgres, 6)
	errs := make([]error, len(stores))
	var wg sync.WaitGroup
	for i := range stores {
		wg.Go(func() { stores[i], errs[i] = OpenPostgres(ctx, conn, "ns/p"+strconv.Itoa(i%2)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		defer func() { _ = stores[i].Close() }()
	}
	var versions []int
	rows, err := stores[0].pool.Query(ctx, `SELECT version FROM attune_schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var v int
		_ = rows.Scan(&v)
		versions = append(versions, v)
	}
	if want := []int{1, 2, 3, 4, 5, 6, 7}; !slices.Equal(versions, want) {
		t.Errorf("recorded migrations = %v, want %v", versions, want)
	}
	if err := stores[0].Commit(ctx, Change{Users: map[string]Write{"u": {Value: []byte("p0")}}}); err != nil {
		t.Fatal(err)
	}
	if n, _ := stores[1].CountUsers(ctx); n != 0 {
		t.Errorf("program p1 sees %d users of program p0", n)
	}
	if n, _ := stores[2].CountUsers(ctx); n != 1 {
		t.Errorf("another replica of p0 sees %d users, want 1", n)
	}

	// Opening again applies nothing new.
	again, err := OpenPostgres(ctx, conn, "ns/p0")
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	_ = again.Close()
	// A database migrated by a newer engine is refused with a clear error.
	for _, newer := range []int{8, 99} {
		if _, err := stores[0].pool.Exec(ctx, `INSERT INTO attune_schema_migrations (version) VALUES ($1)`, newer); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenPostgres(ctx, conn, "ns/p0"); err == nil || !strings.Contains(err.Error(), "newer than this engine") {
			t.Errorf("migration %d recorded: err = %v", newer, err)
		}
		if _, err := stores[0].pool.Exec(ctx, `DELETE FROM attune_schema_migrations WHERE version = $1`, newer); err != nil {
			t.Fatal(err)
		}
	}
	// A bad connection string does not echo the password.
	if _, err := OpenPostgres(ctx, "postgres://u:s3cret@127.0.0.1:notaport/db", "ns/p"); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("bad connection string: err = %v", err)
	}
	shortCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := OpenPostgres(shortCtx, "postgres://attune@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2", "ns/p"); err == nil {
		t.Error("connecting to a closed port succeeded")
	}
}

// TestConnStringFromDir reads a mounted Secret both ways, and the parts
// form connects to a real server.
func TestConnStringFromDir(t *testing.T) {
	server := postgres.Start(t)
	write := func(dir string, files map[string]string) {
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	whole := t.TempDir()
	write(whole, map[string]string{"connectionString": server.ConnString + "\n"})
	if got, err := ConnStringFromDir(whole); err != nil || got != server.ConnString {
		t.Errorf("connectionString: got %q, %v", got, err)
	}

	u, _ := url.Parse(server.ConnString)
	parts := t.TempDir()
	write(parts, map[string]string{"host": u.Hostname(), "port": u.Port(), "user": "attune", "dbname": "postgres", "sslmode": "disable",
		"password": "it's a pass\\word"}) // trust auth ignores it; the quoting must still parse
	conn, err := ConnStringFromDir(parts)
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenPostgres(context.Background(), conn, "ns/p")
	if err != nil {
		t.Fatalf("connect with parts: %v", err)
	}
	_ = s.Close()

	if _, err := ConnStringFromDir(t.TempDir()); err == nil || !strings.Contains(err.Error(), "neither") {
		t.Errorf("empty Secret: err = %v", err)
	}
	empty := t.TempDir()
	write(empty, map[string]string{"connectionString": " \n"})
	if _, err := ConnStringFromDir(empty); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty connectionString: err = %v", err)
	}
}

// TestDecisionLogContract: the decision log is written conditionally and
// atomically with users, read back by key and by time, erased with its
// user and swept by age, the same on both backends.
func TestDecisionLogContract(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			s := b.open(t)
			t.Cleanup(func() { _ = s.Close() })
			a1 := DecisionKey{"a", DecisionID(t0, 1)}
			a2 := DecisionKey{"a", DecisionID(t0.Add(time.Hour), 2)}
			b1 := DecisionKey{"b", DecisionID(t0.Add(30*time.Minute), 3)}
			if err := s.Commit(ctx, Change{
				Users:     map[string]Write{"a": {Value: []byte("a")}, "b": {Value: []byte("b")}},
				Decisions: map[DecisionKey]Write{a1: {Value: []byte("a1")}, a2: {Value: []byte("a2")}, b1: {Value: []byte("b1")}},
			}); err != nil {
				t.Fatal(err)
			}
			if it, err := s.Decision(ctx, a1); err != nil || string(it.Value) != "a1" || it.Version != 1 {
				t.Fatalf("decision a1 = %q v%d, %v", it.Value, it.Version, err)
			}
			// Creating a decision that exists conflicts, and a conflicting
			// change writes none of its users either.
			err := s.Commit(ctx, Change{
				Users:     map[string]Write{"c": {Value: []byte("c")}},
				Decisions: map[DecisionKey]Write{a1: {Value: []byte("again")}},
			})
			if !errors.Is(err, ErrConflict) {
				t.Fatalf("re-creating a decision: err = %v, want ErrConflict", err)
			}
			if got, _ := s.Users(ctx, []string{"c"}); len(got) != 0 {
				t.Errorf("a conflicting change wrote user c")
			}
			// Settling rewrites at the version read.
			if err := s.Commit(ctx, Change{Decisions: map[DecisionKey]Write{a1: {Value: []byte("a1+outcome"), IfVersion: 1}}}); err != nil {
				t.Fatal(err)
			}
			if err := s.Commit(ctx, Change{Decisions: map[DecisionKey]Write{a1: {Value: []byte("stale"), IfVersion: 1}}}); !errors.Is(err, ErrConflict) {
				t.Errorf("stale rewrite: err = %v, want ErrConflict", err)
			}
			list := func(since string) string {
				var got []string
				if err := s.EachDecision(ctx, since, func(k DecisionKey, it Item) error {
					got = append(got, k.User+":"+string(it.Value))
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				// Grouped by user, in an order of users of the backend's
				// (Sealed's is by row key, not by pseudonym).
				slices.Sort(got)
				return strings.Join(got, ",")
			}
			if got := list(""); got != "a:a1+outcome,a:a2,b:b1" {
				t.Errorf("every decision = %s", got)
			}
			if got := list(DecisionIDAt(t0.Add(time.Minute))); got != "a:a2,b:b1" {
				t.Errorf("decisions since t0+1m = %s", got)
			}
			// One user's decisions, in time order.
			mine, err := s.UserDecisions(ctx, "a")
			if err != nil || len(mine) != 2 || mine[0].ID != a1.ID || string(mine[0].Value) != "a1+outcome" || mine[0].Version != 2 || mine[1].ID != a2.ID {
				t.Errorf("a's decisions = %+v, %v", mine, err)
			}
			if none, err := s.UserDecisions(ctx, "nobody"); err != nil || len(none) != 0 {
				t.Errorf("an unknown user's decisions = %+v, %v", none, err)
			}
			// Erasure removes the user's decisions with the user, and only theirs.
			if err := s.Commit(ctx, Change{Users: map[string]Write{"b": {IfVersion: 1}}, EraseDecisions: []string{"b"}}); err != nil {
				t.Fatal(err)
			}
			if got := list(""); got != "a:a1+outcome,a:a2" {
				t.Errorf("after erasing b = %s", got)
			}
			// The sweep deletes by age.
			n, err := s.DeleteDecisionsBefore(ctx, DecisionIDAt(t0.Add(time.Minute)))
			if err != nil || n != 1 {
				t.Fatalf("sweep deleted %d, %v; want 1", n, err)
			}
			if got := list(""); got != "a:a2" {
				t.Errorf("after the sweep = %s", got)
			}
			// The log survives reopening.
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = b.open(t)
			t.Cleanup(func() { _ = s.Close() })
			if got := list(""); got != "a:a2" {
				t.Errorf("after reopen = %s", got)
			}
		})
	}
}

// TestEachDecisionSeesEveryEntryOnce: the log is read in pages (bbolt); a
// log of several pages is read whole, grouped by user and in ID order
// within a user, each entry once, also while the consumer writes to the
// store between entries.
func TestEachDecisionSeesEveryEntryOnce(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			s := b.open(t)
			t.Cleanup(func() { _ = s.Close() })
			const n = 2500
			writes := map[DecisionKey]Write{}
			for i := range n {
				writes[DecisionKey{fmt.Sprintf("u%02d", i%7), DecisionID(t0.Add(time.Duration(i)*time.Second), uint32(i))}] = Write{Value: []byte(strconv.Itoa(i))}
			}
			if err := s.Commit(ctx, Change{Decisions: writes}); err != nil {
				t.Fatal(err)
			}
			var prev DecisionKey
			done := map[string]bool{} // users whose decisions have all been seen
			seen := map[string]bool{}
			err := s.EachDecision(ctx, "", func(k DecisionKey, it Item) error {
				switch {
				case k.User != prev.User && done[k.User]:
					return fmt.Errorf("%s/%s after %s/%s: the user's decisions are not together", k.User, k.ID, prev.User, prev.ID)
				case k.User == prev.User && k.ID <= prev.ID:
					return fmt.Errorf("%s/%s after %s: not in ID order", k.User, k.ID, prev.ID)
				}
				if k.User != prev.User {
					done[prev.User] = true
				}
				prev = k
				seen[string(it.Value)] = true
				if len(seen)%500 == 0 { // a write between entries must not deadlock or disturb the scan
					return s.Commit(ctx, Change{Users: map[string]Write{fmt.Sprintf("w%d", len(seen)): {Value: []byte("x")}}})
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(seen) != n {
				t.Errorf("read %d distinct decisions of %d", len(seen), n)
			}
		})
	}
}
