package api_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/api"
	"github.com/attune-io/attune/engine/auth"
	"github.com/attune-io/attune/engine/metrics"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
)

// openSealedBolt opens the embedded store in dir encrypted at rest, as
// an engine with keyEncryptionKeyDir runs it.
func openSealedBolt(t *testing.T, dir string) store.Store {
	t.Helper()
	b, err := store.OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := store.NewKeyring("k1", map[string][]byte{"k1": bytes.Repeat([]byte{7}, store.KEKSize)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.NewSealed(context.Background(), b, keys, []byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		_ = b.Close()
		t.Fatal(err)
	}
	return s
}

// backupServer serves the API over db with the backup token bkToken,
// wrapping the store's backup source with wrap when given.
func backupServer(t *testing.T, db store.Store, wrap func(api.BackupSource) api.BackupSource) (*httptest.Server, *auth.UserTokens) {
	t.Helper()
	cfg := testConfig("Social", 2)
	m := metrics.New(cfg.Program)
	svc, err := service.New(cfg, service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	users, err := auth.NewUserTokens(userTokenKey, cfg.Program)
	if err != nil {
		t.Fatal(err)
	}
	tokens := api.Tokens{ReadWrite: rwToken, ReadOnly: roToken, Backup: bkToken, Users: users,
		Clients: []auth.Client{{Name: "all", TokenSHA256: auth.HashToken(everyClientScope), Scopes: auth.AllScopes}}}
	var opts []api.Option
	if src := store.BackupOf(db); src != nil {
		if wrap != nil {
			src = wrap(src)
		}
		opts = append(opts, api.WithBackup(src))
	}
	srv := httptest.NewServer(api.New(svc, m, tokens, slog.New(slog.DiscardHandler), opts...))
	t.Cleanup(srv.Close)
	return srv, users
}

const (
	bkToken          = "backup-token-0123456789abcdef"
	everyClientScope = "client-with-every-scope-0123456789"
)

func getBackup(t *testing.T, srv *httptest.Server, token string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL+"/v1/admin/backup", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header
}

// TestBackupNeedsTheBackupToken: GET /v1/admin/backup answers the backup
// token (backupTokenFile) with the bbolt file, and refuses (403, naming
// the scope) the read-write token world apps use, a client holding every
// scope a client can be granted, the read-only token and a user token;
// an embedded store not encrypted at rest is refused (409, naming
// keyEncryptionKeyDir); on a shared store it answers 404 naming
// PostgreSQL. (The backup's content under ingest, and its restore:
// TestBackupUnderIngestRestores in cmd/engine.)
func TestBackupNeedsTheBackupToken(t *testing.T) {
	t.Run("unencrypted bolt", func(t *testing.T) {
		db := backends[0].open(t)
		t.Cleanup(func() { _ = db.Close() })
		srv, _ := backupServer(t, db, nil)
		if code, body, _ := getBackup(t, srv, bkToken); code != http.StatusConflict || !strings.Contains(body, "keyEncryptionKeyDir") {
			t.Errorf("backup of an unencrypted store: %d %s, want 409 naming keyEncryptionKeyDir", code, body)
		}
	})
	for _, b := range []struct {
		name string
		open func(t *testing.T) store.Store
	}{{"sealed bolt", func(t *testing.T) store.Store { return openSealedBolt(t, t.TempDir()) }}, backends[1]} {
		t.Run(b.name, func(t *testing.T) {
			db := b.open(t)
			t.Cleanup(func() { _ = db.Close() })
			srv, users := backupServer(t, db, nil)
			for name, token := range map[string]string{"read-write": rwToken, "every client scope": everyClientScope, "read-only": roToken, "user": mintUserToken(t, users, "u1")} {
				if code, body, _ := getBackup(t, srv, token); code != http.StatusForbidden || !strings.Contains(body, `\"backup\" scope`) {
					t.Errorf("%s token: %d %s, want 403 naming the backup scope", name, code, body)
				}
			}
			code, body, h := getBackup(t, srv, bkToken)
			if _, shared := db.(*store.Postgres); shared {
				if code != http.StatusNotFound || !strings.Contains(body, "PostgreSQL") {
					t.Errorf("on PostgreSQL: %d %s, want 404 naming it", code, body)
				}
				return
			}
			// bbolt's magic number, in the first meta page (little endian).
			if code != http.StatusOK || len(body) < 4096 || !strings.Contains(body[:64], "\xed\xda\x0c\xed") ||
				h.Get("Content-Length") == "" || !strings.HasPrefix(h.Get("Repr-Digest"), "sha-256=:") || h.Get("Cache-Control") != "no-store" {
				t.Errorf("backup token: %d, %d bytes, headers %v", code, len(body), h)
			}
		})
	}
}

// TestBackupOneAtATimeAndCleanedUp: while a backup is being taken a
// second is answered 429 with Retry-After; the snapshot's file beside
// the database is gone once a backup is delivered, and once a client
// walks away after reading part of one.
func TestBackupOneAtATimeAndCleanedUp(t *testing.T) {
	dir := t.TempDir()
	db := openSealedBolt(t, dir)
	t.Cleanup(func() { _ = db.Close() })
	// A file that outgrows the loopback socket buffers, so a client
	// that stops reading holds the handler (metadata rows no service
	// reads: their content does not matter).
	for i := range 16 {
		big := bytes.Repeat([]byte{byte(i)}, 1<<20)
		if err := db.Commit(context.Background(), store.Change{Meta: map[string]store.Write{fmt.Sprintf("test-padding-%02d", i): {Value: big}}}); err != nil {
			t.Fatal(err)
		}
	}
	taking := make(chan struct{})
	release := make(chan struct{})
	var first atomic.Bool
	srv, _ := backupServer(t, db, func(src api.BackupSource) api.BackupSource {
		return func(ctx context.Context) (*store.Snapshot, error) {
			if first.CompareAndSwap(false, true) {
				close(taking)
				<-release
			}
			return src(ctx)
		}
	})
	snapshots := func() []string {
		left, _ := filepath.Glob(filepath.Join(dir, store.FileName+".backup-*"))
		return left
	}
	done := make(chan int)
	go func() {
		code, _, _ := getBackup(t, srv, bkToken)
		done <- code
	}()
	<-taking
	code, body, h := getBackup(t, srv, bkToken)
	if code != http.StatusTooManyRequests || h.Get("Retry-After") == "" || !strings.Contains(body, "one at a time") {
		t.Errorf("a second backup meanwhile: %d %s (Retry-After %q), want 429 with Retry-After", code, body, h.Get("Retry-After"))
	}
	close(release)
	if code := <-done; code != http.StatusOK {
		t.Fatalf("the first backup: %d", code)
	}
	if left := snapshots(); len(left) != 0 {
		t.Errorf("after a delivered backup the snapshot stayed: %v", left)
	}

	// A client that reads a little and hangs up.
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL+"/v1/admin/backup", nil)
	req.Header.Set("Authorization", "Bearer "+bkToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("backup after the first: %d", resp.StatusCode)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	if len(snapshots()) != 1 {
		t.Errorf("while delivering, %d snapshot files, want 1", len(snapshots()))
	}
	_ = resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for len(snapshots()) != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if left := snapshots(); len(left) != 0 {
		t.Errorf("after the client hung up the snapshot stayed: %v", left)
	}
	// And the slot is free again (the handler lets go of it just after
	// removing the copy).
	code, _, _ = getBackup(t, srv, bkToken)
	for code == http.StatusTooManyRequests && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		code, _, _ = getBackup(t, srv, bkToken)
	}
	if code != http.StatusOK {
		t.Errorf("a backup after the abandoned one: %d, want 200", code)
	}
}
