package tuning

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
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

// TestFlatCurveDoesNotWander: on a loss that does not depend on strength
// at all, no move is warranted. The tuner's moves there are the dither and
// small leans on slopes within the noise, a walk without direction: over
// 20 seeds, the median largest excursion from the start in 40 intervals
// stays under 0.2, few runs touch a bound, and few decisions claim a
// significant slope or curvature.
func TestFlatCurveDoesNotWander(t *testing.T) {
	var excursions []float64
	atBound, confident, decisions := 0, 0, 0
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 1))
		var history []Observation
		s, excursion, touched := 0.5, 0.0, false
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		for range 40 {
			m := Measurement{Loss: 0.03 + 0.002*rng.NormFloat64(), At: now, CohortSize: 100}
			var d Decision
			d, history = Step(history, s, params, m, now, time.Minute)
			if strings.HasPrefix(d.Reason, "fitted") || strings.HasPrefix(d.Reason, "loss") {
				confident++
			}
			decisions++
			s = d.Strength
			excursion = math.Max(excursion, math.Abs(s-0.5))
			touched = touched || s == params.Min || s == params.Max
		}
		excursions = append(excursions, excursion)
		if touched {
			atBound++
		}
	}
	slices.Sort(excursions)
	if median := excursions[len(excursions)/2]; median >= 0.2 {
		t.Errorf("median largest excursion %.3f on a flat curve, want < 0.2 (all: %.3f)", median, excursions)
	}
	if atBound > 2 {
		t.Errorf("%d of 20 runs on a flat curve touched a bound, want at most 2", atBound)
	}
	if share := float64(confident) / float64(decisions); share > 0.3 {
		t.Errorf("%.0f%% of the decisions on a flat curve claim a significant slope or curvature, want at most 30%%", 100*share)
	}
}

// TestStaysPinnedAtABound: with the optimum beyond the upper bound the
// tuner goes to the bound and stays there, but for a half step inward now
// and then.
func TestStaysPinnedAtABound(t *testing.T) {
	for seed := range uint64(4) {
		strengths := run(t, uShape(1.1), 0.5, 80, seed)
		arrived := slices.Index(strengths, params.Max)
		if arrived < 0 || arrived > 12 {
			t.Fatalf("seed %d: reached the bound at interval %d, want within 12 (8 steps of maxStep from 0.5)", seed, arrived)
		}
		at := 0
		for i, s := range strengths[arrived:] {
			if s == params.Max {
				at++
			}
			if s < params.Max-2*params.MaxStep {
				t.Errorf("seed %d: interval %d at %.3f, more than two steps inside the bound", seed, arrived+i, s)
			}
		}
		if share := float64(at) / float64(len(strengths)-arrived); share < 0.85 {
			t.Errorf("seed %d: at the bound in %.0f%% of the intervals after reaching it, want ≥ 85%%", seed, 100*share)
		}
	}
}

// TestLeavesABoundWhenTheOptimumMovesInside: pinned at the upper bound, the
// tuner notices the optimum jump to 0.6 and goes there.
func TestLeavesABoundWhenTheOptimumMovesInside(t *testing.T) {
	curve := func(i int, s float64) float64 {
		if i < 40 {
			return uShape(1.1)(i, s)
		}
		return uShape(0.6)(i, s)
	}
	for seed := range uint64(4) {
		strengths := run(t, curve, 0.5, 90, seed)
		if got := meanOfLast(strengths[:41], 5); got != params.Max {
			t.Errorf("seed %d: before the change at %.3f, want pinned at %.1f", seed, got, params.Max)
		}
		if got := meanOfLast(strengths, 10); math.Abs(got-0.6) > 0.07 {
			t.Errorf("seed %d: after the change at %.3f, want ≈ 0.6", seed, got)
		}
	}
}

// TestFollowsADriftingOptimum: the optimum moves along a sine of amplitude
// 0.2 over 120 intervals (up to 0.01 per interval); after the first 20 the
// strength stays close to it.
func TestFollowsADriftingOptimum(t *testing.T) {
	optimum := func(i int) float64 { return 0.5 + 0.2*math.Sin(2*math.Pi*float64(i)/120) }
	for seed := range uint64(4) {
		strengths := run(t, func(i int, s float64) float64 { return uShape(optimum(i))(i, s) }, 0.5, 120, seed)
		var sum float64
		for i := 20; i < 120; i++ {
			sum += math.Abs(strengths[i] - optimum(i))
		}
		if got := sum / 100; got > 0.08 {
			t.Errorf("seed %d: mean distance from the moving optimum %.3f, want ≤ 0.08", seed, got)
		}
	}
}

// TestFitStandardErrorsAreCalibrated: on a known straight line with noise
// σ, the fitted slope's standard error matches its spread over many
// replications, and the significance test rejects the true slope about 5%
// of the time, for the long and the short memory.
func TestFitStandardErrorsAreCalibrated(t *testing.T) {
	const reps, trueSlope = 4000, 0.02
	for _, lambda := range []float64{longMemory, shortMemory} {
		rng := rand.New(rand.NewPCG(3, 1))
		slopes := make([]float64, reps)
		var seSum float64
		rejected := 0
		for r := range reps {
			history := make([]Observation, HistoryLimit)
			for i := range history {
				s := 0.45 + 0.1*float64((i/2)%2) + 0.02*float64(i%3) // a dither
				history[i] = Observation{Strength: s, Loss: 0.05 + trueSlope*s + 0.002*rng.NormFloat64()}
			}
			f, ok := fit(history, 1, lambda)
			if !ok {
				t.Fatal("no fit")
			}
			slopes[r] = f.coef[1]
			seSum += f.se[1]
			if math.Abs(f.coef[1]-trueSlope) > f.significant()*f.se[1] {
				rejected++
			}
		}
		var mean, ss float64
		for _, x := range slopes {
			mean += x / reps
		}
		for _, x := range slopes {
			ss += (x - mean) * (x - mean)
		}
		spread := math.Sqrt(ss / (reps - 1))
		if ratio := seSum / reps / spread; ratio < 0.85 || ratio > 1.1 {
			t.Errorf("λ %.1f: mean standard error %.5f against a spread of %.5f (ratio %.2f), want 0.85–1.1", lambda, seSum/reps, spread, ratio)
		}
		if rate := float64(rejected) / reps; rate < 0.015 || rate > 0.08 {
			t.Errorf("λ %.1f: the true slope rejected in %.1f%% of replications, want about 5%%", lambda, 100*rate)
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

// TestLeavesTheUpperBoundWhileTheLevelMoves reproduces the closed loop
// through real engines (docs/tuning.md, "Through real engines"): started
// at the upper bound, the optimum at 0.4, the cohort following the
// strength with a lag of one interval, and the level of the loss at every
// strength rising or falling with the time of day by 0.0015 per interval
// (a step's effect at the bound is 0.0045). Within 20 intervals the tuner
// must have left the bound for good, whichever way the level moves.
func TestLeavesTheUpperBoundWhileTheLevelMoves(t *testing.T) {
	for _, trend := range []float64{0.0015, -0.0015} {
		for seed := range uint64(8) {
			rng := rand.New(rand.NewPCG(seed, 7))
			var history []Observation
			s, felt := params.Max, params.Max
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			var strengths []float64
			for i := range 20 {
				felt += (s - felt) * (1 - math.Exp(-1))
				l := 0.08 + 0.125*(felt-0.4)*(felt-0.4) + trend*float64(i) + 0.002*rng.NormFloat64()
				var d Decision
				d, history = Step(history, s, params, Measurement{Loss: l, CohortSize: 100, At: now}, now, time.Minute)
				s = d.Strength
				strengths = append(strengths, s)
			}
			if got := meanOfLast(strengths, 5); got > 0.85 {
				t.Errorf("level trend %+.4f, seed %d: the last five strengths average %.3f, want below 0.85 (strengths %.3f)", trend, seed, got, strengths)
			}
		}
	}
}

// TestFirstProbeHeadsIntoTheRange: with one strength measured the tuner
// steps toward the middle of [min, max], where it has room to learn the
// curve, rather than toward a nearby bound (from 0.85 it used to step up
// to 0.9 and, on a cohort whose loss moves with the time of day, stay).
func TestFirstProbeHeadsIntoTheRange(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct{ start, want float64 }{
		{0.85, 0.80}, {0.7, 0.65}, {0.5, 0.55}, {0.3, 0.35}, {0.15, 0.20}, {0.9, 0.875}, {0.1, 0.125},
	} {
		d, _ := Step(nil, c.start, params, Measurement{Loss: 0.05, CohortSize: 100, At: at}, at, time.Minute)
		if math.Abs(d.Strength-c.want) > 1e-9 {
			t.Errorf("first step from %.2f went to %.3f, want %.3f", c.start, d.Strength, c.want)
		}
	}
	// Then downhill along the secant, whichever side of the middle: from
	// 0.85 down to 0.80, and 0.80 measured worse, the tuner steps back up.
	var history []Observation
	s := 0.85
	for _, loss := range []float64{0.05, 0.06} {
		var d Decision
		d, history = Step(history, s, params, Measurement{Loss: loss, CohortSize: 100, At: at}, at, time.Minute)
		s = d.Strength
		at = at.Add(time.Minute)
	}
	if math.Abs(s-0.85) > 1e-9 {
		t.Errorf("after 0.80 measured worse than 0.85 the tuner went to %.3f, want back up to 0.85", s)
	}
}
