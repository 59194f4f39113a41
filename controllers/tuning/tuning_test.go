package tuning

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

var params = Params{Min: 0.1, Max: 0.9, MaxStep: 0.05}

// run drives the tuner on a loss curve for n intervals from start and
// returns the strengths in force. It fails the test on any unsafe move.
func run(t *testing.T, curve func(interval int, s float64) float64, start float64, n int, seed uint64) []float64 {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	var history []Observation
	s := start
	strengths := []float64{s}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		m := Measurement{Loss: math.Max(0, curve(i, s)+0.002*rng.NormFloat64()), At: now, CohortSize: 100}
		var d Decision
		d, history = Step(history, s, params, m, now, time.Minute)
		if len(history) > HistoryLimit {
			t.Fatalf("interval %d: history grew to %d", i, len(history))
		}
		if math.Abs(d.Strength-s) > params.MaxStep+1e-12 {
			t.Fatalf("interval %d: moved %.4f → %.4f, more than maxStep", i, s, d.Strength)
		}
		if d.Strength < params.Min || d.Strength > params.Max {
			t.Fatalf("interval %d: strength %.4f outside bounds", i, d.Strength)
		}
		s = d.Strength
		strengths = append(strengths, s)
	}
	return strengths
}

func meanOfLast(xs []float64, k int) float64 {
	var sum float64
	for _, x := range xs[len(xs)-k:] {
		sum += x
	}
	return sum / float64(k)
}

func uShape(optimum float64) func(int, float64) float64 {
	return func(_ int, s float64) float64 { return 0.01 + 0.3*(s-optimum)*(s-optimum) }
}

func TestConvergesOnNoisyUShapes(t *testing.T) {
	for _, optimum := range []float64{0.2, 0.35, 0.5, 0.72, 0.88} {
		for seed := range uint64(3) {
			strengths := run(t, uShape(optimum), 0.5, 50, seed)
			if got := meanOfLast(strengths, 10); math.Abs(got-optimum) > 0.06 {
				t.Errorf("optimum %.2f seed %d: settled at %.3f", optimum, seed, got)
			}
		}
	}
}

func TestMonotoneCurvesGoToTheCheaperBound(t *testing.T) {
	down := run(t, func(_ int, s float64) float64 { return 0.1 - 0.08*s }, 0.5, 40, 1)
	if got := meanOfLast(down, 5); got < 0.82 {
		t.Errorf("falling loss: settled at %.3f, want near max 0.9", got)
	}
	up := run(t, func(_ int, s float64) float64 { return 0.02 + 0.08*s }, 0.5, 40, 1)
	if got := meanOfLast(up, 5); got > 0.18 {
		t.Errorf("rising loss: settled at %.3f, want near min 0.1", got)
	}
}

func TestFlatCurveDoesNotWander(t *testing.T) {
	flat := run(t, func(int, float64) float64 { return 0.03 }, 0.5, 40, 2)
	for i, s := range flat {
		if math.Abs(s-0.5) > 0.2 {
			t.Fatalf("interval %d: wandered to %.3f on a flat curve", i, s)
		}
	}
}

func TestFollowsAStepChangeOfTheOptimum(t *testing.T) {
	curve := func(i int, s float64) float64 {
		if i < 40 {
			return uShape(0.3)(i, s)
		}
		return uShape(0.7)(i, s)
	}
	strengths := run(t, curve, 0.5, 90, 4)
	if got := meanOfLast(strengths[:41], 8); math.Abs(got-0.3) > 0.06 {
		t.Errorf("before the change: %.3f, want ≈ 0.3", got)
	}
	if got := meanOfLast(strengths, 8); math.Abs(got-0.7) > 0.07 {
		t.Errorf("after the change: %.3f, want ≈ 0.7", got)
	}
}

func TestHoldsOnBadData(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	history := []Observation{{0.4, 0.02}, {0.45, 0.015}, {0.5, 0.012}}
	cases := map[string]Measurement{
		"error":    {Err: errors.New("cohort below the minimum size")},
		"stale":    {Loss: 0.01, At: now.Add(-10 * time.Minute)},
		"NaN":      {Loss: math.NaN(), At: now},
		"negative": {Loss: -1, At: now},
	}
	for name, m := range cases {
		d, h := Step(history, 0.5, params, m, now, 5*time.Minute)
		if d.Strength != 0.5 || len(h) != len(history) {
			t.Errorf("%s: moved to %.3f (history %d); want hold at 0.5 with history unchanged", name, d.Strength, len(h))
		}
	}
	// Holding still clamps into new bounds at once.
	d, _ := Step(history, 0.95, params, cases["error"], now, time.Minute)
	if d.Strength != 0.9 {
		t.Errorf("strength above max held at %.3f, want clamped to 0.9", d.Strength)
	}
}

func TestConvergedFlag(t *testing.T) {
	var history []Observation
	s := 0.5
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var d Decision
	for range 40 {
		d, history = Step(history, s, params, Measurement{Loss: uShape(0.45)(0, s), At: now}, now, 0)
		s = d.Strength
	}
	if !d.Converged {
		t.Errorf("not converged after 40 noiseless intervals at %.3f (target %.3f)", s, d.Target)
	}
	d, _ = Step(nil, 0.5, params, Measurement{Loss: 0.1, At: now}, now, 0)
	if d.Converged {
		t.Error("converged with one observation")
	}
}

func TestSinceChangeCutsAtAnAbruptShiftOnly(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 1))
	var history []Observation
	for i := range 15 {
		s := 0.4 + 0.025*float64(i%4)
		history = append(history, Observation{s, uShape(0.45)(0, s) + 0.002*rng.NormFloat64()})
	}
	if got := sinceChange(history); len(got) != len(history) {
		t.Errorf("stationary noisy history cut to %d of %d", len(got), len(history))
	}
	for i := range 3 {
		s := 0.45 + 0.025*float64(i)
		history = append(history, Observation{s, uShape(0.8)(0, s) + 0.03})
	}
	if got := sinceChange(history); len(got) != 3 {
		t.Errorf("after an abrupt shift kept %d observations, want the 3 since it", len(got))
	}
}

func TestSafetyRulesHoldOnMovingCurves(t *testing.T) {
	// Drift and an abrupt change make the tuner forget faster; the moves
	// still never exceed maxStep nor leave the bounds (run asserts both).
	drift := func(i int, s float64) float64 { return uShape(0.5+0.3*math.Sin(float64(i)/10))(i, s) }
	run(t, drift, 0.5, 120, 3)
	jump := func(i int, s float64) float64 {
		if i%30 < 15 {
			return uShape(0.15)(i, s)
		}
		return uShape(0.85)(i, s) + 0.05
	}
	run(t, jump, 0.5, 120, 5)
}
