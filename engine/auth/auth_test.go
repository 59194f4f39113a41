package auth_test

import (
	"strings"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/auth"
)

func TestParseClientsNamesTheField(t *testing.T) {
	hash := auth.HashToken("t")
	for _, tc := range []struct{ file, field string }{
		{`{"clients":[{"name":"World","tokenSHA256":"` + hash + `","scopes":["ingest"]}]}`, "clients[0].name"},
		{`{"clients":[{"name":"user","tokenSHA256":"` + hash + `","scopes":["ingest"]}]}`, "clients[0].name"},
		{`{"clients":[{"name":"a","tokenSHA256":"` + hash + `","scopes":["ingest"]},{"name":"a","tokenSHA256":"` + hash + `","scopes":["ingest"]}]}`, "clients[1].name"},
		{`{"clients":[{"name":"a","tokenSHA256":"abc","scopes":["ingest"]}]}`, "clients[0].tokenSHA256"},
		{`{"clients":[{"name":"a","tokenSHA256":"` + hash + `","scopes":[]}]}`, "clients[0].scopes"},
		{`{"clients":[{"name":"a","tokenSHA256":"` + hash + `","previousTokenSHA256":"zz","scopes":["ingest"]}]}`, "clients[0].previousTokenSHA256"},
		{`{"clients":[{"name":"a","tokenSHA256":"` + hash + `","scopes":["ingest","admin"]}]}`, "clients[0].scopes[1]"},
		{`{"clients":[{"name":"a","tokenSHA256":"` + hash + `","scopes":["ingest"],"token":"x"}]}`, "token"},
		{`{"clients":[{"name":"a","name":"b","tokenSHA256":"` + hash + `","scopes":["ingest"]}]}`, "name"},
	} {
		_, err := auth.ParseClients([]byte(tc.file))
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: error %v, want one naming %s", tc.file, err, tc.field)
		}
	}
	clients, err := auth.ParseClients([]byte(`{"clients":[{"name":"world-server","tokenSHA256":"` + hash + `","previousTokenSHA256":"` + auth.HashToken("old") + `","scopes":["ingest","decide"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	tokens := auth.Tokens{ReadWrite: "rw", ReadOnly: "ro", Clients: clients}
	for token, want := range map[string]string{"t": "world-server", "old": "world-server", "rw": "read-write", "ro": "read-only", "T": "", "": ""} {
		p, ok := tokens.Authenticate(token)
		if ok != (want != "") || p.Name != want {
			t.Errorf("token %q: %q %v, want %q", token, p.Name, ok, want)
		}
	}
	if p, _ := tokens.Authenticate("t"); !p.Has(auth.ScopeDecide) || p.Has(auth.ScopeErase) {
		t.Errorf("world-server scopes %v, want ingest and decide only", p.Scopes)
	}
}

func TestUserTokens(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	if _, err := auth.NewUserTokens(key[:31], "plaza/calm"); err == nil || !strings.Contains(err.Error(), "userTokenKeyFile") {
		t.Fatalf("a 31-byte key: %v, want an error naming userTokenKeyFile", err)
	}
	u, err := auth.NewUserTokens(key, "plaza/calm")
	if err != nil {
		t.Fatal(err)
	}
	for _, ttl := range []time.Duration{-time.Second, time.Millisecond, auth.MaxUserTokenTTL + time.Second} {
		if _, _, err := u.Mint("alice", ttl); err == nil {
			t.Errorf("ttl %v minted, want refused", ttl)
		}
	}
	token, exp, err := u.Mint("alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(exp); d > auth.DefaultUserTokenTTL || d < auth.DefaultUserTokenTTL-5*time.Second {
		t.Fatalf("expires in %v, want %v", d, auth.DefaultUserTokenTTL)
	}
	p, err := u.Verify(token)
	if err != nil || p.User != "alice" || p.Has(auth.ScopeErase) || !p.Has(auth.ScopeExport) {
		t.Fatalf("verify: %+v %v", p, err)
	}
	later := u.WithClock(func() time.Time { return time.Now().Add(auth.DefaultUserTokenTTL + time.Second) })
	if _, err := later.Verify(token); err == nil {
		t.Fatal("an expired token verified")
	}
	other, _ := auth.NewUserTokens(key, "arcade/focus")
	if _, err := other.Verify(token); err == nil {
		t.Fatal("another program accepted the token")
	}
}

// TestPreviousTokenExpires: a client's previous token is accepted until
// previousTokenExpiresAt and refused from then on, by the engine's own
// clock, while the current token goes on working; without the field the
// previous token is accepted whatever the time.
func TestPreviousTokenExpires(t *testing.T) {
	expires := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	file := `{"clients":[{"name":"world-server","tokenSHA256":"` + auth.HashToken("new") + `","previousTokenSHA256":"` + auth.HashToken("old") +
		`","previousTokenExpiresAt":"2026-03-01T12:00:00Z","scopes":["ingest"]},` +
		`{"name":"no-expiry","tokenSHA256":"` + auth.HashToken("new2") + `","previousTokenSHA256":"` + auth.HashToken("old2") + `","scopes":["ingest"]}]}`
	clients, err := auth.ParseClients([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		now          time.Time
		oldAccepted  bool
		old2Accepted bool
	}{
		{expires.Add(-time.Second), true, true},
		{expires, false, true},
		{expires.Add(time.Hour), false, true},
	} {
		tokens := auth.Tokens{Clients: clients, Now: func() time.Time { return tc.now }}
		if _, ok := tokens.Authenticate("old"); ok != tc.oldAccepted {
			t.Errorf("at %v the previous token accepted %v, want %v", tc.now, ok, tc.oldAccepted)
		}
		if _, ok := tokens.Authenticate("old2"); ok != tc.old2Accepted {
			t.Errorf("at %v the previous token without expiry accepted %v, want %v", tc.now, ok, tc.old2Accepted)
		}
		if p, ok := tokens.Authenticate("new"); !ok || p.Name != "world-server" {
			t.Errorf("at %v the current token: %q %v", tc.now, p.Name, ok)
		}
	}
	for _, tc := range []struct{ file, field string }{
		{`{"clients":[{"name":"a","tokenSHA256":"` + auth.HashToken("t") + `","previousTokenExpiresAt":"2026-03-01T12:00:00Z","scopes":["ingest"]}]}`, "clients[0].previousTokenExpiresAt"},
		{`{"clients":[{"name":"a","tokenSHA256":"` + auth.HashToken("t") + `","previousTokenSHA256":"` + auth.HashToken("o") + `","previousTokenExpiresAt":"tomorrow","scopes":["ingest"]}]}`, "previousTokenExpiresAt"},
	} {
		if _, err := auth.ParseClients([]byte(tc.file)); err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: error %v, want one naming %s", tc.file, err, tc.field)
		}
	}
}

// TestBackupTokenHoldsOnlyTheBackupScope: the backup token (backupTokenFile)
// holds the backup scope and nothing else; the read-write token, which
// world apps use, does not hold it.
func TestBackupTokenHoldsOnlyTheBackupScope(t *testing.T) {
	tokens := auth.Tokens{ReadWrite: "rw", Backup: "bk"}
	p, ok := tokens.Authenticate("bk")
	if !ok || p.Name != "backup" || len(p.Scopes) != 1 || !p.Has(auth.ScopeBackup) {
		t.Errorf("backup token: %+v %v, want only the backup scope", p, ok)
	}
	if p, _ := tokens.Authenticate("rw"); p.Has(auth.ScopeBackup) || !p.Has(auth.ScopeErase) {
		t.Errorf("read-write token scopes %v, want every scope but backup", p.Scopes)
	}
}
