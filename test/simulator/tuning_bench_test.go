package simulator

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/attune-io/attune/controllers/tuning"
)

const (
	intervals = 100
	lo, hi    = 0.1, 0.9
	maxStep   = 0.05
	initial   = 0.5
)

// strategy picks the strength for the next interval from the last measured loss.
type strategy interface {
	next(measured float64) float64
}

type fixed struct{ s float64 }

func (f fixed) next(float64) float64 { return f.s }

// randomSearch draws each interval's strength uniformly in the bounds (what
// Katib's default random algorithm does).
type randomSearch struct{ rng *rand.Rand }

func (r randomSearch) next(float64) float64 { return lo + (hi-lo)*r.rng.Float64() }

// tuner is the operator's tuner, fed exactly as the reconciler feeds it.
type tuner struct {
	s       float64
	history []tuning.Observation
}

func (t *tuner) next(measured float64) float64 {
	now := time.Unix(0, 0)
	var d tuning.Decision
	d, t.history = tuning.Step(t.history, t.s, tuning.Params{Min: lo, Max: hi, MaxStep: maxStep}, tuning.Measurement{Loss: measured, At: now}, now, time.Minute)
	t.s = d.Strength
	return t.s
}

type outcome struct {
	within5 int // first interval whose 3-interval mean loss is within 5% of the oracle; -1 never
	regret  float64
}

func simulate(p Params, s strategy, oracle float64) outcome {
	m := New(p)
	strength := initial
	out := outcome{within5: -1}
	var recent []float64
	for i := range intervals {
		m.Interval(strength)
		loss := m.CohortLoss()
		out.regret += loss - oracle
		recent = append(recent, loss)
		if len(recent) > 3 {
			recent = recent[1:]
		}
		mean := 0.0
		for _, l := range recent {
			mean += l
		}
		mean /= float64(len(recent))
		if out.within5 < 0 && len(recent) == 3 && mean <= 1.05*oracle {
			out.within5 = i + 1
		}
		strength = s.next(m.MeasuredLoss())
	}
	return out
}

// BenchmarkTuning compares the tuner with a fixed strength and random
// search over several optimum positions and seeds (make bench-tuning).
func BenchmarkTuning(b *testing.B) {
	for range b.N {
		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "optimum\tseed\toracle S\toracle L\ttuner →5%\ttuner regret\tfixed →5%\tfixed regret\trandom →5%\trandom regret\tregret ratio tuner/random")
		var tunerRegret, randomRegret float64
		reached, runs := 0, 0
		worst := 0
		for _, optimum := range []float64{0.25, 0.45, 0.7, 0.85} {
			for seed := uint64(1); seed <= 3; seed++ {
				p := DefaultParams()
				p.OptimumMean, p.Seed = optimum, seed
				bestS, oracle := Oracle(p, lo, hi)
				t := simulate(p, &tuner{s: initial}, oracle)
				f := simulate(p, fixed{initial}, oracle)
				r := simulate(p, randomSearch{rand.New(rand.NewPCG(seed, 99))}, oracle)
				fmt.Fprintf(w, "%.2f\t%d\t%.3f\t%.5f\t%d\t%.4f\t%d\t%.4f\t%d\t%.4f\t%.2f\n",
					optimum, seed, bestS, oracle, t.within5, t.regret, f.within5, f.regret, r.within5, r.regret, t.regret/r.regret)
				tunerRegret += t.regret
				randomRegret += r.regret
				runs++
				if t.within5 > 0 && t.within5 <= 25 {
					reached++
				}
				if t.within5 < 0 || t.within5 > worst {
					worst = t.within5
					if t.within5 < 0 {
						worst = 1000
					}
				}
			}
		}
		_ = w.Flush()
		fmt.Printf("tuner within 5%% of the oracle in ≤ 25 intervals: %d of %d runs (worst %d)\n", reached, runs, worst)
		fmt.Printf("total regret over %d intervals: tuner %.3f, random search %.3f, ratio %.2f (goal ≤ 0.5)\n", intervals, tunerRegret, randomRegret, tunerRegret/randomRegret)
		b.ReportMetric(tunerRegret/randomRegret, "regret-ratio")
		b.ReportMetric(float64(reached)/float64(runs), "share-within-5%-by-25")
	}
}
