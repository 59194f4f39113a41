package tuningbench

import (
	"fmt"
	"math"
	"os"
	"slices"
	"testing"
	"text/tabwriter"
)

// scenarioRuns runs every contender on every scenario family and seeds
// 1…seeds: runs[family][contender][seed], and the maxStep oracle:
// oracle[family][seed]. check, if set, sees every contender's run.
func scenarioRuns(tb testing.TB, seeds int, check func(sc scenario, name string, c contender, r runResult)) (runs [][][]runResult, oracle [][]runResult) {
	tb.Helper()
	runs = make([][][]runResult, len(families))
	oracle = make([][]runResult, len(families))
	for fi, f := range families {
		runs[fi] = make([][]runResult, len(contenders))
		for seed := uint64(1); seed <= uint64(seeds); seed++ {
			sc := f.scenario(seed)
			oracle[fi] = append(oracle[fi], runScenario(sc, &maxStepOracle{sc: sc, s: initial}))
			for ci, spec := range contenders {
				c := spec.make(seed)
				r := runScenario(sc, c)
				if g, ok := c.(*gonumContender); ok {
					g.close()
				}
				if check != nil {
					check(sc, spec.name, c, r)
				}
				runs[fi][ci] = append(runs[fi][ci], r)
			}
		}
	}
	return runs, oracle
}

// safetySeeds is how many seeds of every family the safety test runs.
const safetySeeds = 8

// TestTuningContendersAreSafe runs the comparison (safetySeeds seeds of
// every family) and checks the rules every contender plays by: strengths
// stay in [lo, hi] and hold on an invalid measurement; the tuner never
// moves more than maxStep, and SPSA never steps θ by more than maxStep. It
// also checks the benchmark's bookkeeping: regret is never negative.
func TestTuningContendersAreSafe(t *testing.T) {
	_, _ = scenarioRuns(t, safetySeeds, func(sc scenario, name string, c contender, r runResult) {
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

// meanSE is the mean of xs and its standard error.
func meanSE(xs []float64) (mean, se float64) {
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(ss / float64(len(xs)-1) / float64(len(xs)))
}

// regrets is the per-seed regret of one family and contender.
func regrets(rs []runResult) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = r.regret
	}
	return out
}

// within5 is the first interval (1-based) from which the cohort's mean loss
// over three intervals is within 5% of the minimum loss, or -1.
func within5(sc scenario, r runResult) int {
	for t := 0; t+3 <= len(r.losses); t++ {
		var loss, best float64
		for k := t; k < t+3; k++ {
			loss += r.losses[k]
			best += sc.minLoss[k]
		}
		if loss <= 1.05*best {
			return t + 1
		}
	}
	return -1
}

// BenchmarkTuningScenarios compares the tuner with fixed strength, random
// search, SPSA, Nelder–Mead and CMA-ES on the scenario families
// (scenarios_test.go): the regret Σ_t (L_t − min_S L(S, t)) of each run,
// reported per family as the mean over seeds with its standard error, and
// the tuner's paired difference from the family's best baseline (the seeds
// share their noise across contenders, so the difference is tighter than
// either mean). The goal, reported and not asserted: the tuner has the
// lowest total regret and, in every family, no more than the best
// baseline. With -v it also prints every run's regret.
func BenchmarkTuningScenarios(b *testing.B) {
	for range b.N {
		runs, oracle := scenarioRuns(b, scenarioSeeds, nil)
		fmt.Printf("\nScenario families (%d seeds each, %d intervals, bounds [%.1f, %.1f], maxStep %.2f, start %.1f, %d%% of measurements invalid):\n",
			scenarioSeeds, scenarioIntervals, lo, hi, maxStep, initial, int(100*dropRate))
		for _, f := range families {
			fmt.Printf("  %-13s %s\n", f.name, f.definition)
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		if testing.Verbose() {
			fmt.Println("\nRegret per run:")
			fmt.Fprint(w, "family\tseed\t")
			for _, c := range contenders {
				fmt.Fprintf(w, "%s\t", c.name)
			}
			fmt.Fprintln(w)
			for fi, f := range families {
				for si := range scenarioSeeds {
					fmt.Fprintf(w, "%s\t%d\t", f.name, si+1)
					for ci := range contenders {
						fmt.Fprintf(w, "%.4f\t", runs[fi][ci][si].regret)
					}
					fmt.Fprintln(w)
				}
			}
			_ = w.Flush()
		}

		fmt.Printf("\nRegret per run, mean ± standard error over %d seeds; tuner − best baseline paired by seed; maxStep oracle: a reference that knows the optimum and moves toward it by at most maxStep (no contender bound by maxStep can beat it on a curve that stays put):\n", scenarioSeeds)
		fmt.Fprint(w, "family\t")
		for _, c := range contenders {
			fmt.Fprintf(w, "%s\t", c.name)
		}
		fmt.Fprintln(w, "best baseline\ttuner/best\ttuner − best\tmaxStep oracle\t")
		// perSeedTotal[ci][si] is a contender's regret summed over the
		// families for one seed: one run of each family (the last row: the
		// oracle's).
		perSeedTotal := make([][]float64, len(contenders)+1)
		for ci := range perSeedTotal {
			perSeedTotal[ci] = make([]float64, scenarioSeeds)
		}
		var missed []string
		// beyondMaxStep: missed families whose best baseline beats even the
		// maxStep oracle, so that no contender bound by maxStep can match it.
		var beyondMaxStep []string
		row := func(name string, rs [][]float64, oracle []float64) (tuner, best float64, bestName string) {
			fmt.Fprintf(w, "%s\t", name)
			best = math.Inf(1)
			for ci, c := range contenders {
				m, se := meanSE(rs[ci])
				fmt.Fprintf(w, "%.4f ± %.4f\t", m, se)
				if ci == 0 {
					tuner = m
				} else if m < best {
					best, bestName = m, c.name
				}
			}
			bi := slices.IndexFunc(contenders, func(c contenderSpec) bool { return c.name == bestName })
			diff := make([]float64, len(rs[0]))
			for si := range diff {
				diff[si] = rs[0][si] - rs[bi][si]
			}
			dm, dse := meanSE(diff)
			om, ose := meanSE(oracle)
			fmt.Fprintf(w, "%s\t%.2f\t%+.4f ± %.4f\t%.4f ± %.4f\t\n", bestName, tuner/best, dm, dse, om, ose)
			return tuner, best, bestName
		}
		for fi, f := range families {
			rs := make([][]float64, len(contenders)+1)
			for ci := range contenders {
				rs[ci] = regrets(runs[fi][ci])
			}
			rs[len(contenders)] = regrets(oracle[fi])
			for ci := range rs {
				for si, r := range rs[ci] {
					perSeedTotal[ci][si] += r
				}
			}
			tuner, best, _ := row(f.name, rs[:len(contenders)], rs[len(contenders)])
			b.ReportMetric(tuner/best, "tuner/best-"+f.name)
			if tuner > best {
				missed = append(missed, f.name)
				if om, _ := meanSE(rs[len(contenders)]); best < om {
					beyondMaxStep = append(beyondMaxStep, f.name)
				}
			}
		}
		tuner, best, bestName := row("TOTAL", perSeedTotal[:len(contenders)], perSeedTotal[len(contenders)])
		_ = w.Flush()
		b.ReportMetric(tuner, "regret-tuner")
		b.ReportMetric(best, "regret-best-baseline")
		b.ReportMetric(tuner/best, "tuner/best-total")
		b.ReportMetric(float64(len(families)-len(missed)), "families-tuner-best")

		fmt.Printf("\nIntervals until the 3-interval mean loss is within 5%% of the minimum, %s family (median over seeds; -1 never):\n", families[0].name)
		for ci, c := range contenders {
			var ts []int
			for si := range scenarioSeeds {
				t := within5(families[0].scenario(uint64(si+1)), runs[0][ci][si])
				if t < 0 {
					t = math.MaxInt
				}
				ts = append(ts, t)
			}
			slices.Sort(ts)
			median := ts[len(ts)/2]
			if median == math.MaxInt {
				median = -1
			}
			fmt.Printf("  %-12s %d\n", c.name, median)
		}

		if tuner < best && len(missed) == 0 {
			fmt.Printf("goal met: the tuner has the lowest total regret (%.3f vs %s %.3f per run of every family) and no more than the best baseline in every family\n", tuner, bestName, best)
		} else {
			fmt.Printf("goal NOT met: tuner total %.3f vs best baseline %s %.3f per run of every family; families where a baseline beats the tuner: %v\n", tuner, bestName, best, missed)
			if len(beyondMaxStep) > 0 {
				fmt.Printf("  of which the best baseline, not bound by maxStep, beats even the maxStep oracle (no contender bound by maxStep can reach it): %v\n", beyondMaxStep)
			}
		}
	}
}
