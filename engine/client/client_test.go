package client_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/client"
	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/telemetry"
)

func newClient(t *testing.T, url string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestLifecycle walks a user through the API against a real engine:
// consent, telemetry, a decision and its idempotent retry, state, cohort,
// the research export, erasure.
func TestLifecycle(t *testing.T) {
	e := startEngine(t, engineConfig("Social", 1))
	ctx := ctxFor(t)
	c := newClient(t, e.url, client.WithToken(rwToken))
	const user = "player-7"

	consent, err := c.SetConsent(ctx, user, telemetry.ScopeResearch, telemetry.ScopeQuestionnaire, telemetry.ScopeBehaviour)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(consent.Scopes, []telemetry.Scope{telemetry.ScopeBehaviour, telemetry.ScopeQuestionnaire, telemetry.ScopeResearch}) || consent.At.IsZero() || !consent.Allows(telemetry.ScopeResearch) {
		t.Errorf("consent = %+v", consent)
	}

	res, err := c.Ingest(ctx, questionnaires(user, 3))
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted != 3 || res.Users != 1 || res.ByKind["questionnaire"] != 3 {
		t.Errorf("ingest = %+v", res)
	}

	// A generated key: the client's own retries are safe; a second call
	// is a new decision point.
	first, replayed, err := c.Decide(ctx, user, contract.DecisionRequest{Context: []string{"between_tasks"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	if replayed || first.ID == "" || first.PolicyVersion == "" || !slices.Equal(first.Context, []string{"between_tasks"}) {
		t.Errorf("first decision = %+v, replayed %v", first, replayed)
	}
	// The caller's key: a retry answers the same decision from the log.
	d, replayed, err := c.Decide(ctx, user, contract.DecisionRequest{}, "break-42")
	if err != nil {
		t.Fatal(err)
	}
	if replayed || d.ID == first.ID {
		t.Errorf("second decision %s replayed %v, want a new one", d.ID, replayed)
	}
	again, replayed, err := c.Decide(ctx, user, contract.DecisionRequest{}, "break-42")
	if err != nil {
		t.Fatal(err)
	}
	if !replayed || again.ID != d.ID || again.Action != d.Action || !again.At.Equal(d.At) {
		t.Errorf("retry = %+v replayed %v, want decision %s replayed", again, replayed, d.ID)
	}

	st, err := c.State(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if st.Samples != 3 || !st.Resilience.Known || st.LastDecision == nil || st.LastDecision.ID != d.ID {
		t.Errorf("state = %+v", st)
	}

	ro := newClient(t, e.url, client.WithToken(roToken))
	cohort, err := ro.Cohort(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !cohort.Published || cohort.Size == nil || *cohort.Size != 1 || cohort.Scope != "replica" || cohort.Strength != 0.5 || cohort.PolicyVersion != d.PolicyVersion {
		t.Errorf("cohort = %+v", cohort)
	}

	var exported []contract.ExportedDecision
	if err := c.ExportDecisions(ctx, time.Time{}, func(x contract.ExportedDecision) error {
		exported = append(exported, x)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(exported) != 2 || exported[0].ID != first.ID || exported[1].ID != d.ID {
		t.Fatalf("exported %+v, want decisions %s and %s", exported, first.ID, d.ID)
	}
	for _, x := range exported {
		if x.User != e.svc.Pseudonym(user) || x.User == user {
			t.Errorf("exported under %q, want the pseudonym", x.User)
		}
	}
	// since: only the later decision (IDs and times are in order).
	var later []string
	if err := c.ExportDecisions(ctx, d.At, func(x contract.ExportedDecision) error {
		later = append(later, x.ID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(later, d.ID) || (first.At.Before(d.At) && slices.Contains(later, first.ID)) {
		t.Errorf("since %s exported %v", d.At, later)
	}
	// fn's error ends the export and is returned.
	stop := errors.New("enough")
	calls := 0
	if err := c.ExportDecisions(ctx, time.Time{}, func(contract.ExportedDecision) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Errorf("export with a failing fn: %v after %d calls", err, calls)
	}
	// Without the research scope the user's decisions are not exported.
	if consent, err = c.WithdrawConsent(ctx, user, telemetry.ScopeResearch); err != nil || !slices.Equal(consent.Scopes, []telemetry.Scope{telemetry.ScopeBehaviour, telemetry.ScopeQuestionnaire}) {
		t.Fatalf("withdraw research: %+v %v", consent, err)
	}
	n := 0
	if err := c.ExportDecisions(ctx, time.Time{}, func(contract.ExportedDecision) error { n++; return nil }); err != nil || n != 0 {
		t.Errorf("export without research consent: %d decisions, %v", n, err)
	}

	if err := c.Erase(ctx, user); err != nil {
		t.Fatal(err)
	}
	_, err = c.State(ctx, user)
	var apiErr *client.APIError
	if !errors.Is(err, client.ErrUnknownUser) || !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound || apiErr.Field != "id" {
		t.Fatalf("state after erasure: %v, want a 404 unknown user", err)
	}
	if err := c.Erase(ctx, user); !errors.Is(err, client.ErrUnknownUser) {
		t.Errorf("second erasure: %v, want unknown user", err)
	}
	if _, err := c.WithdrawConsent(ctx, user); !errors.Is(err, client.ErrUnknownUser) {
		t.Errorf("withdraw all of an erased user: %v, want unknown user", err)
	}
	// New telemetry needs new consent.
	if _, err := c.Ingest(ctx, questionnaires(user, 1)); !errors.Is(err, client.ErrNoConsent) {
		t.Errorf("telemetry after erasure: %v, want no consent", err)
	}
}

// TestTypedErrors: the engine's error answers decode into *APIError and
// match the sentinels.
func TestTypedErrors(t *testing.T) {
	e := startEngine(t, engineConfig("Workplace", 2))
	ctx := ctxFor(t)
	c := newClient(t, e.url, client.WithToken(rwToken))
	if _, err := c.SetConsent(ctx, "u1", telemetry.ScopeBehaviour, telemetry.ScopeQuestionnaire, telemetry.ScopePhysiology); err != nil {
		t.Fatal(err)
	}
	bpm := 70.0
	available := false

	cases := []struct {
		name   string
		call   func() error
		is     error
		status int
		field  string
	}{
		{"no token", func() error { _, err := newClient(t, e.url).Cohort(ctx); return err }, client.ErrUnauthenticated, 401, "Authorization"},
		{"wrong token", func() error { _, err := newClient(t, e.url, client.WithToken("nope")).Cohort(ctx); return err }, client.ErrUnauthenticated, 401, "Authorization"},
		{"read-only token", func() error { _, err := newClient(t, e.url, client.WithToken(roToken)).State(ctx, "u1"); return err }, client.ErrReadOnlyToken, 403, "Authorization"},
		{"unknown user", func() error { _, err := c.State(ctx, "nobody"); return err }, client.ErrUnknownUser, 404, "id"},
		{"no consent", func() error { _, err := c.Ingest(ctx, []telemetry.Sample{mood("nobody", time.Now(), 3)}); return err }, client.ErrNoConsent, 403, "samples[0].user"},
		{"no consent for the kind", func() error {
			_, err := c.Ingest(ctx, []telemetry.Sample{{User: "u1", Kind: telemetry.KindText, At: time.Now(), Text: "hi", Source: "chat"}})
			return err
		}, client.ErrNoConsent, 403, "samples[0].kind"},
		{"prohibited", func() error {
			_, err := c.Ingest(ctx, []telemetry.Sample{{User: "u1", Kind: telemetry.KindHeartRate, At: time.Now(), BPM: &bpm}})
			return err
		}, client.ErrProhibited, 403, "samples[0].kind"},
		{"invalid sample", func() error { _, err := c.Ingest(ctx, []telemetry.Sample{mood("u1", time.Now(), 9)}); return err }, client.ErrInvalid, 400, "samples[0].mood"},
		{"empty batch", func() error { _, err := c.Ingest(ctx, nil); return err }, client.ErrInvalid, 400, "samples"},
		{"unknown scope", func() error { _, err := c.SetConsent(ctx, "u1", "telepathy"); return err }, client.ErrInvalid, 400, "scopes[0]"},
		{"unknown context tag", func() error {
			_, _, err := c.Decide(ctx, "u1", contract.DecisionRequest{Context: []string{"idle", "napping"}}, "")
			return err
		}, client.ErrInvalid, 400, "context[1]"},
		{"bad idempotency key", func() error { _, _, err := c.Decide(ctx, "u1", contract.DecisionRequest{}, "has space"); return err }, client.ErrInvalid, 400, "Idempotency-Key"},
		{"idempotency mismatch", func() error {
			if _, _, err := c.Decide(ctx, "u1", contract.DecisionRequest{}, "k-1"); err != nil {
				return err
			}
			_, _, err := c.Decide(ctx, "u1", contract.DecisionRequest{Available: &available}, "k-1")
			return err
		}, client.ErrIdempotencyMismatch, 422, "Idempotency-Key"},
	}
	sentinels := []error{client.ErrUnauthenticated, client.ErrReadOnlyToken, client.ErrNoConsent, client.ErrProhibited, client.ErrUnknownUser,
		client.ErrInvalid, client.ErrTooLarge, client.ErrIdempotencyMismatch, client.ErrUnavailable}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var apiErr *client.APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %v (%T), want an *APIError", err, err)
			}
			if apiErr.Status != tc.status || apiErr.Field != tc.field || apiErr.Message == "" {
				t.Errorf("%+v, want status %d field %q", apiErr, tc.status, tc.field)
			}
			for _, s := range sentinels {
				if got := errors.Is(err, s); got != errors.Is(s, tc.is) {
					t.Errorf("errors.Is(%v, %v) = %v", err, s, got)
				}
			}
			if !strings.Contains(err.Error(), apiErr.Message) {
				t.Errorf("Error() %q lacks the engine's message", err)
			}
		})
	}
}

// TestUserIDsAreEscaped: any canonical user ID reaches the engine as one
// path segment; the client refuses the rest before sending.
func TestUserIDsAreEscaped(t *testing.T) {
	e := startEngine(t, engineConfig("Social", 1))
	ctx := ctxFor(t)
	c := newClient(t, e.url, client.WithToken(rwToken))
	for _, user := range []string{"guild:42", "ünïcôdé", "a.b", "a..b", "x~y", "user@example.com", "a+b", "山田太郎"} {
		if _, err := c.SetConsent(ctx, user, telemetry.ScopeBehaviour, telemetry.ScopeQuestionnaire); err != nil {
			t.Fatalf("%q: consent: %v", user, err)
		}
		if _, err := c.Ingest(ctx, []telemetry.Sample{mood(user, time.Now(), 4)}); err != nil {
			t.Fatalf("%q: ingest: %v", user, err)
		}
		st, err := c.State(ctx, user)
		if err != nil || st.Samples != 1 {
			t.Fatalf("%q: state %+v %v, want the user's one sample", user, st, err)
		}
		if err := c.Erase(ctx, user); err != nil {
			t.Fatalf("%q: erase: %v", user, err)
		}
	}
	for _, user := range []string{"", strings.Repeat("x", 129), "tab\there", "bad\xffutf8", "/", "guild/42", "a b", "%", "..", ".", "..%2F..%2Fadmin", "victim-1\u200b"} {
		if _, err := c.State(ctx, user); err == nil || errors.As(err, new(*client.APIError)) {
			t.Errorf("%q: %v, want the client to refuse the ID", user, err)
		}
	}
}

func TestNewRefusesBadSettings(t *testing.T) {
	for _, tc := range []struct {
		url  string
		opts []client.Option
	}{
		{"ftp://engine:8080", nil},
		{"engine:8080", nil},
		{"http://", nil},
		{"http://engine:8080/?x=1", nil},
		{"http://engine:8080", []client.Option{client.WithServerName("engine")}},                   // TLS options on http
		{"https://engine:8443", []client.Option{client.WithCABundle([]byte("not a certificate"))}}, // no PEM
		{"https://engine:8443", []client.Option{client.WithCAFile("/nonexistent/ca.crt")}},
		{"https://engine:8443", []client.Option{client.WithTransport(roundTripFunc(nil)), client.WithServerName("engine")}},
		{"http://engine:8080", []client.Option{client.WithRetry(client.RetryPolicy{MaxAttempts: 3})}},
	} {
		if _, err := client.New(tc.url, tc.opts...); err == nil {
			t.Errorf("New(%q, %d options) accepted", tc.url, len(tc.opts))
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestBasePathPrefix: a base URL with a path (an engine behind a proxy
// under a prefix) keeps it.
func TestBasePathPrefix(t *testing.T) {
	e := startEngine(t, engineConfig("Social", 1))
	mux := http.NewServeMux()
	mux.Handle("/engine/", http.StripPrefix("/engine", e.api))
	srv := newServer(t, mux)
	c := newClient(t, srv+"/engine/", client.WithToken(roToken))
	if _, err := c.Cohort(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
}
