package simulator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"text/tabwriter"
	"time"

	"gonum.org/v1/gonum/stat"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/effects"
)

// Goals the validation reports against (issue 13, §3).
const (
	GoalCorrelation                   = 0.7
	GoalCoverageLow, GoalCoverageHigh = 0.90, 0.98
	// ConvergedWithin is how close to the reference the strength must come
	// to count as converged.
	ConvergedWithin = 0.05
)

// EstimatePair is one engine estimate of a dimension beside the hidden
// truth at the same moment.
type EstimatePair struct {
	Dimension       int
	Estimate, Truth float64
}

// SampleEstimates reads the state estimate of every person awake from the
// engine that holds them (GET /v1/users/{id}/state) and keeps each known
// dimension whose confidence counts toward the cohort beside the hidden
// state, for the Summary's correlations.
func (d *Driver) SampleEstimates(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.init()
	type read struct {
		truth Vec
		state contract.UserState
		err   error
	}
	h := d.Population.Hour()
	var agents []*Agent
	for _, a := range d.Population.Agents {
		if _, ok := d.homes[a.ID]; ok && !a.Asleep(h) {
			agents = append(agents, a)
		}
	}
	reads := make([]read, len(agents))
	sem := make(chan struct{}, d.Concurrency)
	var wg sync.WaitGroup
	for i, a := range agents {
		c, err := d.client(d.homes[a.ID])
		if err != nil {
			return err
		}
		reads[i].truth = a.State
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			reads[i].state, reads[i].err = c.State(ctx, UserID(a.ID))
		})
	}
	wg.Wait()
	var errs []error
	for _, r := range reads {
		if r.err != nil {
			if len(errs) < 3 {
				errs = append(errs, fmt.Errorf("state: %w", redact(r.err)))
			}
			continue
		}
		for dim, est := range []struct {
			known      bool
			value      float64
			confidence float64
		}{{r.state.Attention.Known, r.state.Attention.Value, r.state.Attention.Confidence},
			{r.state.Emotion.Known, r.state.Emotion.Value, r.state.Emotion.Confidence},
			{r.state.Resilience.Known, r.state.Resilience.Value, r.state.Resilience.Confidence}} {
			if est.known && est.confidence >= 0.05 {
				d.estimates = append(d.estimates, EstimatePair{Dimension: dim, Estimate: est.value, Truth: r.truth[dim]})
			}
		}
	}
	return errors.Join(errs...)
}

// EstimatePairs are the pairs SampleEstimates kept.
func (d *Driver) EstimatePairs() []EstimatePair {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.estimates)
}

// Agreement is how well the engines' estimates of one dimension follow
// the hidden truth.
type Agreement struct {
	Dimension   string
	Pairs       int
	Correlation float64 // Pearson's r
	Bias        float64 // mean of estimate − truth
}

// Agreements are the per-dimension agreements of pairs.
func Agreements(pairs []EstimatePair) []Agreement {
	out := make([]Agreement, len(DimensionNames))
	for dim, name := range DimensionNames {
		var est, truth []float64
		for _, p := range pairs {
			if p.Dimension == dim {
				est = append(est, p.Estimate)
				truth = append(truth, p.Truth)
			}
		}
		out[dim] = Agreement{Dimension: name, Pairs: len(est), Correlation: math.NaN(), Bias: math.NaN()}
		if len(est) >= 3 {
			out[dim].Correlation = stat.Correlation(est, truth, nil)
			out[dim].Bias = stat.Mean(est, nil) - stat.Mean(truth, nil)
		}
	}
	return out
}

// EffectCheck sets an intervention's effect as the engines publish it
// beside the truth: the mean true effect over the very decisions that
// entered the estimate.
type EffectCheck struct {
	// Run labels the run the check comes from (set by the caller).
	Run          string
	Intervention string
	// Published is whether the engines publish an estimate (enough users
	// with treated and control decisions).
	Published              bool
	Estimate, Lower, Upper float64
	// Decisions entered the engines' estimate; Matched of them the
	// population recorded (the rest are people who left and were erased).
	Decisions, Matched int
	// Truth is the true causal excursion effect over the matched
	// decisions: the mean effect on the person's loss, over the horizon at
	// which the engine measured each outcome, of treating now rather than
	// not (then following the policy, which may treat later within the
	// horizon those not treated now).
	Truth   float64
	Covered bool
}

// CheckEffects reads the interventions' effects the engines publish
// (GET /v1/cohort; pooled over replicas by inverse variance, or read once
// from a shared store, as the operator does) and the decision log (GET
// /v1/decisions, which the people's research consent allows), and sets
// each effect beside the truth of the decisions it rests on.
func (d *Driver) CheckEffects(ctx context.Context, interventions []string) ([]EffectCheck, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.init()
	byIntervention := map[string][]effects.Effect{}
	engines := d.Engines
	for _, e := range d.Engines {
		c, err := d.client(e)
		if err != nil {
			return nil, err
		}
		cohort, err := c.Cohort(ctx)
		if err != nil {
			return nil, fmt.Errorf("GET %s/v1/cohort: %w", e, err)
		}
		for _, eff := range cohort.Effects {
			byIntervention[eff.Intervention] = append(byIntervention[eff.Intervention], eff)
		}
		if cohort.Scope == config.ScopeShared {
			engines = []string{e} // every replica sees the whole store
			break
		}
	}
	// The truth of an intervention's estimate: the mean over its analysed
	// decisions of the effect of treating now, less the mean effect of
	// the treatment the policy gives later within the horizon to a person
	// not treated now (cooldown spares the treated). The latter is seen
	// on the control decisions, each weighted by 1/(1 − p) to stand for
	// every decision point (Hájek).
	type sum struct {
		now                  float64
		n                    int
		followOn, controlIPW float64
	}
	truth := map[string]*sum{}
	for _, e := range engines {
		c, err := d.client(e)
		if err != nil {
			return nil, err
		}
		err = c.ExportDecisions(ctx, time.Time{}, func(x contract.ExportedDecision) error {
			if x.Outcome == nil || !x.Randomised() {
				return nil
			}
			t, ok := d.Population.Truth(x.ID)
			if !ok {
				return nil
			}
			s := truth[x.Candidate]
			if s == nil {
				s = &sum{}
				truth[x.Candidate] = s
			}
			horizon := d.Scale.Simulated(x.Outcome.At.Sub(x.At))
			s.now += t.Effect(horizon)
			s.n++
			if !x.Treated() {
				w := 1 / (1 - x.TreatmentProbability)
				s.followOn += w * d.Population.FollowOn(x.ID, horizon)
				s.controlIPW += w
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("GET %s/v1/decisions: %w", e, err)
		}
	}
	var out []EffectCheck
	for _, k := range interventions {
		check := EffectCheck{Intervention: k, Truth: math.NaN()}
		if s := truth[k]; s != nil && s.n > 0 {
			check.Truth, check.Matched = s.now/float64(s.n), s.n
			if s.controlIPW > 0 {
				check.Truth -= s.followOn / s.controlIPW
			}
		}
		if eff, ok := effects.Combine(byIntervention[k]); ok {
			check.Published = true
			check.Estimate, check.Lower, check.Upper, check.Decisions = eff.Estimate, eff.Lower, eff.Upper, eff.Decisions
			check.Covered = check.Truth >= eff.Lower && check.Truth <= eff.Upper
		}
		out = append(out, check)
	}
	return out, nil
}

// Convergence is one tuning run through the engines.
type Convergence struct {
	Run                     string
	Start, Final, Reference float64
	Intervals               int
	// Within is the first interval after which the strength stayed
	// within ConvergedWithin of the reference; -1 when it did not.
	Within                     int
	TrueLossStart, TrueLossEnd float64
}

// ConvergenceOf summarises a run's strengths (one per interval, the
// initial first) and true losses against a reference strength.
func ConvergenceOf(run string, strengths, trueLosses []float64, reference float64) Convergence {
	c := Convergence{Run: run, Reference: reference, Intervals: len(strengths) - 1, Within: -1, TrueLossStart: math.NaN(), TrueLossEnd: math.NaN()}
	if len(strengths) == 0 {
		return c
	}
	c.Start, c.Final = strengths[0], strengths[len(strengths)-1]
	for i := len(strengths) - 1; i >= 0 && math.Abs(strengths[i]-reference) <= ConvergedWithin+1e-9; i-- {
		c.Within = i
	}
	if len(trueLosses) > 0 {
		c.TrueLossStart, c.TrueLossEnd = trueLosses[0], trueLosses[len(trueLosses)-1]
	}
	return c
}

// Summary is what a validation run found.
type Summary struct {
	Estimates []Agreement
	Effects   []EffectCheck
	Tuning    []Convergence
	// Reference says where the tuning reference strength comes from.
	Reference string
}

// Summary samples the estimates once more and checks the effects of the
// enabled interventions.
func (d *Driver) Summary(ctx context.Context, interventions []string) (Summary, error) {
	errSample := d.SampleEstimates(ctx)
	checks, err := d.CheckEffects(ctx, interventions)
	return Summary{Estimates: Agreements(d.EstimatePairs()), Effects: checks}, errors.Join(errSample, err)
}

// Coverage counts the published effects whose interval covers the truth.
func (s Summary) Coverage() (covered, published int) {
	for _, e := range s.Effects {
		if e.Published && !math.IsNaN(e.Truth) {
			published++
			if e.Covered {
				covered++
			}
		}
	}
	return covered, published
}

// Write prints the summary as three tables.
func (s Summary) Write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "State estimates (GET state) against the hidden truth; goal: correlation ≥ %.2f\n", GoalCorrelation)
	fmt.Fprintln(tw, "dimension\tpairs\tcorrelation\tbias (estimate − truth)\tgoal")
	for _, a := range s.Estimates {
		fmt.Fprintf(tw, "%s\t%d\t%.3f\t%+.3f\t%s\n", a.Dimension, a.Pairs, a.Correlation, a.Bias, verdict(a.Correlation >= GoalCorrelation))
	}
	if len(s.Effects) > 0 {
		covered, published := s.Coverage()
		var bias, et, tt float64
		for _, e := range s.Effects {
			if e.Published && !math.IsNaN(e.Truth) {
				bias += e.Estimate - e.Truth
				et += e.Estimate * e.Truth
				tt += e.Truth * e.Truth
			}
		}
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "Effects (/v1/cohort, WCLS) against the true mean effect of the same decisions (change of loss; negative helps)")
		fmt.Fprintln(tw, "run\tintervention\tdecisions\tmatched\testimate\t95% interval\ttrue\tcovered")
		for _, e := range s.Effects {
			if !e.Published {
				fmt.Fprintf(tw, "%s\t%s\t–\t%d\tnot published\t\t%+.4f\t\n", e.Run, e.Intervention, e.Matched, e.Truth)
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%+.4f\t[%+.4f, %+.4f]\t%+.4f\t%v\n", e.Run, e.Intervention, e.Decisions, e.Matched, e.Estimate, e.Lower, e.Upper, e.Truth, e.Covered)
		}
		if published > 0 {
			share := float64(covered) / float64(published)
			fmt.Fprintf(tw, "coverage %d/%d = %.0f%%, mean bias %+.4f, estimates/truth %.2f (least squares through 0); goal: coverage %.0f–%.0f%% (%s)\n",
				covered, published, 100*share, bias/float64(published), et/tt, 100*GoalCoverageLow, 100*GoalCoverageHigh, verdict(share >= GoalCoverageLow && share <= GoalCoverageHigh))
		}
	}
	if len(s.Tuning) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintf(tw, "Tuning through the engines (reference: %s; converged: within %.2f)\n", s.Reference, ConvergedWithin)
		fmt.Fprintln(tw, "run\tstart\tfinal\treference\tintervals\tconverged from\ttrue loss start → end")
		for _, c := range s.Tuning {
			within := "never"
			if c.Within >= 0 {
				within = fmt.Sprintf("interval %d", c.Within)
			}
			fmt.Fprintf(tw, "%s\t%.3f\t%.3f\t%.3f\t%d\t%s\t%.4f → %.4f\n", c.Run, c.Start, c.Final, c.Reference, c.Intervals, within, c.TrueLossStart, c.TrueLossEnd)
		}
	}
	return tw.Flush()
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}
