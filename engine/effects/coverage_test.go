package effects

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// simulate runs one micro-randomised trial where the truth is known. Each
// user has a baseline level, a time trend and a hidden AR(1) state in the
// untreated outcome, and their own effect β_i around meanEffect. The
// randomisation probability follows the previous outcome (clipped to
// [0.1, 0.8]), so it is confounded with the untreated outcome: treated
// decisions fall where the loss was already high. It returns the
// observations, the estimand (the average of β_i over available
// decisions) and the naive difference of arm means.
func simulate(seed uint64, users, points int, meanEffect float64) (obs []Observation, truth, naive float64) {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	var sumEffect float64
	var n [2]int
	var sumY [2]float64
	for i := 0; i < users; i++ {
		user := fmt.Sprintf("user-%d", i)
		level, trend := rng.NormFloat64(), rng.NormFloat64()
		effect := meanEffect + 0.2*rng.NormFloat64()
		state, prev := rng.NormFloat64(), 0.0
		for t := 0; t < points; t++ {
			state = 0.7*state + 0.7*rng.NormFloat64()
			p := math.Min(0.8, math.Max(0.1, 0.45+0.25*prev))
			o := Observation{User: user, Available: rng.Float64() < 0.8, P: p}
			o.Outcome = level + trend*float64(t)/float64(points) + state + 0.5*rng.NormFloat64()
			if o.Available {
				o.Treated = rng.Float64() < p
				sumEffect += effect
				a := 0
				if o.Treated {
					o.Outcome += effect
					a = 1
				}
				n[a]++
				sumY[a] += o.Outcome
			}
			prev = o.Outcome
			obs = append(obs, o)
		}
	}
	return obs, sumEffect / float64(n[0]+n[1]), sumY[1]/float64(n[1]) - sumY[0]/float64(n[0])
}

// TestCoverage checks over many seeded trials that the 95% intervals
// cover the known estimand about 95% of the time, that WCLS is nearly
// unbiased, and that the naive difference of means is not.
func TestCoverage(t *testing.T) {
	const seeds, users, points, meanEffect = 1000, 80, 60, -0.3
	var covered int
	var bias, sqErr, naiveBias, sumSE float64
	for s := uint64(0); s < seeds; s++ {
		obs, truth, naive := simulate(s, users, points, meanEffect)
		est := NewEstimator("x", DefaultRefP)
		for _, o := range obs {
			est.Add(o)
		}
		e, ok := est.Estimate()
		if !ok {
			t.Fatalf("seed %d: no estimate", s)
		}
		if e.Lower <= truth && truth <= e.Upper {
			covered++
		}
		bias += e.Estimate - truth
		sqErr += (e.Estimate - truth) * (e.Estimate - truth)
		naiveBias += naive - truth
		sumSE += e.StdErr
	}
	coverage := float64(covered) / seeds
	bias, naiveBias, sumSE = bias/seeds, naiveBias/seeds, sumSE/seeds
	t.Logf("coverage %.3f over %d seeds; mean bias %+.4f, naive bias %+.4f, mean SE %.4f, RMSE %.4f",
		coverage, seeds, bias, naiveBias, sumSE, math.Sqrt(sqErr/seeds))
	if coverage < 0.92 || coverage > 0.98 {
		t.Errorf("coverage %.3f outside [0.92, 0.98]", coverage)
	}
	// Mean bias over seeds has a Monte-Carlo error of about SE/√seeds.
	if math.Abs(bias) > 4*sumSE/math.Sqrt(seeds) {
		t.Errorf("mean bias %+.4f exceeds 4 Monte-Carlo errors (%.4f)", bias, 4*sumSE/math.Sqrt(seeds))
	}
	if math.Abs(naiveBias) < 2*sumSE {
		t.Errorf("naive bias %+.4f is under 2 SE: the design no longer needs weighting", naiveBias)
	}
}
