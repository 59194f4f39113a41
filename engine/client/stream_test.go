package client_test

import (
	"encoding/json"
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

// TestIngestRefusesOversizedBatches: Ingest keeps one call one atomic
// batch, so a batch over the engine's limits is refused before it is sent.
func TestIngestRefusesOversizedBatches(t *testing.T) {
	e := startEngine(t, engineConfig("Social", 1))
	ctx := ctxFor(t)
	transport := &countingTransport{next: http.DefaultTransport}
	c := newClient(t, e.url, client.WithToken(rwToken), client.WithTransport(transport))
	if _, err := c.SetConsent(ctx, "u1", telemetry.ScopeBehaviour, telemetry.ScopeQuestionnaire, telemetry.ScopeText); err != nil {
		t.Fatal(err)
	}
	sent := transport.n.Load()
	if _, err := c.Ingest(ctx, questionnaires("u1", contract.MaxBatchSamples+1)); !errors.Is(err, client.ErrBatchTooLarge) {
		t.Errorf("%d samples: %v, want ErrBatchTooLarge", contract.MaxBatchSamples+1, err)
	}
	if _, err := c.Ingest(ctx, texts("u1", 400)); !errors.Is(err, client.ErrBatchTooLarge) {
		t.Errorf("400 long texts: %v, want ErrBatchTooLarge", err)
	}
	if n := transport.n.Load() - sent; n != 0 {
		t.Errorf("%d requests sent for refused batches", n)
	}
	if res, err := c.Ingest(ctx, questionnaires("u1", contract.MaxBatchSamples)); err != nil || res.Accepted != contract.MaxBatchSamples {
		t.Errorf("a full batch: %+v %v", res, err)
	}
	if cts := transport.telemetryContentTypes(); !slices.Equal(cts, []string{contract.ContentTypeJSON}) {
		t.Errorf("telemetry requests with Content-Type %q, want one JSON array", cts)
	}
}

// texts are text samples of 2000 two-byte runes, about 4 KiB each encoded.
func texts(user string, n int) []telemetry.Sample {
	now := time.Now().UTC()
	out := make([]telemetry.Sample, n)
	for i := range out {
		out[i] = telemetry.Sample{User: user, Kind: telemetry.KindText, At: now, Source: "chat", Text: strings.Repeat("é", telemetry.MaxTextRunes-1) + string(rune('a'+i%26))}
	}
	return out
}

// TestIngestStreamSplits: a large stream goes as NDJSON in batches within
// both the sample and the byte limit, and every sample is stored once.
func TestIngestStreamSplits(t *testing.T) {
	e := startEngine(t, engineConfig("Social", 1))
	ctx := ctxFor(t)
	transport := &countingTransport{next: http.DefaultTransport}
	c := newClient(t, e.url, client.WithToken(rwToken), client.WithTransport(transport))
	for _, u := range []string{"many", "long"} {
		if _, err := c.SetConsent(ctx, u, telemetry.ScopeBehaviour, telemetry.ScopeQuestionnaire, telemetry.ScopeText); err != nil {
			t.Fatal(err)
		}
	}

	long := texts("long", 600) // about 4 KiB each: 1 MiB holds about 260
	longBytes := 0
	for _, s := range long {
		b, _ := json.Marshal(s)
		longBytes += len(b) + 1
	}
	for _, tc := range []struct {
		user                 string
		samples              []telemetry.Sample
		minRequests, maxReqs int64
	}{
		{"many", questionnaires("many", 2500), 3, 3}, // 1000 + 1000 + 500 samples
		// The engine refuses a body over 1 MiB (413), so every request
		// that succeeded was within the limit; packing takes at most one
		// more request than the bytes need.
		{"long", long, int64((longBytes + contract.MaxBodyBytes - 1) / contract.MaxBodyBytes), int64((longBytes+contract.MaxBodyBytes-1)/contract.MaxBodyBytes) + 1},
	} {
		before := transport.n.Load()
		beforeTypes := len(transport.telemetryContentTypes())
		res, err := c.IngestStream(ctx, slices.Values(tc.samples))
		if err != nil {
			t.Fatalf("%s: %v", tc.user, err)
		}
		requests := transport.n.Load() - before
		for _, ct := range transport.telemetryContentTypes()[beforeTypes:] {
			if ct != contract.ContentTypeNDJSON {
				t.Errorf("%s: Content-Type %q, want NDJSON", tc.user, ct)
			}
		}
		if res.Accepted != len(tc.samples) || requests < tc.minRequests || requests > tc.maxReqs {
			t.Errorf("%s: accepted %d of %d in %d requests, want all in %d–%d", tc.user, res.Accepted, len(tc.samples), requests, tc.minRequests, tc.maxReqs)
		}
		st, err := c.State(ctx, tc.user)
		if err != nil || st.Samples != int64(len(tc.samples)) {
			t.Errorf("%s: state %d samples %v, want %d", tc.user, st.Samples, err, len(tc.samples))
		}
	}
}

// TestIngestStreamStopsAtTheFailedBatch: batches before a rejected one
// stay committed; the result says how many samples, and the error names
// the sample of the failed batch.
func TestIngestStreamStopsAtTheFailedBatch(t *testing.T) {
	e := startEngine(t, engineConfig("Social", 1))
	ctx := ctxFor(t)
	c := newClient(t, e.url, client.WithToken(rwToken))
	if _, err := c.SetConsent(ctx, "u1", telemetry.ScopeBehaviour, telemetry.ScopeQuestionnaire); err != nil {
		t.Fatal(err)
	}
	samples := questionnaires("u1", 2500)
	bad := 9
	samples[1200].Mood = &bad
	res, err := c.IngestStream(ctx, slices.Values(samples))
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Field != "samples[200].mood" || !strings.Contains(err.Error(), "1000–1999") {
		t.Fatalf("%v, want the second batch's 400 naming samples[200].mood", err)
	}
	if res.Accepted != 1000 || res.ByKind["questionnaire"] != 1000 {
		t.Errorf("result %+v, want the first batch", res)
	}
	if st, err := c.State(ctx, "u1"); err != nil || st.Samples != 1000 {
		t.Errorf("state %d %v, want the first batch stored", st.Samples, err)
	}

	// One sample over the body limit alone cannot be sent at all.
	huge := telemetry.Sample{User: "u1", Kind: telemetry.KindText, At: time.Now(), Source: "chat", Text: strings.Repeat("x", contract.MaxBodyBytes)}
	if _, err := c.IngestStream(ctx, slices.Values([]telemetry.Sample{huge})); !errors.Is(err, client.ErrBatchTooLarge) {
		t.Errorf("a sample over the body limit: %v", err)
	}
	// An empty stream sends nothing.
	if res, err := c.IngestStream(ctx, slices.Values([]telemetry.Sample(nil))); err != nil || res.Accepted != 0 {
		t.Errorf("empty stream: %+v %v", res, err)
	}
}
