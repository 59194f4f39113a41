package simulator

import (
	"math"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/contract"
)

// TestDoseHelpsUpToToleranceThenBurdens: a session's benefit grows with
// the dose up to the person's tolerance; beyond it every unit is a burden,
// so a heavy enough dose does net harm.
func TestDoseHelpsUpToToleranceThenBurdens(t *testing.T) {
	p := New(DefaultConfig())
	a := p.Agents[0]
	gain := func(dose float64) float64 {
		r := a.Response("ResonanceBreathing", dose)
		var after Vec
		for d := range after {
			after[d] = a.State[d] + r[d]
		}
		return p.Loss(a.State) - p.Loss(after)
	}
	tol := a.Tolerance
	if !(gain(0.5*tol) > 0 && gain(tol) > gain(0.5*tol) && gain(tol) > gain(1.5*tol)) {
		t.Errorf("loss reduction at ½, 1 and 1½ tolerance: %.4f %.4f %.4f; want a peak at the tolerance", gain(0.5*tol), gain(tol), gain(1.5*tol))
	}
	if g := gain(tol + 2); g >= 0 {
		t.Errorf("a dose two units past tolerance reduces the loss by %.4f; want harm", g)
	}
}

// TestReferenceStrengthIsInside: the strength whose dose helps most lies
// well inside [0.1, 0.9], near the one whose dose S·(0.5 + S) is the mean
// tolerance.
func TestReferenceStrengthIsInside(t *testing.T) {
	p := New(DefaultConfig())
	s := p.ReferenceStrength([]string{"FocusedAttention", "ResonanceBreathing", "MicroBreak"}, 0.1, 0.9)
	atMeanTolerance := (-0.5 + math.Sqrt(0.25+4*meanTolerance)) / 2
	if s < 0.3 || s > 0.7 || math.Abs(s-atMeanTolerance) > 0.1 {
		t.Errorf("reference strength %.3f; want it inside, near %.3f", s, atMeanTolerance)
	}
}

// TestDecisionTruthMatchesTheDynamics: with the randomness switched off,
// the recorded true effect of a treated decision over a horizon equals
// the difference in true loss between the person who did the session and
// an identical one who did not, moved by the dynamics themselves.
func TestDecisionTruthMatchesTheDynamics(t *testing.T) {
	saved := [3]any{noise, drift, setbacksPerHour}
	noise, drift, setbacksPerHour = Vec{}, Vec{}, 0
	t.Cleanup(func() { noise, drift, setbacksPerHour = saved[0].(Vec), saved[1].(Vec), saved[2].(float64) })
	cfg := DefaultConfig()
	cfg.Users, cfg.ChurnPerHour, cfg.StartHour = 40, 0, 12
	treated, control := New(cfg), New(cfg)
	for _, horizon := range []time.Duration{10 * time.Minute, 30 * time.Minute} {
		for i := range treated.Agents {
			a, b := treated.Agents[i], control.Agents[i]
			a.Compliance, b.Compliance = 1, 1
			b.State = a.State
			id := "000000000000000a-00000001"
			d := contract.Decision{ID: id, Action: "ResonanceBreathing", Candidate: "ResonanceBreathing", TreatmentProbability: 0.5, Probability: 0.5}
			d.Dose = syntheticDose("ResonanceBreathing", 0.45).Dose
			treated.Decided(a, d, 0.45)
			truth, _ := treated.Truth(id)
			want := truth.Effect(horizon)
			a.Advance(treated, horizon)
			b.Advance(control, horizon)
			got := treated.Loss(a.State) - control.Loss(b.State)
			if i == 0 {
				t.Logf("horizon %s: effect %.5f, dynamics %.5f", horizon, want, got)
			}
			// The dynamics take effect at the start of their 2-minute step,
			// the truth at the session's end: a small absolute slack.
			if math.Abs(got-want) > 0.15*math.Abs(want)+5e-4 {
				t.Errorf("person %d, horizon %s: recorded effect %.5f, the dynamics give %.5f", i, horizon, want, got)
			}
		}
	}
}

// Advance moves one person alone (for the test above).
func (a *Agent) Advance(p *Population, dt time.Duration) {
	now := p.now
	for t := time.Duration(0); t < dt; t += maxStep {
		a.step(p, now+t, min(maxStep, dt-t))
	}
}

// TestHarmIsIndividual: CognitiveReappraisal lowers the emotion of about
// HarmfulShare of people and raises everyone else's; MicroBreak is near
// zero for all.
func TestHarmIsIndividual(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Users = 2000
	p := New(cfg)
	harmed := 0
	for _, a := range p.Agents {
		if a.Effects["CognitiveReappraisal"][Emotion] < 0 {
			harmed++
		}
		for d, v := range a.Effects["MicroBreak"] {
			if math.Abs(v) > 0.03 {
				t.Fatalf("person %d: MicroBreak moves %s by %.3f; want near zero", a.ID, DimensionNames[d], v)
			}
		}
	}
	if share := float64(harmed) / float64(len(p.Agents)); math.Abs(share-HarmfulShare) > 0.04 {
		t.Errorf("%.1f%% harmed by CognitiveReappraisal, want about %.0f%%", 100*share, 100*HarmfulShare)
	}
}

// TestChurnSleepAndBreaks: over a simulated day people sleep (no natural
// breaks then), come to breaks about every quarter hour awake, and some
// leave for newcomers.
func TestChurnSleepAndBreaks(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Users, cfg.ChurnPerHour = 200, 0.02
	p := New(cfg)
	first := map[int]bool{}
	for _, a := range p.Agents {
		first[a.ID] = true
	}
	breaks, asleepAt3 := 0, 0
	for range 24 * 12 {
		p.Advance(5 * time.Minute)
		breaks += len(p.DecisionPoints())
		if h := p.Hour(); h >= 3 && h < 3+5.0/60 {
			for _, a := range p.Agents {
				if a.Asleep(h) {
					asleepAt3++
				}
			}
		}
	}
	left := 0
	for _, a := range p.Agents {
		if !first[a.ID] {
			left++
		}
	}
	if asleepAt3 < 150 {
		t.Errorf("%d of 200 asleep at 3 am", asleepAt3)
	}
	if perPersonAwakeHour := float64(breaks) / 200 / 16; perPersonAwakeHour < 3 || perPersonAwakeHour > 4.5 {
		t.Errorf("%.1f breaks a person an hour awake, want about 4 (one a quarter hour, fewer where two fall in one step)", perPersonAwakeHour)
	}
	if left < 50 || left > 150 {
		t.Errorf("%d of 200 replaced in a day at 2%% an hour, want about 90", left)
	}
}

// TestFollowOnIsThePolicysLaterSession: after a control decision, a
// session the person was given at a later break counts toward what not
// treating now led to, if it worked within the horizon; after a treated
// decision nothing follows (the cooldown).
func TestFollowOnIsThePolicysLaterSession(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Users, cfg.ChurnPerHour = 1, 0
	p := New(cfg)
	a := p.Agents[0]
	control := contract.Decision{ID: "000000000000000a-00000001", Action: "none", Candidate: "ResonanceBreathing", TreatmentProbability: 0.5, Probability: 0.5}
	p.Decided(a, control, 0.45)
	p.Advance(10 * time.Minute)
	later := contract.Decision{ID: "000000000000000b-00000001", Action: "ResonanceBreathing", Candidate: "ResonanceBreathing", TreatmentProbability: 0.5, Probability: 0.5,
		Dose: syntheticDose("ResonanceBreathing", 0.45).Dose}
	p.Decided(a, later, 0.45)
	if f := p.FollowOn(control.ID, 30*time.Minute); f >= 0 {
		t.Errorf("follow-on of a helpful session 10 min later, within 30 min: %.5f, want it to lower the loss", f)
	}
	if f := p.FollowOn(control.ID, 12*time.Minute); f != 0 {
		t.Errorf("follow-on of a session that ends after the horizon: %.5f, want 0", f)
	}
	if f := p.FollowOn(later.ID, time.Hour); f != 0 {
		t.Errorf("follow-on of a treated decision: %.5f, want 0", f)
	}
}
