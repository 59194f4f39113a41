package effects

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestEstimateByHand checks θ and the sandwich against exact fractions,
// with p̃ = 1/2 so c = A - p̃ = ±1/2 and the weights are
//
//	P=1/2: W=1 either arm;  P=1/4: W=2 (A=1), 2/3 (A=0);
//	P=2/3: W=3/4 (A=1), 3/2 (A=0).
//
// Per user, M_u = Σ W [1 c; c c²] and s_u = Σ W Y [1; c]:
//
//	u1: W=1,1,2,2/3     M=[14/3  2/3 ; 2/3  7/6  ]  s=(-4,    -3)
//	u2: W=3/4,3/2,1,2   M=[21/4  1/8 ; 1/8  21/16]  s=(15/2,  -7/4)
//	u3: W=2/3,1,3/4,1   M=[41/12 1/24; 1/24 41/48]  s=(1/12,  -7/24)
//	u4: W=2/3,3/2       M=[13/6 -13/12;-13/12 13/24] s=(-7/3, 7/6)
//
// B = Σ M_u = [31/2 -1/4; -1/4 31/8], det B = 31²/16 - 1/16 = 60,
// S = Σ s_u = (5/4, -31/8), so α = (31/8·5/4 - 1/4·31/8)/60 = 31/480 and
// β = (31/2·(-31/8) + 1/4·5/4)/60 = -239/240.
// The β row of B⁻¹ is g = (1/4, 31/2)/60; with r_u = s_u - M_u θ,
// ψ_u = g·r_u = -4811/9600, -4963/57600, 4127/28800, 341/768, and
// Σ ψ_u² = 790043233/1658880000. CR1 scaling n/(n-2) = 2 gives
// Var β̂ = 790043233/829440000. The t quantile with 2 df is closed-form:
// t = (2q-1)/√(2q(1-q)) at q = 0.975.
func TestEstimateByHand(t *testing.T) {
	type row struct {
		a    bool
		p, y float64
	}
	data := map[string][]row{
		"u1": {{true, 0.5, -1}, {false, 0.5, 1}, {true, 0.25, -2}, {false, 0.25, 0}},
		"u2": {{true, 2.0 / 3, 0}, {false, 2.0 / 3, 3}, {false, 0.5, 1}, {true, 0.25, 1}},
		"u3": {{false, 0.25, 2}, {false, 0.5, -1}, {true, 2.0 / 3, -3}, {true, 0.5, 2}},
		"u4": {{false, 0.25, 1}, {false, 2.0 / 3, -2}},
	}
	est := NewEstimator("breathing", 0.5)
	for _, u := range []string{"u1", "u2", "u3", "u4"} {
		for _, r := range data[u] {
			est.Add(Observation{User: u, Available: true, Treated: r.a, P: r.p, Outcome: r.y})
		}
	}
	// Noise that must change nothing: unavailable, and three invalid rows.
	est.Add(Observation{User: "u1", Available: false, Treated: true, P: 0.5, Outcome: 100})
	est.Add(Observation{User: "u5", Available: true, Treated: true, P: 1, Outcome: 1})
	est.Add(Observation{User: "u5", Available: true, Treated: true, P: 0.5, Outcome: math.NaN()})
	est.Add(Observation{User: "", Available: true, Treated: true, P: 0.5, Outcome: 1})

	e, ok := est.Estimate()
	if !ok {
		t.Fatal("Estimate() = false, want an estimate")
	}
	wantBeta := -239.0 / 240
	wantSE := math.Sqrt(790043233.0 / 829440000)
	tq := 0.95 / math.Sqrt(2*0.975*0.025)
	checks := []struct {
		name      string
		got, want float64
	}{
		{"Estimate", e.Estimate, wantBeta},
		{"StdErr", e.StdErr, wantSE},
		{"Lower", e.Lower, wantBeta - tq*wantSE},
		{"Upper", e.Upper, wantBeta + tq*wantSE},
	}
	for _, c := range checks {
		if math.Abs(c.got-c.want) > 1e-12 {
			t.Errorf("%s = %.15g, want %.15g", c.name, c.got, c.want)
		}
	}
	want := Effect{Intervention: "breathing", Estimate: e.Estimate, StdErr: e.StdErr, Lower: e.Lower, Upper: e.Upper,
		Users: 4, UsersBoth: 3, Decisions: 14, Treated: 6, Control: 8}
	if e != want {
		t.Errorf("Estimate() = %+v, want %+v", e, want)
	}
	if est.Skipped() != 3 {
		t.Errorf("Skipped() = %d, want 3", est.Skipped())
	}
}

// TestEstimateRefuses covers the cases with no valid estimate.
func TestEstimateRefuses(t *testing.T) {
	two := NewEstimator("x", DefaultRefP)
	for _, u := range []string{"a", "b"} {
		two.Add(Observation{User: u, Available: true, Treated: true, P: 0.5, Outcome: 1})
		two.Add(Observation{User: u, Available: true, Treated: false, P: 0.5, Outcome: 0})
	}
	if e, ok := two.Estimate(); ok || e.Users != 2 || e.UsersBoth != 2 {
		t.Errorf("two users: got %+v, %v; want counts only and false", e, ok)
	}
	allTreated := NewEstimator("x", 7) // invalid refP falls back
	if allTreated.RefP() != DefaultRefP {
		t.Errorf("RefP() = %v, want DefaultRefP", allTreated.RefP())
	}
	for _, u := range []string{"a", "b", "c", "d"} {
		allTreated.Add(Observation{User: u, Available: true, Treated: true, P: 0.3, Outcome: 1})
	}
	if _, ok := allTreated.Estimate(); ok {
		t.Error("all treated: Estimate() = true, want false (singular)")
	}
}

// TestPublishableAndCombineProperties checks the k-anonymity floor and the
// algebra of inverse-variance pooling over random effects.
func TestPublishableAndCombineProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		k := 1 + rng.IntN(50)
		e := Effect{Intervention: "x", Estimate: rng.NormFloat64(), StdErr: 0.01 + rng.Float64(),
			Users: rng.IntN(100), UsersBoth: rng.IntN(100), Decisions: rng.IntN(1000)}
		e.Lower, e.Upper = e.Estimate-2*e.StdErr, e.Estimate+2*e.StdErr
		if got := Publishable(e, k); got != (e.UsersBoth >= k) {
			t.Fatalf("Publishable(%+v, %d) = %v", e, k, got)
		}
		if c, ok := Combine([]Effect{e}); !ok || c != e {
			t.Fatalf("Combine of one = %+v, %v; want itself", c, ok)
		}
		f := e
		f.Estimate = rng.NormFloat64()
		c, ok := Combine([]Effect{e, {StdErr: 0}, f})
		mean, se := (e.Estimate+f.Estimate)/2, e.StdErr/math.Sqrt2
		if !ok || math.Abs(c.Estimate-mean) > 1e-12 || math.Abs(c.StdErr-se) > 1e-12 ||
			c.Users != 2*e.Users || c.UsersBoth != 2*e.UsersBoth || c.Lower >= c.Estimate || c.Upper <= c.Estimate {
			t.Fatalf("Combine(e, f) = %+v, %v; want mean %v, SE %v", c, ok, mean, se)
		}
	}
	if _, ok := Combine([]Effect{{Intervention: "a", StdErr: 1}, {Intervention: "b", StdErr: 1}}); ok {
		t.Error("Combine of different interventions = true, want false")
	}
	if _, ok := Combine([]Effect{{StdErr: math.Inf(1)}, {StdErr: -1}}); ok {
		t.Error("Combine with no usable entry = true, want false")
	}
	if !Helps(Effect{Lower: -2, Upper: -1}) || Harms(Effect{Lower: -2, Upper: -1}) || ExcludesZero(Effect{Lower: -1, Upper: 1}) {
		t.Error("Helps/Harms/ExcludesZero disagree with the interval")
	}
}
