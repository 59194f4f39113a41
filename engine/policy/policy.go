// Package policy chooses each user's next intervention by Thompson sampling
// and personalises its strength. It is deterministic under a seed.
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
	// PriorSD is the spread of an arm's mean reward around the population's.
	PriorSD = 0.1
	// NoiseSD is the assumed noise of one observed reward (loss reduction).
	NoiseSD = 0.1
	// MinInterveneP and MaxInterveneP clip the probability of recommending
	// any intervention rather than none: over-intervention is a harm.
	MinInterveneP, MaxInterveneP = 0.1, 0.8
	// RewardWindow is how long after an intervention its effect is measured.
	RewardWindow = 10 * time.Minute
	// MinPersonalRewards is how many rewards a user needs before the
	// strength is personalised.
	MinPersonalRewards = 3
)

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

// Pending is an intervention whose effect is being measured.
type Pending struct {
	Intervention string    `json:"i"`
	At           time.Time `json:"t"`
	LossAtStart  float64   `json:"l"`
	Completed    bool      `json:"c"`
}

// User is one user's policy state.
type User struct {
	Arms    map[string]*Stats `json:"arms,omitempty"`
	Pending *Pending          `json:"pending,omitempty"`
	// Draws counts recommendations, so each draw has its own random stream.
	Draws uint64 `json:"draws"`
}

// Population is the prior shared by all users of a program (cold start).
type Population struct {
	Arms map[string]*Stats `json:"arms"`
}

// Recommendation is what the engine suggests next.
type Recommendation struct {
	Intervention string  `json:"intervention"` // "none" for no intervention
	Strength     float64 `json:"strength"`
	DurationSec  int     `json:"durationSeconds"`
	Instructions string  `json:"instructions"`
	// InterveneProbability is the clipped probability of intervening at all.
	InterveneProbability float64 `json:"interveneProbability"`
}

// Strength is the program's strength in force and its bounds.
type Strength struct{ Value, Min, Max float64 }

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

// Recommend draws the next intervention for a user by Thompson sampling over
// enabled arms, with the user's posterior per arm centred on the population
// prior. It advances u.Draws so the next call draws anew.
func Recommend(u *User, pop *Population, enabled []string, userKey string, seed uint64, strength Strength) Recommendation {
	rng := rand.New(rand.NewPCG(seed^hashKey(userKey), u.Draws))
	u.Draws++
	arms := slices.Clone(enabled)
	slices.Sort(arms) // map order must not leak into the draw
	best, bestSample, bestMean, bestSD := "", math.Inf(-1), 0.0, 1.0
	for _, arm := range arms {
		mean, sd := posterior(u.Arms[arm], pop.Arms[arm])
		sample := mean + sd*rng.NormFloat64()
		if sample > bestSample {
			best, bestSample, bestMean, bestSD = arm, sample, mean, sd
		}
	}
	p := distuv.UnitNormal.CDF(bestMean / bestSD)
	p = math.Min(MaxInterveneP, math.Max(MinInterveneP, p))
	rec := Recommendation{Intervention: "none", InterveneProbability: p}
	if best == "" || rng.Float64() >= p {
		rec.Instructions = "No intervention now: carry on."
		return rec
	}
	rec.Intervention = best
	rec.Strength = PersonalStrength(u, pop, strength)
	g := guides[best]
	rec.DurationSec = int(math.Round(g.baseMinutes * 60 * (0.5 + rec.Strength)))
	rec.Instructions = g.instructions
	return rec
}

// posterior is the Normal–Normal posterior of an arm's mean reward.
func posterior(user, pop *Stats) (mean, sd float64) {
	priorMean := 0.0
	if pop != nil && pop.N > 0 {
		priorMean = pop.Mean
	}
	precision := 1 / (PriorSD * PriorSD)
	weighted := priorMean * precision
	if user != nil && user.N > 0 {
		precision += float64(user.N) / (NoiseSD * NoiseSD)
		weighted += float64(user.N) * user.Mean / (NoiseSD * NoiseSD)
	}
	return weighted / precision, 1 / math.Sqrt(precision)
}

// PersonalStrength personalises the program's strength S by the user's
// observed response: S·(1 + 0.5·tanh((r̄ᵤ − r̄ₚ)/0.05)), clamped to
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

// Observe settles a pending intervention whose window has passed: the
// reward is the loss reduction since it started (0 if not completed). It
// returns true when a reward was recorded.
func Observe(u *User, pop *Population, now time.Time, currentLoss float64) bool {
	p := u.Pending
	if p == nil || now.Sub(p.At) < RewardWindow {
		return false
	}
	reward := 0.0
	if p.Completed {
		reward = p.LossAtStart - currentLoss
	}
	if u.Arms == nil {
		u.Arms = map[string]*Stats{}
	}
	if u.Arms[p.Intervention] == nil {
		u.Arms[p.Intervention] = &Stats{}
	}
	u.Arms[p.Intervention].Add(reward)
	if pop.Arms == nil {
		pop.Arms = map[string]*Stats{}
	}
	if pop.Arms[p.Intervention] == nil {
		pop.Arms[p.Intervention] = &Stats{}
	}
	pop.Arms[p.Intervention].Add(reward)
	u.Pending = nil
	return true
}

// Start begins measuring an intervention's effect.
func Start(u *User, intervention string, at time.Time, completed bool, lossAtStart float64) {
	u.Pending = &Pending{Intervention: intervention, At: at, Completed: completed, LossAtStart: lossAtStart}
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
	if u.Pending != nil {
		p := *u.Pending
		out.Pending = &p
	}
	return out
}
