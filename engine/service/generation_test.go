package service_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
)

// TestCohortReportsTheGenerationRunningAndSince: GET /v1/cohort's
// generation is the tuned values' hash of the configuration in force, and
// runningSince is when the engine began running them: its start, then the
// reload that changed them; a reload that changes something else keeps it.
func TestCohortReportsTheGenerationRunningAndSince(t *testing.T) {
	var mu sync.Mutex
	now := benchNow
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	db, err := store.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	cfg := benchConfig()
	svc, err := service.New(cfg, service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	cohort := func() service.CohortSummary {
		t.Helper()
		c, err := svc.Cohort(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	started := benchNow
	advance(time.Minute)
	c := cohort()
	if c.Generation != cfg.Strength.Generation() || !c.RunningSince.Equal(started) || c.ObservedAt.Sub(c.RunningSince) != time.Minute {
		t.Errorf("after start: generation %q since %v observed %v; want %q since the start, a minute ago", c.Generation, c.RunningSince, c.ObservedAt, cfg.Strength.Generation())
	}

	// The same tuned values, another target: the generation runs on.
	same := *cfg
	same.Target.Emotion = 0.2
	advance(time.Minute)
	svc.SetConfig(&same)
	if c := cohort(); c.Generation != cfg.Strength.Generation() || !c.RunningSince.Equal(started) {
		t.Errorf("after a reload of the same strength: generation %q since %v, want %q since %v", c.Generation, c.RunningSince, cfg.Strength.Generation(), started)
	}

	// A new strength: a new generation, running since the reload.
	moved := same
	moved.Strength = config.Strength{Value: 0.45, Min: 0.1, Max: 0.9}
	advance(time.Minute)
	reloaded := benchNow.Add(3 * time.Minute)
	svc.SetConfig(&moved)
	advance(10 * time.Second)
	c = cohort()
	if c.Generation != moved.Strength.Generation() || c.Generation == cfg.Strength.Generation() || !c.RunningSince.Equal(reloaded) || c.Strength != 0.45 {
		t.Errorf("after a new strength: strength %v generation %q since %v, want 0.45, %q since %v", c.Strength, c.Generation, c.RunningSince, moved.Strength.Generation(), reloaded)
	}
}
