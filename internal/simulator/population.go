// Package simulator is a synthetic population of people who live through
// an engine's decisions. Each person has a hidden state (attention,
// emotion, resilience) that drifts, responds to life (setbacks, the time of
// day) and to the interventions actually delivered to them at the dose the
// engine chose, with an individual true effect of each intervention. The
// engine sees none of it: it receives raw telemetry generated from the
// hidden state (RR intervals, SART trials, chat text, questionnaires,
// behaviour events) and answers decision points, all over its HTTP API
// (Driver). Because the population knows the truth, it can say how well
// the engine estimated each person's state and each intervention's effect
// (Summary), which is what `make validate` and the demo report.
//
// The population lives in accelerated time: TimeScale maps its clock to
// the wall clock, and the engine's time constants (cooldown, outcome
// window, evidence decay) are configured on the same scale, so no
// timestamp is ever faked. The model is documented in
// docs/engine-model.md ("The simulated population").
package simulator

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/policy"
)

// Dimensions of the hidden state, in the order of Vec.
const (
	Attention = iota
	Emotion
	Resilience
)

// DimensionNames name the dimensions of Vec.
var DimensionNames = [3]string{"attention", "emotion", "resilience"}

// Vec is a value per state dimension.
type Vec [3]float64

// Config is a population's parameters.
type Config struct {
	Users int    `json:"users"`
	Seed  uint64 `json:"seed"`
	// Target and Weights are the program's (the true loss is computed
	// with them, as the engine computes its estimate's).
	Target  Vec `json:"target"`
	Weights Vec `json:"weights"`
	// StartHour is the hour of the simulated day at which the run starts.
	StartHour float64 `json:"startHour"`
	// ChurnPerHour is the share of users replaced by newcomers per
	// simulated hour.
	ChurnPerHour float64 `json:"churnPerHour"`
	// WearableShare is the share of users who wear an RR-interval sensor,
	// BehaviourShare the share whose client reports focus events.
	WearableShare  float64 `json:"wearableShare"`
	BehaviourShare float64 `json:"behaviourShare"`
}

// DefaultConfig is 120 users from noon (the run starts at 12:00).
func DefaultConfig() Config {
	return Config{
		Users: 120, Seed: 1,
		Target: Vec{0.8, 0.7, 0.7}, Weights: Vec{1, 1, 1},
		StartHour: 12, ChurnPerHour: 0.02, WearableShare: 0.8, BehaviourShare: 0.5,
	}
}

// UsualMinutes is the usual length of a session of each intervention (the
// base lengths of docs/engine-model.md, "Strength is a dose"): a person
// feels a session's duration relative to it.
var UsualMinutes = map[string]float64{
	"FocusedAttention": 10, "ResonanceBreathing": 5, "BodyScan": 12,
	"CognitiveReappraisal": 8, "MicroBreak": 3, "ResilienceTraining": 15,
}

// MeanEffects are the population's mean true effect of one completed
// session of each intervention on each dimension, at a dose equal to the
// person's tolerance (Agent.Response). CognitiveReappraisal helps most
// people and harms a share of them (HarmfulShare); MicroBreak does almost
// nothing.
var MeanEffects = map[string]Vec{
	"FocusedAttention":     {0.24, 0.04, 0},
	"ResonanceBreathing":   {0.04, 0.24, 0.005},
	"BodyScan":             {0.05, 0.16, 0.005},
	"CognitiveReappraisal": {0, 0.14, 0.01},
	"MicroBreak":           {0.01, 0, 0},
	"ResilienceTraining":   {0, 0.05, 0.04},
}

// Population parameters of the individual differences and the dynamics
// (docs/engine-model.md, "The simulated population").
const (
	// HarmfulShare of people feel worse after CognitiveReappraisal: its
	// emotion effect is −harmfulEmotion for them.
	HarmfulShare   = 0.3
	harmfulEmotion = 0.14
	// effectSpread is the relative spread of a person's effects around
	// the mean.
	effectSpread = 0.35
	// meanTolerance and toleranceSD: the dose (intensity × duration
	// relative to the usual length) beyond which a session burdens.
	meanTolerance = 0.45
	toleranceSD   = 0.1
	// breakInterval is the mean time between natural breaks (decision
	// points) while awake.
	breakInterval = 15 * time.Minute
	// setbackSize: how hard life's knocks hit emotion.
	setbackSize = 0.08
	// maxStep bounds one integration step.
	maxStep = 2 * time.Minute
)

// burden is the loss of each dimension per unit of dose beyond tolerance.
var burden = Vec{0.25, 0.25, 0.01}

// Randomness of the dynamics (variables so that a test can switch it off
// and check the true effects against the dynamics themselves): each
// dimension's diffusion per √hour, the baselines' drift per √hour, and
// setbacks (knocks to emotion) per hour awake.
var (
	noise           = Vec{0.06, 0.08, 0.005}
	drift           = Vec{0.01, 0.01, 0.002}
	setbacksPerHour = 0.25
)

// Agent is one simulated person. Its fields are the hidden truth: only
// the telemetry it generates reaches an engine.
type Agent struct {
	ID       int
	State    Vec // attention, emotion, resilience in [0,1]
	Baseline Vec // where the state returns without intervention
	// Effects are the person's true effect of one completed session of
	// each intervention at their tolerance dose.
	Effects map[string]Vec
	// Tolerance is the dose beyond which a session burdens.
	Tolerance float64
	// Compliance is the probability of doing a session when offered.
	Compliance float64
	// BedHour starts eight hours of sleep; a busy person is busy (work,
	// school) for eight hours from BusyHour and rarely available then.
	BedHour  float64
	Busy     bool
	BusyHour float64
	Wearable bool
	// Behaviour: the person's client reports focus events.
	Behaviour bool

	rng       *rand.Rand
	heart     heart
	nextBreak time.Duration // simulated time of the next natural break
	breakDue  bool          // a natural break passed since the last decision
	woke      bool          // the break is the first since waking
	setbackAt time.Duration // last setback; negative: none
	sessions  []session
	reports   []report
	lastDose  map[string]contract.Decision
	brsDue    bool
}

// session is an intervention the person is doing.
type session struct {
	decision     string
	intervention string
	end          time.Duration
	impulse      Vec
}

// report is the answer to a decision the person sends with the next
// telemetry: an intervention sample.
type report struct {
	decision     string
	intervention string
	completed    bool
	rating       int
}

// Population is the simulated cohort. It is not safe for concurrent use:
// the Driver serialises access.
type Population struct {
	cfg    Config
	Agents []*Agent
	now    time.Duration // simulated time since the start
	rng    *rand.Rand
	nextID int
	truth  map[string]*DecisionTruth
	// treated are each person's treated decisions in time order, the
	// sessions that follow a control decision (FollowOn).
	treated map[int][]*DecisionTruth
}

// New draws a population.
func New(cfg Config) *Population {
	p := &Population{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x5eed)), truth: map[string]*DecisionTruth{}, treated: map[int][]*DecisionTruth{}} // #nosec G404: simulation
	for range cfg.Users {
		p.Agents = append(p.Agents, p.newAgent())
	}
	return p
}

// Config returns the population's parameters.
func (p *Population) Config() Config { return p.cfg }

// Elapsed is the simulated time since the start.
func (p *Population) Elapsed() time.Duration { return p.now }

// Hour is the hour of the simulated day.
func (p *Population) Hour() float64 { return hourOf(p.cfg.StartHour, p.now) }

func hourOf(start float64, t time.Duration) float64 { return math.Mod(start+t.Hours(), 24) }

func (p *Population) newAgent() *Agent {
	a := &Agent{ID: p.nextID, rng: rand.New(rand.NewPCG(p.cfg.Seed, uint64(p.nextID)<<8|0xa)), setbackAt: -1, brsDue: true} // #nosec G404: simulation
	p.nextID++
	r := a.rng
	for d, mean := range [3]float64{0.5, 0.45, 0.5} {
		a.Baseline[d] = clamp(mean+0.12*r.NormFloat64(), 0.08, 0.92)
	}
	a.State = a.Baseline
	a.Effects = map[string]Vec{}
	harmed := r.Float64() < HarmfulShare
	for _, k := range sortedKeys(MeanEffects) {
		var e Vec
		for d, m := range MeanEffects[k] {
			e[d] = m * math.Max(0, 1+effectSpread*r.NormFloat64())
		}
		if k == "CognitiveReappraisal" && harmed {
			e[Emotion] = -harmfulEmotion * math.Max(0, 1+effectSpread*r.NormFloat64())
		}
		a.Effects[k] = e
	}
	a.Tolerance = clamp(meanTolerance+toleranceSD*r.NormFloat64(), 0.15, 1)
	a.Compliance = clamp(0.75+0.12*r.NormFloat64(), 0.3, 0.98)
	a.BedHour = math.Mod(23.5+r.NormFloat64()+24, 24)
	a.Busy = r.Float64() < 0.6
	a.BusyHour = 8 + 3*r.Float64()
	a.Wearable = r.Float64() < p.cfg.WearableShare
	a.Behaviour = r.Float64() < p.cfg.BehaviourShare
	a.heart = newHeart(r)
	a.nextBreak = p.now + expDuration(r, breakInterval)
	a.lastDose = map[string]contract.Decision{}
	return a
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func expDuration(r *rand.Rand, mean time.Duration) time.Duration {
	return time.Duration(r.ExpFloat64() * float64(mean))
}

// Asleep reports whether the person sleeps at hour h of the day.
func (a *Agent) Asleep(h float64) bool { return math.Mod(h-a.BedHour+48, 24) < 8 }

// available is whether the person could take an intervention at hour h.
func (a *Agent) available(h float64) bool {
	p := 0.9
	if a.Busy && math.Mod(h-a.BusyHour+48, 24) < 8 {
		p = 0.35
	}
	return a.rng.Float64() < p
}

// setpoint is where dimension d returns to at hour h.
func (a *Agent) setpoint(d int, h float64) float64 { return setpointOf(a.Baseline, d, h) }

// setpointOf is the setpoint of dimension d at hour h for a baseline: the
// baseline, with a daily rhythm of attention (highest mid-afternoon) and
// emotion.
func setpointOf(baseline Vec, d int, h float64) float64 {
	switch d {
	case Attention:
		return clamp(baseline[d]+0.05*math.Cos(2*math.Pi*(h-15)/24), 0, 1)
	case Emotion:
		return clamp(baseline[d]+0.03*math.Cos(2*math.Pi*(h-19)/24), 0, 1)
	}
	return baseline[d]
}

// timeConstant is how fast dimension d returns to its setpoint from x:
// attention in 1.5 h, emotion in 1 h from above and, from below, faster
// the more resilient the person is; resilience in two days.
func timeConstant(d int, x, setpoint, resilience float64) time.Duration {
	switch d {
	case Attention:
		return 90 * time.Minute
	case Emotion:
		if x >= setpoint {
			return time.Hour
		}
		return time.Duration((1.5 - resilience) * float64(time.Hour))
	}
	return 48 * time.Hour
}

// relax moves a state toward its setpoints for dt without noise.
func relax(s, baseline Vec, h float64, dt time.Duration) Vec {
	for d := range s {
		sp := setpointOf(baseline, d, h)
		s[d] = clamp(sp+(s[d]-sp)*math.Exp(-dt.Hours()/timeConstant(d, s[d], sp, s[Resilience]).Hours()), 0, 1)
	}
	return s
}

// Dose is what a person feels of a session: the intensity times its
// length relative to the intervention's usual length.
func Dose(intervention string, d contract.Decision) float64 {
	if d.Dose == nil {
		return 0
	}
	usual := UsualMinutes[intervention]
	if usual == 0 {
		return 0
	}
	return d.Dose.Intensity * float64(d.Dose.DurationSec) / (60 * usual)
}

// Response is the change of the person's state a completed session of the
// intervention at dose causes: the benefit grows with the dose up to the
// person's tolerance, and every unit beyond it is a burden.
func (a *Agent) Response(intervention string, dose float64) Vec {
	var out Vec
	e := a.Effects[intervention]
	for d := range out {
		out[d] = e[d]*math.Min(dose, a.Tolerance)/meanTolerance - burden[d]*math.Max(0, dose-a.Tolerance)
	}
	return out
}

// Loss is Σ w (s − s*)² / Σ w of a state, as the engine computes it.
func (p *Population) Loss(s Vec) float64 { return loss(s, p.cfg.Target, p.cfg.Weights) }

func loss(s, target, weights Vec) float64 {
	var num, den float64
	for d := range s {
		diff := clamp(s[d], 0, 1) - target[d]
		num += weights[d] * diff * diff
		den += weights[d]
	}
	return num / den
}

// TrueCohortLoss is the mean true loss of the people awake now (those who
// send telemetry, so those the engines' cohort can count).
func (p *Population) TrueCohortLoss() float64 {
	var sum float64
	n := 0
	h := p.Hour()
	for _, a := range p.Agents {
		if !a.Asleep(h) {
			sum += p.Loss(a.State)
			n++
		}
	}
	if n == 0 {
		return math.NaN()
	}
	return sum / float64(n)
}

// Advance moves the population by dt of simulated time: the hidden
// states drift toward their setpoints with noise, setbacks happen,
// sessions end (and take effect), natural breaks come, people sleep and
// wake, and some leave for newcomers.
func (p *Population) Advance(dt time.Duration) {
	for dt > 0 {
		step := min(dt, maxStep)
		p.step(step)
		dt -= step
	}
}

func (p *Population) step(dt time.Duration) {
	t0 := p.now
	p.now += dt
	hours := dt.Hours()
	for i, a := range p.Agents {
		if p.cfg.ChurnPerHour > 0 && a.rng.Float64() < p.cfg.ChurnPerHour*hours {
			p.Agents[i] = p.newAgent()
			continue
		}
		a.step(p, t0, dt)
	}
}

func (a *Agent) step(p *Population, t0, dt time.Duration) {
	r := a.rng
	h := hourOf(p.cfg.StartHour, t0)
	wasAsleep := a.Asleep(h)
	hEnd := hourOf(p.cfg.StartHour, t0+dt)
	asleep := a.Asleep(hEnd)
	// Sessions that end now take effect; the answer goes out with the
	// next telemetry.
	open := a.sessions[:0]
	for _, s := range a.sessions {
		if s.end > t0+dt {
			open = append(open, s)
			continue
		}
		for d := range a.State {
			a.State[d] = clamp(a.State[d]+s.impulse[d], 0, 1)
		}
		rating := int(math.Round(clamp(3+12*(s.impulse[0]+s.impulse[1]+s.impulse[2])+0.8*r.NormFloat64(), 1, 5)))
		a.reports = append(a.reports, report{decision: s.decision, intervention: s.intervention, completed: true, rating: rating})
	}
	a.sessions = open
	if !asleep && r.Float64() < setbacksPerHour*dt.Hours() {
		a.State[Emotion] = clamp(a.State[Emotion]-setbackSize*(1.3-a.State[Resilience])*(0.5+r.Float64()), 0, 1)
		a.setbackAt = t0 + dt
	}
	for d := range a.State {
		sp := a.setpoint(d, h)
		tau := timeConstant(d, a.State[d], sp, a.State[Resilience])
		decay := math.Exp(-dt.Hours() / tau.Hours())
		sd := noise[d] * math.Sqrt(tau.Hours()/2*(1-decay*decay))
		a.State[d] = clamp(sp+(a.State[d]-sp)*decay+sd*r.NormFloat64(), 0, 1)
	}
	// The baselines wander slowly (weeks, not hours).
	for d, sd := range drift {
		a.Baseline[d] = clamp(a.Baseline[d]+sd*math.Sqrt(dt.Hours())*r.NormFloat64(), 0.08, 0.92)
	}
	switch {
	case asleep:
		a.breakDue = false
		a.nextBreak = t0 + dt + expDuration(r, breakInterval)
	case wasAsleep:
		a.woke, a.brsDue = true, true
		a.nextBreak = t0 + dt + expDuration(r, breakInterval)
	case t0+dt >= a.nextBreak:
		a.breakDue = true
		a.nextBreak = t0 + dt + expDuration(r, breakInterval)
	}
}

// DecisionPoint is a natural break at which a person asks the engine for a
// decision.
type DecisionPoint struct {
	Agent     *Agent
	Available bool
	Context   []string
}

// DecisionPoints are the breaks that came since the last call, one per
// person at most (a person who had two asks once).
func (p *Population) DecisionPoints() []DecisionPoint {
	h := p.Hour()
	var out []DecisionPoint
	for _, a := range p.Agents {
		if !a.breakDue || a.Asleep(h) {
			continue
		}
		a.breakDue = false
		tags := []string{"between_tasks"}
		switch {
		case a.woke:
			tags = []string{"session_start"}
		case a.setbackAt >= 0 && p.now-a.setbackAt < 20*time.Minute:
			tags = []string{"after_setback"}
		case a.Busy && math.Mod(h-a.BusyHour+48, 24) < 8:
			tags = []string{"in_session"}
		case a.rng.Float64() < 0.3:
			tags = []string{"idle"}
		}
		a.woke = false
		out = append(out, DecisionPoint{Agent: a, Available: a.available(h), Context: tags})
	}
	return out
}

// Decided applies the engine's answer at a decision point: the person
// does an offered session with their compliance probability, and it takes
// effect when it ends. strength is the program's strength in force, the
// dose of an intervention a control decision withheld when the person has
// had none of it yet. It records the decision's true effect.
func (p *Population) Decided(a *Agent, d contract.Decision, strength float64) {
	if d.Candidate != "" && d.Randomised() {
		counterfactual := d
		if !d.Treated() {
			counterfactual = a.lastDose[d.Candidate]
			if counterfactual.Dose == nil {
				counterfactual = syntheticDose(d.Candidate, strength)
			}
		}
		t := a.truthOf(p, d, counterfactual)
		p.truth[d.ID] = t
		if t.Treated {
			p.treated[a.ID] = append(p.treated[a.ID], t)
		}
	}
	if !d.Treated() {
		return
	}
	a.lastDose[d.Action] = d
	if a.rng.Float64() >= a.Compliance {
		a.reports = append(a.reports, report{decision: d.ID, intervention: d.Action})
		return
	}
	a.sessions = append(a.sessions, session{
		decision: d.ID, intervention: d.Action,
		end:     p.now + time.Duration(d.Dose.DurationSec)*time.Second,
		impulse: a.Response(d.Action, Dose(d.Action, d)),
	})
}

// syntheticDose is the dose the engine documents for an intervention at
// strength S: intensity S for (0.5 + S) times the usual length.
func syntheticDose(intervention string, strength float64) contract.Decision {
	return contract.Decision{Action: intervention, Dose: &policy.Dose{
		Strength: strength, Intensity: strength,
		DurationSec: int(math.Round(UsualMinutes[intervention] * 60 * (0.5 + strength))),
	}}
}

// DecisionTruth is what the population knows of one randomised decision:
// enough to compute the true effect of its candidate on the person's loss
// over any horizon.
type DecisionTruth struct {
	Candidate string
	Treated   bool
	User      int
	At        time.Duration // simulated
	hour      float64
	state     Vec
	baseline  Vec
	impulse   Vec           // of a completed session at the (counterfactual) dose
	duration  time.Duration // of that session
	complies  float64
	target    Vec
	weights   Vec
}

func (a *Agent) truthOf(p *Population, d, dosed contract.Decision) *DecisionTruth {
	t := &DecisionTruth{Candidate: d.Candidate, Treated: d.Treated(), User: a.ID, At: p.now, hour: p.Hour(),
		state: a.State, baseline: a.Baseline, complies: a.Compliance, target: p.cfg.Target, weights: p.cfg.Weights}
	if dosed.Dose != nil {
		t.impulse = a.Response(d.Candidate, Dose(d.Candidate, dosed))
		t.duration = time.Duration(dosed.Dose.DurationSec) * time.Second
	}
	return t
}

// truthStep is the step of the noise-free paths of Effect.
const truthStep = 30 * time.Second

// pathLoss is the person's expected loss horizon after the decision along
// the noise-free path of the population's dynamics from the state then,
// with a session's impulse taking effect at `at` when that is within the
// horizon.
func (t *DecisionTruth) pathLoss(horizon, at time.Duration, impulse Vec) float64 {
	s := t.state
	pending := at <= horizon
	for elapsed := time.Duration(0); elapsed < horizon; {
		if pending && elapsed >= at {
			for d := range s {
				s[d] = clamp(s[d]+impulse[d], 0, 1)
			}
			pending = false
		}
		step := min(truthStep, horizon-elapsed)
		if pending {
			step = min(step, at-elapsed)
		}
		s = relax(s, t.baseline, math.Mod(t.hour+elapsed.Hours(), 24), step)
		elapsed += step
	}
	return loss(s, t.target, t.weights)
}

// Effect is the part of the decision's true causal excursion effect on
// the person's loss horizon after it that delivering the candidate now
// causes: the expected loss if it is delivered (done with the person's
// compliance probability, taking effect when the session ends) minus the
// loss if nothing is done. Negative is better. A person not treated now
// may still be treated at a later break within the horizon, while one
// treated now is in cooldown; FollowOn is that other part.
func (t *DecisionTruth) Effect(horizon time.Duration) float64 {
	never := horizon + time.Nanosecond
	return t.complies * (t.pathLoss(horizon, t.duration, t.impulse) - t.pathLoss(horizon, never, Vec{}))
}

// FollowOn is what the policy's next treatment of the person did to
// their loss horizon after a control decision (zero when none followed in
// time to work): the expected change, along the same noise-free path, of
// the session of the first treated decision after it, with the person's
// compliance probability.
func (p *Population) FollowOn(decisionID string, horizon time.Duration) float64 {
	t, ok := p.truth[decisionID]
	if !ok || t.Treated {
		return 0
	}
	for _, next := range p.treated[t.User] {
		if next.At <= t.At {
			continue
		}
		at := next.At - t.At + next.duration
		if at > horizon {
			return 0
		}
		never := horizon + time.Nanosecond
		return t.complies * (t.pathLoss(horizon, at, next.impulse) - t.pathLoss(horizon, never, Vec{}))
	}
	return 0
}

// Truth is the recorded truth of a decision, if it was randomised.
func (p *Population) Truth(decisionID string) (*DecisionTruth, bool) {
	t, ok := p.truth[decisionID]
	return t, ok
}

// ReferenceStrength is the strength whose dose helps the cohort most per
// session: the one that maximises the expected loss reduction of a
// session of the enabled interventions (equal shares), averaged over the
// people awake now, on a grid of 0.005 over [lo, hi]. It ignores how
// often sessions come, which the strength also moves through the
// engine's probability of intervening; `make validate` compares it with
// the measured best fixed strength.
func (p *Population) ReferenceStrength(interventions []string, lo, hi float64) float64 {
	best, bestGain := lo, math.Inf(-1)
	h := p.Hour()
	for s := lo; s <= hi+1e-9; s += 0.005 {
		var gain float64
		for _, a := range p.Agents {
			if a.Asleep(h) {
				continue
			}
			before := p.Loss(a.State)
			for _, k := range interventions {
				dose := syntheticDose(k, s)
				impulse := a.Response(k, Dose(k, dose))
				var after Vec
				for d := range after {
					after[d] = a.State[d] + impulse[d]
				}
				gain += a.Compliance * (before - p.Loss(after))
			}
		}
		if gain > bestGain {
			best, bestGain = s, gain
		}
	}
	return best
}

// UserID is the identifier of person id in the engines' API.
func UserID(id int) string { return fmt.Sprintf("sim-user-%06d", id) }

func clamp(v, lo, hi float64) float64 { return math.Min(hi, math.Max(lo, v)) }
