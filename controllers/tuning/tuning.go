// Package tuning searches for the intervention strength that minimises a
// program's cohort loss. It has no Kubernetes imports: the reconciler feeds
// it measurements and applies its decisions.
//
// # Method: two-memory quadratic extremum seeking
//
// Loss as a function of strength is unknown, noisy and U-shaped (too little
// intervention does nothing, too much adds burden), and its minimum may
// move, jump, or lie at or beyond a bound, so the tuner seeks the minimum
// rather than tracking a set point:
//
//  1. Keep the recent (strength, loss) observations (the status history, so
//     an operator restart loses nothing).
//  2. Drop the observations before a detected regime change: if the fit
//     of the older observations predicts each of the last 2–8 badly (more
//     than 4 residual deviations and 1% of the loss, all on one side), only
//     those since the change are used (sinceChange).
//  3. Fit L(S) ≈ a·S² + b·S + c by weighted least squares twice, the weight
//     of an observation k intervals old being λᵏ: a long memory (λ = 0.9)
//     that fits a curve staying put precisely, and a short one (λ = 0.7)
//     that follows a curve that moves. The weights only say how much an
//     observation tells about the curve now (every measurement has the same
//     noise), so the standard errors are the sandwich ones, and an effect
//     is significant when it exceeds Student's t quantile (5%, two-sided)
//     for the fit's effective degrees of freedom: a fit of a few
//     observations, or of the short memory, needs much more than two
//     standard errors.
//     Where the level of the loss moves in time more than the noise
//     (levelMoves: a variance-ratio test of the residuals in levels
//     against those of adjacent intervals' differences, von Neumann's),
//     the fits of steps 4 and 5 are made to the differences of adjacent
//     observations instead, in which a level moving with the time of day
//     cancels whatever its shape (the curve's slope terms are the same;
//     the level's change per interval gets its own terms).
//  4. If the long fit is significantly convex its vertex −b/(2a) is moved
//     toward the short fit's (when that one curves up at all) by the share
//     d²/(d² + se²) of their difference d, se being the short vertex's
//     standard error: a difference within the noise moves it little, a
//     drifting optimum (the short fit several errors ahead) almost fully.
//     With only the short fit significantly convex, its vertex. The target
//     is clamped to [min, max].
//  5. Otherwise a straight line of the short memory decides, with a term
//     for a level moving steadily in time when that term is significant
//     (while the optimum drifts away the loss at the operating point rises,
//     which a plain line mistakes for a flatter slope): a significant slope
//     puts the target one step downhill; a slope within the noise leans the
//     target from the recent operating point downhill by half a maxStep per
//     standard error, so a slowly moving optimum is followed before its
//     slope becomes significant, while noise makes only small, undirected
//     moves.
//  6. At a bound: when the target is a bound (or the tuner was at one in
//     the last two intervals) and the observations within maxStep of the
//     bound do not show the inward side better (their slope inward is not
//     below −1 standard error), the tuner stays at the bound, stepping half
//     a step inward for one interval once every 16 (pinned). Where the best
//     strength lies at or beyond a bound this saves the dither's cost and
//     still notices a curve that moves back inside. The slope near the
//     bound is read with a term for a level moving in time when that term
//     is significant (1% level); while the level moves, the tuner stays
//     pinned only if the bound's side is better by 2 standard errors, and
//     otherwise leaves it to the dither: a cohort's loss that rises at
//     every strength with the time of day, as the simulated population's
//     does through real engines, made the one inward measurement look
//     worse and held the tuner at the bound for 16 intervals.
//  7. Otherwise move toward the target by at most maxStep, aiming alternately
//     at target + maxStep/2 and target − maxStep/2, two intervals on each
//     side: a probing perturbation so the fit keeps seeing spread around the
//     operating point (the "dither" of classic extremum-seeking control).
//  8. With fewer than three distinct strengths observed it probes only: one
//     step up (half a step inward when at a bound), then downhill along the
//     secant of the two points seen (read by a line with a time term when
//     the level is seen moving, 1% level), then fits.
//
// A move never exceeds maxStep and the result never leaves [min, max].
//
// Converged: the target is settled (a significantly convex fit, or pinned
// at a bound), and the last three targets (the two before are replayed from
// the history, so no extra state is kept) lie within maxStep of each other
// and of the strength in force.
package tuning

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/stat/distuv"
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
	// convex: the target is settled: a significantly convex fit's vertex,
	// or a bound the tuner is pinned at.
	convex bool
}

// The two memories of the fits: an observation k intervals old weighs λᵏ.
const (
	// longMemory (about ten intervals' worth) fits a curve that stays put
	// precisely.
	longMemory = 0.9
	// shortMemory (about three intervals' worth) follows a curve that
	// moves.
	shortMemory = 0.7
)

// minCurvature distinguishes a U from a flat or straight line (loss units
// per strength²).
const minCurvature = 1e-4

// leanPerSE is how far, in maxSteps per standard error of the slope, the
// target leans downhill from the recent operating point when no fit is
// significant.
const leanPerSE = 0.5

// Pinned at a bound: a half step inward for one interval once every
// pinEvery intervals at the bound; the tuner leaves the bound when the
// observations within maxStep of it show the inward side better by more
// than pinLeave standard errors of their slope, or, while the level of the
// loss moves in time, the bound's side better by less than pinSure.
const (
	pinEvery = 16
	pinLeave = 1.0
	// pinSure: while the loss moves in time (the near-bound fit's level
	// term is significant), the bound's side must be better by this many
	// standard errors for the tuner to stay pinned.
	pinSure = 2.0
)

// Decide picks the next strength from the observations (oldest first; the
// last one was measured at current). It leaves Converged false: that needs
// the recent decisions, which Step replays.
func Decide(history []Observation, current float64, p Params) Decision {
	current = clamp(current, p.Min, p.Max)
	history = sinceChange(history)
	if len(history) == 0 || distinctStrengths(history, p.MaxStep/4) < 3 {
		if recentlyAtBound(history, p) {
			if d, ok := pinned(history, current, p); ok {
				return d
			}
		}
		return probe(history, current, p)
	}
	a, ok := aimAt(history, current, p)
	if !ok {
		return probe(history, current, p)
	}
	if a.target == p.Min || a.target == p.Max || recentlyAtBound(history, p) {
		if d, ok := pinned(history, current, p); ok {
			d.Curvature = a.curvature
			return d
		}
	}
	return Decision{Strength: dither(history, current, a.target, p), Target: a.target, Reason: a.reason, Curvature: a.curvature, convex: a.convex}
}

// aim is where the fits put the optimum.
type aim struct {
	target    float64
	reason    string
	curvature float64 // the fitted a (0 when no fit is convex)
	convex    bool
}

// aimAt fits the quadratic with both memories. Where the long fit is
// significantly convex (and the short one curves up at all) the target is
// the long fit's vertex moved toward the short fit's by the share
// d²/(d² + se²) of their difference d (se: the short vertex's standard
// error): within the noise it moves little, so a curve that stays put is
// fitted with the long memory's precision, while a drifting optimum, which
// puts the short fit several errors ahead, is followed almost at once.
// With only one convex fit, its vertex. With none, a
// straight line of the short memory decides (with a term for a level that
// moves steadily with time, when that term is significant: while the
// optimum drifts away, the loss at the operating point rises, which a plain
// line mistakes for a flatter slope): a significant slope puts the target a
// step downhill; a slope within the noise leans it downhill from the recent
// operating point by leanPerSE·maxStep per standard error, in proportion to
// the evidence, so a slowly moving optimum is followed before its slope is
// significant and noise alone makes only small moves.
func aimAt(history []Observation, current float64, p Params) (aim, bool) {
	line, ok := fit(history, 1, shortMemory)
	if !ok {
		return aim{}, false
	}
	if trend, ok := fitTrend(history, 1, shortMemory); ok && math.Abs(trend.coef[2]) > trend.significant()*trend.se[2] {
		line = trend
	}
	long, longOK := fit(history, 2, longMemory)
	short, shortOK := fit(history, 2, shortMemory)
	if differenced, ok := fitDifferenced(history, 2, longMemory); ok && longOK && levelMoves(long, differenced) {
		// Read the curve from adjacent intervals' differences, in which
		// the moving level cancels.
		long = differenced
		short, shortOK = fitDifferenced(history, 2, shortMemory)
		if l, ok := fitDifferenced(history, 1, shortMemory); ok {
			line = l
		}
	}
	shortU := shortOK && short.coef[2] > minCurvature
	longOK, shortOK = longOK && long.convex(), shortOK && short.convex()
	fitted := func(f polyFit, v float64) (aim, bool) {
		return aim{target: clamp(v, p.Min, p.Max), curvature: f.coef[2], convex: true,
			reason: fmt.Sprintf("fitted a U-shaped loss with its minimum at %.3f; moving toward it", v)}, true
	}
	switch {
	case longOK && shortU:
		vl, vs := long.vertex(), short.vertex()
		v, d, se := vl, vs-vl, short.vertexSE()
		if d != 0 {
			v += d * d * d / (d*d + se*se)
		}
		return fitted(long, v)
	case longOK:
		return fitted(long, long.vertex())
	case shortOK:
		return fitted(short, short.vertex())
	}
	slope, se := line.coef[1], line.se[1]
	switch {
	case slope > line.significant()*se:
		return aim{target: clamp(current-p.MaxStep, p.Min, p.Max), reason: "loss rises with strength; stepping down"}, true
	case slope < -line.significant()*se:
		return aim{target: clamp(current+p.MaxStep, p.Min, p.Max), reason: "loss falls with strength; stepping up"}, true
	}
	lean := 0.0
	if se > 0 {
		lean = -leanPerSE * p.MaxStep * slope / se
	}
	return aim{target: clamp(recentCentre(history, shortMemory)+lean, p.Min, p.Max),
		reason: "no significant slope: probing around the recent operating point"}, true
}

// dither moves toward the target by at most maxStep, operating just above
// and just below it, two intervals on each side, so the fit keeps seeing
// spread around the target without drifting; the second interval on a
// side measures a cohort that has settled at that strength (the loss
// responds with a lag).
func dither(history []Observation, current, target float64, p Params) float64 {
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
	return next
}

// recentlyAtBound: one of the two observations before the last was at a
// bound (the last may be a half step inward from it).
func recentlyAtBound(history []Observation, p Params) bool {
	for i := max(0, len(history)-3); i < len(history)-1; i++ {
		if s := history[i].Strength; s == p.Min || s == p.Max {
			return true
		}
	}
	return false
}

// pinned decides at a bound (current is the bound, or half a step inside
// it) unless the observations within maxStep of the bound show the inward
// side better: the tuner stays at the bound, where the dither would only
// cost, and steps half a step inward for one interval once every pinEvery
// intervals, so a change of the curve is still seen. The slope is read
// with a term for a level moving in time when that term is significant
// (fitNearBound): a cohort's loss that rises or falls at every strength
// (the time of day, a cohort still settling) must not pass for the bound
// being better. While the level moves, staying needs the bound's side
// better by pinSure standard errors: otherwise it would rest on as little
// as one inward measurement the moving level distorts, for pinEvery
// intervals, and the dither measures both sides instead.
func pinned(history []Observation, current float64, p Params) (Decision, bool) {
	half := p.MaxStep / 2
	var bound, inward float64
	switch {
	case current == p.Min || math.Abs(current-(p.Min+half)) < 1e-9:
		bound, inward = p.Min, 1
	case current == p.Max || math.Abs(current-(p.Max-half)) < 1e-9:
		bound, inward = p.Max, -1
	default:
		return Decision{}, false
	}
	line, moving, ok := fitNearBound(history, bound, p.MaxStep)
	if !ok {
		return Decision{}, false
	}
	sure := line.coef[1] * inward / line.se[1] // the bound's side better by this many standard errors
	if !(sure >= -pinLeave) || (moving && sure < pinSure) {
		// The inward side is better, or the loss moves in time and the
		// bound is not clearly better: leave it to the dither, which
		// measures both sides of the target.
		return Decision{}, false
	}
	atBound := 0 // the observations at the bound since the last away from it
	for i := len(history) - 1; i >= 0 && history[i].Strength == bound; i-- {
		atBound++
	}
	d := Decision{Strength: bound, Target: bound, convex: true, Reason: fmt.Sprintf("the loss falls toward the bound %.3f: staying there", bound)}
	if atBound >= pinEvery {
		d.Strength = clamp(bound+inward*half, p.Min, p.Max)
		d.Reason = fmt.Sprintf("the loss falls toward the bound %.3f: half a step inward to check it still does", bound)
	}
	return d, true
}

// fitNearBound is the straight line (long memory) through the
// observations within maxStep of the bound, with a term for a level moving
// steadily in time when that term is significant (moving). ok is false
// when they span fewer than two strengths.
func fitNearBound(history []Observation, bound, maxStep float64) (line polyFit, moving, ok bool) {
	var near []Observation
	var ages []float64
	for i, o := range history {
		if math.Abs(o.Strength-bound) <= maxStep+1e-9 {
			near = append(near, o)
			ages = append(ages, float64(len(history)-1-i))
		}
	}
	if distinctStrengths(near, maxStep/4) < 2 {
		return polyFit{}, false, false
	}
	line, ok = fitAged(near, ages, 1, false, longMemory)
	if !ok || !(line.se[1] > 0) {
		return polyFit{}, false, false
	}
	// At the 1% level: a bound the loss is steady at stays pinned.
	if trend, ok := fitAged(near, ages, 1, true, longMemory); ok && trend.se[1] > 0 && math.Abs(trend.coef[2]) > trend.quantile(0.995)*trend.se[2] {
		return trend, true, true
	}
	return line, false, true
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
// fit (long memory; a line or the mean where the observations before it
// span too few strengths, as at a bound) of the observations before it
// predicts every one after it off by more than changeSigmas residual
// deviations (and by at least 1% of the loss), all with the same sign. The history kept is that after the
// change, so the tuner starts learning the new curve at once instead of
// waiting for the old observations to fade.
func sinceChange(history []Observation) []Observation {
	n := len(history)
	for after := min(changeMaxAfter, n-changeMinBefore); after >= changeMinAfter; after-- {
		before, ok := fitUpTo(history[:n-after], 2, longMemory)
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

// fitUpTo is the fit of the highest degree up to degree that the
// observations determine.
func fitUpTo(history []Observation, degree int, lambda float64) (polyFit, bool) {
	for ; degree >= 0; degree-- {
		if f, ok := fit(history, degree, lambda); ok {
			return f, true
		}
	}
	return polyFit{}, false
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
// steps toward the middle of [min, max] (up from the middle itself): the
// side with more room, where an optimum inside the bounds lies whenever it
// is not on the near side, and away from a bound, where the tuner would
// need many intervals of a moving cohort's noise to learn it should leave
// (make validate from 0.85 went to the bound 0.9 and stayed). With two
// strengths seen it heads downhill along their secant (toward the one with
// the lower loss and beyond), so the third distinct point is also the more
// promising one.
func probe(history []Observation, current float64, p Params) Decision {
	direction := 1.0
	if slope, ok := levelTrendSlope(history); ok {
		// The secant of the two strengths seen, read by a line with a term
		// for a level moving in time: a loss rising at every strength must
		// not send the tuner back to where it measured earlier.
		if slope > 0 {
			direction = -1
		}
	} else if other, ok := otherStrength(history, current, p.MaxStep/4); ok {
		currentLoss, otherLoss := lossAt(history, current, p.MaxStep/4), lossAt(history, other.Strength, p.MaxStep/4)
		if (otherLoss < currentLoss) == (other.Strength < current) {
			direction = -1
		}
	} else if current > (p.Min+p.Max)/2 {
		direction = -1 // a single strength: toward the middle
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

// levelTrendSlope is, where the loss moves in time at every strength
// (the time term of a straight line with one, short memory, significant
// at the 1% level), that line's slope in the strength; ok is false
// otherwise, the secant of the mean losses then being the better guide.
func levelTrendSlope(history []Observation) (float64, bool) {
	trend, ok := fitTrend(history, 1, shortMemory)
	if !ok || !(math.Abs(trend.coef[2]) > trend.quantile(0.995)*trend.se[2]) {
		return 0, false
	}
	return trend.coef[1], true
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

// polyFit is a weighted least-squares polynomial fit with the covariance
// of its coefficients.
type polyFit struct {
	coef   []float64   // c0, c1, c2 …
	cov    [][]float64 // their covariance
	se     []float64   // their standard errors
	sigma  float64     // residual standard deviation (of a weight-1 observation)
	dof    float64     // the residuals' effective degrees of freedom
	degree int
}

// significant is how many standard errors a coefficient must lie from
// zero to differ from it at the 5% level (two-sided): Student's t quantile
// for the fit's effective degrees of freedom, so a fit of a few
// observations (or of a short memory) needs far more than 2.
func (f polyFit) significant() float64 { return f.quantile(0.975) }

// quantile is Student's t quantile for the fit's effective degrees of
// freedom.
func (f polyFit) quantile(p float64) float64 {
	return distuv.StudentsT{Mu: 0, Sigma: 1, Nu: f.dof}.Quantile(p)
}

func (f polyFit) at(s float64) float64 {
	var v, pow float64 = 0, 1
	for _, c := range f.coef[:f.degree+1] {
		v += c * pow
		pow *= s
	}
	return v
}

// convex: a quadratic fit's curvature is significantly positive.
func (f polyFit) convex() bool {
	return f.coef[2] > minCurvature && f.coef[2] > f.significant()*f.se[2]
}

// vertex is a quadratic fit's stationary point −b/(2a).
func (f polyFit) vertex() float64 { return -f.coef[1] / (2 * f.coef[2]) }

// vertexSE is the vertex's standard error by the delta method:
// Var(−b/2a) = (Var b + 4v²·Var a + 4v·Cov(a, b)) / 4a², v the vertex.
func (f polyFit) vertexSE() float64 {
	v := f.vertex()
	variance := f.cov[1][1] + 4*v*v*f.cov[2][2] + 4*v*f.cov[1][2]
	return math.Sqrt(math.Max(0, variance)) / (2 * math.Abs(f.coef[2]))
}

// fit solves min Σ wᵢ (yᵢ − Σ βⱼ Sᵢʲ)² for a polynomial of the given degree,
// the weight of an observation k intervals old being λᵏ. The weights say
// how much an observation tells about the curve now, not that older
// measurements were noisier: every measurement has the same noise σ², so
// the coefficients' covariance is the sandwich σ²·A·XᵀW²X·A, A = (XᵀWX)⁻¹;
// σ² is estimated without bias as Σ wᵢrᵢ² / tr B, where Σ wᵢrᵢ² = εᵀBε,
// B = W^½(I − P)W^½ and P is the hat matrix of the weighted design, with
// Satterthwaite's (tr B)²/tr B² degrees of freedom. (The plain weighted
// formula σ²·A with Σ wᵢrᵢ²/(n − p) and n − p degrees of freedom treats an
// old observation as a noisy one and, for a short memory, understates the
// errors several times over.)
func fit(history []Observation, degree int, lambda float64) (polyFit, bool) {
	return fitTerms(history, degree, false, lambda)
}

// fitTrend is fit with a further term linear in the observations' age
// (its coefficient last): the level of the curve moving steadily, as it does
// at a fixed strength while the optimum drifts away, is then not mistaken
// for a slope.
func fitTrend(history []Observation, degree int, lambda float64) (polyFit, bool) {
	return fitTerms(history, degree, true, lambda)
}

func fitTerms(history []Observation, degree int, trend bool, lambda float64) (polyFit, bool) {
	ages := make([]float64, len(history))
	for i := range ages {
		ages[i] = float64(len(history) - 1 - i)
	}
	return fitAged(history, ages, degree, trend, lambda)
}

// fitAged is fitTerms with each observation's age (in intervals) given: a
// subset of the history keeps the ages it had there.
func fitAged(history []Observation, ages []float64, degree int, trend bool, lambda float64) (polyFit, bool) {
	rows := make([][]float64, len(history))
	losses := make([]float64, len(history))
	for i, o := range history {
		row, pow := make([]float64, 0, degree+2), 1.0
		for range degree + 1 {
			row = append(row, pow)
			pow *= o.Strength
		}
		if trend {
			row = append(row, ages[i])
		}
		rows[i], losses[i] = row, o.Loss
	}
	return fitRows(rows, losses, ages, degree, lambda)
}

// fitDifferenced fits the polynomial's slope terms to the differences of
// adjacent observations: Lᵢ − Lᵢ₋₁ = Σⱼ βⱼ (Sᵢʲ − Sᵢ₋₁ʲ) + δᵢ, the level's
// own change from one interval to the next δᵢ = δ₀ + δ₁·ageᵢ (coef[0] and
// the last coefficient). A level that moves with the time of day cancels
// in each pair, whatever its shape, as long as its change per interval
// moves slowly; the curve's constant cancels too, so coef[1…degree] are
// those of fit (b, a) and the vertex and convexity read the same.
func fitDifferenced(history []Observation, degree int, lambda float64) (polyFit, bool) {
	var rows [][]float64
	var diffs, ages []float64
	for i := 1; i < len(history); i++ {
		age := float64(len(history) - 1 - i)
		row := []float64{1}
		now, before := history[i].Strength, history[i-1].Strength
		powNow, powBefore := now, before
		for range degree {
			row = append(row, powNow-powBefore)
			powNow, powBefore = powNow*now, powBefore*before
		}
		row = append(row, age)
		rows, diffs, ages = append(rows, row), append(diffs, history[i].Loss-history[i-1].Loss), append(ages, age)
	}
	return fitRows(rows, diffs, ages, degree, lambda)
}

// levelMoves: the loss's level moves in time more than the measurement
// noise, by a variance-ratio test (von Neumann's, as Durbin–Watson's) of
// the quadratic fits of the long memory in levels and differenced: with
// independent noise around a curve that stays put, the residual variance
// of the differenced fit is twice that of the fit in levels; a level that
// wanders makes the residuals in levels large and serially correlated
// while the differences stay small. Where the
// differenced variance is below 2·levelMovesRatio times the level one the
// fits are read from the differences. A curve the quadratic fits badly
// (asymmetric, flat-bottomed) inflates both and is not taken for a
// moving level.
func levelMoves(inLevels, differenced polyFit) bool {
	return differenced.sigma*differenced.sigma < 2*levelMovesRatio*inLevels.sigma*inLevels.sigma
}

// levelMovesRatio is the variance ratio below which levelMoves holds:
// 0.3 of the ratio under independent noise. Chosen on bench-tuning's
// families (0.2: the daily rhythm still biases the fits; 0.4: noise
// alone switches them to the noisier differences).
const levelMovesRatio = 0.3

// fitRows is the weighted least-squares fit of ys on the design rows, the
// weight of a row of age k being λᵏ (fit has the method).
func fitRows(rows [][]float64, ys, ages []float64, degree int, lambda float64) (polyFit, bool) {
	n := len(rows)
	if n == 0 {
		return polyFit{}, false
	}
	cols := len(rows[0])
	if n <= cols {
		return polyFit{}, false
	}
	x := mat.NewDense(n, cols, nil) // rows √wᵢ·(design row i)
	y := mat.NewVecDense(n, nil)    // √wᵢ·yᵢ
	w := make([]float64, n)
	for i, row := range rows {
		w[i] = math.Pow(lambda, ages[i])
		sqrtW := math.Sqrt(w[i])
		for j, v := range row {
			x.Set(i, j, sqrtW*v)
		}
		y.SetVec(i, sqrtW*ys[i])
	}
	var xtwx, a mat.Dense
	xtwx.Mul(x.T(), x)
	if err := a.Inverse(&xtwx); err != nil {
		return polyFit{}, false
	}
	var beta, xtwy mat.VecDense
	xtwy.MulVec(x.T(), y)
	beta.MulVec(&a, &xtwy)
	var fitted, resid mat.VecDense
	fitted.MulVec(x, &beta)
	resid.SubVec(y, &fitted)
	// tr B = tr((I − P)W) and tr B² = tr(((I − P)W)²).
	var xa, hat mat.Dense
	xa.Mul(x, &a)
	hat.Mul(&xa, x.T())
	var rw mat.Dense // (I − P)·W
	rw.Apply(func(i, j int, v float64) float64 {
		if i == j {
			return (1 - v) * w[j]
		}
		return -v * w[j]
	}, &hat)
	var rw2 mat.Dense
	rw2.Mul(&rw, &rw)
	trB, trB2 := mat.Trace(&rw), mat.Trace(&rw2)
	if trB <= 0 || trB2 <= 0 {
		return polyFit{}, false
	}
	variance := mat.Dot(&resid, &resid) / trB
	dof := trB * trB / trB2
	var xw mat.Dense // rows wᵢ·(1, Sᵢ, …): XᵀW²X = xwᵀ·xw
	xw.Apply(func(i, _ int, v float64) float64 { return math.Sqrt(w[i]) * v }, x)
	var meat, am, cov mat.Dense
	meat.Mul(xw.T(), &xw)
	am.Mul(&a, &meat)
	cov.Mul(&am, &a)
	out := polyFit{coef: make([]float64, cols), cov: make([][]float64, cols), se: make([]float64, cols), sigma: math.Sqrt(variance), dof: dof, degree: degree}
	for j := range cols {
		out.coef[j] = beta.AtVec(j)
		if math.IsNaN(out.coef[j]) || math.IsInf(out.coef[j], 0) {
			return polyFit{}, false
		}
		out.cov[j] = make([]float64, cols)
		for k := range cols {
			out.cov[j][k] = variance * cov.At(j, k)
		}
		out.se[j] = math.Sqrt(math.Max(0, out.cov[j][j]))
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
