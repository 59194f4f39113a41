package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/internal/oiptest"
)

func post(t *testing.T, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestEngineWithModelServer: the engine sends a batch's texts to the
// configured model server in one request, and /readyz degrades to
// "textModel": "fallback" (still 200) when the server is not ready.
func TestEngineWithModelServer(t *testing.T) {
	srv, hs := oiptest.Start(oiptest.Options{Runtime: oiptest.MLServerHuggingFace, MLServerAllScores: true})
	defer hs.Close()
	dir, path, addr := writeFiles(t, 0.5, 11)
	raw, _ := os.ReadFile(path)
	var cfg config.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Model = &config.Model{URL: hs.URL, Name: "emotion", Runtime: config.ModelRuntimeMLServerHuggingFace, Timeout: config.Duration{Duration: time.Second}}
	data, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, config.FileName), data, 0o600); err != nil {
		t.Fatal(err)
	}
	startEngine(t, path, time.Hour, nil)
	base := "http://" + addr
	waitFor(t, func() bool { code, _ := get(t, base+"/readyz", ""); return code == 200 })
	if _, body := get(t, base+"/readyz", ""); !strings.Contains(body, `"textModel":"ready"`) {
		t.Errorf("readyz %s, want textModel ready", body)
	}
	if code, body := post(t, base+"/v1/users/u1/consent", "rw-secret", `{"scopes":["text","behaviour"]}`); code != 200 {
		t.Fatalf("consent: %d %s", code, body)
	}
	at := time.Now().UTC().Format(time.RFC3339)
	batch := `[{"user":"u1","kind":"text","at":"` + at + `","text":"so happy"},{"user":"u1","kind":"text","at":"` + at + `","text":"I am terrified"}]`
	if code, body := post(t, base+"/v1/telemetry", "rw-secret", batch); code != 200 {
		t.Fatalf("telemetry: %d %s", code, body)
	}
	if r := srv.Received(); len(r) != 1 || len(r[0].Texts) != 2 {
		t.Fatalf("model server received %+v, want one request of 2 texts", r)
	}
	srv.SetReady(false)
	code, body := get(t, base+"/readyz", "")
	if code != 200 || !strings.Contains(body, `"textModel":"fallback"`) || !strings.Contains(body, `"textModelReason":"unavailable"`) {
		t.Errorf("readyz with the model server unready: %d %s; want 200 with textModel fallback", code, body)
	}
	srv.SetFault(oiptest.Fault503)
	if code, body := post(t, base+"/v1/telemetry", "rw-secret", batch); code != 200 {
		t.Fatalf("telemetry with the model server failing: %d %s", code, body)
	}
	_, m := get(t, base+"/metrics", "ro-secret")
	for _, want := range []string{`attune_engine_text_model_fallbacks_total{program="plaza/calm",reason="unavailable"} 1`, `attune_engine_text_model_batch_texts_count{program="plaza/calm"} 2`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
