package effects

import (
	"math"

	"gonum.org/v1/gonum/stat/distuv"
)

// Publishable reports whether e may be published: only when at least
// minCohortSize users had both a treated and a control decision, so that
// no effect is ever computed from fewer people than the k-anonymity floor.
func Publishable(e Effect, minCohortSize int) bool {
	return e.UsersBoth >= minCohortSize
}

// ExcludesZero reports whether the 95% interval lies wholly on one side of 0.
func ExcludesZero(e Effect) bool { return Helps(e) || Harms(e) }

// Helps reports whether the intervention lowers the loss: the outcome is a
// change of loss, so an interval wholly below zero means it helps.
func Helps(e Effect) bool { return e.Upper < 0 }

// Harms reports whether the intervention raises the loss (interval above 0).
func Harms(e Effect) bool { return e.Lower > 0 }

// Combine pools independent estimates of one intervention from disjoint
// user sets (engine replicas with their own stores) by fixed-effect,
// inverse-variance meta-analysis: weights w_i = 1/SE_i², estimate
// Σ w_i β_i / Σ w_i, SE = 1/√Σ w_i, with a 95% normal interval since the
// pooled estimate rests on all replicas' users together. Counts are summed
// over the entries used. Entries whose StdErr is not positive and finite
// (no estimate) are skipped. A single usable entry is returned unchanged,
// keeping its small-sample t interval. The bool is false when no entry is
// usable or the usable entries name different interventions.
func Combine(effects []Effect) (Effect, bool) {
	var used []Effect
	for _, e := range effects {
		if e.StdErr > 0 && !math.IsInf(e.StdErr, 0) && !math.IsNaN(e.Estimate) && !math.IsInf(e.Estimate, 0) {
			used = append(used, e)
		}
	}
	if len(used) == 0 {
		return Effect{}, false
	}
	if len(used) == 1 {
		return used[0], true
	}
	out := Effect{Intervention: used[0].Intervention}
	var sw, swb float64
	for _, e := range used {
		if e.Intervention != out.Intervention {
			return Effect{}, false
		}
		w := 1 / (e.StdErr * e.StdErr)
		sw += w
		swb += w * e.Estimate
		out.Users += e.Users
		out.UsersBoth += e.UsersBoth
		out.Decisions += e.Decisions
		out.Treated += e.Treated
		out.Control += e.Control
	}
	out.Estimate = swb / sw
	out.StdErr = 1 / math.Sqrt(sw)
	half := distuv.UnitNormal.Quantile(0.975) * out.StdErr
	out.Lower, out.Upper = out.Estimate-half, out.Estimate+half
	return out, true
}
