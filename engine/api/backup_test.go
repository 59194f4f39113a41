package api_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/attune-io/attune/engine/api"
	"github.com/attune-io/attune/engine/auth"
	"github.com/attune-io/attune/engine/metrics"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
)

// TestBackupNeedsTheReadWriteToken: GET /v1/admin/backup answers the
// read-write token with the bbolt file, and refuses (403, naming the
// scope) a client holding every scope a client can be granted, the
// read-only token and a user token; on a shared store it answers 404
// naming PostgreSQL. (The backup's content under ingest, and its restore:
// TestBackupUnderIngestRestores in cmd/engine.)
func TestBackupNeedsTheReadWriteToken(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		db := open(t)
		t.Cleanup(func() { _ = db.Close() })
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
		const everyClientScope = "client-with-every-scope-0123456789"
		tokens := api.Tokens{ReadWrite: rwToken, ReadOnly: roToken, Users: users,
			Clients: []auth.Client{{Name: "all", TokenSHA256: auth.HashToken(everyClientScope), Scopes: auth.AllScopes}}}
		var opts []api.Option
		if src := store.BackupOf(db); src != nil {
			opts = append(opts, api.WithBackup(src))
		}
		srv := httptest.NewServer(api.New(svc, m, tokens, slog.New(slog.DiscardHandler), opts...))
		t.Cleanup(srv.Close)
		get := func(token string) (int, string, http.Header) {
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
		for name, token := range map[string]string{"every client scope": everyClientScope, "read-only": roToken, "user": mintUserToken(t, users, "u1")} {
			if code, body, _ := get(token); code != http.StatusForbidden || !strings.Contains(body, `\"backup\" scope`) {
				t.Errorf("%s token: %d %s, want 403 naming the backup scope", name, code, body)
			}
		}
		code, body, h := get(rwToken)
		if _, shared := db.(*store.Postgres); shared {
			if code != http.StatusNotFound || !strings.Contains(body, "PostgreSQL") {
				t.Errorf("on PostgreSQL: %d %s, want 404 naming it", code, body)
			}
			return
		}
		// bbolt's magic number, in the first meta page (little endian).
		if code != http.StatusOK || len(body) < 4096 || !strings.Contains(body[:64], "\xed\xda\x0c\xed") ||
			h.Get("Content-Length") == "" || !strings.HasPrefix(h.Get("Repr-Digest"), "sha-256=:") || h.Get("Cache-Control") != "no-store" {
			t.Errorf("read-write token: %d, %d bytes, headers %v", code, len(body), h)
		}
	})
}
