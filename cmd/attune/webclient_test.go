package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/api"
	"github.com/attune-io/attune/engine/auth"
	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/metrics"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/internal/simulator"
)

// TestWebClientSharesAnOriginWithTheEngine: the demo's web client serves
// the built files and passes /v1/ through to a real engine, and the
// address it prints carries the user and the token in the fragment only.
func TestWebClientSharesAnOriginWithTheEngine(t *testing.T) {
	cfg := &config.Config{
		Program: "demo/web", Target: config.Vector{Attention: 0.8, Emotion: 0.7, Resilience: 0.7},
		Weights: config.Vector{Attention: 1, Emotion: 1, Resilience: 1}, Interventions: []string{"ResonanceBreathing"},
		Strength: config.Strength{Value: 0.5, Min: 0.1, Max: 0.9}, Context: "Social",
		Privacy:   config.Privacy{Retention: config.Duration{Duration: time.Hour}, MinCohortSize: 2},
		TokenFile: "unused", ReadOnlyTokenFile: "unused", PseudonymizationKeyFile: "unused", DataDir: "unused", ListenAddress: "unused",
	}
	db, err := store.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	m := metrics.New(cfg.Program)
	svc, err := service.New(cfg, service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	engine := httptest.NewServer(api.New(svc, m, api.Tokens{ReadWrite: "rw-token", ReadOnly: "ro-token"}, slog.New(slog.DiscardHandler)))
	t.Cleanup(engine.Close)

	dist := t.TempDir()
	if err := os.WriteFile(filepath.Join(dist, "index.html"), []byte("<!doctype html><title>Attune</title>"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	link, err := serveWebClient(ctx, dist, engine.URL, "rw-token", "sim-user-000001", nil)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	fragment, _ := url.ParseQuery(u.Fragment)
	if u.RawQuery != "" || fragment.Get("user") != "sim-user-000001" || fragment.Get("token") != "rw-token" || strings.Contains(u.Path, "sim-user") {
		t.Errorf("link %s: want user and token in the fragment only", link)
	}
	base := "http://" + u.Host
	get := func(path, token string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get("/", ""); code != http.StatusOK || !strings.Contains(body, "<title>Attune</title>") {
		t.Errorf("GET /: %d %q, want index.html", code, body)
	}
	if code, body := get("/v1/privacy", "rw-token"); code != http.StatusOK || !strings.Contains(body, `"context":"Social"`) {
		t.Errorf("GET /v1/privacy through the client's origin: %d %q, want the engine's notice", code, body)
	}
	if code, _ := get("/v1/privacy", ""); code != http.StatusUnauthorized {
		t.Errorf("GET /v1/privacy without a token: %d, want the engine's 401", code)
	}
	if _, err := serveWebClient(ctx, t.TempDir(), engine.URL, "rw-token", "u", nil); err == nil || !strings.Contains(err.Error(), "make web") {
		t.Errorf("an unbuilt client: err = %v, want one naming make web", err)
	}
}

// TestWebClientGetsAUserToken: the demo mints a token for its one user
// through a real engine (its signing key, the program token's ingest
// scope) and the link carries that token alone, which reads that user and
// no other.
func TestWebClientGetsAUserToken(t *testing.T) {
	cfg := &config.Config{
		Program: "demo/web", Target: config.Vector{Attention: 0.8, Emotion: 0.7, Resilience: 0.7},
		Weights: config.Vector{Attention: 1, Emotion: 1, Resilience: 1}, Interventions: []string{"ResonanceBreathing"},
		Strength: config.Strength{Value: 0.5, Min: 0.1, Max: 0.9}, Context: "Social",
		Privacy:   config.Privacy{Retention: config.Duration{Duration: time.Hour}, MinCohortSize: 2},
		TokenFile: "unused", ReadOnlyTokenFile: "unused", PseudonymizationKeyFile: "unused", DataDir: "unused", ListenAddress: "unused",
	}
	db, err := store.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	m := metrics.New(cfg.Program)
	svc, err := service.New(cfg, service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	users, err := auth.NewUserTokens([]byte("a signing key of thirty-two bytes"), cfg.Program)
	if err != nil {
		t.Fatal(err)
	}
	// HTTPS, as the operator's engines serve: the mint and the proxy
	// verify the engine's certificate.
	engine := httptest.NewTLSServer(api.New(svc, m, api.Tokens{ReadWrite: "rw-token", ReadOnly: "ro-token", Users: users}, slog.New(slog.DiscardHandler)))
	t.Cleanup(engine.Close)
	pool := x509.NewCertPool()
	pool.AddCert(engine.Certificate())
	trust := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "web", "dist"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "web", "dist", "index.html"), []byte("<!doctype html>"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var said []string
	// An engine it cannot verify gets no token sent to a link.
	printWebClient(ctx, func(f string, a ...any) { said = append(said, fmt.Sprintf(f, a...)) }, root, []string{engine.URL}, "rw-token", nil)
	if len(said) != 1 || !strings.Contains(said[0], "not served") || strings.Contains(said[0], "open http") {
		t.Fatalf("untrusted engine: said %q, want it not served", said)
	}
	said = nil
	printWebClient(ctx, func(f string, a ...any) { said = append(said, fmt.Sprintf(f, a...)) }, root, []string{engine.URL}, "rw-token", trust)
	if len(said) != 1 || !strings.Contains(said[0], "open http://") {
		t.Fatalf("said %q, want the link", said)
	}
	link := strings.Fields(strings.SplitN(said[0], "open ", 2)[1])[0]
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	fragment, _ := url.ParseQuery(u.Fragment)
	token := fragment.Get("token")
	if token == "" || token == "rw-token" || strings.Contains(said[0], "rw-token") {
		t.Fatalf("link %s: want a user token, never the program's", link)
	}
	principal, err := users.Verify(token)
	if err != nil || principal.User != simulator.UserID(demoWebClientUser) {
		t.Fatalf("the link's token: %+v, %v; want one for %s", principal, err, simulator.UserID(demoWebClientUser))
	}
	status := func(path string) int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+u.Host+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if code := status("/v1/users/" + simulator.UserID(demoWebClientUser+1) + "/state"); code != http.StatusForbidden {
		t.Errorf("another user's state with the link's token: %d, want 403", code)
	}
	if code := status("/v1/users/" + simulator.UserID(demoWebClientUser) + "/state"); code == http.StatusUnauthorized || code == http.StatusForbidden {
		t.Errorf("its own user's state: %d, want it past the token check", code)
	}
}
