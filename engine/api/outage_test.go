package api_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/test/pgfault"
	"github.com/attune-io/attune/test/postgres"
)

// reopenable is a store location a test can open, close and open again
// (an engine restart), on each backend.
func reopenable(t *testing.T) []struct {
	name string
	open func(t *testing.T) store.Store
} {
	dir := t.TempDir()
	var server *postgres.Server
	return []struct {
		name string
		open func(t *testing.T) store.Store
	}{
		{"bolt", func(t *testing.T) store.Store {
			db, err := store.OpenBolt(dir)
			if err != nil {
				t.Fatal(err)
			}
			return db
		}},
		{"postgres", func(t *testing.T) store.Store {
			if server == nil {
				server = postgres.Start(t)
			}
			db, err := store.OpenPostgres(context.Background(), server.ConnString, "plaza/calm")
			if err != nil {
				t.Fatal(err)
			}
			return db
		}},
	}
}

// TestIngestIdempotencyKey: a retried batch (same Idempotency-Key, same
// body) gets the first answer with Idempotent-Replayed and stores nothing
// twice, also after the engine restarted; the same key with another body
// is refused (422); on both stores.
func TestIngestIdempotencyKey(t *testing.T) {
	for _, b := range reopenable(t) {
		t.Run(b.name, func(t *testing.T) {
			e := startEngineOn(t, testConfig("Social", 2), b.open(t))
			e.consent("u1", "physiology")
			batch := []map[string]any{
				{"user": "u1", "kind": "heart_rate", "at": e.ts(-time.Minute), "bpm": 71},
				{"user": "u1", "kind": "rr", "at": e.ts(0), "rr_ms": rrSeries(20)},
			}
			send := func(e *engine, key string, body any) (response, http.Header) {
				return e.doWith("POST", "/v1/telemetry", rwToken, http.Header{"Idempotency-Key": {key}, "Content-Type": {"application/json"}}, body)
			}
			first, h := send(e, "batch-0001", batch)
			if first.status != 200 || first.body["accepted"] != float64(2) || h.Get("Idempotent-Replayed") != "" {
				t.Fatalf("first: %d %s (replayed %q)", first.status, first.raw, h.Get("Idempotent-Replayed"))
			}
			again, h := send(e, "batch-0001", batch)
			if again.status != 200 || again.raw != first.raw || h.Get("Idempotent-Replayed") != "true" {
				t.Fatalf("retry: %d %s (replayed %q), want the first answer replayed", again.status, again.raw, h.Get("Idempotent-Replayed"))
			}
			if st := e.do("GET", "/v1/users/u1/state", rwToken, "", nil); st.body["samples"] != float64(2) {
				t.Errorf("samples after a retry = %v, want 2 (stored once)", st.body["samples"])
			}
			other := append(slices.Clone(batch[:1]), map[string]any{"user": "u1", "kind": "heart_rate", "at": e.ts(0), "bpm": 90})
			if r, _ := send(e, "batch-0001", other); r.status != 422 || r.body["field"] != "Idempotency-Key" {
				t.Errorf("the key with another body: %d %s, want 422 naming Idempotency-Key", r.status, r.raw)
			}
			// A new key is a new batch.
			if r, _ := send(e, "batch-0002", other); r.status != 200 {
				t.Fatalf("a new key: %d %s", r.status, r.raw)
			}

			// The engine restarts on the same store.
			_ = e.store.Close()
			restarted := startEngineOn(t, testConfig("Social", 2), b.open(t))
			restarted.clock.Advance(time.Hour)
			after, h := send(restarted, "batch-0001", batch)
			if after.status != 200 || after.raw != first.raw || h.Get("Idempotent-Replayed") != "true" {
				t.Fatalf("retry after a restart: %d %s (replayed %q)", after.status, after.raw, h.Get("Idempotent-Replayed"))
			}
			if st := restarted.do("GET", "/v1/users/u1/state", rwToken, "", nil); st.body["samples"] != float64(4) {
				t.Errorf("samples after the restart's retry = %v, want 4 (two batches, each once)", st.body["samples"])
			}
			// Past the window the record is swept and the key is free again.
			restarted.clock.Advance(25 * time.Hour)
			if _, err := restarted.svc.Sweep(context.Background()); err != nil {
				t.Fatal(err)
			}
			restarted.consent("u1", "physiology")
			if r, h := send(restarted, "batch-0001", []map[string]any{{"user": "u1", "kind": "heart_rate", "at": restarted.ts(0), "bpm": 70}}); r.status != 200 || h.Get("Idempotent-Replayed") != "" {
				t.Errorf("the key after its window: %d %s (replayed %q), want a new batch", r.status, r.raw, h.Get("Idempotent-Replayed"))
			}
			if r, _ := send(restarted, "bad key", batch); r.status != 400 || r.body["field"] != "Idempotency-Key" {
				t.Errorf("an invalid key: %d %s", r.status, r.raw)
			}
		})
	}
}

// TestStoreOutage: with the shared store unreachable, ingest and every
// other write answer 503 with Retry-After (nothing stored), not 500; a
// commit whose answer the store lost and could not resolve answers 503
// without Retry-After and "outcome": "unknown"; once the store is back,
// the client's retry with the same Idempotency-Key gets the first answer
// and the batch is held once.
func TestStoreOutage(t *testing.T) {
	server := postgres.Start(t)
	proxy := pgfault.Start(t, server.ConnString)
	db, err := store.OpenPostgres(context.Background(), proxy.ConnString, "plaza/calm")
	if err != nil {
		t.Fatal(err)
	}
	e := startEngineOn(t, testConfig("Social", 2), db)
	e.consent("u1", "physiology")
	batch := []map[string]any{{"user": "u1", "kind": "heart_rate", "at": e.ts(0), "bpm": 70}}
	send := func(key string) (response, http.Header) {
		return e.doWith("POST", "/v1/telemetry", rwToken, http.Header{"Idempotency-Key": {key}, "Content-Type": {"application/json"}}, batch)
	}

	proxy.Refuse(true)
	r, h := send("k-down")
	if r.status != 503 || h.Get("Retry-After") == "" || r.body["outcome"] != nil {
		t.Errorf("ingest with the store down: %d %s (Retry-After %q), want 503 with Retry-After", r.status, r.raw, h.Get("Retry-After"))
	}
	if r := e.do("POST", "/v1/users/u2/consent", rwToken, "", map[string]any{"scopes": []string{"physiology"}}); r.status != 503 {
		t.Errorf("consent with the store down: %d %s", r.status, r.raw)
	}
	if r := e.do("GET", "/readyz", "", "", nil); r.status != 503 {
		t.Errorf("readyz with the store down: %d", r.status)
	}
	proxy.Refuse(false)

	proxy.CutNextCommit(true) // the COMMIT reaches the server, then the store is gone
	r, h = send("k-cut")
	if r.status != 503 || h.Get("Retry-After") != "" || r.body["outcome"] != "unknown" {
		t.Fatalf("a commit whose outcome is unknown: %d %s (Retry-After %q), want 503, no Retry-After, outcome unknown", r.status, r.raw, h.Get("Retry-After"))
	}
	proxy.Refuse(false)
	r, h = send("k-cut")
	if r.status != 200 || r.body["accepted"] != float64(1) || h.Get("Idempotent-Replayed") != "true" {
		t.Errorf("the retry once the store is back: %d %s (replayed %q), want the committed batch's answer", r.status, r.raw, h.Get("Idempotent-Replayed"))
	}
	if st := e.do("GET", "/v1/users/u1/state", rwToken, "", nil); st.body["samples"] != float64(1) {
		t.Errorf("samples = %v, want 1: the batch committed once", st.body["samples"])
	}
}
