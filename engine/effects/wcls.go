package effects

import (
	"math"

	"gonum.org/v1/gonum/stat/distuv"
)

// DefaultRefP is the default reference (numerator) probability p̃ of WCLS.
// Any constant in (0,1) gives a consistent estimate of the marginal effect;
// it only changes efficiency, best when near the typical P. One half keeps
// the weights of treated and control decisions symmetric.
const DefaultRefP = 0.5

// params is the number of regression coefficients (α, β): the p in the
// n-p degrees of freedom of the small-sample correction.
const params = 2

// Observation is one settled decision point of one user, for one
// intervention's analysis.
type Observation struct {
	User      string  // pseudonym: the cluster for the robust variance
	Available bool    // unavailable decision points contribute nothing (I_t = 0)
	Treated   bool    // the intervention was delivered (A=1) rather than none (A=0)
	P         float64 // probability of A=1 at this decision, in (0,1), as logged
	Outcome   float64 // proximal outcome Y: change of the user's loss over the outcome window
}

// userSums holds one user's contribution to the weighted normal equations,
// with c = A - p̃: M_u = Σ W [1 c; c c²] and s_u = Σ W Y [1; c]. Five
// numbers per user are all the sandwich needs, because the user's score
// at θ is s_u - M_u θ.
type userSums struct {
	w, wc, wcc float64 // M_u
	wy, wcy    float64 // s_u
	treated    int
	control    int
}

// Estimator accumulates one intervention's WCLS sums, streaming: memory
// grows with the number of users, never with the number of decisions.
// It is not safe for concurrent use.
type Estimator struct {
	intervention string
	refP         float64
	index        map[string]int // user -> position in users
	users        []userSums
	skipped      int
}

// NewEstimator returns an empty estimator for intervention with reference
// probability refP; a refP outside (0,1) (or NaN) falls back to DefaultRefP,
// since the weights would otherwise be undefined.
func NewEstimator(intervention string, refP float64) *Estimator {
	if !(refP > 0 && refP < 1) {
		refP = DefaultRefP
	}
	return &Estimator{intervention: intervention, refP: refP, index: map[string]int{}}
}

// RefP reports the reference probability p̃ in use.
func (e *Estimator) RefP() float64 { return e.refP }

// Skipped counts the observations ignored as invalid: empty user, P not
// in (0,1), or a non-finite outcome. Unavailable decisions are not
// invalid; they simply carry zero weight and are not counted here.
func (e *Estimator) Skipped() int { return e.skipped }

// Add folds one observation into the sums.
func (e *Estimator) Add(o Observation) {
	if o.User == "" || !(o.P > 0 && o.P < 1) || math.IsNaN(o.Outcome) || math.IsInf(o.Outcome, 0) {
		e.skipped++
		return
	}
	if !o.Available {
		return // I_t = 0: no randomisation happened, nothing to learn
	}
	i, ok := e.index[o.User]
	if !ok {
		i = len(e.users)
		e.index[o.User] = i
		e.users = append(e.users, userSums{})
	}
	u := &e.users[i]
	var w, c float64
	if o.Treated {
		w, c = e.refP/o.P, 1-e.refP
		u.treated++
	} else {
		w, c = (1-e.refP)/(1-o.P), -e.refP
		u.control++
	}
	u.w += w
	u.wc += w * c
	u.wcc += w * c * c
	u.wy += w * o.Outcome
	u.wcy += w * c * o.Outcome
}

// Estimate solves the weighted normal equations for θ = (α, β) and returns
// β with its user-clustered sandwich standard error and 95% t interval
// (see the package doc for the small-sample correction). The bool is false,
// with only the counts filled, when fewer than 3 users are available or the
// design is singular (every decision treated, or every one control).
func (e *Estimator) Estimate() (Effect, bool) {
	eff := e.counts()
	n := len(e.users)
	if n <= params {
		return eff, false
	}
	// Bread B = Σ_u M_u and right-hand side S = Σ_u s_u.
	var b00, b01, b11, s0, s1 float64
	for _, u := range e.users {
		b00, b01, b11 = b00+u.w, b01+u.wc, b11+u.wcc
		s0, s1 = s0+u.wy, s1+u.wcy
	}
	det := b00*b11 - b01*b01
	// det/(b00·b11) = 1 - (weighted correlation of 1 and c)²: near zero
	// exactly when c hardly varies, i.e. one arm is (nearly) empty.
	if !(det > 1e-12*b00*b11) {
		return eff, false
	}
	alpha := (b11*s0 - b01*s1) / det
	beta := (b00*s1 - b01*s0) / det

	// The β row of B⁻¹ is g = (-b01, b00)/det, so [B⁻¹ meat B⁻¹]_ββ is
	// Σ_u (g·r_u)² with r_u = s_u - M_u θ: each user's influence on β̂.
	g0, g1 := -b01/det, b00/det
	var meat float64
	for _, u := range e.users {
		r0 := u.wy - (u.w*alpha + u.wc*beta)
		r1 := u.wcy - (u.wc*alpha + u.wcc*beta)
		psi := g0*r0 + g1*r1
		meat += psi * psi
	}
	dof := float64(n - params)
	se := math.Sqrt(meat * float64(n) / dof)
	if math.IsNaN(se) || math.IsInf(se, 0) || math.IsNaN(beta) {
		return eff, false
	}
	half := distuv.StudentsT{Mu: 0, Sigma: 1, Nu: dof}.Quantile(0.975) * se
	eff.Estimate, eff.StdErr = beta, se
	eff.Lower, eff.Upper = beta-half, beta+half
	return eff, true
}

// counts fills the Effect's identity and counts, which are reported even
// when no estimate can be made, so callers can say why.
func (e *Estimator) counts() Effect {
	eff := Effect{Intervention: e.intervention, Users: len(e.users)}
	for _, u := range e.users {
		eff.Treated += u.treated
		eff.Control += u.control
		if u.treated > 0 && u.control > 0 {
			eff.UsersBoth++
		}
	}
	eff.Decisions = eff.Treated + eff.Control
	return eff
}
