package policy

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

var arms = []string{"BodyScan", "FocusedAttention", "MicroBreak", "ResonanceBreathing"}

// TestThompsonFindsTheBestArm runs a synthetic bandit: each arm's reward is
// Normal(mean, 0.1) and ResonanceBreathing is best. After a few hundred
// rounds the policy picks it most of the time it intervenes.
func TestThompsonFindsTheBestArm(t *testing.T) {
	means := map[string]float64{"BodyScan": 0.02, "FocusedAttention": 0.05, "MicroBreak": -0.02, "ResonanceBreathing": 0.12}
	env := rand.New(rand.NewPCG(7, 7))
	u := &User{}
	pop := &Population{}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	picks := map[string]int{}
	for round := range 400 {
		rec := Recommend(u, pop, arms, "user-a", 42, Strength{0.5, 0.1, 0.9})
		if rec.Intervention == "none" {
			continue
		}
		if round >= 300 {
			picks[rec.Intervention]++
		}
		at := t0.Add(time.Duration(round) * time.Hour)
		reward := means[rec.Intervention] + 0.1*env.NormFloat64()
		Start(u, rec.Intervention, at, true, 0.5)
		Observe(u, pop, at.Add(RewardWindow), 0.5-reward)
	}
	total := 0
	for _, n := range picks {
		total += n
	}
	if total == 0 || float64(picks["ResonanceBreathing"])/float64(total) < 0.7 {
		t.Fatalf("in the last 100 rounds the best arm was chosen %d of %d interventions (%v); want ≥ 70%%", picks["ResonanceBreathing"], total, picks)
	}
}

func TestInterveneProbabilityIsClipped(t *testing.T) {
	// A hugely positive arm would make P(intervene) ≈ 1; it must stay ≤ 0.8.
	u := &User{Arms: map[string]*Stats{"BodyScan": {N: 100, Mean: 1}}}
	pop := &Population{}
	rec := Recommend(u, pop, []string{"BodyScan"}, "k", 1, Strength{0.5, 0, 1})
	if rec.InterveneProbability != MaxInterveneP {
		t.Errorf("p = %v, want clipped to %v", rec.InterveneProbability, MaxInterveneP)
	}
	// A harmful arm must still be tried at least 10% of the time.
	u = &User{Arms: map[string]*Stats{"BodyScan": {N: 100, Mean: -1}}}
	rec = Recommend(u, pop, []string{"BodyScan"}, "k", 1, Strength{0.5, 0, 1})
	if rec.InterveneProbability != MinInterveneP {
		t.Errorf("p = %v, want clipped to %v", rec.InterveneProbability, MinInterveneP)
	}
	// Empirically: over many draws the share of interventions is within the clip.
	n, intervened := 2000, 0
	for range n {
		if Recommend(u, pop, []string{"BodyScan"}, "k", 1, Strength{0.5, 0, 1}).Intervention != "none" {
			intervened++
		}
	}
	if share := float64(intervened) / float64(n); math.Abs(share-MinInterveneP) > 0.03 {
		t.Errorf("intervened in %.3f of draws, want ≈ %v", share, MinInterveneP)
	}
}

func TestDeterministicUnderSeed(t *testing.T) {
	draw := func(seed uint64) []string {
		u := &User{}
		var out []string
		for range 20 {
			out = append(out, Recommend(u, &Population{}, arms, "user-b", seed, Strength{0.5, 0.1, 0.9}).Intervention)
		}
		return out
	}
	a, b, c := draw(9), draw(9), draw(10)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed, different draw %d: %s vs %s", i, a[i], b[i])
		}
	}
	same := true
	for i := range a {
		same = same && a[i] == c[i]
	}
	if same {
		t.Error("a different seed gave the identical sequence of 20 draws")
	}
}

func TestPersonalStrengthStaysInBounds(t *testing.T) {
	pop := &Population{Arms: map[string]*Stats{"BodyScan": {N: 50, Mean: 0.05}}}
	good := &User{Arms: map[string]*Stats{"BodyScan": {N: 5, Mean: 0.3}}}
	bad := &User{Arms: map[string]*Stats{"BodyScan": {N: 5, Mean: -0.3}}}
	newcomer := &User{}
	s := Strength{Value: 0.6, Min: 0.2, Max: 0.8}
	if v := PersonalStrength(good, pop, s); v != 0.8 {
		t.Errorf("strong responder: %v, want capped at max 0.8", v)
	}
	if v := PersonalStrength(bad, pop, s); math.Abs(v-0.3) > 0.01 {
		t.Errorf("adverse responder: %v, want ≈ 0.3 (halved)", v)
	}
	if v := PersonalStrength(newcomer, pop, s); v != 0.6 {
		t.Errorf("newcomer: %v, want the program strength 0.6", v)
	}
}
