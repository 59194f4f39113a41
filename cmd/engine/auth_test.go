package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/auth"
	"github.com/attune-io/attune/engine/config"
)

// TestEngineReloadsClientTokens: the engine binary's run loop picks up a
// new clients file without a restart or a configuration change, keeps the
// last good set when the file turns invalid, and mints user tokens under
// the key file.
func TestEngineReloadsClientTokens(t *testing.T) {
	dir, path, addr := writeFiles(t, 0.5, 11)
	clients := filepath.Join(dir, "clients.json")
	writeClients := func(content string) {
		t.Helper()
		if err := os.WriteFile(clients+".tmp", []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(clients+".tmp", clients); err != nil {
			t.Fatal(err)
		}
	}
	writeClients(`{"clients":[]}`)
	if err := os.WriteFile(filepath.Join(dir, "user-key"), []byte("user-token-signing-key-0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg config.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg.ClientTokensFile, cfg.UserTokenKeyFile = clients, filepath.Join(dir, "user-key")
	data, _ := json.Marshal(cfg)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}

	startEngine(t, path, 50*time.Millisecond, nil)
	base := "http://" + addr
	waitFor(t, func() bool { code, _ := get(t, base+"/v1/cohort", "ro-secret"); return code == 200 })
	if code, _ := get(t, base+"/v1/cohort", "dashboard-secret"); code != http.StatusUnauthorized {
		t.Fatalf("an unlisted client: %d, want 401", code)
	}
	writeClients(`{"clients":[{"name":"dashboard","tokenSHA256":"` + auth.HashToken("dashboard-secret") + `","scopes":["cohort"]}]}`)
	waitFor(t, func() bool { code, _ := get(t, base+"/v1/cohort", "dashboard-secret"); return code == 200 })
	if code, body := get(t, base+"/metrics", "dashboard-secret"); code != http.StatusForbidden || !strings.Contains(body, `\"metrics\" scope`) {
		t.Fatalf("out of scope: %d %s, want 403 naming metrics", code, body)
	}
	// An invalid file is refused whole; the last good set stays.
	writeClients(`{"clients":[{"name":"dashboard","tokenSHA256":"nope","scopes":["cohort"]}]}`)
	time.Sleep(300 * time.Millisecond)
	if code, _ := get(t, base+"/v1/cohort", "dashboard-secret"); code != http.StatusOK {
		t.Fatalf("after an invalid clients file: %d, want the last good set (200)", code)
	}

	req, _ := http.NewRequest(http.MethodPost, base+"/v1/users/alice/tokens", nil)
	req.Header.Set("Authorization", "Bearer rw-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var minted struct{ Token string }
	_ = json.NewDecoder(resp.Body).Decode(&minted)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || minted.Token == "" {
		t.Fatalf("mint: %d", resp.StatusCode)
	}
	if code, body := get(t, base+"/v1/users/bob/state", minted.Token); code != http.StatusForbidden {
		t.Fatalf("alice's token on bob: %d %s, want 403", code, body)
	}
}
