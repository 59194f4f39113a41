package simulator

import (
	"fmt"
	"math"
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

// scenarioRegrets runs every contender on every scenario family and seed:
// regrets[family][contender][seed].
func scenarioRegrets(tb testing.TB, check func(sc scenario, name string, c contender, r runResult)) [][][]float64 {
	tb.Helper()
	regrets := make([][][]float64, len(families))
	for fi, f := range families {
		regrets[fi] = make([][]float64, len(contenders))
		for seed := uint64(1); seed <= scenarioSeeds; seed++ {
			sc := f.scenario(seed)
			for ci, spec := range contenders {
				c := spec.make(seed)
				r := runScenario(sc, c)
				if g, ok := c.(*gonumContender); ok {
					g.close()
				}
				if check != nil {
					check(sc, spec.name, c, r)
				}
				regrets[fi][ci] = append(regrets[fi][ci], r.regret)
			}
		}
	}
	return regrets
}

func sum(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s
}

// TestTuningContendersAreSafe runs the whole comparison and checks the rules
// every contender plays by: strengths stay in [lo, hi] and hold on an
// invalid measurement; the tuner never moves more than maxStep, and SPSA
// never steps θ by more than maxStep. It also checks the benchmark's
// bookkeeping: regret is never negative.
func TestTuningContendersAreSafe(t *testing.T) {
	scenarioRegrets(t, func(sc scenario, name string, c contender, r runResult) {
		for i, s := range r.strengths {
			if s < lo || s > hi || math.IsNaN(s) {
				t.Fatalf("%s seed %d %s: interval %d strength %.4f outside [%.2f, %.2f]", sc.family, sc.seed, name, i, s, lo, hi)
			}
			if i == 0 {
				continue
			}
			if !r.valid[i-1] && s != r.strengths[i-1] {
				t.Fatalf("%s seed %d %s: interval %d moved %.4f → %.4f after an invalid measurement", sc.family, sc.seed, name, i, r.strengths[i-1], s)
			}
			if name == "tuner" && math.Abs(s-r.strengths[i-1]) > maxStep+1e-12 {
				t.Fatalf("%s seed %d tuner: interval %d moved %.4f → %.4f, more than maxStep", sc.family, sc.seed, i, r.strengths[i-1], s)
			}
		}
		if p, ok := c.(*spsa); ok {
			for k, step := range p.steps {
				if step > maxStep+1e-12 {
					t.Fatalf("%s seed %d SPSA: iteration %d stepped θ by %.4f", sc.family, sc.seed, k, step)
				}
			}
		}
		if r.regret < -1e-12 {
			t.Fatalf("%s seed %d %s: negative regret %.5f", sc.family, sc.seed, name, r.regret)
		}
	})
}

// BenchmarkTuningScenarios compares the tuner with fixed strength, random
// search, SPSA, Nelder–Mead and CMA-ES on the scenario families
// (scenarios_test.go): total regret Σ_t (L_t − min_S L(S, t)) per seed and
// summed per family. The goal, reported and not asserted: the tuner has the
// lowest total regret overall and, in every family, no more than the best
// baseline.
func BenchmarkTuningScenarios(b *testing.B) {
	for range b.N {
		regrets := scenarioRegrets(b, nil)
		fmt.Printf("\nScenario families (%d seeds each, %d intervals, bounds [%.1f, %.1f], maxStep %.2f, start %.1f, %d%% of measurements invalid):\n",
			scenarioSeeds, scenarioIntervals, lo, hi, maxStep, initial, int(100*dropRate))
		for _, f := range families {
			fmt.Printf("  %-13s %s\n", f.name, f.definition)
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Println("\nRegret per seed:")
		fmt.Fprint(w, "family\tseed\t")
		for _, c := range contenders {
			fmt.Fprintf(w, "%s\t", c.name)
		}
		fmt.Fprintln(w)
		for fi, f := range families {
			for si := range scenarioSeeds {
				fmt.Fprintf(w, "%s\t%d\t", f.name, si+1)
				for ci := range contenders {
					fmt.Fprintf(w, "%.4f\t", regrets[fi][ci][si])
				}
				fmt.Fprintln(w)
			}
		}
		_ = w.Flush()

		fmt.Printf("\nTotal regret per family (sum over %d seeds):\n", scenarioSeeds)
		fmt.Fprint(w, "family\t")
		for _, c := range contenders {
			fmt.Fprintf(w, "%s\t", c.name)
		}
		fmt.Fprintln(w, "best baseline\ttuner/best\t")
		totals := make([]float64, len(contenders))
		var missed []string
		for fi, f := range families {
			fmt.Fprintf(w, "%s\t", f.name)
			best, bestName := math.Inf(1), ""
			for ci, c := range contenders {
				r := sum(regrets[fi][ci])
				totals[ci] += r
				fmt.Fprintf(w, "%.4f\t", r)
				if ci > 0 && r < best {
					best, bestName = r, c.name
				}
			}
			tr := sum(regrets[fi][0])
			fmt.Fprintf(w, "%s\t%.2f\t\n", bestName, tr/best)
			b.ReportMetric(tr/best, "tuner/best-"+f.name)
			if tr > best {
				missed = append(missed, f.name)
			}
		}
		fmt.Fprint(w, "TOTAL\t")
		best, bestName := math.Inf(1), ""
		for ci, c := range contenders {
			fmt.Fprintf(w, "%.4f\t", totals[ci])
			if ci > 0 && totals[ci] < best {
				best, bestName = totals[ci], c.name
			}
		}
		fmt.Fprintf(w, "%s\t%.2f\t\n", bestName, totals[0]/best)
		_ = w.Flush()
		b.ReportMetric(totals[0], "regret-tuner")
		b.ReportMetric(best, "regret-best-baseline")
		b.ReportMetric(totals[0]/best, "tuner/best-total")
		b.ReportMetric(float64(len(families)-len(missed)), "families-tuner-best")
		if totals[0] < best && len(missed) == 0 {
			fmt.Printf("goal met: the tuner has the lowest total regret (%.3f vs %s %.3f) and no more than the best baseline in every family\n", totals[0], bestName, best)
		} else {
			fmt.Printf("goal NOT met: tuner total %.3f vs best baseline %s %.3f; families where a baseline beats the tuner: %v\n", totals[0], bestName, best, missed)
		}
	}
}
