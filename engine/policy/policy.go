// Package policy decides, at each decision point a world's client asks
// for, whether a user receives an intervention and which, as a
// micro-randomised trial: a candidate intervention is chosen by Thompson
// sampling, then delivered or withheld ("none") at random with a logged
// probability, clipped so that every decision stays informative and
// nobody is over-treated. It learns each intervention's effect relative to
// "none" from action-centred pseudo-rewards (Greenewald et al. 2017), so a
// baseline that drifts with the time of day or the user's mood does not
// bias what it learns. It is deterministic under a seed and has no clock
// of its own.
package policy

import (
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"gonum.org/v1/gonum/stat/distuv"
)

// Model constants (see docs/engine-model.md).
const (
	// PriorSD is the spread of an arm's mean effect around the population's.
	PriorSD = 0.1
	// PseudoRewardSD is the assumed noise of one action-centred
	// pseudo-reward. A pseudo-reward divides the observed loss reduction
	// by P(1−P), so it is noisier than the reduction itself (about twice
	// at P = 0.5).
	PseudoRewardSD = 0.2
	// MinTreatP and MaxTreatP clip the probability of delivering the
	// candidate rather than none: below MinTreatP too little is learnt,
	// above MaxTreatP the control disappears and over-intervention becomes
	// a harm (HeartSteps clips to [0.1, 0.8] for the same reasons).
	MinTreatP, MaxTreatP = 0.1, 0.8
	// StrengthLogOdds is how far the strength moves the log-odds of
	// treating: logit p = logit q + StrengthLogOdds·(S − ½).
	StrengthLogOdds = 4.0
	// minNoiseSamples is how many pseudo-rewards the population needs
	// before their measured spread replaces PseudoRewardSD.
	minNoiseSamples = 10
	// MinPersonalRewards is how many pseudo-rewards a user needs before
	// the strength is personalised.
	MinPersonalRewards = 3
)

// ActionNone is the control action: no intervention now.
const ActionNone = "none"

// Reasons a decision was not randomised (it is "none" with probability 1).
const (
	ReasonUnavailable = "unavailable"
	ReasonCooldown    = "cooldown"
	ReasonDailyCap    = "daily_cap"
)

// ContextTags are the context tags a client may attach to a decision
// point: what the user is doing when the world asks. They are logged with
// the decision (moderators for later analysis) and do not change the draw.
var ContextTags = []string{
	"in_session",    // inside an activity of the world (a game round, a meeting)
	"between_tasks", // at a natural break between two activities
	"after_setback", // just after a loss, a failure or a conflict
	"after_success", // just after a win or a completed goal
	"idle",          // present but inactive for a while
	"session_start", // just arrived in the world
	"session_end",   // about to leave
}

// Stats are running reward statistics (Welford).
type Stats struct {
	N    int     `json:"n"`
	Mean float64 `json:"m"`
	M2   float64 `json:"m2"`
}

// Add folds one reward in.
func (s *Stats) Add(x float64) {
	s.N++
	d := x - s.Mean
	s.Mean += d / float64(s.N)
	s.M2 += d * (x - s.Mean)
}

// User is one user's policy state.
type User struct {
	// Arms hold the user's pseudo-rewards per intervention: estimates of
	// the intervention's effect against none for this user.
	Arms map[string]*Stats `json:"arms,omitempty"`
	// Draws counts randomised decisions, so each has its own random stream.
	Draws uint64 `json:"draws"`
	// Treated are the times of the user's interventions in the last 24
	// hours (the daily cap and the cooldown).
	Treated []time.Time `json:"treated,omitempty"`
}

// Population is the prior shared by all users of a program (cold start).
type Population struct {
	Arms map[string]*Stats `json:"arms"`
}

// Strength is the program's strength in force and its bounds.
type Strength struct{ Value, Min, Max float64 }

// Limits are the program's dose limits per user.
type Limits struct {
	MaxPerDay int
	Cooldown  time.Duration
}

// Dose is how much of an intervention a user receives.
type Dose struct {
	// Strength is the user's personalised strength, within the program's
	// [min, max].
	Strength float64 `json:"strength"`
	// DurationSec is the session's length: the intervention's base length
	// scaled by (0.5 + Strength).
	DurationSec int `json:"durationSeconds"`
	// Intensity in [0, 1] is how demanding the guidance is (for example
	// how long the breathing pacer holds each breath or how many body
	// regions a scan covers); it equals Strength.
	Intensity float64 `json:"intensity"`
}

// Choice is what Decide chose at one decision point.
type Choice struct {
	// Action is ActionNone or the intervention delivered.
	Action string
	// Candidate is the intervention randomised against none ("" when the
	// decision was not randomised).
	Candidate string
	// TreatP is the probability with which the candidate was delivered (0
	// when not randomised).
	TreatP float64
	// Probability is the probability of Action: TreatP or 1 − TreatP.
	Probability float64
	// Reason says why the decision was not randomised ("" when it was).
	Reason string
	// Dose and Instructions are set when Action is an intervention.
	Dose         *Dose
	Instructions string
}

var guides = map[string]struct {
	baseMinutes  float64
	instructions string
}{
	"FocusedAttention":     {10, "Rest your attention on one anchor, such as the breath at the nostrils; when the mind wanders, note it and return."},
	"ResonanceBreathing":   {5, "Breathe slowly at about six breaths a minute: in for five seconds, out for five."},
	"BodyScan":             {12, "Move attention slowly from the feet to the head, noticing sensations without changing them."},
	"CognitiveReappraisal": {8, "Name the situation that upset you, then describe it from a kinder, wider perspective."},
	"MicroBreak":           {3, "Step away from the screen, look into the distance and stretch for a few minutes."},
	"ResilienceTraining":   {15, "Recall a recent setback, what helped you recover, and one step to take next time."},
}

// NoneInstructions is what a user is told when no intervention is given.
const NoneInstructions = "No intervention now: carry on."

// Eligible reports why a user may not be treated now ("" when they may):
// not available, within the cooldown of the last intervention, or at the
// daily cap.
func Eligible(u *User, available bool, now time.Time, lim Limits) string {
	if !available {
		return ReasonUnavailable
	}
	recent := 0
	for _, at := range u.Treated {
		if now.Sub(at) < lim.Cooldown {
			return ReasonCooldown
		}
		if now.Sub(at) < 24*time.Hour {
			recent++
		}
	}
	if recent >= lim.MaxPerDay {
		return ReasonDailyCap
	}
	return ""
}

// Decide draws the action at one decision point. An ineligible user
// (Eligible) gets none with probability 1 and no draw. Otherwise the
// candidate is the enabled intervention whose sampled effect, from the
// user's posterior centred on the population prior, is highest; it is
// delivered with probability p = clip(logistic(logit q + k(S − ½))), where
// q is the posterior probability that the candidate helps and S the user's
// personalised strength. Decide advances u.Draws and records a treatment
// in u.Treated.
func Decide(u *User, pop *Population, enabled []string, userKey string, seed uint64, strength Strength, lim Limits, available bool, now time.Time) Choice {
	if reason := Eligible(u, available, now, lim); reason != "" {
		return Choice{Action: ActionNone, Probability: 1, Reason: reason, Instructions: NoneInstructions}
	}
	rng := rand.New(rand.NewPCG(seed^hashKey(userKey), u.Draws))
	u.Draws++
	arms := slices.Clone(enabled)
	slices.Sort(arms) // map order must not leak into the draw
	best, bestSample, bestMean, bestSD := "", math.Inf(-1), 0.0, 1.0
	noise := pop.noiseVariance()
	for _, arm := range arms {
		mean, sd := posterior(u.Arms[arm], pop.Arms[arm], noise)
		sample := mean + sd*rng.NormFloat64()
		if sample > bestSample {
			best, bestSample, bestMean, bestSD = arm, sample, mean, sd
		}
	}
	personal := PersonalStrength(u, pop, strength)
	p := TreatProbability(distuv.UnitNormal.CDF(bestMean/bestSD), personal)
	c := Choice{Candidate: best, TreatP: p}
	if rng.Float64() >= p {
		c.Action, c.Probability, c.Instructions = ActionNone, 1-p, NoneInstructions
		return c
	}
	c.Action, c.Probability = best, p
	c.Dose = DoseFor(best, personal)
	c.Instructions = guides[best].instructions
	u.Treated = append(pruneTreated(u.Treated, now), now)
	return c
}

// TreatProbability maps the posterior probability q that the candidate
// helps and the strength S to the probability of delivering it: the
// strength shifts the log-odds by StrengthLogOdds·(S − ½), and the result
// is clipped to [MinTreatP, MaxTreatP]. It is monotone in S and in q.
func TreatProbability(q, strength float64) float64 {
	q = math.Min(1-1e-9, math.Max(1e-9, q))
	logit := math.Log(q/(1-q)) + StrengthLogOdds*(strength-0.5)
	p := 1 / (1 + math.Exp(-logit))
	return math.Min(MaxTreatP, math.Max(MinTreatP, p))
}

// DoseFor is the dose of an intervention at a user's strength.
func DoseFor(intervention string, strength float64) *Dose {
	g := guides[intervention]
	return &Dose{
		Strength:    strength,
		DurationSec: int(math.Round(g.baseMinutes * 60 * (0.5 + strength))),
		Intensity:   math.Min(1, math.Max(0, strength)),
	}
}

// pruneTreated keeps the treatment times of the last 24 hours.
func pruneTreated(times []time.Time, now time.Time) []time.Time {
	return slices.DeleteFunc(times, func(at time.Time) bool { return now.Sub(at) >= 24*time.Hour })
}

// noiseVariance is the variance of one pseudo-reward: measured over all
// of the population's pseudo-rewards once there are enough of them (a
// noisy baseline widens it, and a posterior that assumed less noise would
// lock onto whichever arm was lucky first), PseudoRewardSD² until then
// and as a floor.
func (p *Population) noiseVariance() float64 {
	var all Stats
	for _, st := range p.Arms {
		merge(&all, st)
	}
	noise := PseudoRewardSD * PseudoRewardSD
	if all.N >= minNoiseSamples {
		noise = math.Max(noise, all.M2/float64(all.N-1))
	}
	return noise
}

// posterior is the user's posterior of an arm's mean effect in a
// two-level Normal model: the population's effect has prior N(0, PriorSD²)
// and is estimated from every user's pseudo-rewards; a user's effect
// varies around it with PriorSD. A population mean resting on two
// pseudo-rewards is itself uncertain, so it widens the user's prior
// rather than pinning it.
func posterior(user, pop *Stats, noise float64) (mean, sd float64) {
	popMean, popVar := 0.0, PriorSD*PriorSD
	if pop != nil && pop.N > 0 {
		precision := 1/(PriorSD*PriorSD) + float64(pop.N)/noise
		popMean, popVar = float64(pop.N)*pop.Mean/noise/precision, 1/precision
	}
	precision := 1 / (PriorSD*PriorSD + popVar)
	weighted := popMean * precision
	if user != nil && user.N > 0 {
		precision += float64(user.N) / noise
		weighted += float64(user.N) * user.Mean / noise
	}
	return weighted / precision, 1 / math.Sqrt(precision)
}

// PersonalStrength personalises the program's strength S by the user's
// estimated effects: S·(1 + 0.5·tanh((r̄ᵤ − r̄ₚ)/0.05)), clamped to
// [min, max]. Users who benefit more than the population tolerate more;
// users who benefit less, or get worse (burden, resistance), get less.
func PersonalStrength(u *User, pop *Population, s Strength) float64 {
	var mine, all Stats
	for _, st := range u.Arms {
		merge(&mine, st)
	}
	for _, st := range pop.Arms {
		merge(&all, st)
	}
	v := s.Value
	if mine.N >= MinPersonalRewards {
		v *= 1 + 0.5*math.Tanh((mine.Mean-all.Mean)/0.05)
	}
	return math.Min(s.Max, math.Max(s.Min, v))
}

func merge(into *Stats, s *Stats) {
	if s == nil || s.N == 0 {
		return
	}
	n := into.N + s.N
	d := s.Mean - into.Mean
	into.Mean += d * float64(s.N) / float64(n)
	into.M2 += s.M2 + d*d*float64(into.N)*float64(s.N)/float64(n)
	into.N = n
}

// PseudoReward is the action-centred pseudo-reward of a randomised
// decision: (A − p)·r / (p(1 − p)), where r is the loss reduction over the
// outcome window and A is 1 when the candidate was delivered. Its
// expectation is the candidate's effect on r against none, whatever the
// baseline reward, because E[A − p | history] = 0.
func PseudoReward(treated bool, p, lossReduction float64) float64 {
	a := 0.0
	if treated {
		a = 1
	}
	return (a - p) * lossReduction / (p * (1 - p))
}

// Learn folds a settled, randomised decision into the user's and the
// population's estimate of the candidate's effect. It ignores decisions
// that were not randomised (p outside (0, 1)) or have no outcome.
func Learn(u *User, pop *Population, candidate string, treated bool, p, lossReduction float64) bool {
	if candidate == "" || !(p > 0 && p < 1) || math.IsNaN(lossReduction) || math.IsInf(lossReduction, 0) {
		return false
	}
	r := PseudoReward(treated, p, lossReduction)
	for _, arms := range []*map[string]*Stats{&u.Arms, &pop.Arms} {
		if *arms == nil {
			*arms = map[string]*Stats{}
		}
		if (*arms)[candidate] == nil {
			(*arms)[candidate] = &Stats{}
		}
		(*arms)[candidate].Add(r)
	}
	return true
}

func hashKey(key string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(key))
	return h.Sum64()
}

func cloneArms(arms map[string]*Stats) map[string]*Stats {
	if arms == nil {
		return nil
	}
	out := make(map[string]*Stats, len(arms))
	for k, v := range arms {
		s := *v
		out[k] = &s
	}
	return out
}

// Clone returns a deep copy.
func (p Population) Clone() Population { return Population{Arms: cloneArms(p.Arms)} }

// Clone returns a deep copy.
func (u User) Clone() User {
	out := u
	out.Arms = cloneArms(u.Arms)
	out.Treated = slices.Clone(u.Treated)
	return out
}
