package simulator

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/api"
	"github.com/attune-io/attune/engine/client"
	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/metrics"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
)

const driverToken = "simulator-read-write-token"

// startEngine serves a real engine (service and API over bbolt in a
// temporary directory) on loopback.
func startEngine(t *testing.T) string {
	t.Helper()
	db, err := store.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	cfg := &config.Config{
		Program:       "plaza/sim",
		Target:        config.Vector{Attention: 0.8, Emotion: 0.7, Resilience: 0.7},
		Weights:       config.Vector{Attention: 1, Emotion: 1, Resilience: 1},
		Interventions: []string{"BodyScan", "ResonanceBreathing"},
		Strength:      config.Strength{Value: 0.35, Min: 0.1, Max: 0.9},
		Context:       "Social",
		Privacy:       config.Privacy{Retention: config.Duration{Duration: 24 * time.Hour}, MinCohortSize: 5},
		Seed:          3,
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := metrics.New(cfg.Program)
	svc, err := service.New(cfg, service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Metrics: m, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.New(svc, m, api.Tokens{ReadWrite: driverToken}, logger))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestDriverFeedsRealEngines: the driver reads the strength from the
// engines, spreads its users over them with consent, sends every user's
// telemetry each tick (interventions every fifth) and erases the users who
// churn away.
func TestDriverFeedsRealEngines(t *testing.T) {
	engines := []string{startEngine(t), startEngine(t)}
	p := DefaultParams()
	p.Users, p.Churn, p.Seed = 12, 0.25, 5
	d := &Driver{Model: New(p), Engines: engines, Token: driverToken}
	ctx := context.Background()
	first := map[int]bool{}
	for _, u := range d.Model.Users {
		first[u.ID] = true
	}
	for tick := 1; tick <= 5; tick++ {
		r, err := d.Tick(ctx)
		if err != nil {
			t.Fatalf("tick %d: %v", tick, err)
		}
		perUser := 4
		if tick == 5 {
			perUser = 5
		}
		if r.Strength != 0.35 || r.Users != p.Users || r.Samples != perUser*p.Users {
			t.Errorf("tick %d: %+v, want strength 0.35 and %d samples for %d users", tick, r, perUser*p.Users, p.Users)
		}
	}

	clients := map[string]*client.Client{}
	for _, e := range engines {
		c, err := client.New(e, client.WithToken(driverToken))
		if err != nil {
			t.Fatal(err)
		}
		clients[e] = c
	}
	present, left := 0, 0
	for i, u := range d.Model.Users {
		st, err := clients[d.consents[u.ID]].State(ctx, userID(u.ID))
		if err != nil || st.Samples == 0 {
			t.Errorf("user %d (engine %d): state %+v %v", u.ID, i%len(engines), st, err)
		}
		present++
		delete(first, u.ID)
	}
	for id := range first { // churned away: erased from whichever engine held them
		left++
		for _, c := range clients {
			if _, err := c.State(ctx, userID(id)); !errors.Is(err, client.ErrUnknownUser) {
				t.Errorf("churned user %d: %v, want unknown", id, err)
			}
		}
	}
	if left == 0 {
		t.Error("no user churned: the erasure path went untested")
	}
	t.Logf("%d users present, %d churned and erased", present, left)
}
