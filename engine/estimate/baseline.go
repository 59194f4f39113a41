package estimate

import (
	"math"

	"gonum.org/v1/gonum/stat/distuv"
)

// Baseline is a personal rolling baseline of one signal (e.g. ln RMSSD): an
// exponentially weighted mean and variance, started from a population prior
// so that the first windows are not judged against nothing.
type Baseline struct {
	Mean     float64 `json:"m"`
	Variance float64 `json:"v"`
	N        int     `json:"n"`
}

// BaselineAlpha is the weight of a new observation once the baseline has
// warmed up (an effective memory of about 20 windows).
const BaselineAlpha = 0.05

// NewBaseline starts a baseline at a population prior.
func NewBaseline(mean, sd float64) Baseline {
	return Baseline{Mean: mean, Variance: sd * sd}
}

// Z returns the standard score of x against the baseline.
func (b Baseline) Z(x float64) float64 {
	sd := math.Sqrt(b.Variance)
	if sd < 1e-6 {
		sd = 1e-6
	}
	return (x - b.Mean) / sd
}

// Update folds x into the baseline. The weight starts at 1/(n+2) (so the
// prior counts as one observation) and settles at BaselineAlpha.
func (b *Baseline) Update(x float64) {
	alpha := math.Max(BaselineAlpha, 1/float64(b.N+2))
	d := x - b.Mean
	b.Mean += alpha * d
	b.Variance = (1 - alpha) * (b.Variance + alpha*d*d)
	if b.Variance < 1e-4 {
		b.Variance = 1e-4
	}
	b.N++
}

var standardNormal = distuv.Normal{Mu: 0, Sigma: 1}

// NormalCDF is Φ(z).
func NormalCDF(z float64) float64 { return standardNormal.CDF(z) }
