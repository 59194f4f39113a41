package service_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/engine/telemetry"
	"github.com/attune-io/attune/engine/textemotion"
	"github.com/attune-io/attune/internal/oiptest"
)

// TestIngestScoresTextsInOneRequestWithConsent: the texts of a batch reach
// the model server in one request; no text of a user without text consent
// reaches it, in either store scope.
func TestIngestScoresTextsInOneRequestWithConsent(t *testing.T) {
	for name, open := range map[string]func(testing.TB) sizedStore{"replica": openBolt(store.WithoutSync()), "shared": openPostgres} {
		t.Run(name, func(t *testing.T) {
			srv, hs := oiptest.Start(oiptest.Options{Runtime: oiptest.KServeHuggingFace, ReturnProbabilities: true})
			t.Cleanup(hs.Close)
			var fallbacks []string
			scorer := &textemotion.Fallback{
				Primary: textemotion.NewKServe(config.Model{URL: hs.URL, Name: "emotion", Runtime: config.ModelRuntimeKServeHuggingFace,
					Labels: oiptest.EkmanLabels, Timeout: config.Duration{Duration: 2 * time.Second}}, hs.Client()),
				Secondary:  textemotion.NewVader(),
				OnFallback: func(r string) { fallbacks = append(fallbacks, r) },
			}
			db := open(t)
			t.Cleanup(func() { _ = db.Close() })
			svc, err := service.New(benchConfig(), service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Scorer: scorer, Now: func() time.Time { return benchNow }})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			for _, u := range []string{"ann", "bob"} {
				if _, err := svc.SetConsent(ctx, u, telemetry.Scopes); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := svc.SetConsent(ctx, "cy", []telemetry.Scope{telemetry.ScopeBehaviour}); err != nil {
				t.Fatal(err)
			}
			text := func(user, s string) telemetry.Sample {
				return telemetry.Sample{User: user, Kind: telemetry.KindText, At: benchNow, Text: s}
			}
			batch := []telemetry.Sample{
				text("ann", "I am so happy and calm"), text("bob", "I am terrified"), text("ann", "what a wonderful day"),
				{User: "bob", Kind: telemetry.KindBehaviour, At: benchNow, Events: []telemetry.Event{{Type: "focus", At: benchNow}}},
			}
			res, err := svc.Ingest(ctx, batch)
			if err != nil || res.Accepted != 4 {
				t.Fatalf("ingest: %+v, %v", res, err)
			}
			rec := srv.Received()
			if len(rec) != 1 || len(rec[0].Texts) != 3 {
				t.Fatalf("%d requests, want 1 with the batch's 3 texts: %+v", len(rec), rec)
			}
			st, err := svc.State(ctx, "ann")
			if err != nil || !st.Emotion.Known || st.Emotion.Value < 0.7 {
				t.Errorf("ann's emotion from the model: %+v, %v", st.Emotion, err)
			}
			if len(fallbacks) != 0 {
				t.Errorf("fallbacks %v", fallbacks)
			}

			// Without text consent: rejected, and nothing sent — neither
			// cy's text nor the consented one in the same batch.
			for _, b := range [][]telemetry.Sample{{text("cy", "secret sad thoughts")}, {text("ann", "happy"), text("cy", "secret sad thoughts")}} {
				_, err := svc.Ingest(ctx, b)
				var consent *service.ConsentError
				if !errors.As(err, &consent) || consent.Scope != telemetry.ScopeText {
					t.Fatalf("ingest without text consent: %v, want a text ConsentError", err)
				}
			}
			if _, err := svc.Ingest(ctx, []telemetry.Sample{text("nobody", "hello")}); err == nil {
				t.Fatal("unknown user's text accepted")
			}
			if srv.Requests() != 1 || slices.Contains(srv.Texts(), "secret sad thoughts") || slices.Contains(srv.Texts(), "hello") {
				t.Fatalf("texts without consent reached the server: %v", srv.Texts())
			}

			// The server fails: the batch falls back to VADER, once.
			srv.SetFault(oiptest.Fault503)
			if _, err := svc.Ingest(ctx, []telemetry.Sample{text("bob", "good"), text("ann", "great")}); err != nil {
				t.Fatal(err)
			}
			if srv.Requests() != 2 || !slices.Equal(fallbacks, []string{"unavailable"}) {
				t.Fatalf("%d requests, fallbacks %v; want 2 and one unavailable", srv.Requests(), fallbacks)
			}
			if st, ok := svc.TextModelStatus(ctx); !ok || st.State != textemotion.TextModelReady {
				t.Errorf("status %+v %v", st, ok)
			}
		})
	}
}
