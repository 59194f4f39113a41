package queueing

import (
	"math"
	"testing"
)

// erlangCTextbook is the published Erlang C formula as it is printed
// for M/M/c in queueing textbooks (e.g. Kleinrock, Queueing Systems,
// vol. 1, on M/M/m):
//
//	C(c, a) = [a^c/c! · c/(c−a)] / [Σ_{k<c} a^k/k! + a^c/c! · c/(c−a)]
//
// evaluated term by term, independently of ErlangC's recurrence.
func erlangCTextbook(c int, a float64) float64 {
	term, sum := 1.0, 0.0 // a^k/k!
	for k := range c {
		sum += term
		term *= a / float64(k+1)
	}
	top := term * float64(c) / (float64(c) - a)
	return top / (sum + top)
}

func TestErlangCMatchesThePublishedFormula(t *testing.T) {
	// Values known by hand: one server waits with probability ρ (M/M/1);
	// two servers at a = 1 Erlang wait with probability 1/3.
	if got := ErlangC(1, 0.7); math.Abs(got-0.7) > 1e-12 {
		t.Errorf("ErlangC(1, 0.7) = %v, want ρ = 0.7", got)
	}
	if got := ErlangC(2, 1); math.Abs(got-1.0/3) > 1e-12 {
		t.Errorf("ErlangC(2, 1) = %v, want 1/3", got)
	}
	for _, p := range []struct {
		c int
		a float64
	}{{3, 2.4}, {8, 6}, {16, 14.4}, {50, 45}, {100, 80}} {
		want := erlangCTextbook(p.c, p.a)
		if got := ErlangC(p.c, p.a); math.Abs(got-want) > 1e-9*want {
			t.Errorf("ErlangC(%d, %v) = %v, the textbook formula gives %v", p.c, p.a, got, want)
		}
	}
	if got := ErlangC(4, 4); got != 1 {
		t.Errorf("ErlangC(4, 4) = %v, want 1 (overloaded)", got)
	}
}

// TestSimulationMatchesErlangC checks the discrete-event simulation
// against the closed forms it is used to check: Erlang C for M/M/c (mean
// wait C/(cμ−λ)), and Pollaczek–Khinchine for M/D/1 (mean wait
// ρ·s / (2(1−ρ))), both exact results of queueing theory.
func TestSimulationMatchesErlangC(t *testing.T) {
	for _, p := range []struct {
		name    string
		c       int
		rho, s  float64
		service string
	}{
		{"M/M/1 ρ=0.5", 1, 0.5, 0.002, "exp"},
		{"M/M/4 ρ=0.8", 4, 0.8, 0.001, "exp"},
		{"M/M/16 ρ=0.9", 16, 0.9, 0.0005, "exp"},
		{"M/D/1 ρ=0.7", 1, 0.7, 0.003, "const"},
	} {
		t.Run(p.name, func(t *testing.T) {
			lambda := p.rho * float64(p.c) / p.s
			service, cv := Exponential(p.s), 1.0
			if p.service == "const" {
				service, cv = Constant(p.s), 0
			}
			want := Predict(p.c, lambda, p.s, cv)
			if p.service == "const" {
				// Pollaczek–Khinchine, written out: Predict must agree.
				if pk := p.rho * p.s / (2 * (1 - p.rho)); math.Abs(want.MeanWait-pk) > 1e-12 {
					t.Fatalf("Predict's M/D/1 wait %v, Pollaczek–Khinchine %v", want.MeanWait, pk)
				}
			}
			got := Simulate(lambda, []Station{{Name: "s", Servers: p.c, Service: service}}, 600_000, 42)[0]
			if rel := math.Abs(got.Utilisation-want.Utilisation) / want.Utilisation; rel > 0.02 {
				t.Errorf("utilisation: simulated %.4f, predicted %.4f", got.Utilisation, want.Utilisation)
			}
			if rel := math.Abs(got.MeanWait-want.MeanWait) / want.MeanWait; rel > 0.08 {
				t.Errorf("mean wait: simulated %.3g s, predicted %.3g s (%.1f%% off)", got.MeanWait, want.MeanWait, 100*rel)
			}
			if p.service == "exp" {
				if d := math.Abs(got.PWait - want.PWait); d > 0.02 {
					t.Errorf("P(wait): simulated %.4f, Erlang C %.4f", got.PWait, want.PWait)
				}
			}
			t.Logf("ρ %.3f/%.3f  P(wait) %.4f/%.4f  Wq %.3g/%.3g s (simulated/predicted)",
				got.Utilisation, want.Utilisation, got.PWait, want.PWait, got.MeanWait, want.MeanWait)
		})
	}
}

// TestTandemFollowsBurke checks the tandem against Burke's theorem: the
// departures of an M/M/c queue are again a Poisson process of rate λ, so
// a single exponential server behind it waits as an M/M/1 queue fed
// directly would, Wq = ρ·s/(1−ρ). Four servers upstream reorder requests;
// a simulation that fed the second station in arrival order instead of
// departure order would get this wrong. The end-to-end mean is the sum
// of the stations'.
func TestTandemFollowsBurke(t *testing.T) {
	lambda := 800.0
	got := Simulate(lambda, []Station{
		{Name: "a", Servers: 4, Service: Exponential(0.004)},    // ρ = 0.8
		{Name: "b", Servers: 1, Service: Exponential(0.000875)}, // ρ = 0.7
	}, 600_000, 7)
	want := 0.7 * 0.000875 / (1 - 0.7)
	if rel := math.Abs(got[1].MeanWait-want) / want; rel > 0.08 {
		t.Errorf("second station's mean wait %.3g s, Burke + M/M/1 give %.3g s (%.1f%% off)", got[1].MeanWait, want, 100*rel)
	}
	if sum := got[0].MeanTime + got[1].MeanTime; math.Abs(got[2].MeanTime-sum) > 1e-9*sum {
		t.Errorf("end to end %v, the stations sum to %v", got[2].MeanTime, sum)
	}
}
