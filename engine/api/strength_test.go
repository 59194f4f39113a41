package api_test

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/attune-io/attune/engine/api"
	"github.com/attune-io/attune/engine/auth"
	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/metrics"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
)

const tuneToken = "tuning-client-token-0123456789abcdef"

// TestStrengthPushNeedsTheTuneScope: only a client with the tune scope
// (the operator's built-in tuning client) may push the strength; the
// read-write, read-only and backup tokens and a client with every world
// scope may not, and the tuning client reads nothing else. A valid push
// is in force at once (GET /v1/cohort); an invalid one is refused naming
// its field.
func TestStrengthPushNeedsTheTuneScope(t *testing.T) {
	db, err := store.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	cfg := testConfig("Social", 2)
	m := metrics.New(cfg.Program)
	svc, err := service.New(cfg, service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	// The clients file as the operator writes it, parsed as the engine does.
	file := `{"clients": [{"name": "all", "tokenSHA256": "` + auth.HashToken(everyClientScope) + `", "scopes": ["ingest","decide","read-state","consent","erase","export","cohort","metrics","research"]},
		{"name": "attune-operator-strength-tuner", "tokenSHA256": "` + auth.HashToken(tuneToken) + `", "scopes": ["tune"]}]}`
	clients, err := auth.ParseClients([]byte(file))
	if err != nil {
		t.Fatalf("the clients file with the tuning client: %v", err)
	}
	tokens := api.Tokens{ReadWrite: rwToken, ReadOnly: roToken, Backup: bkToken, Clients: clients}
	srv := httptest.NewServer(api.New(svc, m, tokens, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	send := func(method, path, token, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader([]byte(body)))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	st := contract.Strength{Value: 0.7, Min: 0.1, Max: 0.9}
	push := `{"strength": {"value": 0.7, "min": 0.1, "max": 0.9}, "generation": "` + st.Generation() + `"}`

	for name, token := range map[string]string{"read-write": rwToken, "read-only": roToken, "backup": bkToken, "every world scope": everyClientScope} {
		if code, body := send(http.MethodPut, contract.PathStrength, token, push); code != http.StatusForbidden {
			t.Errorf("push with the %s token: %d %s, want 403", name, code, body)
		}
	}
	for _, path := range []string{"/v1/cohort", "/metrics"} {
		if code, _ := send(http.MethodGet, path, tuneToken, ""); code != http.StatusForbidden {
			t.Errorf("GET %s with the tuning token: %d, want 403", path, code)
		}
	}
	if svc.Config().Strength.Value != 0.5 {
		t.Fatalf("refused pushes changed the strength to %v", svc.Config().Strength.Value)
	}

	for _, tc := range []struct{ name, body, field string }{
		{"unknown field", `{"strength": {"value": 0.7, "min": 0.1, "max": 0.9, "step": 1}, "generation": "` + st.Generation() + `"}`, "strength.step"},
		{"generation of other values", `{"strength": {"value": 0.6, "min": 0.1, "max": 0.9}, "generation": "` + st.Generation() + `"}`, "generation"},
		{"value above max", `{"strength": {"value": 0.95, "min": 0.1, "max": 0.9}, "generation": "` + contract.Strength{Value: 0.95, Min: 0.1, Max: 0.9}.Generation() + `"}`, "strength"},
	} {
		code, body := send(http.MethodPut, contract.PathStrength, tuneToken, tc.body)
		if code != http.StatusBadRequest || !bytes.Contains([]byte(body), []byte(`"field":"`+tc.field+`"`)) {
			t.Errorf("%s: %d %s, want 400 naming %s", tc.name, code, body, tc.field)
		}
	}

	if code, body := send(http.MethodPut, contract.PathStrength, tuneToken, push); code != http.StatusOK || !bytes.Contains([]byte(body), []byte(`"applied":true`)) {
		t.Fatalf("push with the tuning token: %d %s, want 200 applied", code, body)
	}
	code, body := send(http.MethodGet, "/v1/cohort", roToken, "")
	if code != http.StatusOK || !bytes.Contains([]byte(body), []byte(`"strength":0.7`)) || !bytes.Contains([]byte(body), []byte(`"generation":"`+st.Generation()+`"`)) {
		t.Errorf("cohort after the push: %d %s, want strength 0.7, generation %s", code, body, st.Generation())
	}
}
