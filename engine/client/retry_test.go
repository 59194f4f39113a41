package client_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/client"
	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/telemetry"
)

func newServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// faultyProxy stands between the client and a real engine and, for the
// requests fault picks, answers or fails in the engine's place (or after
// it). It exists for the retry tests only: the engine's own 503 (a write
// that lost 20 races with other replicas on a shared store) and a lost
// answer cannot be provoked on demand. Everything else reaches the real
// engine unchanged.
type faultyProxy struct {
	url      string
	mu       sync.Mutex
	attempts map[string]int // by "METHOD path"
}

// A fault is what the proxy does with the attempt-th request to a route.
type fault func(w http.ResponseWriter, r *http.Request, attempt int, forward func(http.ResponseWriter)) bool

func startFaultyProxy(t *testing.T, engineURL string, f fault) *faultyProxy {
	t.Helper()
	target, _ := url.Parse(engineURL)
	rp := httputil.NewSingleHostReverseProxy(target)
	p := &faultyProxy{attempts: map[string]int{}}
	p.url = newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		route := r.Method + " " + r.URL.Path
		p.attempts[route]++
		attempt := p.attempts[route]
		p.mu.Unlock()
		forward := func(w http.ResponseWriter) { rp.ServeHTTP(w, r) }
		if !f(w, r, attempt, forward) {
			forward(w)
		}
	}))
	return p
}

func (p *faultyProxy) count(route string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.attempts[route]
}

// busy answers what the engine answers when a write kept losing races.
func busy(w http.ResponseWriter, retryAfter string) {
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte(`{"error":"the user's state is being changed concurrently; nothing was stored, retry (20 attempts)"}` + "\n"))
}

// dropAnswer lets the engine process the request, then closes the
// connection without an answer: the client cannot tell whether it was
// stored.
func dropAnswer(w http.ResponseWriter, forward func(http.ResponseWriter)) {
	rec := httptest.NewRecorder()
	forward(rec)
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	_ = conn.Close()
}

var fastRetry = client.RetryPolicy{MaxAttempts: 4, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxRetryAfter: 5 * time.Second}

// TestRetryAfterIsHonoured: a 503 with Retry-After means nothing was
// stored, so even telemetry is retried, no sooner than asked.
func TestRetryAfterIsHonoured(t *testing.T) {
	e := startEngine(t, engineConfig("Social", 1))
	ctx := ctxFor(t)
	p := startFaultyProxy(t, e.url, func(w http.ResponseWriter, r *http.Request, attempt int, _ func(http.ResponseWriter)) bool {
		if attempt == 1 && r.Method == http.MethodPost {
			busy(w, "1")
			return true
		}
		return false
	})
	c := newClient(t, p.url, client.WithToken(rwToken), client.WithRetry(fastRetry))
	if _, err := c.SetConsent(ctx, "u1", telemetry.ScopeBehaviour, telemetry.ScopeQuestionnaire); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := c.Ingest(ctx, questionnaires("u1", 5))
	if err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < time.Second {
		t.Errorf("retried after %s, before Retry-After: 1", waited)
	}
	if res.Accepted != 5 || p.count("POST /v1/telemetry") != 2 {
		t.Errorf("accepted %d in %d attempts, want 5 in 2", res.Accepted, p.count("POST /v1/telemetry"))
	}
	if st, err := c.State(ctx, "u1"); err != nil || st.Samples != 5 {
		t.Errorf("state %+v %v, want the batch stored once", st, err)
	}
}

// Test503WithoutRetryAfter: without the engine's promise (a proxy's 503,
// say) a request is sent again only when repeating it is safe: a read, and
// a telemetry batch, which carries an Idempotency-Key.
func Test503WithoutRetryAfter(t *testing.T) {
	e := startEngine(t, engineConfig("Social", 1))
	ctx := ctxFor(t)
	p := startFaultyProxy(t, e.url, func(w http.ResponseWriter, r *http.Request, _ int, _ func(http.ResponseWriter)) bool {
		if r.URL.Path == "/v1/telemetry" || r.URL.Path == "/v1/cohort" {
			busy(w, "")
			return true
		}
		return false
	})
	c := newClient(t, p.url, client.WithToken(rwToken), client.WithRetry(fastRetry))
	_, err := c.Ingest(ctx, questionnaires("u1", 1))
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 503 || !errors.Is(err, client.ErrUnavailable) || p.count("POST /v1/telemetry") != fastRetry.MaxAttempts {
		t.Errorf("ingest: %v after %d attempts, want %d", err, p.count("POST /v1/telemetry"), fastRetry.MaxAttempts)
	}
	if _, err := c.Cohort(ctx); !errors.Is(err, client.ErrUnavailable) || p.count("GET /v1/cohort") != fastRetry.MaxAttempts {
		t.Errorf("cohort: %v after %d attempts, want %d", err, p.count("GET /v1/cohort"), fastRetry.MaxAttempts)
	}
}

// TestLostAnswer: when the engine acted but its answer was lost, a
// decision and a telemetry batch (both carry an Idempotency-Key) are
// retried and answered from what the engine stored: the batch is held
// once, its samples counted once.
func TestLostAnswer(t *testing.T) {
	e := startEngine(t, engineConfig("Social", 1))
	ctx := ctxFor(t)
	p := startFaultyProxy(t, e.url, func(w http.ResponseWriter, r *http.Request, attempt int, forward func(http.ResponseWriter)) bool {
		if attempt == 1 && r.Method == http.MethodPost && !strings.HasSuffix(r.URL.Path, "/consent") {
			dropAnswer(w, forward)
			return true
		}
		return false
	})
	c := newClient(t, p.url, client.WithToken(rwToken), client.WithRetry(fastRetry))
	if _, err := c.SetConsent(ctx, "u1", telemetry.ScopeBehaviour, telemetry.ScopeQuestionnaire); err != nil {
		t.Fatal(err)
	}

	res, replayedBatch, err := c.IngestWithKey(ctx, questionnaires("u1", 4), "")
	if err != nil || res.Accepted != 4 || !replayedBatch {
		t.Fatalf("ingest with a lost answer: %+v, replayed %v, %v; want the first answer, replayed", res, replayedBatch, err)
	}
	if n := p.count("POST /v1/telemetry"); n != 2 {
		t.Errorf("ingest sent %d times, want twice", n)
	}
	st, err := c.State(ctx, "u1")
	if err != nil || st.Samples != 4 {
		t.Fatalf("state %+v %v: the engine committed the batch once", st, err)
	}

	d, replayed, err := c.Decide(ctx, "u1", contract.DecisionRequest{}, "")
	if err != nil {
		t.Fatal(err)
	}
	if n := p.count("POST /v1/users/u1/decisions"); n != 2 || !replayed {
		t.Errorf("decision sent %d times, replayed %v; want the retry answered from the log", n, replayed)
	}
	if st, err := c.State(ctx, "u1"); err != nil || st.LastDecision == nil || st.LastDecision.ID != d.ID {
		t.Errorf("last decision %+v %v, want %s: one decision, taken on the first attempt", st.LastDecision, err, d.ID)
	}
	n := 0
	if _, err := c.SetConsent(ctx, "u1", telemetry.ScopeBehaviour, telemetry.ScopeQuestionnaire, telemetry.ScopeResearch); err != nil {
		t.Fatal(err)
	}
	if err := c.ExportDecisions(ctx, time.Time{}, func(contract.ExportedDecision) error { n++; return nil }); err != nil || n != 1 {
		t.Errorf("the log holds %d decisions (%v), want 1", n, err)
	}
}

// TestRetryAfterBeyondTheDeadline: a Retry-After the context's deadline (or
// MaxRetryAfter) cannot wait for is the call's answer at once.
func TestRetryAfterBeyondTheDeadline(t *testing.T) {
	e := startEngine(t, engineConfig("Social", 1))
	p := startFaultyProxy(t, e.url, func(w http.ResponseWriter, _ *http.Request, _ int, _ func(http.ResponseWriter)) bool {
		busy(w, "3")
		return true
	})
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		policy  client.RetryPolicy
	}{
		{"deadline", 2 * time.Second, fastRetry},
		{"MaxRetryAfter", 30 * time.Second, client.RetryPolicy{MaxAttempts: 4, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxRetryAfter: time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			c := newClient(t, p.url, client.WithToken(rwToken), client.WithRetry(tc.policy))
			start := time.Now()
			_, err := c.Cohort(ctx)
			var apiErr *client.APIError
			if !errors.As(err, &apiErr) || apiErr.RetryAfter != 3*time.Second {
				t.Fatalf("%v, want the 503 with its Retry-After", err)
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("took %s: the client waited for a retry it could not make", took)
			}
		})
	}
}

// TestRetriesStopWithTheContext: a cancelled context ends the retries.
func TestRetriesStopWithTheContext(t *testing.T) {
	e := startEngine(t, engineConfig("Social", 1))
	p := startFaultyProxy(t, e.url, func(w http.ResponseWriter, _ *http.Request, _ int, _ func(http.ResponseWriter)) bool {
		busy(w, "")
		return true
	})
	c := newClient(t, p.url, client.WithToken(rwToken), client.WithRetry(client.RetryPolicy{MaxAttempts: 100, InitialBackoff: 200 * time.Millisecond, MaxBackoff: time.Second}))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	if _, err := c.Cohort(ctx); !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("%v, want the last answer", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %s after the context ended", took)
	}
}

// TestConnectionRefusedIsRetried: a connection that could not be made sent
// nothing, so every request, telemetry too, may try again: the engine
// comes up while the client backs off.
func TestConnectionRefusedIsRetried(t *testing.T) {
	h, _ := newEngineHandler(t, engineConfig("Social", 1))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	srv := &http.Server{Handler: h}
	t.Cleanup(func() { _ = srv.Close() })
	var up atomic.Bool
	time.AfterFunc(300*time.Millisecond, func() {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Error(err)
			return
		}
		up.Store(true)
		go func() { _ = srv.Serve(ln) }()
	})
	c := newClient(t, "http://"+addr, client.WithToken(rwToken),
		client.WithRetry(client.RetryPolicy{MaxAttempts: 20, InitialBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}))
	ctx := ctxFor(t)
	if _, err := c.SetConsent(ctx, "u1", telemetry.ScopeBehaviour, telemetry.ScopeQuestionnaire); err != nil {
		t.Fatal(err)
	}
	if !up.Load() {
		t.Fatal("answered before the engine listened")
	}
	if res, err := c.Ingest(ctx, questionnaires("u1", 2)); err != nil || res.Accepted != 2 {
		t.Fatalf("ingest: %+v %v", res, err)
	}
	// NoRetry: the refusal is the answer, and it says so.
	dead := newClient(t, "http://127.0.0.1:1", client.WithToken(rwToken), client.WithRetry(client.NoRetry))
	if _, err := dead.Cohort(ctx); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("a dead engine: %v", err)
	}
}

// TestTruncatedExportIsAnError: an export stream cut off midway (the
// engine aborts it when its store fails mid-stream; here a proxy cuts the
// real engine's stream after the first line) is an error, after the
// decisions that arrived whole.
func TestTruncatedExportIsAnError(t *testing.T) {
	e := startEngine(t, engineConfig("Social", 1))
	ctx := ctxFor(t)
	c := newClient(t, e.url, client.WithToken(rwToken))
	if _, err := c.SetConsent(ctx, "u1", telemetry.ScopeBehaviour, telemetry.ScopeQuestionnaire, telemetry.ScopeResearch); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, _, err := c.Decide(ctx, "u1", contract.DecisionRequest{}, ""); err != nil {
			t.Fatal(err)
		}
	}
	p := startFaultyProxy(t, e.url, func(w http.ResponseWriter, r *http.Request, _ int, forward func(http.ResponseWriter)) bool {
		if r.URL.Path != "/v1/decisions" {
			return false
		}
		rec := httptest.NewRecorder()
		forward(rec)
		first, _, _ := strings.Cut(rec.Body.String(), "\n")
		w.Header().Set("Content-Type", contract.ContentTypeNDJSON)
		_, _ = w.Write([]byte(first + "\n"))
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler) // as the engine does
	})
	pc := newClient(t, p.url, client.WithToken(rwToken))
	n := 0
	err := pc.ExportDecisions(ctx, time.Time{}, func(contract.ExportedDecision) error { n++; return nil })
	if err == nil || n != 1 {
		t.Errorf("truncated export: %d decisions, error %v; want 1 and an error", n, err)
	}
	if p.count("GET /v1/decisions") != 1 {
		t.Errorf("export sent %d times: a stream that started is not retried", p.count("GET /v1/decisions"))
	}
}
