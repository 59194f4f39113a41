package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// reply is a response with its body read.
type reply struct {
	StatusCode int
	Header     http.Header
}

// send sends a request with optional headers and returns the reply.
func send(t *testing.T, method, url string, header map[string]string) (reply, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{StatusCode: resp.StatusCode, Header: resp.Header}, string(body)
}

func TestWebClientIsOffByDefault(t *testing.T) {
	e := startEngine(t, testConfig("Social", 2))
	resp, body := send(t, http.MethodGet, e.url+"/app/", nil)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "app.dir") {
		t.Fatalf("GET /app/ without app.dir: %d %s, want 404 naming app.dir", resp.StatusCode, body)
	}
	// No CORS headers either: a page of another origin cannot read answers.
	resp, _ = send(t, http.MethodGet, e.url+"/v1/cohort", map[string]string{"Origin": "https://world.example", "Authorization": "Bearer " + roToken})
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("Access-Control-Allow-Origin %q without cors.allowedOrigins, want none", got)
	}
}

func TestWebClientServesItsDirectoryOnly(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	for name, content := range map[string]string{
		"index.html":     "<!doctype html><title>client</title>",
		"js/main.js":     "export const ok = 1;",
		"js/lib/deep.js": "export {};",
	} {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "secret.txt"), []byte("not for the web"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret.txt"), filepath.Join(dir, "link.txt")); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("Social", 2)
	cfg.App.Dir = dir
	e := startEngine(t, cfg)

	resp, _ := send(t, http.MethodGet, e.url+"/app", nil)
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/app/" {
		t.Errorf("GET /app: %d Location %q, want 301 to /app/", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := send(t, http.MethodGet, e.url+"/app/", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "<title>client</title>") {
		t.Fatalf("GET /app/: %d %q, want index.html", resp.StatusCode, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("Content-Security-Policy %q, want script-src 'self'", csp)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("index.html Content-Type %q", ct)
	}
	// Module scripts load only with a JavaScript media type.
	resp, _ = send(t, http.MethodGet, e.url+"/app/js/main.js", nil)
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/javascript") {
		t.Errorf("main.js: %d Content-Type %q, want 200 text/javascript", resp.StatusCode, ct)
	}
	for _, path := range []string{"/app/js/", "/app/js/lib/", "/app/link.txt", "/app/missing.js", "/app/%2e%2e/secret.txt"} {
		resp, body := send(t, http.MethodGet, e.url+path, nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d %q, want 404 (no listings, nothing outside the directory)", path, resp.StatusCode, body)
		}
		if strings.Contains(body, "not for the web") || strings.Contains(body, "deep.js") {
			t.Errorf("GET %s leaked %q", path, body)
		}
	}
}

func TestPrivacyNoticeStatesTheWorldsPolicy(t *testing.T) {
	cfg := testConfig("Workplace", 11)
	cfg.Consent.PolicyVersion, cfg.Consent.RequireReconsent = "2026-12", true
	e := startEngine(t, cfg)
	resp, body := send(t, http.MethodGet, e.url+"/v1/privacy", map[string]string{"Authorization": "Bearer " + roToken})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/privacy: %d %s", resp.StatusCode, body)
	}
	var notice struct {
		Context               string `json:"context"`
		Retention             string `json:"retention"`
		RetentionSeconds      int64  `json:"retentionSeconds"`
		EmotionFromPhysiology bool   `json:"emotionFromPhysiology"`
		MinCohortSize         int    `json:"minCohortSize"`
		PolicyVersion         string `json:"policyVersion"`
		RequireReconsent      bool   `json:"requireReconsent"`
		Scopes                []struct {
			Scope      string   `json:"scope"`
			Kinds      []string `json:"kinds"`
			Prohibited bool     `json:"prohibited"`
		} `json:"scopes"`
	}
	if err := json.Unmarshal([]byte(body), &notice); err != nil {
		t.Fatal(err)
	}
	if notice.Context != "Workplace" || notice.RetentionSeconds != 24*3600 || notice.Retention != "24h0m0s" || notice.EmotionFromPhysiology || notice.MinCohortSize != 11 ||
		notice.PolicyVersion != "2026-12" || !notice.RequireReconsent {
		t.Errorf("notice %+v, want Workplace, 24h retention, no emotion from physiology, k 11, policy 2026-12 with re-consent", notice)
	}
	want := map[string]string{"behaviour": "behaviour,sart,intervention", "physiology": "rr,heart_rate", "text": "text", "questionnaire": "questionnaire", "research": ""}
	if len(notice.Scopes) != len(want) {
		t.Fatalf("scopes %+v, want %d", notice.Scopes, len(want))
	}
	for _, s := range notice.Scopes {
		if got := strings.Join(s.Kinds, ","); got != want[s.Scope] {
			t.Errorf("scope %s covers %q, want %q", s.Scope, got, want[s.Scope])
		}
		if s.Prohibited != (s.Scope == "physiology") {
			t.Errorf("scope %s prohibited %v in a Workplace world", s.Scope, s.Prohibited)
		}
	}
	if resp, _ := send(t, http.MethodGet, e.url+"/v1/privacy", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /v1/privacy without a token: %d, want 401", resp.StatusCode)
	}
}

func TestCORSAllowsOnlyListedOrigins(t *testing.T) {
	cfg := testConfig("Social", 2)
	cfg.CORS.AllowedOrigins = []string{"https://world.example", "http://127.0.0.1:5173"}
	e := startEngine(t, cfg)

	// A preflight from a listed origin is answered by the engine itself.
	resp, _ := send(t, http.MethodOptions, e.url+"/v1/users/u-1/consent", map[string]string{
		"Origin": "https://world.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type",
	})
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "https://world.example" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "DELETE") {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	if resp.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Error("credentials allowed: the API authenticates by bearer token only")
	}
	// The real request still needs the token, and its answer is readable.
	resp, _ = send(t, http.MethodGet, e.url+"/v1/cohort", map[string]string{"Origin": "http://127.0.0.1:5173"})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("cross-origin request without a token: %d, want 401", resp.StatusCode)
	}
	resp, _ = send(t, http.MethodGet, e.url+"/v1/cohort", map[string]string{"Origin": "http://127.0.0.1:5173", "Authorization": "Bearer " + roToken})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != "http://127.0.0.1:5173" ||
		!strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "Idempotent-Replayed") || resp.Header.Get("Vary") != "Origin" {
		t.Errorf("cross-origin GET: %d %v", resp.StatusCode, resp.Header)
	}
	// Another origin gets no CORS headers, and its preflight is not answered.
	for _, origin := range []string{"https://evil.example", "https://world.example.evil", "null"} {
		resp, _ = send(t, http.MethodOptions, e.url+"/v1/cohort", map[string]string{"Origin": origin, "Access-Control-Request-Method": "GET"})
		if resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.StatusCode == http.StatusNoContent {
			t.Errorf("preflight from %s: %d %v, want no CORS answer", origin, resp.StatusCode, resp.Header)
		}
	}
}
