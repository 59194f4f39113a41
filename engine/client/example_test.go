package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"time"

	"github.com/attune-io/attune/engine/api"
	"github.com/attune-io/attune/engine/client"
	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/metrics"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/engine/telemetry"
)

// exampleEngine runs a real engine in this process on loopback: the
// service over an embedded store in a temporary directory, behind the
// HTTP API. It returns the engine's URL and a function that stops it.
func exampleEngine() (string, func()) {
	dir, err := os.MkdirTemp("", "attune-client-example-")
	if err != nil {
		panic(err)
	}
	db, err := store.OpenBolt(dir)
	if err != nil {
		panic(err)
	}
	cfg := engineConfig("Social", 1)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := metrics.New(cfg.Program)
	svc, err := service.New(cfg, service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Metrics: m, Logger: logger})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(api.New(svc, m, api.Tokens{ReadWrite: "example-token"}, logger))
	return srv.URL, func() { srv.Close(); _ = db.Close(); _ = os.RemoveAll(dir) }
}

// A world client's round with one user: consent, telemetry, a decision at a
// break (retried safely with its idempotency key), the state, erasure.
func ExampleClient() {
	url, stop := exampleEngine() // in production: http://<program>-engine.<namespace>:8080
	defer stop()
	ctx := context.Background()

	// In a pod: client.WithTokenSource(client.FileToken("/var/run/secrets/attune/token")).
	c, err := client.New(url, client.WithToken("example-token"))
	if err != nil {
		panic(err)
	}

	if _, err := c.SetConsent(ctx, "player-1", telemetry.ScopeQuestionnaire); err != nil {
		panic(err)
	}
	mood, now := 4, time.Now()
	res, err := c.Ingest(ctx, []telemetry.Sample{
		{User: "player-1", Kind: telemetry.KindQuestionnaire, At: now, BRS: []int{4, 2, 4, 2, 3, 2}, Mood: &mood},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("accepted:", res.Accepted)

	d, replayed, err := c.Decide(ctx, "player-1", contract.DecisionRequest{Context: []string{"between_tasks"}}, "break-42")
	if err != nil {
		panic(err)
	}
	again, replayed2, err := c.Decide(ctx, "player-1", contract.DecisionRequest{Context: []string{"between_tasks"}}, "break-42")
	if err != nil {
		panic(err)
	}
	fmt.Println("replayed:", replayed, replayed2, "same decision:", again.ID == d.ID)

	st, err := c.State(ctx, "player-1")
	if err != nil {
		panic(err)
	}
	fmt.Println("samples:", st.Samples, "resilience known:", st.Resilience.Known)

	if err := c.Erase(ctx, "player-1"); err != nil {
		panic(err)
	}
	_, err = c.State(ctx, "player-1")
	fmt.Println("after erasure:", errors.Is(err, client.ErrUnknownUser))
	// Output:
	// accepted: 1
	// replayed: false true same decision: true
	// samples: 1 resilience known: true
	// after erasure: true
}

// Retries and TLS: a client of an engine served over HTTPS with the
// program's CA, with a token that follows the mounted Secret, and more
// patient retries than the default.
func ExampleNew() {
	c, err := client.New("https://evening-calm-engine.harbor-social:8443",
		client.WithCAFile("/var/run/secrets/attune/ca.crt"),
		client.WithTokenSource(client.FileToken("/var/run/secrets/attune/token")),
		client.WithRetry(client.RetryPolicy{MaxAttempts: 6, InitialBackoff: 200 * time.Millisecond, MaxBackoff: 10 * time.Second, MaxRetryAfter: time.Minute}),
		client.WithUserAgent("harbor-social-world/3.2"),
	)
	if err != nil {
		fmt.Println("no client:", err) // here: the CA file does not exist
		return
	}
	_ = c
}
