// Package tuning searches for the intervention strength that minimises a
// program's cohort loss. It has no Kubernetes imports: the reconciler feeds
// it measurements and applies its decisions.
//
// # Method: recency-weighted quadratic extremum seeking
//
// Loss as a function of strength is unknown, noisy and U-shaped (too little
// intervention does nothing, too much adds burden), so the tuner seeks its
// minimum rather than tracking a set point:
//
//  1. Keep the recent (strength, loss) observations (the status history, so
//     an operator restart loses nothing).
//  2. Drop the observations before a detected regime change: if the fit
//     of the older observations predicts each of the last 2–8 badly (more
//     than 4 residual deviations and 1% of the loss, all on one side), only
//     those since the change are used (sinceChange).
//  3. Fit L(S) ≈ a·S² + b·S + c by weighted least squares, the weight of an
//     observation k intervals old being λᵏ: old data fades, so a drifting
//     optimum is followed. λ is 0.9 unless a shorter memory (0.8, 0.7,
//     0.6) predicts the last six observations, each from those before it,
//     with under 75% of λ = 0.9's squared error (forgetting): a moving
//     curve is forgotten faster, a stationary noisy one keeps the long
//     memory.
//  4. If the fit is significantly convex (a > 2·se(a)) the target is its
//     vertex −b/(2a), clamped to [min, max]. Otherwise a weighted straight
//     line decides: a significant slope (|m| > 2·se(m)) puts the target one
//     step downhill; no significant slope keeps the target where it is.
//     Noise alone therefore never produces a confident move.
//  5. Move toward the target by at most maxStep, aiming alternately at
//     target + maxStep/2 and target − maxStep/2 (from below, aim above; from
//     above, aim below): a probing perturbation so the fit keeps seeing
//     spread around the operating point (the "dither" of classic
//     extremum-seeking control). A move never exceeds maxStep and the
//     result never leaves [min, max].
//  6. With fewer than three distinct strengths observed it probes only: one
//     step up (half a step inward when at a bound), then downhill along the
//     secant of the two points seen, then fits.
//
// Converged: the fit is significantly convex, and the last three targets
// (the two before are replayed from the history, so no extra state is kept)
// lie within maxStep of each other and of the strength in force.
package tuning

import (
	"fmt"
	"math"
	"time"

	"gonum.org/v1/gonum/mat"
)

// Observation is one measurement: the strength in force and the loss seen.
type Observation struct {
	Strength float64
	Loss     float64
}

// Params bound the search.
type Params struct {
	Min, Max float64
	MaxStep  float64
}

// Decision is the tuner's output for one interval.
type Decision struct {
	Strength  float64 // next strength in force
	Target    float64 // where the tuner believes the optimum is
	Reason    string  // human-readable: why this move
	Converged bool
	// Curvature is the fitted a of a·S² + b·S + c (0 when not fitted).
	Curvature float64
	// convex: the curvature is significantly positive.
	convex bool
}

// Forgetting is the default λ, the per-interval weight decay of older
// observations (see forgetting for the shorter memories).
const Forgetting = 0.9

// minCurvature distinguishes a U from a flat or straight line (loss units
// per strength²).
const minCurvature = 1e-4

// Decide picks the next strength from the observations (oldest first; the
// last one was measured at current). It leaves Converged false: that needs
// the recent decisions, which Step replays.
func Decide(history []Observation, current float64, p Params) Decision {
	current = clamp(current, p.Min, p.Max)
	history = sinceChange(history)
	if len(history) == 0 || distinctStrengths(history, p.MaxStep/4) < 3 {
		return probe(history, current, p)
	}
	lambda := forgetting(history)
	quad, quadOK := fit(history, 2, lambda)
	line, lineOK := fit(history, 1, lambda)
	if !quadOK || !lineOK {
		return probe(history, current, p)
	}
	a, b := quad.coef[2], quad.coef[1]
	slope := line.coef[1]
	var target float64
	var reason string
	switch {
	case a > minCurvature && a > 2*quad.se[2]:
		target = clamp(-b/(2*a), p.Min, p.Max)
		reason = fmt.Sprintf("fitted a U-shaped loss with its minimum at %.3f; moving toward it", -b/(2*a))
	case slope > 2*line.se[1]:
		target, reason = clamp(current-p.MaxStep, p.Min, p.Max), "loss rises with strength; stepping down"
	case slope < -2*line.se[1]:
		target, reason = clamp(current+p.MaxStep, p.Min, p.Max), "loss falls with strength; stepping up"
	default:
		target, reason = recentCentre(history, lambda), "no significant slope: probing around the recent operating point"
	}
	// Probe: operate just above and just below the target, two intervals
	// on each side, so the fit keeps seeing spread around it without
	// drifting; the second interval on a side measures a cohort that has
	// settled at that strength (the loss responds with a lag).
	side := -1.0 // the side of the target the strength in force is on
	if current > target {
		side = 1
	}
	if sameSideRun(history, target, side) >= 2 {
		side = -side // two intervals on this side: switch
	}
	probeAt := target + side*p.MaxStep/2
	next := clamp(current+clampAbs(probeAt-current, p.MaxStep), p.Min, p.Max)
	if next == current {
		next = clamp(current+clampAbs(target-current, p.MaxStep), p.Min, p.Max)
	}
	return Decision{Strength: next, Target: target, Reason: reason, Curvature: a, convex: a > minCurvature && a > 2*quad.se[2]}
}

// fastForgetting are the shorter memories tried when the loss curve moves.
var fastForgetting = []float64{0.8, 0.7, 0.6}

// forgetting picks λ for this decision. It is Forgetting unless a shorter
// memory predicted the recent observations clearly better: for each λ the
// last predictWindow observations are each predicted from the fit (λ) of
// the history before them, and a shorter memory wins only if its squared
// prediction error is below switchRatio of the default's. A stationary
// curve keeps the long memory (noise favours it); a drifting optimum or a
// regime change makes the old observations mislead and a shorter memory
// predict better, so the fit forgets them faster.
func forgetting(history []Observation) float64 {
	if len(history) < predictWindow+6 {
		return Forgetting
	}
	best, bestErr := Forgetting, predictionError(history, Forgetting)
	base := bestErr
	for _, lambda := range fastForgetting {
		if e := predictionError(history, lambda); e < switchRatio*base && e < bestErr {
			best, bestErr = lambda, e
		}
	}
	return best
}

const (
	predictWindow = 6
	switchRatio   = 0.75
)

func predictionError(history []Observation, lambda float64) float64 {
	var sum float64
	for i := len(history) - predictWindow; i < len(history); i++ {
		pred, ok := predict(history[:i], history[i].Strength, lambda)
		if !ok {
			return math.Inf(1)
		}
		d := pred - history[i].Loss
		sum += d * d
	}
	return sum
}

// predict is the weighted quadratic fit's loss at s (the line's where the
// quadratic cannot be fitted).
func predict(history []Observation, s, lambda float64) (float64, bool) {
	for degree := 2; degree >= 1; degree-- {
		if f, ok := fit(history, degree, lambda); ok {
			return f.at(s), true
		}
	}
	return 0, false
}

// Regime-change detection: the observations since a change are all
// predicted badly, on the same side, by the fit of those before it.
const (
	changeMinAfter  = 2   // observations after a change needed to see it
	changeMaxAfter  = 8   // how far back a change is looked for
	changeMinBefore = 8   // observations before it needed to judge
	changeSigmas    = 4.0 // how many residual deviations count as badly
)

// sinceChange drops the observations before the earliest detected regime
// change (an abrupt shift of the loss curve) in the history: for each split
// with changeMinAfter…changeMaxAfter observations after it, the quadratic
// fit of the observations before it predicts every one after it off by
// more than changeSigmas residual deviations (and by at least 1% of the
// loss), all with the same sign. The history kept is that after the
// change, so the tuner starts learning the new curve at once instead of
// waiting for the old observations to fade.
func sinceChange(history []Observation) []Observation {
	n := len(history)
	for after := min(changeMaxAfter, n-changeMinBefore); after >= changeMinAfter; after-- {
		before, ok := fit(history[:n-after], 2, Forgetting)
		if !ok {
			continue
		}
		sign, changed := 0.0, true
		for _, o := range history[n-after:] {
			e := o.Loss - before.at(o.Strength)
			if math.Abs(e) <= changeSigmas*before.sigma || math.Abs(e) < 0.01*math.Abs(o.Loss) || (sign != 0 && e*sign < 0) {
				changed = false
				break
			}
			sign = math.Copysign(1, e)
		}
		if changed {
			return history[n-after:]
		}
	}
	return history
}

func converged(targets []float64, current, maxStep float64) bool {
	if len(targets) < 3 {
		return false
	}
	last := targets[len(targets)-3:]
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, t := range last {
		lo, hi = math.Min(lo, t), math.Max(hi, t)
	}
	return hi-lo <= maxStep && math.Abs(last[2]-current) <= maxStep
}

// sameSideRun counts the most recent observations lying on the given side
// (+1 above, −1 below) of the target.
func sameSideRun(history []Observation, target, side float64) int {
	run := 0
	for i := len(history) - 1; i >= 0; i-- {
		if (history[i].Strength-target)*side <= 0 {
			break
		}
		run++
	}
	return run
}

// recentCentre is the recency-weighted mean of the observed strengths.
func recentCentre(history []Observation, lambda float64) float64 {
	var sum, weights float64
	for i, o := range history {
		w := math.Pow(lambda, float64(len(history)-1-i))
		sum += w * o.Strength
		weights += w
	}
	return sum / weights
}

// probe gathers spread before a fit is possible. From a single strength it
// steps up (down at the upper bound). With two strengths seen it heads
// downhill along their secant (toward the one with the lower loss and
// beyond), so the third distinct point is also the more promising one.
func probe(history []Observation, current float64, p Params) Decision {
	direction := 1.0
	if other, ok := otherStrength(history, current, p.MaxStep/4); ok {
		currentLoss, otherLoss := lossAt(history, current, p.MaxStep/4), lossAt(history, other.Strength, p.MaxStep/4)
		if (otherLoss < currentLoss) == (other.Strength < current) {
			direction = -1
		}
	}
	step := p.MaxStep
	if current == p.Min || current == p.Max {
		// At a bound the tuner has sat there long enough to forget any
		// other strength: a half step inward is enough to see the slope.
		step = p.MaxStep / 2
	}
	next := clamp(current+direction*step, p.Min, p.Max)
	if next == current {
		next = clamp(current-direction*step, p.Min, p.Max)
	}
	return Decision{Strength: next, Target: current, Reason: "probing around the current strength to learn the loss curve"}
}

// otherStrength returns the most recent observation at a strength other
// than current.
func otherStrength(history []Observation, current, tolerance float64) (Observation, bool) {
	for i := len(history) - 1; i >= 0; i-- {
		if math.Abs(history[i].Strength-current) > tolerance {
			return history[i], true
		}
	}
	return Observation{}, false
}

// lossAt is the mean loss observed near a strength.
func lossAt(history []Observation, strength, tolerance float64) float64 {
	var sum float64
	var n int
	for _, o := range history {
		if math.Abs(o.Strength-strength) <= tolerance {
			sum += o.Loss
			n++
		}
	}
	if n == 0 {
		return math.Inf(1)
	}
	return sum / float64(n)
}

// polyFit is a weighted least-squares polynomial fit with the standard
// errors of its coefficients.
type polyFit struct {
	coef  []float64 // c0, c1, c2 …
	se    []float64
	sigma float64 // residual standard deviation (of a weight-1 observation)
}

func (f polyFit) at(s float64) float64 {
	var v, pow float64 = 0, 1
	for _, c := range f.coef {
		v += c * pow
		pow *= s
	}
	return v
}

// fit solves min Σ wᵢ (yᵢ − Σ βⱼ Sᵢʲ)² for a polynomial of the given degree,
// the weight of an observation k intervals old being λᵏ. Standard errors
// come from the residual variance and (XᵀWX)⁻¹.
func fit(history []Observation, degree int, lambda float64) (polyFit, bool) {
	n, cols := len(history), degree+1
	if n <= cols {
		return polyFit{}, false
	}
	x := mat.NewDense(n, cols, nil)
	y := mat.NewVecDense(n, nil)
	for i, o := range history {
		sqrtW := math.Sqrt(math.Pow(lambda, float64(n-1-i)))
		pow := 1.0
		for j := range cols {
			x.Set(i, j, sqrtW*pow)
			pow *= o.Strength
		}
		y.SetVec(i, sqrtW*o.Loss)
	}
	var xtx mat.Dense
	xtx.Mul(x.T(), x)
	var inv mat.Dense
	if err := inv.Inverse(&xtx); err != nil {
		return polyFit{}, false
	}
	var beta, xty mat.VecDense
	xty.MulVec(x.T(), y)
	beta.MulVec(&inv, &xty)
	var fitted, resid mat.VecDense
	fitted.MulVec(x, &beta)
	resid.SubVec(y, &fitted)
	variance := mat.Dot(&resid, &resid) / float64(n-cols)
	out := polyFit{coef: make([]float64, cols), se: make([]float64, cols), sigma: math.Sqrt(variance)}
	for j := range cols {
		out.coef[j] = beta.AtVec(j)
		out.se[j] = math.Sqrt(math.Max(0, variance*inv.At(j, j)))
		if math.IsNaN(out.coef[j]) || math.IsInf(out.coef[j], 0) {
			return polyFit{}, false
		}
	}
	return out, true
}

func distinctStrengths(history []Observation, tolerance float64) int {
	var seen []float64
	for _, o := range history {
		dup := false
		for _, s := range seen {
			if math.Abs(s-o.Strength) <= tolerance {
				dup = true
				break
			}
		}
		if !dup {
			seen = append(seen, o.Strength)
		}
	}
	return len(seen)
}

func clamp(v, lo, hi float64) float64 { return math.Min(hi, math.Max(lo, v)) }

func clampAbs(v, limit float64) float64 { return clamp(v, -limit, limit) }

// Clamp is exported for callers that must apply bounds outside a decision
// (a change of bounds clamps the strength at once).
func Clamp(v, lo, hi float64) float64 { return clamp(v, lo, hi) }

// Measurement is one attempt to observe the cohort loss.
type Measurement struct {
	Loss       float64
	CohortSize int
	At         time.Time
	// Err is set when no valid measurement exists (unreachable engines,
	// cohort below the minimum, NaN, ...). The tuner then holds.
	Err error
}

// HistoryLimit is how many observations the tuner keeps (and the status
// history holds).
const HistoryLimit = 20

// Step is the safe entry point: it holds the current strength (clamped to
// the bounds) when the measurement failed or is older than staleAfter;
// otherwise it appends the measurement to the history (keeping the last
// HistoryLimit), decides, and judges convergence.
func Step(history []Observation, current float64, p Params, m Measurement, now time.Time, staleAfter time.Duration) (Decision, []Observation) {
	current = clamp(current, p.Min, p.Max)
	switch {
	case m.Err != nil:
		return Decision{Strength: current, Target: current, Reason: "holding: " + m.Err.Error()}, history
	case staleAfter > 0 && now.Sub(m.At) > staleAfter:
		return Decision{Strength: current, Target: current, Reason: fmt.Sprintf("holding: the measurement is %s old (staleAfter %s)", now.Sub(m.At).Round(time.Second), staleAfter)}, history
	case math.IsNaN(m.Loss) || math.IsInf(m.Loss, 0) || m.Loss < 0:
		return Decision{Strength: current, Target: current, Reason: "holding: the loss is not a finite non-negative number"}, history
	}
	history = append(history, Observation{Strength: current, Loss: m.Loss})
	if n := len(history); n > HistoryLimit {
		history = history[n-HistoryLimit:]
	}
	d := Decide(history, current, p)
	d.Converged = d.convex && converged(append(replayTargets(history, p), d.Target), current, p.MaxStep)
	return d, history
}

// replayTargets re-runs Decide on the two previous history prefixes, each
// with the strength that was in force at its last observation.
func replayTargets(history []Observation, p Params) []float64 {
	var targets []float64
	for k := max(1, len(history)-2); k < len(history); k++ {
		targets = append(targets, Decide(history[:k], history[k-1].Strength, p).Target)
	}
	return targets
}
