package policy

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

var arms = []string{"BodyScan", "FocusedAttention", "MicroBreak", "ResonanceBreathing"}

var (
	t0       = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	noLimits = Limits{MaxPerDay: 1 << 20}
)

// TestThompsonFindsTheBestArm runs a synthetic micro-randomised trial: the
// loss reduction is a baseline that swings widely with the hour (what an
// uncontrolled before/after comparison would credit to any intervention)
// plus the delivered arm's true effect, and ResonanceBreathing is best.
// Learning from action-centred pseudo-rewards, the policy ends up
// proposing it most of the time.
func TestThompsonFindsTheBestArm(t *testing.T) {
	effects := map[string]float64{"BodyScan": 0.02, "FocusedAttention": 0.04, "MicroBreak": -0.03, "ResonanceBreathing": 0.12}
	env := rand.New(rand.NewPCG(7, 7))
	u, pop := &User{}, &Population{}
	picks := map[string]int{}
	for round := range 1500 {
		at := t0.Add(time.Duration(round) * time.Hour)
		c := Decide(u, pop, arms, "user-a", 42, Strength{0.5, 0.1, 0.9}, noLimits, true, at)
		if round >= 1300 {
			picks[c.Candidate]++
		}
		reduction := 0.3*math.Sin(float64(round)/5) + 0.05*env.NormFloat64()
		if c.Action != ActionNone {
			reduction += effects[c.Action]
		}
		Learn(u, pop, c.Candidate, c.Action != ActionNone, c.TreatP, reduction)
	}
	if share := float64(picks["ResonanceBreathing"]) / 200; share < 0.7 {
		t.Fatalf("in the last 200 rounds the best arm was the candidate %.0f%% of the time (%v); want ≥ 70%%", 100*share, picks)
	}
}

// TestPseudoRewardIsUnbiased: whatever the baseline and however the
// probability varies, the mean pseudo-reward estimates the true effect.
func TestPseudoRewardIsUnbiased(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const effect, n = 0.05, 400000
	sum := 0.0
	for i := range n {
		p := 0.1 + 0.7*rng.Float64()
		treated := rng.Float64() < p
		reduction := 0.5 + 0.2*math.Sin(float64(i)) + 0.1*rng.NormFloat64()
		if treated {
			reduction += effect
		}
		sum += PseudoReward(treated, p, reduction)
	}
	if mean := sum / n; math.Abs(mean-effect) > 0.01 {
		t.Errorf("mean pseudo-reward %.4f, want ≈ %.2f", mean, effect)
	}
}

// TestTreatProbabilityIsMonotoneAndClipped: the dose mapping of
// docs/engine-model.md, over a grid of strengths and beliefs.
func TestTreatProbabilityIsMonotoneAndClipped(t *testing.T) {
	for _, q := range []float64{0, 0.01, 0.2, 0.5, 0.8, 0.99, 1} {
		prev := 0.0
		for s := 0.0; s <= 1.0001; s += 0.05 {
			p := TreatProbability(q, s)
			if p < MinTreatP || p > MaxTreatP {
				t.Fatalf("q=%v S=%v: p=%v outside [%v, %v]", q, s, p, MinTreatP, MaxTreatP)
			}
			if p < prev {
				t.Fatalf("q=%v: p fell from %v to %v as S rose to %v", q, prev, p, s)
			}
			prev = p
		}
	}
	if lo, hi := TreatProbability(0.5, 0.2), TreatProbability(0.5, 0.8); hi-lo < 0.4 {
		t.Errorf("strength 0.2 → %.2f, 0.8 → %.2f: the strength barely moves the dose", lo, hi)
	}
	if d := DoseFor("ResonanceBreathing", 0.5); d.DurationSec != 300 {
		t.Errorf("resonance breathing at S=0.5 lasts %ds, want 300", d.DurationSec)
	}
}

// TestClippedProbabilityIsWhatIsDrawn: the empirical share of treated
// decisions matches the logged probability, at both ends of the clip.
func TestClippedProbabilityIsWhatIsDrawn(t *testing.T) {
	for _, tc := range []struct {
		mean float64
		want float64
	}{{1, MaxTreatP}, {-1, MinTreatP}} {
		u := &User{Arms: map[string]*Stats{"BodyScan": {N: 1000, Mean: tc.mean}}}
		treated := 0
		const n = 4000
		for i := range n {
			c := Decide(u, &Population{}, []string{"BodyScan"}, "k", 1, Strength{0.5, 0, 1}, noLimits, true, t0.Add(time.Duration(i)*time.Second))
			if c.TreatP != tc.want {
				t.Fatalf("effect %v: p = %v, want clipped to %v", tc.mean, c.TreatP, tc.want)
			}
			if c.Action != ActionNone {
				treated++
				if c.Probability != c.TreatP || c.Dose == nil {
					t.Fatalf("treated decision %+v", c)
				}
			} else if c.Probability != 1-c.TreatP {
				t.Fatalf("control decision %+v", c)
			}
		}
		if share := float64(treated) / n; math.Abs(share-tc.want) > 0.03 {
			t.Errorf("effect %v: treated %.3f of decisions, want ≈ %v", tc.mean, share, tc.want)
		}
	}
}

// TestCooldownAndDailyCap: ineligible users get none with probability 1,
// no draw, and the reason.
func TestCooldownAndDailyCap(t *testing.T) {
	lim := Limits{MaxPerDay: 2, Cooldown: time.Hour}
	u := &User{Arms: map[string]*Stats{"BodyScan": {N: 1000, Mean: 1}}} // treats at 0.8
	var treatedAt []time.Time
	for m := 0; m < 24*60 && len(treatedAt) < 3; m += 10 {
		now := t0.Add(time.Duration(m) * time.Minute)
		draws := u.Draws
		c := Decide(u, &Population{}, []string{"BodyScan"}, "k", 5, Strength{0.5, 0, 1}, lim, true, now)
		if c.Reason != "" {
			if c.Action != ActionNone || c.Probability != 1 || c.TreatP != 0 || u.Draws != draws {
				t.Fatalf("%v: ineligible decision %+v (draws %d → %d)", now, c, draws, u.Draws)
			}
			want := ReasonCooldown
			if len(treatedAt) == 2 && now.Sub(treatedAt[1]) >= time.Hour {
				want = ReasonDailyCap
			}
			if c.Reason != want {
				t.Fatalf("%v after treatments at %v: reason %q, want %q", now, treatedAt, c.Reason, want)
			}
			continue
		}
		if c.Action != ActionNone {
			for _, at := range treatedAt {
				if now.Sub(at) < time.Hour {
					t.Fatalf("treated at %v within the cooldown of %v", now, at)
				}
			}
			treatedAt = append(treatedAt, now)
		}
	}
	if len(treatedAt) != 2 {
		t.Fatalf("treated %d times in a day with a cap of 2", len(treatedAt))
	}
	// The next day the cap has room again.
	if c := Decide(u, &Population{}, []string{"BodyScan"}, "k", 5, Strength{0.5, 0, 1}, lim, true, treatedAt[0].Add(24*time.Hour+time.Minute)); c.Reason == ReasonDailyCap {
		t.Errorf("still capped a day after the first treatment")
	}
	if c := Decide(u, &Population{}, []string{"BodyScan"}, "k", 5, Strength{0.5, 0, 1}, lim, false, t0.Add(48*time.Hour)); c.Reason != ReasonUnavailable || c.Action != ActionNone {
		t.Errorf("unavailable user: %+v", c)
	}
}

func TestDeterministicUnderSeed(t *testing.T) {
	draw := func(seed uint64) []string {
		u := &User{}
		var out []string
		for i := range 20 {
			c := Decide(u, &Population{}, arms, "user-b", seed, Strength{0.5, 0.1, 0.9}, noLimits, true, t0.Add(time.Duration(i)*time.Minute))
			out = append(out, c.Candidate+"/"+c.Action)
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
