package api_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/attune-io/attune/engine/api"
	"github.com/attune-io/attune/engine/auth"
	"github.com/attune-io/attune/engine/metrics"
	"github.com/attune-io/attune/engine/service"
)

var (
	userTokenKey  = []byte("user-token-key-0123456789abcdef-0123456789")
	otherKey      = []byte("another-programs-key-0123456789abcdef-01234")
	clientTokenOf = func(scope auth.Scope) string { return "client-without-" + string(scope) + "-0123456789" }
)

// startScopedEngine runs the real API on loopback with the legacy tokens,
// one client per scope holding every scope but that one ("without-X"),
// and user tokens on.
func startScopedEngine(t *testing.T) *engine {
	t.Helper()
	cfg := testConfig("Social", 2)
	db := backends[0].open(t)
	t.Cleanup(func() { _ = db.Close() })
	clock := &fakeClock{now: time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)}
	logs := &bytes.Buffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	m := metrics.New(cfg.Program)
	svc, err := service.New(cfg, service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Metrics: m, Now: clock.Now, Logger: logger, EffectsMinInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	m.RegisterCohort(svc)
	tokens := api.Tokens{ReadWrite: rwToken, ReadOnly: roToken}
	for _, missing := range auth.AllScopes {
		var scopes []auth.Scope
		for _, sc := range auth.AllScopes {
			if sc != missing {
				scopes = append(scopes, sc)
			}
		}
		tokens.Clients = append(tokens.Clients, auth.Client{Name: "without-" + string(missing), TokenSHA256: auth.HashToken(clientTokenOf(missing)), Scopes: scopes})
	}
	users, err := auth.NewUserTokens(userTokenKey, cfg.Program)
	if err != nil {
		t.Fatal(err)
	}
	tokens.Users = users
	srv := httptest.NewServer(api.New(svc, m, tokens, logger))
	t.Cleanup(srv.Close)
	return &engine{t: t, url: srv.URL, svc: svc, clock: clock, logs: logs, store: db}
}

func mintUserToken(t *testing.T, u *auth.UserTokens, user string) string {
	t.Helper()
	token, _, err := u.Mint(user, 0)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// endpoint is one authenticated route, aimed at the user "victim".
type endpoint struct {
	method, path string
	body         any
	scope        auth.Scope // "" for GET /v1/privacy (any valid token)
	perUser      bool       // a user token may call it for its own user
	mint         bool       // POST .../tokens: ingest or decide
}

func endpoints(e *engine) []endpoint {
	return []endpoint{
		{"POST", "/v1/users/victim/consent", map[string]any{"scopes": []string{"text", "research"}}, auth.ScopeConsent, true, false},
		{"DELETE", "/v1/users/victim/consent", nil, auth.ScopeConsent, true, false},
		{"POST", "/v1/telemetry", []map[string]any{{"user": "victim", "kind": "text", "at": e.ts(0), "text": "I am fine"}}, auth.ScopeIngest, true, false},
		{"GET", "/v1/users/victim/state", nil, auth.ScopeReadState, true, false},
		{"GET", "/v1/users/victim/export", nil, auth.ScopeExport, true, false},
		{"POST", "/v1/users/victim/decisions", nil, auth.ScopeDecide, true, false},
		{"GET", "/v1/decisions", nil, auth.ScopeResearch, false, false},
		{"DELETE", "/v1/users/victim", nil, auth.ScopeErase, false, false},
		{"GET", "/v1/cohort", nil, auth.ScopeCohort, false, false},
		{"GET", "/metrics", nil, auth.ScopeMetrics, false, false},
		{"POST", "/v1/users/victim/tokens", nil, auth.ScopeIngest, false, true},
		{"GET", "/v1/privacy", nil, "", true, false},
	}
}

// snapshot is everything the engine holds about victim, and the research
// log, read with the all-scopes token.
func snapshot(e *engine) string {
	e.t.Helper()
	var b strings.Builder
	for _, path := range []string{"/v1/users/victim/state", "/v1/users/victim/export", "/v1/decisions", "/v1/users/newcomer/state"} {
		r := e.do("GET", path, rwToken, "", nil)
		fmt.Fprintf(&b, "%s %d %s\n", path, r.status, r.raw)
	}
	return b.String()
}

// TestRefusedTokensStoreNothing sends every endpoint wrong, expired,
// forged, other-program, out-of-scope and other-user tokens: each is
// refused 401 or 403 naming the scope or the user, and the engine's
// state is the same byte for byte afterwards.
func TestRefusedTokensStoreNothing(t *testing.T) {
	e := startScopedEngine(t)
	e.consent("victim", "text", "research")
	expect(t, e.telemetry(map[string]any{"user": "victim", "kind": "text", "at": e.ts(0), "text": "a calm morning"}), 200, "", "")
	expect(t, e.do("POST", "/v1/users/victim/decisions", rwToken, "", nil), 200, "", "")
	before := snapshot(e)

	users, _ := auth.NewUserTokens(userTokenKey, "plaza/calm")
	otherProgram, _ := auth.NewUserTokens(userTokenKey, "arcade/focus")
	otherProgramKey, _ := auth.NewUserTokens(otherKey, "plaza/calm")
	past := users.WithClock(func() time.Time { return time.Now().Add(-2 * time.Hour) })
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.RegisteredClaims{
		Issuer: auth.UserTokenIssuer, Subject: "victim", Audience: jwt.ClaimStrings{"plaza/calm"},
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)),
	}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	noExp, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Issuer: auth.UserTokenIssuer, Subject: "victim", Audience: jwt.ClaimStrings{"plaza/calm"},
	}).SignedString(userTokenKey)
	if err != nil {
		t.Fatal(err)
	}
	victimToken := mintUserToken(t, users, "victim")
	// A valid token with one byte of its signature changed.
	tampered := victimToken[:len(victimToken)-2] + map[bool]string{true: "A", false: "B"}[victimToken[len(victimToken)-2] != 'A'] + victimToken[len(victimToken)-1:]

	unauthenticated := map[string]string{
		"no token":                                 "",
		"wrong token":                              "not-a-token",
		"another program's client":                 "client-of-arcade-focus-0123456789",
		"read-write token, upper case":             strings.ToUpper(rwToken),
		"jwt-shaped garbage":                       "a.b.c",
		"expired user token":                       mintUserToken(t, past, "victim"),
		"user token of another program (aud)":      mintUserToken(t, otherProgram, "victim"),
		"user token signed by another program key": mintUserToken(t, otherProgramKey, "victim"),
		"alg none":                                 none,
		"no exp":                                   noExp,
		"tampered signature":                       tampered,
	}
	mallory := mintUserToken(t, users, "mallory")
	refused := 0
	for _, ep := range endpoints(e) {
		for name, token := range unauthenticated {
			t.Run(ep.method+" "+ep.path+"/"+name, func(t *testing.T) {
				expect(t, e.do(ep.method, ep.path, token, "", ep.body), 401, "Authorization", "bearer token")
			})
			refused++
		}
		if ep.scope != "" && !ep.mint { // minting: TestMintNeedsIngestOrDecide
			t.Run(ep.method+" "+ep.path+"/out of scope", func(t *testing.T) {
				expect(t, e.do(ep.method, ep.path, clientTokenOf(ep.scope), "", ep.body), 403, "Authorization", `"`+string(ep.scope)+`" scope`)
			})
			refused++
		}
		if ep.scope == "" {
			continue
		}
		if ep.scope != auth.ScopeCohort && ep.scope != auth.ScopeMetrics {
			t.Run(ep.method+" "+ep.path+"/read-only token", func(t *testing.T) {
				expect(t, e.do(ep.method, ep.path, roToken, "", ep.body), 403, "Authorization", "scope")
			})
			refused++
		}
		t.Run(ep.method+" "+ep.path+"/another user's token", func(t *testing.T) {
			r := e.do(ep.method, ep.path, mallory, "", ep.body)
			if r.status != 403 {
				t.Fatalf("status %d (%s), want 403", r.status, r.raw)
			}
			switch {
			case ep.path == "/v1/telemetry":
				expect(t, r, 403, "samples[0].user", "own user")
			case ep.perUser, ep.mint:
				expect(t, r, 403, "id", "own user")
			default:
				expect(t, r, 403, "Authorization", `"`+string(ep.scope)+`" scope`)
			}
		})
		refused++
	}
	// A user token's batch with one sample of its own and one of another
	// user is refused whole.
	mixed := []map[string]any{
		{"user": "mallory", "kind": "text", "at": e.ts(0), "text": "mine"},
		{"user": "victim", "kind": "text", "at": e.ts(0), "text": "theirs"},
	}
	expect(t, e.do("POST", "/v1/telemetry", mallory, "", mixed), 403, "samples[1].user", "")
	// A newcomer's user token cannot create a sample for victim either.
	expect(t, e.do("POST", "/v1/telemetry", mintUserToken(t, users, "newcomer"), "application/x-ndjson",
		`{"user":"victim","kind":"text","at":"`+e.ts(0)+`","text":"x"}`+"\n"), 403, "samples[0].user", "")

	if after := snapshot(e); after != before {
		t.Fatalf("the engine changed after %d refused requests:\nbefore:\n%s\nafter:\n%s", refused, before, after)
	}
	if e.do("GET", "/v1/users/mallory/state", rwToken, "", nil).status != 404 {
		t.Fatal("mallory's refused batch left state behind")
	}
	t.Logf("%d requests refused across %d endpoints; nothing stored", refused, len(endpoints(e)))
}

// TestMintNeedsIngestOrDecide: a client with neither scope may not mint;
// one with either may.
func TestMintNeedsIngestOrDecide(t *testing.T) {
	e := startScopedEngine(t)
	expect(t, e.do("POST", "/v1/users/victim/tokens", clientTokenOf(auth.ScopeIngest), "", nil), 200, "", "")
	expect(t, e.do("POST", "/v1/users/victim/tokens", clientTokenOf(auth.ScopeDecide), "", nil), 200, "", "")
	expect(t, e.do("POST", "/v1/users/victim/tokens", roToken, "", nil), 403, "Authorization", `"ingest" or "decide" scope`)
	expect(t, e.do("POST", "/v1/users/victim/tokens", rwToken, "", map[string]any{"ttlSeconds": 3601}), 400, "ttlSeconds", "3600")
	expect(t, e.do("POST", "/v1/users/victim/tokens", rwToken, "", map[string]any{"ttlSeconds": -1}), 400, "ttlSeconds", "")
	expect(t, e.do("POST", "/v1/users/victim/tokens", rwToken, "", map[string]any{"ttl": 60}), 400, "ttl", "")
}

// TestUserTokenActsForItsUser: a minted token reads and writes its own
// user's consent, samples, decisions, state and export, expires when it
// says, and the consent ledger records the user as the change's source.
func TestUserTokenActsForItsUser(t *testing.T) {
	e := startScopedEngine(t)
	minted := e.do("POST", "/v1/users/alice/tokens", rwToken, "", map[string]any{"ttlSeconds": 60})
	expect(t, minted, 200, "", "")
	token, _ := minted.body["token"].(string)
	exp, err := time.Parse(time.RFC3339, fmt.Sprint(minted.body["expiresAt"]))
	if err != nil || time.Until(exp) > time.Minute || time.Until(exp) < 50*time.Second {
		t.Fatalf("expiresAt %v (%v), want about a minute from now", minted.body["expiresAt"], err)
	}
	def := e.do("POST", "/v1/users/alice/tokens", rwToken, "", nil)
	if exp, _ := time.Parse(time.RFC3339, fmt.Sprint(def.body["expiresAt"])); time.Until(exp) > auth.DefaultUserTokenTTL || time.Until(exp) < auth.DefaultUserTokenTTL-10*time.Second {
		t.Fatalf("default expiresAt %v, want 15 minutes from now", def.body["expiresAt"])
	}
	expect(t, e.do("POST", "/v1/users/alice/consent", token, "", map[string]any{"scopes": []string{"text"}}), 200, "", "")
	expect(t, e.do("POST", "/v1/telemetry", token, "", []map[string]any{{"user": "alice", "kind": "text", "at": e.ts(0), "text": "I feel calm"}}), 200, "", "")
	expect(t, e.do("POST", "/v1/users/alice/decisions", token, "", nil), 200, "", "")
	expect(t, e.do("GET", "/v1/users/alice/state", token, "", nil), 200, "", "")
	expect(t, e.do("GET", "/v1/privacy", token, "", nil), 200, "", "")
	export := e.do("GET", "/v1/users/alice/export", token, "", nil)
	expect(t, export, 200, "", "")
	if !strings.Contains(export.raw, `"source":"user"`) {
		t.Fatalf("the consent ledger does not name the user token as the source: %s", export.raw)
	}
	expect(t, e.do("DELETE", "/v1/users/alice", token, "", nil), 403, "Authorization", `"erase" scope`)
	expect(t, e.do("POST", "/v1/users/alice/tokens", token, "", nil), 403, "Authorization", "may not mint")

	verifier, err := auth.NewUserTokens(userTokenKey, "plaza/calm")
	if err != nil {
		t.Fatal(err)
	}
	expired := verifier.WithClock(func() time.Time { return time.Now().Add(-auth.MaxUserTokenTTL - time.Second) })
	stale, _, err := expired.Mint("alice", auth.MaxUserTokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, e.do("GET", "/v1/users/alice/state", stale, "", nil), 401, "Authorization", "")
}
