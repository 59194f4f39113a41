package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/attune-io/attune/engine/client"
	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/engine/telemetry"
	"github.com/attune-io/attune/internal/devstack/engineruntime"
	"github.com/attune-io/attune/internal/devstack/proc"
	"github.com/attune-io/attune/test/postgres"
)

// engineBinDir holds the engine binary that engineBinary builds; TestMain
// removes it.
var engineBinDir string

// engineBinary builds cmd/engine once per test binary: the crash and
// backup tests need a real process to kill.
var engineBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "attune-engine-bin-")
	if err != nil {
		return "", err
	}
	engineBinDir = dir
	path := filepath.Join(dir, "engine")
	return path, engineruntime.BuildEngine(path)
})

func TestMain(m *testing.M) {
	code := m.Run()
	if engineBinDir != "" {
		_ = os.RemoveAll(engineBinDir)
	}
	os.Exit(code)
}

func buildEngine(t *testing.T) string {
	t.Helper()
	path, err := engineBinary()
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// processEngine is one engine's files on disk, launched as a real process
// (engineruntime.Launch) as often as a test likes: each launch is a new
// process on the same data directory or database.
type processEngine struct {
	t        *testing.T
	binary   string
	dir      string
	port     int
	cfg      config.Config
	proc     *engineruntime.Process
	client   *client.Client
	pgConn   string // the PostgreSQL store's connection string ("": bbolt)
	keyring  store.KeyWrapper
	pseudKey []byte
}

const crashToken = "crash-read-write-token"

// crashBackupToken is the engine's backup token (backupTokenFile).
const crashBackupToken = "crash-backup-token"

// newProcessEngine writes an encrypted engine's files (its tokens, keys,
// keyring, configuration) under a fresh directory; pgConn selects the
// PostgreSQL store.
func newProcessEngine(t *testing.T, pgConn string) *processEngine {
	t.Helper()
	dir := t.TempDir()
	port, err := proc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	e := &processEngine{t: t, binary: buildEngine(t), dir: dir, port: port, pgConn: pgConn, pseudKey: []byte("0123456789abcdef0123456789abcdef")}
	kek := bytes.Repeat([]byte{7}, store.KEKSize)
	files := map[string][]byte{
		"token/token":        []byte(crashToken),
		"token/read-only":    []byte("crash-read-only-token"),
		"backup-token/token": []byte(crashBackupToken),
		"key/key":            e.pseudKey,
		"kek/kek-1":          kek,
		"kek/primary":        []byte("kek-1"),
	}
	e.keyring, err = store.NewKeyring("kek-1", map[string][]byte{"kek-1": kek})
	if err != nil {
		t.Fatal(err)
	}
	e.cfg = config.Config{
		Program: "plaza/calm", Target: config.Vector{Attention: 0.8, Emotion: 0.7, Resilience: 0.7},
		Weights: config.Vector{Attention: 1, Emotion: 1, Resilience: 1}, Interventions: []string{"BodyScan", "MicroBreak"},
		Strength: config.Strength{Value: 0.5, Min: 0.1, Max: 0.9}, Context: "Social",
		Privacy:   config.Privacy{Retention: config.Duration{Duration: 24 * time.Hour}, MinCohortSize: 2},
		TokenFile: filepath.Join(dir, "token/token"), ReadOnlyTokenFile: filepath.Join(dir, "token/read-only"),
		BackupTokenFile:         filepath.Join(dir, "backup-token/token"),
		PseudonymizationKeyFile: filepath.Join(dir, "key/key"), KeyEncryptionKeyDir: filepath.Join(dir, "kek"),
		DataDir: filepath.Join(dir, "data"), ListenAddress: "127.0.0.1:" + strconv.Itoa(port),
	}
	if pgConn != "" {
		files["postgres/"+config.PostgresConnectionStringKey] = []byte(pgConn)
		e.cfg.Store = config.Store{Type: config.StorePostgreSQL, Postgres: &config.PostgresStore{SecretDir: filepath.Join(dir, "postgres")}}
	}
	rendered, err := e.cfg.Render()
	if err != nil {
		t.Fatal(err)
	}
	files["config/"+config.FileName] = rendered
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e.client, err = client.New("http://127.0.0.1:"+strconv.Itoa(port), client.WithToken(crashToken), client.WithRetry(client.NoRetry),
		client.WithHTTPClient(&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if e.proc != nil && !e.proc.Exited() {
			e.proc.Kill()
		}
	})
	return e
}

// start launches a new engine process and waits until it is ready.
func (e *processEngine) start() {
	e.t.Helper()
	p, err := engineruntime.Launch(e.binary, e.dir, "127.0.0.1", e.port)
	if err != nil {
		e.t.Fatal(err)
	}
	e.proc = p
}

// openBackend opens the store underneath the engine (bbolt: only while no
// engine runs, as bbolt locks the file), without compacting on its own.
func (e *processEngine) openBackend() store.Backend {
	e.t.Helper()
	if e.pgConn == "" {
		b, err := store.OpenBolt(e.cfg.DataDir, store.WithCompactDelay(-1))
		if err != nil {
			e.t.Fatal(err)
		}
		return b
	}
	b, err := store.OpenPostgres(context.Background(), e.pgConn, e.cfg.Program)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// wrappedDataKeys reads every stored (wrapped) data key's bytes.
func (e *processEngine) wrappedDataKeys() map[string]bool {
	e.t.Helper()
	b := e.openBackend()
	defer func() { _ = b.Close() }()
	out := map[string]bool{}
	if err := b.EachDataKey(context.Background(), func(_ string, item store.Item) error {
		out[string(item.Value)] = true
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// crashUser is what the test made of one user: the samples stored and the
// decision taken.
type crashUser struct {
	id        string
	pseudonym string
	samples   int64
	decision  string
}

func (e *processEngine) createUser(ctx context.Context, id string, now time.Time) crashUser {
	e.t.Helper()
	if _, err := e.client.SetConsent(ctx, id, telemetry.ScopeBehaviour, telemetry.ScopeQuestionnaire); err != nil {
		e.t.Fatalf("consent %s: %v", id, err)
	}
	var samples []telemetry.Sample
	for k := range 3 {
		mood := 1 + k
		samples = append(samples, telemetry.Sample{User: id, Kind: telemetry.KindQuestionnaire, At: now.Add(-time.Duration(3-k) * time.Minute), Mood: &mood, BRS: []int{4, 2, 4, 2, 3, 2}})
	}
	if _, err := e.client.Ingest(ctx, samples); err != nil {
		e.t.Fatalf("ingest %s: %v", id, err)
	}
	d, _, err := e.client.Decide(ctx, id, contract.DecisionRequest{}, "")
	if err != nil {
		e.t.Fatalf("decide %s: %v", id, err)
	}
	x, err := e.client.Export(ctx, id)
	if err != nil {
		e.t.Fatalf("export %s: %v", id, err)
	}
	return crashUser{id: id, pseudonym: x.Pseudonym, samples: int64(len(samples)), decision: d.ID}
}

// presence says whether u is fully there (true) or fully gone (false),
// and fails the test when it is neither: some of their data readable and
// some not, or readable but not what was stored.
func (e *processEngine) presence(ctx context.Context, u crashUser) bool {
	e.t.Helper()
	st, stateErr := e.client.State(ctx, u.id)
	x, exportErr := e.client.Export(ctx, u.id)
	gone := func(err error) bool { return errors.Is(err, client.ErrUnknownUser) }
	switch {
	case gone(stateErr) && gone(exportErr):
		// A repeated erasure finds nothing either.
		if err := e.client.Erase(ctx, u.id); !gone(err) {
			e.t.Errorf("%s: state and export are gone, but erasing again answers %v", u.id, err)
		}
		return false
	case stateErr == nil && exportErr == nil:
		if st.Samples != u.samples || st.LastDecision == nil || st.LastDecision.ID != u.decision {
			e.t.Errorf("%s is half there: state has %d samples, last decision %+v; want %d and %s", u.id, st.Samples, st.LastDecision, u.samples, u.decision)
		}
		if x.Pseudonym != u.pseudonym || x.Samples != u.samples || len(x.Consent.Scopes) != 2 || len(x.ConsentLedger) != 1 ||
			len(x.Decisions) != 1 || x.Decisions[0].ID != u.decision {
			e.t.Errorf("%s is half there: export has %d samples, consent %v, %d ledger entries, %d decisions; want %d samples, 2 scopes, 1 entry, decision %s",
				u.id, x.Samples, x.Consent.Scopes, len(x.ConsentLedger), len(x.Decisions), u.samples, u.decision)
		}
		return true
	default:
		e.t.Errorf("%s is half erased: state answers %v, export %v", u.id, stateErr, exportErr)
		return stateErr == nil
	}
}

// rawFiles are the files at rest to scan: the bbolt file, or the
// PostgreSQL server's table files after a CHECKPOINT.
type rawFiles func(t *testing.T) []string

// findRaw returns which needles occur in the files.
func findRaw(t *testing.T, files []string, needles map[string][]byte) []string {
	t.Helper()
	var found []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			t.Fatal(err)
		}
		for name, needle := range needles {
			if bytes.Contains(b, needle) {
				found = append(found, name+" in "+f)
			}
		}
	}
	return found
}

// TestErasureSurvivesKill9: an engine process erasing users is killed with
// SIGKILL after a random number of acknowledged erasures, many times, on the embedded store and on
// PostgreSQL. After each restart on the same data every user is either
// fully there (state, consent and ledger, decision, export as stored) or
// fully gone (state and export 404), an erasure the engine acknowledged
// is gone, and one never sent is there. The erased users' wrapped data
// keys (each one's only way to decrypt them) are gone from the bbolt file
// once the restarted engine opened it, and from PostgreSQL's table files
// once it compacted; no user's ID, pseudonym or consent is readable in
// the file at any point.
func TestErasureSurvivesKill9(t *testing.T) {
	for _, backend := range []string{"bolt", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			var e *processEngine
			var files rawFiles
			rounds := 8
			if backend == "bolt" {
				e = newProcessEngine(t, "")
				files = func(*testing.T) []string { return []string{filepath.Join(e.cfg.DataDir, store.FileName)} }
			} else {
				server := postgres.Start(t)
				e = newProcessEngine(t, server.ConnString)
				files = func(t *testing.T) []string { return postgresTableFiles(t, server) }
				rounds = 5
			}
			testErasureSurvivesKill9(t, e, files, rounds)
		})
	}
}

func testErasureSurvivesKill9(t *testing.T, e *processEngine, files rawFiles, rounds int) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 16))
	const usersPerRound = 16
	now := time.Now().UTC().Truncate(time.Second)
	var all []crashUser
	erasedKeys := map[string][]byte{}
	var acknowledged, unsent, inFlight, inFlightGone int
	// leftInFile counts erased data keys still in the bbolt file a killed
	// engine left (its compaction was due later): the window that the
	// compaction at open closes.
	leftInFile := 0
	for round := range rounds {
		e.start()
		users := make([]crashUser, usersPerRound)
		for i := range users {
			users[i] = e.createUser(ctx, fmt.Sprintf("crash-r%d-u%02d", round, i), now)
		}
		e.proc.Stop()
		before := e.wrappedDataKeys()
		e.start()

		// Three erasers in parallel, each over its share in order; the
		// kill lands somewhere among them (or before the first).
		type outcome int
		const (
			notSent outcome = iota
			sent
			done
		)
		outcomes := make([]outcome, len(users))
		// The kill follows a random number of acknowledged erasures, not a
		// random time: on a fast machine every erasure can be done within
		// any fixed delay, and the round would test nothing.
		killAfter := 1 + rng.IntN(len(users)-1)
		reached := make(chan struct{})
		var acked int
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < len(users); i += 3 {
					mu.Lock()
					outcomes[i] = sent
					mu.Unlock()
					if err := e.client.Erase(ctx, users[i].id); err != nil {
						return // killed: this one's fate is unknown, the rest unsent
					}
					mu.Lock()
					outcomes[i] = done
					if acked++; acked == killAfter {
						close(reached)
					}
					mu.Unlock()
				}
			}()
		}
		erasersDone := make(chan struct{})
		go func() { wg.Wait(); close(erasersDone) }()
		select {
		case <-reached:
		case <-erasersDone:
		}
		e.proc.Kill()
		wg.Wait()
		var left []byte // the file as the killed engine left it
		if e.pgConn == "" {
			var err error
			if left, err = os.ReadFile(filepath.Join(e.cfg.DataDir, store.FileName)); err != nil {
				t.Fatal(err)
			}
		}

		e.start() // opens the same data: compacts what the killed one erased
		gone := 0
		for i, u := range users {
			there := e.presence(ctx, u)
			switch outcomes[i] {
			case done:
				acknowledged++
				if there {
					t.Errorf("round %d: %s's erasure was acknowledged, but the user is there", round, u.id)
				}
			case notSent:
				unsent++
				if !there {
					t.Errorf("round %d: %s was never erased, but is gone", round, u.id)
				}
			default:
				inFlight++
				if !there {
					inFlightGone++
				}
			}
			if !there {
				gone++
			}
		}
		all = append(all, users...)
		e.proc.Stop()
		// Read now, not at the kill: PostgreSQL may still be committing
		// the transaction whose COMMIT the killed engine had sent.
		after := e.wrappedDataKeys()
		var erased int
		for k := range before {
			if !after[k] {
				erased++
				erasedKeys[fmt.Sprintf("round %d key %d", round, erased)] = []byte(k)
				if bytes.Contains(left, []byte(k)) {
					leftInFile++
				}
			}
		}
		if erased != gone {
			t.Errorf("round %d: %d users are gone but %d data keys were erased", round, gone, erased)
		}

		// Nothing about any user readable in the clear; and on bbolt the
		// restarted engine has compacted the erased keys away.
		needles := map[string][]byte{"consent": []byte(`"scopes"`), "samples": []byte(`"mood"`)}
		for _, u := range all {
			needles[u.id] = []byte(u.id)
			needles[u.id+"'s pseudonym"] = []byte(u.pseudonym)
		}
		if e.pgConn == "" {
			for name, k := range erasedKeys {
				needles[name] = k
			}
		}
		if found := findRaw(t, files(t), needles); len(found) > 0 {
			t.Errorf("round %d: readable at rest after the restart: %v", round, found)
		}
	}
	if e.pgConn != "" {
		// PostgreSQL rewrites the data-key table CompactDelay after a
		// start (a killed replica never ran its erasures' compaction).
		e.start()
		deadline := time.Now().Add(store.CompactDelay + 10*time.Second)
		for {
			found := findRaw(t, files(t), erasedKeys)
			if len(found) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("after a restart and its compaction, erased users' wrapped data keys are still in the table files: %v", found)
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		e.proc.Stop()
	}
	t.Logf("%d kills over %d users: %d erasures acknowledged before the kill (all gone), %d in flight at the kill (%d gone, %d there), %d never sent (all there); %d wrapped data keys erased",
		rounds, len(all), acknowledged, inFlight, inFlightGone, inFlight-inFlightGone, unsent, len(erasedKeys))
	if e.pgConn == "" {
		t.Logf("%d of the %d erased data keys were still in the file the killed engine left; none after the restart", leftInFile, len(erasedKeys))
	}
	if acknowledged == 0 || unsent == 0 {
		t.Errorf("the kills never fell mid-erasure (acknowledged %d, unsent %d): the test exercised nothing", acknowledged, unsent)
	}
}

// postgresTableFiles are the server's table files (base/, without the
// WAL), after a CHECKPOINT has written every dirty page to them.
func postgresTableFiles(t *testing.T, server *postgres.Server) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, server.ConnString)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, `CHECKPOINT`); err != nil {
		t.Fatal(err)
	}
	var out []string
	err = filepath.WalkDir(filepath.Join(server.Dir, "data", "base"), func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // a table file removed meanwhile (VACUUM FULL)
		}
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
