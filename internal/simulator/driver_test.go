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
	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/metrics"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
)

const driverToken = "simulator-read-write-token"

// startEngine serves a real engine (service and API over bbolt in a
// temporary directory) on loopback, its time constants on scale.
func startEngine(t *testing.T, scale TimeScale) string {
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
		Interventions: []string{"FocusedAttention", "ResonanceBreathing", "MicroBreak"},
		Strength:      config.Strength{Value: 0.45, Min: 0.1, Max: 0.9},
		Context:       "Social",
		Privacy:       config.Privacy{Retention: config.Duration{Duration: 24 * time.Hour}, MinCohortSize: 5},
		Seed:          3,
	}
	scale.EngineTiming().ApplyTo(cfg)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := metrics.New(cfg.Program)
	svc, err := service.New(cfg, service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Metrics: m, Logger: logger, EffectsMinInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.New(svc, m, api.Tokens{ReadWrite: driverToken}, logger))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestPopulationLivesThroughRealEngines: a small cohort, spread over two
// real engines in accelerated time, consents, sends every kind of
// telemetry the engines accept (a rejected batch fails the tick), asks for
// decisions at its natural breaks and answers the interventions it gets
// with linked intervention samples; the engines estimate every person's
// state from that telemetry alone, settle outcomes, and people who leave
// are erased.
func TestPopulationLivesThroughRealEngines(t *testing.T) {
	scale := TimeScale{Speedup: 600}
	engines := []string{startEngine(t, scale), startEngine(t, scale)}
	cfg := DefaultConfig()
	cfg.Users, cfg.Seed, cfg.ChurnPerHour = 16, 5, 0.3
	cfg.WearableShare, cfg.BehaviourShare = 1, 1
	d := &Driver{Population: New(cfg), Engines: engines, Token: driverToken, Scale: scale}
	ctx := context.Background()
	first := map[int]bool{}
	for _, a := range d.Population.Agents {
		first[a.ID] = true
	}
	var total TickReport
	deadline := time.Now().Add(12 * time.Second)
	for time.Now().Before(deadline) {
		r, err := d.Tick(ctx)
		if err != nil {
			t.Fatalf("tick at %s simulated: %v", r.Elapsed, err)
		}
		total.Samples += r.Samples
		total.Decisions += r.Decisions
		total.Interventions += r.Interventions
		time.Sleep(250 * time.Millisecond)
	}
	elapsed := d.Population.Elapsed()
	t.Logf("%s simulated in 12s: %d samples, %d decisions, %d interventions", elapsed.Round(time.Minute), total.Samples, total.Decisions, total.Interventions)
	if elapsed < 100*time.Minute || total.Decisions < 40 || total.Interventions < 5 {
		t.Fatalf("%s simulated, %d decisions, %d interventions: the population barely lived", elapsed, total.Decisions, total.Interventions)
	}

	clients := map[string]*client.Client{}
	for _, e := range engines {
		c, err := client.New(e, client.WithToken(driverToken))
		if err != nil {
			t.Fatal(err)
		}
		clients[e] = c
	}
	// A person asleep or busy for most of the two hours may send too
	// little for one dimension (no SART or behaviour, say), as may one who
	// joined late (churn): the cohort as a whole must be estimated, and
	// everyone on something. Only those there from the start are counted
	// against the 10%: how much of the run a newcomer saw depends on how
	// many ticks the machine's load allowed.
	linked, settled, partial, original := 0, 0, 0, 0
	for _, a := range d.Population.Agents {
		st, err := clients[d.homes[a.ID]].State(ctx, UserID(a.ID))
		if err != nil {
			t.Fatalf("person %d: %v", a.ID, err)
		}
		if !st.Attention.Known && !st.Emotion.Known && !st.Resilience.Known {
			t.Errorf("person %d: the engine estimated nothing from the telemetry: %+v", a.ID, st)
		}
		if first[a.ID] {
			original++
			if !st.Attention.Known || !st.Emotion.Known || !st.Resilience.Known {
				partial++
				t.Logf("person %d, there from the start, lacks an estimate: attention %v, emotion %v, resilience %v", a.ID, st.Attention.Known, st.Emotion.Known, st.Resilience.Known)
			}
		}
		delete(first, a.ID)
	}
	if partial*10 > original {
		t.Errorf("%d of the %d people there from the start lack an estimate of some dimension, want at most 10%%", partial, original)
	}
	for _, e := range engines {
		err := clients[e].ExportDecisions(ctx, time.Time{}, func(x contract.ExportedDecision) error {
			if x.Completed != nil {
				linked++
			}
			if x.Outcome != nil {
				settled++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if linked == 0 || settled == 0 {
		t.Errorf("the log holds %d decisions answered by an intervention sample and %d with an outcome; want some of each", linked, settled)
	}
	if len(first) == 0 {
		t.Error("nobody left: the erasure path went untested")
	}
	for id := range first { // left: erased from whichever engine held them
		for _, c := range clients {
			if _, err := c.State(ctx, UserID(id)); !errors.Is(err, client.ErrUnknownUser) {
				t.Errorf("person %d left: %v, want unknown", id, err)
			}
		}
	}
}
