package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/api"
	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/metrics"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/test/postgres"
)

const (
	rwToken = "rw-token-0123456789"
	roToken = "ro-token-9876543210"
)

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type engine struct {
	t     *testing.T
	url   string
	svc   *service.Service
	clock *fakeClock
	logs  *bytes.Buffer
	store store.Store
}

// backends are the stores the API is tested over: the embedded bbolt file
// and a real PostgreSQL server (one database per engine).
var backends = []struct {
	name string
	open func(t *testing.T) store.Store
}{
	{"bolt", func(t *testing.T) store.Store {
		db, err := store.OpenBolt(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return db
	}},
	{"postgres", func(t *testing.T) store.Store {
		db, err := store.OpenPostgres(context.Background(), postgres.Start(t).ConnString, "plaza/calm")
		if err != nil {
			t.Fatal(err)
		}
		return db
	}},
}

// eachBackend runs a test once per store backend.
func eachBackend(t *testing.T, test func(t *testing.T, open func(t *testing.T) store.Store)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { test(t, b.open) })
	}
}

func testConfig(context string, minCohort int) *config.Config {
	return &config.Config{
		Program:       "plaza/calm",
		Target:        config.Vector{Attention: 0.8, Emotion: 0.7, Resilience: 0.7},
		Weights:       config.Vector{Attention: 1, Emotion: 1, Resilience: 1},
		Interventions: []string{"BodyScan", "MicroBreak", "ResonanceBreathing"},
		Strength:      config.Strength{Value: 0.5, Min: 0.1, Max: 0.9},
		Context:       context,
		Privacy:       config.Privacy{Retention: config.Duration{Duration: 24 * time.Hour}, MinCohortSize: minCohort},
		TokenFile:     "unused", ReadOnlyTokenFile: "unused", PseudonymizationKeyFile: "unused",
		DataDir: "unused", ListenAddress: "unused", Seed: 42,
	}
}

// startEngine runs the real API on a loopback HTTP server over a real
// bbolt store.
func startEngine(t *testing.T, cfg *config.Config) *engine {
	t.Helper()
	return startEngineOn(t, cfg, backends[0].open(t))
}

// startEngineOn runs the real API on a loopback HTTP server over db.
func startEngineOn(t *testing.T, cfg *config.Config, db store.Store) *engine {
	t.Helper()
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
	srv := httptest.NewServer(api.New(svc, m, api.Tokens{ReadWrite: rwToken, ReadOnly: roToken}, logger))
	t.Cleanup(srv.Close)
	return &engine{t: t, url: srv.URL, svc: svc, clock: clock, logs: logs, store: db}
}

type response struct {
	status int
	body   map[string]any
	raw    string
}

func (e *engine) do(method, path, token, contentType string, body any) response {
	e.t.Helper()
	headers := http.Header{}
	if contentType != "" {
		headers.Set("Content-Type", contentType)
	}
	r, _ := e.doWith(method, path, token, headers, body)
	return r
}

// doWith sends a request with extra headers and returns the answer and its
// headers.
func (e *engine) doWith(method, path, token string, headers http.Header, body any) (response, http.Header) {
	e.t.Helper()
	var reader io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		reader = strings.NewReader(b)
	case []byte:
		reader = bytes.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		reader = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, e.url+path, reader)
	if headers != nil {
		req.Header = headers.Clone()
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, raw: string(raw)}
	_ = json.Unmarshal(raw, &r.body)
	return r, resp.Header
}

func (e *engine) consent(user string, scopes ...string) {
	e.t.Helper()
	if r := e.do("POST", "/v1/users/"+user+"/consent", rwToken, "", map[string]any{"scopes": scopes}); r.status != 200 {
		e.t.Fatalf("consent: %d %s", r.status, r.raw)
	}
}

func (e *engine) telemetry(samples ...map[string]any) response {
	e.t.Helper()
	return e.do("POST", "/v1/telemetry", rwToken, "application/json", samples)
}

func (e *engine) ts(offset time.Duration) string {
	return e.clock.Now().Add(offset).Format(time.RFC3339Nano)
}

func rrSeries(n int) []float64 {
	rr := make([]float64, n)
	for i := range rr {
		rr[i] = 800 + float64(i%2)*30
	}
	return rr
}

func expect(t *testing.T, r response, status int, field, errorContains string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d (%s), want %d", r.status, r.raw, status)
	}
	if field != "" && r.body["field"] != field {
		t.Fatalf("field %v (%s), want %s", r.body["field"], r.raw, field)
	}
	if errorContains != "" && !strings.Contains(fmt.Sprint(r.body["error"]), errorContains) {
		t.Fatalf("error %q, want it to contain %q", r.body["error"], errorContains)
	}
}

func TestAuthTokens(t *testing.T) {
	e := startEngine(t, testConfig("Social", 2))
	expect(t, e.do("GET", "/v1/cohort", "", "", nil), 401, "Authorization", "bearer token")
	expect(t, e.do("GET", "/v1/cohort", "wrong", "", nil), 401, "Authorization", "")
	expect(t, e.do("GET", "/v1/cohort", roToken, "", nil), 200, "", "")
	expect(t, e.do("GET", "/metrics", roToken, "", nil), 200, "", "")
	expect(t, e.do("GET", "/metrics", "", "", nil), 401, "", "")
	expect(t, e.do("POST", "/v1/users/u1/consent", roToken, "", map[string]any{"scopes": []string{"text"}}), 403, "Authorization", "read-only")
	expect(t, e.do("POST", "/v1/telemetry", roToken, "", "[]"), 403, "Authorization", "read-only")
	expect(t, e.do("GET", "/v1/users/u1/state", roToken, "", nil), 403, "Authorization", "read-only")
	expect(t, e.do("GET", "/v1/cohort", rwToken, "", nil), 200, "", "")
	expect(t, e.do("GET", "/healthz", "", "", nil), 200, "", "")
	expect(t, e.do("GET", "/readyz", "", "", nil), 200, "", "")
}

func TestConsentGate(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		e := startEngineOn(t, testConfig("Social", 2), open(t))
		text := map[string]any{"user": "alice", "kind": "text", "at": e.ts(0), "text": "I feel calm"}
		rr := map[string]any{"user": "alice", "kind": "rr", "at": e.ts(0), "rr_ms": rrSeries(90)}

		expect(t, e.telemetry(text), 403, "samples[0].user", `"text"`)
		e.consent("alice", "text")
		expect(t, e.telemetry(text), 200, "", "")
		expect(t, e.telemetry(text, rr), 403, "samples[1].kind", `scope "physiology"`)
		e.consent("alice", "text", "physiology")
		r := e.telemetry(text, rr)
		expect(t, r, 200, "", "")
		if r.body["accepted"].(float64) != 2 {
			t.Errorf("accepted = %v", r.body["accepted"])
		}
		// Withdraw physiology only: RR rejected again, text still fine.
		expect(t, e.do("DELETE", "/v1/users/alice/consent", rwToken, "", map[string]any{"scopes": []string{"physiology"}}), 200, "", "")
		expect(t, e.telemetry(rr), 403, "samples[0].kind", "physiology")
		expect(t, e.telemetry(text), 200, "", "")
		expect(t, e.do("POST", "/v1/users/alice/consent", rwToken, "", map[string]any{"scopes": []string{"dreams"}}), 400, "scopes[0]", "unknown scope")
	})
}

func TestWorkplaceRejectsPhysiologyForEmotion(t *testing.T) {
	for _, context := range []string{"Workplace", "Education"} {
		t.Run(context, func(t *testing.T) {
			e := startEngine(t, testConfig(context, 2))
			e.consent("bob", "behaviour", "questionnaire", "physiology", "text")
			r := e.telemetry(map[string]any{"user": "bob", "kind": "rr", "at": e.ts(0), "rr_ms": rrSeries(90)})
			expect(t, r, 403, "samples[0].kind", "Art. 5(1)(f)")
			r = e.telemetry(map[string]any{"user": "bob", "kind": "heart_rate", "at": e.ts(0), "bpm": 70})
			expect(t, r, 403, "samples[0].kind", "EU AI Act")
			expect(t, e.telemetry(
				map[string]any{"user": "bob", "kind": "text", "at": e.ts(0), "text": "Great teamwork today, I am happy"},
				map[string]any{"user": "bob", "kind": "questionnaire", "at": e.ts(0), "mood": 4},
			), 200, "", "")
			state := e.do("GET", "/v1/users/bob/state", rwToken, "", nil)
			expect(t, state, 200, "", "")
			if state.body["emotionFromPhysiology"] != false {
				t.Error("state claims physiology may count toward emotion")
			}
			for _, ev := range state.body["emotion"].(map[string]any)["evidence"].([]any) {
				if src := ev.(map[string]any)["source"]; src != "text" && src != "self-report" {
					t.Errorf("emotion rests on %v in a %s world", src, context)
				}
			}
		})
	}
}

func TestState(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		e := startEngineOn(t, testConfig("Social", 2), open(t))
		e.consent("carol", "behaviour", "questionnaire", "physiology", "text")
		trials := []map[string]any{}
		for i := range 30 {
			digit := 5
			if i%9 == 0 {
				digit = 3
			}
			trials = append(trials, map[string]any{"digit": digit, "responded": digit != 3, "rt_ms": map[bool]float64{true: 400, false: 0}[digit != 3]})
		}
		expect(t, e.telemetry(
			map[string]any{"user": "carol", "kind": "rr", "at": e.ts(0), "rr_ms": rrSeries(100)},
			map[string]any{"user": "carol", "kind": "sart", "at": e.ts(0), "trials": trials},
			map[string]any{"user": "carol", "kind": "questionnaire", "at": e.ts(0), "brs": []int{4, 2, 4, 2, 4, 2}},
			map[string]any{"user": "carol", "kind": "text", "at": e.ts(0), "text": "Feeling a bit stressed about the exam"},
		), 200, "", "")
		r := e.do("GET", "/v1/users/carol/state", rwToken, "", nil)
		expect(t, r, 200, "", "")
		for _, dim := range []string{"attention", "emotion", "resilience"} {
			d := r.body[dim].(map[string]any)
			if d["known"] != true || d["confidence"].(float64) <= 0 || len(d["evidence"].([]any)) == 0 {
				t.Errorf("%s = %v, want a known estimate with evidence", dim, d)
			}
		}
		// BRS [4,2,4,2,4,2] → all 4 after reversal → r = 0.75.
		if v := r.body["resilience"].(map[string]any)["value"].(float64); math.Abs(v-0.75) > 1e-9 {
			t.Errorf("resilience = %v, want 0.75", v)
		}
		if r.body["loss"] == nil {
			t.Error("no loss")
		}
		if r.body["lastDecision"] != nil {
			t.Errorf("lastDecision = %v before any decision point", r.body["lastDecision"])
		}
		expect(t, e.do("GET", "/v1/users/nobody/state", rwToken, "", nil), 404, "id", "unknown user")
	})
}

func TestErasure(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		e := startEngineOn(t, testConfig("Social", 2), open(t))
		e.consent("dave", "text")
		expect(t, e.telemetry(map[string]any{"user": "dave", "kind": "text", "at": e.ts(0), "text": "hello"}), 200, "", "")
		expect(t, e.do("DELETE", "/v1/users/dave", rwToken, "", nil), 204, "", "")
		expect(t, e.do("GET", "/v1/users/dave/state", rwToken, "", nil), 404, "id", "")
		expect(t, e.do("DELETE", "/v1/users/dave", rwToken, "", nil), 404, "id", "")
		// Nothing about dave is left in the database.
		n := 0
		_ = e.store.EachUser(context.Background(), func(string, store.Item) error { n++; return nil })
		if n != 0 {
			t.Errorf("%d user records remain after erasure", n)
		}
		// Unknown again: telemetry needs new consent.
		expect(t, e.telemetry(map[string]any{"user": "dave", "kind": "text", "at": e.ts(0), "text": "hello"}), 403, "samples[0].user", "consent")
	})
}

func TestRetentionSweep(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		e := startEngineOn(t, testConfig("Social", 2), open(t))
		e.consent("erin", "text")
		e.clock.Advance(20 * time.Hour)
		e.consent("frank", "text")
		e.clock.Advance(5 * time.Hour) // erin last seen 25h ago, frank 5h ago; retention 24h
		deleted, err := e.svc.Sweep(context.Background())
		if err != nil || deleted != 1 {
			t.Fatalf("sweep deleted %d (%v), want 1", deleted, err)
		}
		expect(t, e.do("GET", "/v1/users/erin/state", rwToken, "", nil), 404, "", "")
		expect(t, e.do("GET", "/v1/users/frank/state", rwToken, "", nil), 200, "", "")
	})
}

func TestCohortIsKAnonymous(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		e := startEngineOn(t, testConfig("Social", 11), open(t))
		for i := range 10 {
			user := fmt.Sprintf("user-%02d", i)
			e.consent(user, "behaviour", "questionnaire")
			expect(t, e.telemetry(map[string]any{"user": user, "kind": "questionnaire", "at": e.ts(0), "brs": []int{3, 3, 3, 3, 3, 3}}), 200, "", "")
		}
		r := e.do("GET", "/v1/cohort", roToken, "", nil)
		if r.body["published"] != false || r.body["size"] != nil || r.body["loss"] != nil {
			t.Fatalf("10 users under k=11: %s", r.raw)
		}
		metricsText := e.do("GET", "/metrics", roToken, "", nil).raw
		if strings.Contains(metricsText, "attune_engine_cohort_loss{") || !strings.Contains(metricsText, `attune_engine_cohort_published{program="plaza/calm"} 0`) {
			t.Errorf("metrics publish the loss below k")
		}

		e.consent("user-10", "behaviour", "questionnaire")
		expect(t, e.telemetry(map[string]any{"user": "user-10", "kind": "questionnaire", "at": e.ts(0), "brs": []int{3, 3, 3, 3, 3, 3}}), 200, "", "")
		r = e.do("GET", "/v1/cohort", roToken, "", nil)
		// Every user: resilience 0.5 vs target 0.7 → loss 0.04 (only dimension known).
		if r.body["published"] != true || r.body["size"].(float64) != 11 || fmt.Sprintf("%.4f", r.body["loss"]) != "0.0400" {
			t.Fatalf("11 users: %s", r.raw)
		}
		metricsText = e.do("GET", "/metrics", roToken, "", nil).raw
		if !strings.Contains(metricsText, `attune_engine_cohort_size{program="plaza/calm"} 11`) {
			t.Errorf("metrics lack the published cohort size")
		}
		// No user identifier in metrics or logs.
		for i := range 11 {
			id := fmt.Sprintf("user-%02d", i)
			if strings.Contains(metricsText, id) || strings.Contains(e.logs.String(), id) {
				t.Errorf("user id %s appears in metrics or logs", id)
			}
		}
	})
}

func TestBadInput(t *testing.T) {
	e := startEngine(t, testConfig("Social", 2))
	e.consent("gina", "behaviour", "questionnaire", "physiology", "text")
	good := func() map[string]any {
		return map[string]any{"user": "gina", "kind": "text", "at": e.ts(0), "text": "ok"}
	}
	with := func(changes map[string]any) map[string]any {
		s := good()
		for k, v := range changes {
			if v == nil {
				delete(s, k)
			} else {
				s[k] = v
			}
		}
		return s
	}
	bigBatch := make([]map[string]any, 1001)
	for i := range bigBatch {
		bigBatch[i] = good()
	}
	cases := []struct {
		name   string
		body   any
		ctype  string
		status int
		field  string
	}{
		{"malformed JSON", `[{"user": "gina",`, "", 400, "samples[0]"},
		{"not an array", `{"user": "gina"}`, "", 400, "samples"},
		{"unknown field", []map[string]any{with(map[string]any{"mood_ring": 1})}, "", 400, "samples[0].mood_ring"},
		{"wrong type", []map[string]any{with(map[string]any{"text": 42})}, "", 400, "samples[0].text"},
		{"unknown kind", []map[string]any{with(map[string]any{"kind": "telepathy"})}, "", 400, "samples[0].kind"},
		{"missing timestamp", []map[string]any{with(map[string]any{"at": nil})}, "", 400, "samples[0].at"},
		{"future timestamp", []map[string]any{with(map[string]any{"at": e.ts(time.Hour)})}, "", 400, "samples[0].at"},
		{"field of another kind", []map[string]any{with(map[string]any{"bpm": 70})}, "", 400, "samples[0].bpm"},
		{"text too long", []map[string]any{with(map[string]any{"text": strings.Repeat("a", 2001)})}, "", 400, "samples[0].text"},
		{"negative RR", []map[string]any{{"user": "gina", "kind": "rr", "at": e.ts(0), "rr_ms": []float64{800, -5}}}, "", 400, "samples[0].rr_ms[1]"},
		{"impossible heart rate", []map[string]any{{"user": "gina", "kind": "heart_rate", "at": e.ts(0), "bpm": 900}}, "", 400, "samples[0].bpm"},
		{"BRS wrong length", []map[string]any{{"user": "gina", "kind": "questionnaire", "at": e.ts(0), "brs": []int{1, 2, 3}}}, "", 400, "samples[0].brs"},
		{"BRS answer 7", []map[string]any{{"user": "gina", "kind": "questionnaire", "at": e.ts(0), "brs": []int{1, 2, 3, 4, 5, 7}}}, "", 400, "samples[0].brs[5]"},
		{"SART digit 12", []map[string]any{{"user": "gina", "kind": "sart", "at": e.ts(0), "trials": []map[string]any{{"digit": 12, "responded": false}}}}, "", 400, "samples[0].trials[0].digit"},
		{"unknown intervention", []map[string]any{{"user": "gina", "kind": "intervention", "at": e.ts(0), "intervention": "Hypnosis", "completed": true}}, "", 400, "samples[0].intervention"},
		{"disabled intervention", []map[string]any{{"user": "gina", "kind": "intervention", "at": e.ts(0), "intervention": "BodyScan"}}, "", 400, "samples[0].completed"},
		{"unknown event", []map[string]any{{"user": "gina", "kind": "behaviour", "at": e.ts(0), "events": []map[string]any{{"type": "teleport", "at": e.ts(0)}}}}, "", 400, "samples[0].events[0].type"},
		{"empty batch", `[]`, "", 400, "samples"},
		{"too many samples", bigBatch, "", 413, "samples"},
		{"invalid UTF-8", []byte("[{\"user\":\"gina\",\"kind\":\"text\",\"at\":\"" + e.ts(0) + "\",\"text\":\"\xff\xfe\"}]"), "", 400, "samples[0].text"},
		{"oversized body", `[` + strings.Repeat(" ", 2<<20) + `]`, "", 413, "body"},
		{"bad NDJSON line", "{\"user\":\"gina\",\"kind\":\"text\",\"at\":\"" + e.ts(0) + "\",\"text\":\"ok\"}\n{nope}\n", "application/x-ndjson", 400, "samples[1]"},
		{"empty user id", []map[string]any{with(map[string]any{"user": ""})}, "", 400, "samples[0].user"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctype := tc.ctype
			if ctype == "" {
				ctype = "application/json"
			}
			r := e.do("POST", "/v1/telemetry", rwToken, ctype, tc.body)
			expect(t, r, tc.status, tc.field, "")
			if r.body["error"] == "" || r.body["error"] == nil {
				t.Errorf("no error message: %s", r.raw)
			}
		})
	}

	// A bad sample rejects the whole batch: the good sample before it is not stored.
	before := e.do("GET", "/v1/users/gina/state", rwToken, "", nil)
	if before.status != 200 || before.body["emotion"].(map[string]any)["known"] != false {
		t.Fatalf("state before: %s", before.raw)
	}
	expect(t, e.telemetry(good(), with(map[string]any{"text": 7})), 400, "samples[1].text", "")
	after := e.do("GET", "/v1/users/gina/state", rwToken, "", nil)
	if after.body["emotion"].(map[string]any)["known"] != false {
		t.Error("part of a rejected batch was stored")
	}
	// NDJSON works.
	nd := "{\"user\":\"gina\",\"kind\":\"text\",\"at\":\"" + e.ts(0) + "\",\"text\":\"lovely day\"}\n{\"user\":\"gina\",\"kind\":\"questionnaire\",\"at\":\"" + e.ts(0) + "\",\"mood\":5}\n"
	r := e.do("POST", "/v1/telemetry", rwToken, "application/x-ndjson", nd)
	expect(t, r, 200, "", "")
	if r.body["accepted"].(float64) != 2 {
		t.Errorf("NDJSON accepted %v, want 2", r.body["accepted"])
	}
	// Rejections are counted by reason.
	if m := e.do("GET", "/metrics", roToken, "", nil).raw; !strings.Contains(m, `attune_engine_requests_rejected_total{program="plaza/calm",reason="invalid"}`) ||
		!strings.Contains(m, `reason="too_large"`) {
		t.Error("rejections are not counted by reason")
	}
}

// TestSettledDecisionUpdatesPolicy: a randomised decision's outcome, once
// settled, feeds the population prior of its candidate; an intervention
// sample without a decision teaches nothing (it was not randomised).
func TestSettledDecisionUpdatesPolicy(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		e := startEngineOn(t, testConfig("Social", 2), open(t))
		e.consent("hana", "behaviour", "questionnaire")
		expect(t, e.telemetry(map[string]any{"user": "hana", "kind": "questionnaire", "at": e.ts(0), "brs": []int{2, 4, 2, 4, 2, 4}}), 200, "", "")
		expect(t, e.telemetry(map[string]any{"user": "hana", "kind": "intervention", "at": e.ts(0), "intervention": "ResonanceBreathing", "completed": true, "rating": 5}), 200, "", "")
		if item, _ := e.store.Meta(context.Background(), "population"); item.Value != nil {
			t.Fatalf("an unlinked intervention sample changed the prior: %s", item.Value)
		}
		d := mustDecide(e, "hana")
		expect(t, d, 200, "", "")
		candidate := d.body["candidate"].(string)
		e.clock.Advance(11 * time.Minute)
		expect(t, e.telemetry(map[string]any{"user": "hana", "kind": "questionnaire", "at": e.ts(0), "brs": []int{4, 2, 4, 2, 4, 2}}), 200, "", "")
		// On a shared store with no aggregate snapshot yet the refresh that
		// stores the prior runs in the background, after the request
		// (docs/engine-model.md, "Aggregates at scale"): wait for it.
		var item store.Item
		var err error
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			item, err = e.store.Meta(context.Background(), "population")
			if err == nil && strings.Contains(string(item.Value), candidate) || time.Now().After(deadline) {
				break
			}
		}
		if err != nil || !strings.Contains(string(item.Value), candidate) {
			t.Fatalf("population prior after the outcome of a %s decision: %s (%v)", candidate, item.Value, err)
		}
	})
}

// TestReadinessFollowsTheStore: with the shared store down the engine is
// not ready (the Service stops routing to it) but stays alive (no restart
// storm during a database outage).
func TestReadinessFollowsTheStore(t *testing.T) {
	server := postgres.Start(t)
	db, err := store.OpenPostgres(context.Background(), server.ConnString, "plaza/calm")
	if err != nil {
		t.Fatal(err)
	}
	e := startEngineOn(t, testConfig("Social", 2), db)
	expect(t, e.do("GET", "/readyz", "", "", nil), 200, "", "")
	server.Stop()
	r := e.do("GET", "/readyz", "", "", nil)
	if r.status != 503 || strings.Contains(r.raw, "127.0.0.1") {
		t.Errorf("readyz with the database down: %d %s; want 503 without connection details", r.status, r.raw)
	}
	expect(t, e.do("GET", "/healthz", "", "", nil), 200, "", "")
	// A write fails without acknowledging anything: 503, retry later.
	if r, h := e.doWith("POST", "/v1/users/ivy/consent", rwToken, nil, map[string]any{"scopes": []string{"text"}}); r.status != 503 || h.Get("Retry-After") == "" {
		t.Errorf("consent with the database down: %d %s (Retry-After %q), want 503 with Retry-After", r.status, r.raw, h.Get("Retry-After"))
	}
}
