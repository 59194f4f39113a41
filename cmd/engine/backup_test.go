package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/client"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/engine/telemetry"
)

// getBackup downloads the engine's backup with token and checks its
// Repr-Digest; it returns the status and the body.
func (e *processEngine) getBackup(token string) (int, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.proc.URL()+"/v1/admin/backup", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode == http.StatusOK {
		sum := sha256.Sum256(body)
		if want := "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"; resp.Header.Get("Repr-Digest") != want {
			e.t.Errorf("Repr-Digest %q, the body's is %q", resp.Header.Get("Repr-Digest"), want)
		}
	}
	return resp.StatusCode, body
}

// restore puts a backup in place of the engine's database, as the
// documented procedure does with the engine scaled to zero (the erasure
// journal beside it stays).
func (e *processEngine) restore(backup []byte) {
	e.t.Helper()
	if err := os.MkdirAll(e.cfg.DataDir, 0o700); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.cfg.DataDir, store.FileName), backup, 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// TestBackupUnderIngestRestores takes a backup (GET /v1/admin/backup)
// while clients keep ingesting for existing and new users, and restores
// it into a fresh engine: every user and sample acknowledged before the
// backup was asked for is there, nothing acknowledged after the backup
// answered is (beyond one batch in flight per client), and the file
// holds no user's ID, pseudonym, consent or sample in the clear. Only
// the backup token may take one: the read-write token, which world apps
// use, is refused (403).
//
// A user erased after the backup is back in the fresh engine (its
// volume has no erasure journal: docs/operations.md says to re-send such
// erasures); restored onto the engine's own volume, whose journal
// recorded the erasure, the user is erased again before the engine
// serves.
func TestBackupUnderIngestRestores(t *testing.T) {
	e := newProcessEngine(t, "")
	e.start()
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	var made []crashUser
	for i := range 6 {
		made = append(made, e.createUser(ctx, fmt.Sprintf("backup-u%02d", i), now))
	}
	for name, token := range map[string]string{"read-only": "crash-read-only-token", "read-write": crashToken} {
		if code, body := e.getBackup(token); code != http.StatusForbidden || !strings.Contains(string(body), "backup") {
			t.Errorf("a backup with the %s token: %d %s, want 403 naming the backup scope", name, code, body)
		}
	}

	// Ingest goes on: each writer adds one sample at a time to its users
	// and now and then enrols a new one.
	var mu sync.Mutex
	acked := map[string]int64{}   // samples acknowledged per user
	pending := map[string]int64{} // acknowledged or in flight
	for _, u := range made {
		acked[u.id], pending[u.id] = u.samples, u.samples
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				user := made[(w+3*seq)%len(made)].id
				if seq%5 == 4 {
					user = fmt.Sprintf("backup-new-w%d-%03d", w, seq)
					if _, err := e.client.SetConsent(ctx, user, telemetry.ScopeBehaviour, telemetry.ScopeQuestionnaire); err != nil {
						t.Errorf("consent %s: %v", user, err)
						return
					}
				}
				mood := 1 + seq%5
				mu.Lock()
				pending[user]++
				mu.Unlock()
				at := now.Add(-time.Hour).Add(time.Duration(w*100_000+seq) * time.Millisecond)
				if _, err := e.client.Ingest(ctx, []telemetry.Sample{{User: user, Kind: telemetry.KindQuestionnaire, At: at, Mood: &mood}}); err != nil {
					t.Errorf("ingest %s: %v", user, err)
					return
				}
				mu.Lock()
				acked[user]++
				mu.Unlock()
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	before := maps.Clone(acked)
	mu.Unlock()
	start := time.Now()
	code, backup := e.getBackup(crashBackupToken)
	took := time.Since(start)
	mu.Lock()
	after := maps.Clone(pending)
	mu.Unlock()
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	if code != http.StatusOK {
		t.Fatalf("backup: %d %s", code, backup)
	}
	t.Logf("backup of %d bytes in %s under ingest; %d users acknowledged before it", len(backup), took, len(before))

	needles := map[string][]byte{"consent": []byte(`"scopes"`), "samples": []byte(`"mood"`)}
	for _, u := range made {
		needles[u.id+"'s pseudonym"] = []byte(u.pseudonym)
	}
	for id := range after {
		needles[id] = []byte(id)
	}
	backupFile := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(backupFile, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	if found := findRaw(t, []string{backupFile}, needles); len(found) > 0 {
		t.Errorf("readable in the backup: %v", found)
	}

	// Erased after the backup.
	erased := made[0]
	if err := e.client.Erase(ctx, erased.id); err != nil {
		t.Fatal(err)
	}
	e.proc.Stop()

	// A fresh engine (same world keys, an empty volume) restored from the
	// backup.
	fresh := newProcessEngine(t, "")
	fresh.restore(backup)
	fresh.start()
	for id, n := range before {
		st, err := fresh.client.State(ctx, id)
		if err != nil {
			t.Errorf("%s, acknowledged before the backup, after the restore: %v", id, err)
			continue
		}
		if st.Samples < n || st.Samples > after[id] {
			t.Errorf("%s after the restore: %d samples; %d were acknowledged before the backup, %d by its end", id, st.Samples, n, after[id])
		}
	}
	for id := range after {
		if _, ok := before[id]; ok {
			continue
		}
		// Enrolled during the backup: there or not, but whole.
		if _, err := fresh.client.State(ctx, id); err != nil && !errors.Is(err, client.ErrUnknownUser) {
			t.Errorf("%s, enrolled during the backup: %v", id, err)
		}
	}
	for _, u := range made[1:] {
		if x, err := fresh.client.Export(ctx, u.id); err != nil || len(x.Decisions) != 1 || x.Decisions[0].ID != u.decision || len(x.ConsentLedger) != 1 {
			t.Errorf("%s's export after the restore: %v, %+v", u.id, err, x.Decisions)
		}
	}
	if _, err := fresh.client.State(ctx, erased.id); err != nil {
		t.Errorf("%s, erased after the backup, on a fresh volume: %v; want the user back (no journal there)", erased.id, err)
	}
	fresh.proc.Stop()

	// The same backup restored onto the engine's own volume: its erasure
	// journal erases the user again.
	e.restore(backup)
	e.start()
	if _, err := e.client.Export(ctx, erased.id); !errors.Is(err, client.ErrUnknownUser) {
		t.Errorf("%s, erased after the backup, restored onto its own volume: %v; want 404", erased.id, err)
	}
	if st, err := e.client.State(ctx, made[1].id); err != nil || st.Samples < before[made[1].id] {
		t.Errorf("%s after the restore onto its own volume: %+v, %v", made[1].id, st, err)
	}
	e.proc.Stop()
	if log, _ := os.ReadFile(filepath.Join(e.dir, "engine.log")); !strings.Contains(string(log), "erasures re-applied") {
		t.Error("the engine did not log the re-applied erasure")
	}
	// The re-applied erasure destroyed exactly one data key of the
	// backup's, and compacted it out of the file.
	inBackup := dataKeysOfFile(t, backup)
	left := e.wrappedDataKeys()
	var destroyed [][]byte
	for k := range inBackup {
		if !left[k] {
			destroyed = append(destroyed, []byte(k))
		}
	}
	if len(destroyed) != 1 || len(left) != len(inBackup)-1 {
		t.Fatalf("the backup has %d data keys, the restored volume %d (%d destroyed); want one destroyed", len(inBackup), len(left), len(destroyed))
	}
	if found := findRaw(t, []string{filepath.Join(e.cfg.DataDir, store.FileName)}, map[string][]byte{"the erased data key": destroyed[0]}); len(found) > 0 {
		t.Errorf("after the re-applied erasure: %v", found)
	}
}

// dataKeysOfFile reads the wrapped data keys of a bbolt file (a copy of
// it in a directory of its own, without an erasure journal).
func dataKeysOfFile(t *testing.T, file []byte) map[string]bool {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, store.FileName), file, 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := store.OpenBolt(dir, store.WithCompactDelay(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Close() }()
	out := map[string]bool{}
	if err := b.EachDataKey(context.Background(), func(_ string, item store.Item) error {
		out[string(item.Value)] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}
