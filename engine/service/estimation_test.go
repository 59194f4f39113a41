package service_test

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/engine/telemetry"
)

// TestEstimationTimeConstantsComeFromTheConfig: the program's
// estimation.stateDecay sets how fast a user's evidence loses confidence,
// and a reload that changes it applies to evidence already stored.
func TestEstimationTimeConstantsComeFromTheConfig(t *testing.T) {
	var mu sync.Mutex
	now := benchNow
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	db, err := store.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	cfg := benchConfig()
	cfg.Estimation = config.Estimation{StateDecay: config.Duration{Duration: 6 * time.Second}}
	svc, err := service.New(cfg, service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := svc.SetConsent(ctx, "u-1", []telemetry.Scope{telemetry.ScopeText}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Ingest(ctx, []telemetry.Sample{{User: "u-1", Kind: telemetry.KindText, At: benchNow, Text: "a calm and happy day"}}); err != nil {
		t.Fatal(err)
	}
	emotionConfidence := func() float64 {
		t.Helper()
		st, err := svc.State(ctx, "u-1")
		if err != nil {
			t.Fatal(err)
		}
		return st.Emotion.Confidence
	}
	fresh := emotionConfidence()
	mu.Lock()
	now = now.Add(6 * time.Second)
	mu.Unlock()
	if got, want := emotionConfidence(), fresh*math.Exp(-1); math.Abs(got-want) > 1e-9 {
		t.Errorf("confidence after one τ of 6s: %.6f, want %.6f", got, want)
	}
	defaults := *cfg
	defaults.Estimation = config.Estimation{}
	svc.SetConfig(&defaults)
	if got, want := emotionConfidence(), fresh*math.Exp(-6.0/1800); math.Abs(got-want) > 1e-9 {
		t.Errorf("confidence after 6s with the default τ of 30m: %.6f, want %.6f", got, want)
	}
}
