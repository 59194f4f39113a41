package tuningbench

import (
	"errors"
	"math"
	"math/rand/v2"
	"time"

	"github.com/attune-io/attune/controllers/tuning"
)

// Scenario families for the tuner benchmark (make bench-tuning). Each
// scenario is a loss L(S, t) of the strength S and the interval t, observed
// once per interval with Gaussian measurement noise, through the tuner's
// real input (tuning.Measurement, with a cohort size that is now and then
// below the minimum, so the measurement is invalid and every contender
// holds). All share the operator's bounds [lo, hi], maxStep and initial
// strength; each seed draws its own optimum.

const (
	lo, hi  = 0.1, 0.9 // the program's strength bounds, the same for every contender
	maxStep = 0.05     // the tuner's and SPSA's largest move per interval
	initial = 0.5      // every contender's first strength

	scenarioIntervals = 120
	minCohort         = 20   // the world's minCohortSize
	dropRate          = 0.05 // share of intervals whose cohort is below the minimum
	baseNoise         = 0.002
)

// scenario is one run's environment.
type scenario struct {
	family string
	seed   uint64
	// loss is the steady-state cohort loss at strength s in interval t.
	loss func(s float64, t int) float64
	// noise is the standard deviation of a measurement.
	noise float64
	// lag is the cohort's response time in intervals (0: immediate). With a
	// lag the cohort feels the effective strength E_t = E_{t−1} +
	// (S_t − E_{t−1})·(1 − e^{−1/lag}), and the interval's loss is L(E_t, t).
	lag float64
	// minLoss[t] is min over S in [lo, hi] of L(S, t) and argmin[t] where
	// it is reached, computed once.
	minLoss, argmin []float64
}

// family builds the scenario of one seed.
type family struct {
	name, definition string
	build            func(rng *rand.Rand) scenario
}

func quadratic(c, k, opt float64) func(float64) float64 {
	return func(s float64) float64 { return c + k*(s-opt)*(s-opt) }
}

func uniform(rng *rand.Rand, a, b float64) float64 { return a + (b-a)*rng.Float64() }

// populationUsers is the size of the population family's cohort.
const populationUsers = 200

// families are the scenario families, each run over scenarioSeeds seeds.
var families = []family{
	{"population", "a cohort of 200 users with individual optima o_i ~ N(S*, 0.1), S* ~ U[0.3, 0.7], each losing 0.1 per unit of strength short of o_i and 0.2 per unit beyond: L = 0.02 + mean_i of that hinge, U-shaped but not quadratic (linear flanks, minimum at the cohort's 1/3 quantile); σ = 0.002",
		func(rng *rand.Rand) scenario {
			centre := uniform(rng, 0.3, 0.7)
			optima := make([]float64, populationUsers)
			for i := range optima {
				optima[i] = centre + 0.1*rng.NormFloat64()
			}
			return scenario{noise: baseNoise, loss: func(s float64, _ int) float64 {
				var sum float64
				for _, o := range optima {
					if s < o {
						sum += 0.1 * (o - s)
					} else {
						sum += 0.2 * (s - o)
					}
				}
				return 0.02 + sum/populationUsers
			}}
		}},
	{"asymmetric", "L = 0.02 + k_near·(S−S*)² on one side of S*, k_far·(S−S*)² on the other (0.15 and 1.5, the steep side drawn), S* ~ U[0.25, 0.75]; σ = 0.002",
		func(rng *rand.Rand) scenario {
			opt := uniform(rng, 0.25, 0.75)
			kl, kr := 0.15, 1.5
			if rng.IntN(2) == 0 {
				kl, kr = kr, kl
			}
			return scenario{noise: baseNoise, loss: func(s float64, _ int) float64 {
				d := s - opt
				if d < 0 {
					return 0.02 + kl*d*d
				}
				return 0.02 + kr*d*d
			}}
		}},
	{"flat-bottom", "L = 0.02 + 0.4·max(0, |S−S*| − 0.08)², S* ~ U[0.25, 0.75]; σ = 0.002",
		func(rng *rand.Rand) scenario {
			opt := uniform(rng, 0.25, 0.75)
			return scenario{noise: baseNoise, loss: func(s float64, _ int) float64 {
				d := math.Max(0, math.Abs(s-opt)-0.08)
				return 0.02 + 0.4*d*d
			}}
		}},
	{"drift", "L = 0.02 + 0.3·(S − S*(t))², S*(t) = 0.5 + A·sin(2πt/120 + φ), A ~ U[0.15, 0.25], φ ~ U[0, 2π) (up to 0.013 per interval); σ = 0.002",
		func(rng *rand.Rand) scenario {
			amp, phase := uniform(rng, 0.15, 0.25), uniform(rng, 0, 2*math.Pi)
			return scenario{noise: baseNoise, loss: func(s float64, t int) float64 {
				opt := 0.5 + amp*math.Sin(2*math.Pi*float64(t)/scenarioIntervals+phase)
				return quadratic(0.02, 0.3, opt)(s)
			}}
		}},
	{"lag", "L = 0.02 + 0.3·(E_t − S*)², the cohort following the strength with a 3-interval time constant (E_t above), S* ~ U[0.2, 0.8]; σ = 0.002",
		func(rng *rand.Rand) scenario {
			opt := uniform(rng, 0.2, 0.8)
			return scenario{noise: baseNoise, lag: 3, loss: func(s float64, _ int) float64 { return quadratic(0.02, 0.3, opt)(s) }}
		}},
	{"heavy-noise", "L = 0.05 + 0.3·(S−S*)², S* ~ U[0.2, 0.8]; σ = 0.02 (ten times the others; the loss 0.3 strength-units from S* differs from the minimum by 1.4σ)",
		func(rng *rand.Rand) scenario {
			opt := uniform(rng, 0.2, 0.8)
			return scenario{noise: 0.02, loss: func(s float64, _ int) float64 { return quadratic(0.05, 0.3, opt)(s) }}
		}},
	{"at-bound", "L = 0.02 + 0.3·(S−S*)² with S* ~ U[0.85, 1.1] or, with probability ½, its mirror 1 − S* ∈ [−0.1, 0.15]: the best strength in bounds is at or next to a bound; σ = 0.002",
		func(rng *rand.Rand) scenario {
			opt := uniform(rng, 0.85, 1.1)
			if rng.IntN(2) == 1 {
				opt = 1 - opt
			}
			return scenario{noise: baseNoise, loss: func(s float64, _ int) float64 { return quadratic(0.02, 0.3, opt)(s) }}
		}},
	{"daily-rhythm", "L = 0.02 + 0.15·(E_t − S*)² + A·sin(2πt/18 + φ), S* ~ U[0.2, 0.8], the cohort following the strength with a 1-interval time constant, A ~ U[0.008, 0.012], φ ~ U[0, 2π): the level of every strength's loss moves with the time of day (a day of 18 intervals of 80 minutes) by up to 0.004 per interval, as much as a maxStep moves it, as the simulated population's does through real engines (docs/tuning.md); σ = 0.002",
		func(rng *rand.Rand) scenario {
			opt := uniform(rng, 0.2, 0.8)
			amp, phase := uniform(rng, 0.008, 0.012), uniform(rng, 0, 2*math.Pi)
			return scenario{noise: baseNoise, lag: 1, loss: func(s float64, t int) float64 {
				return quadratic(0.02, 0.15, opt)(s) + amp*math.Sin(2*math.Pi*float64(t)/18+phase)
			}}
		}},
	{"regime-change", "L = 0.02 + 0.3·(S−S₁)² until interval 60, then 0.03 + 0.6·(S−S₂)², S₁ ~ U[0.2, 0.8], S₂ at least 0.3 from S₁; σ = 0.002",
		func(rng *rand.Rand) scenario {
			s1 := uniform(rng, 0.2, 0.8)
			s2 := s1
			for math.Abs(s2-s1) < 0.3 {
				s2 = uniform(rng, 0.15, 0.85)
			}
			return scenario{noise: baseNoise, loss: func(s float64, t int) float64 {
				if t < scenarioIntervals/2 {
					return quadratic(0.02, 0.3, s1)(s)
				}
				return quadratic(0.03, 0.6, s2)(s)
			}}
		}},
}

const scenarioSeeds = 64

func (f family) scenario(seed uint64) scenario {
	sc := f.build(rand.New(rand.NewPCG(seed, 0x5ce7a))) // #nosec: simulation only
	sc.family, sc.seed = f.name, seed
	sc.minLoss = make([]float64, scenarioIntervals)
	sc.argmin = make([]float64, scenarioIntervals)
	for t := range sc.minLoss {
		sc.argmin[t], sc.minLoss[t] = minimum(sc.loss, t)
	}
	return sc
}

// minimum is argmin and min over S in [lo, hi] of L(S, t), on a 0.001 grid.
func minimum(loss func(s float64, t int) float64, t int) (at, least float64) {
	least = math.Inf(1)
	for i := 0; i <= 800; i++ {
		s := lo + (hi-lo)*float64(i)/800
		if l := loss(s, t); l < least {
			at, least = s, l
		}
	}
	return at, least
}

var errSmallCohort = errors.New("cohort below the minimum size")

// runResult is one contender's run of one scenario.
type runResult struct {
	regret    float64
	losses    []float64 // the loss the cohort incurred in each interval
	strengths []float64 // the strength in force in each interval
	valid     []bool    // whether the measurement after each interval was valid
}

// runScenario drives a contender for scenarioIntervals intervals. In
// interval t the strength S_t is in force, the cohort incurs L_t (L(S_t, t),
// or L(E_t, t) with a lag) and the regret L_t − min_S L(S, t) accrues; then
// the contender receives the interval's measurement and names S_{t+1}.
func runScenario(sc scenario, c contender) runResult {
	rng := rand.New(rand.NewPCG(sc.seed, 0x0b5)) // #nosec: simulation only
	s := initial
	effective := initial
	out := runResult{}
	at := time.Unix(0, 0)
	for t := range scenarioIntervals {
		out.strengths = append(out.strengths, s)
		felt := s
		if sc.lag > 0 {
			effective += (s - effective) * (1 - math.Exp(-1/sc.lag))
			felt = effective
		}
		l := sc.loss(felt, t)
		out.regret += l - sc.minLoss[t]
		out.losses = append(out.losses, l)
		at = at.Add(time.Hour)
		// The noise and the cohort size are drawn for every contender alike
		// (common random numbers): the same rng sequence in every run.
		noise, cohort := rng.NormFloat64(), 100+rng.IntN(50)
		if rng.Float64() < dropRate {
			cohort = rng.IntN(minCohort)
		}
		m := tuning.Measurement{Loss: math.Max(0, l+sc.noise*noise), CohortSize: cohort, At: at}
		if cohort < minCohort {
			m = tuning.Measurement{CohortSize: cohort, At: at, Err: errSmallCohort}
		}
		out.valid = append(out.valid, m.Err == nil)
		s = c.next(m, at)
	}
	return out
}
