package tuning

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// This file is the tuner's side of a program: the strength in force, when
// a measurement is due, the safety rules a measurement must pass before it
// is credited to a strength, and the history it is kept in. The reconciler
// maps the program's spec and status to Spec and State, calls
// Spec.Advance once per reconcile, and turns the Result into status,
// conditions and events.

// Mode says who sets the strength in force (spec.tuning.mode).
type Mode string

const (
	// ModeAuto: the tuner searches for the strength that minimises the
	// cohort loss.
	ModeAuto Mode = "Auto"
	// ModeManual: Spec.Initial is in force.
	ModeManual Mode = "Manual"
	// ModePaused: the strength last in force stays, clamped into the
	// bounds.
	ModePaused Mode = "Paused"
)

// Defaults of a program's tuning, for fields left zero. The CRD states the
// same defaults for interval, staleAfter and maxStep; settle has none
// there because it depends on the interval.
const (
	DefaultInterval   = 60 * time.Second
	DefaultStaleAfter = 5 * time.Minute
	DefaultMaxStep    = 0.05
)

// HistoryLimit is how many credited measurements the tuner keeps: the
// status history (the CRD's maxItems on status.history states it again; a
// test holds the two equal).
const HistoryLimit = 20

// LagIntervals is how many intervals after a strength was put in force a
// replica may still run another configuration before the hold names it: a
// kubelet takes up to about a minute (its sync period plus its cache's
// TTL) to bring a ConfigMap change to a pod, the default interval, so one
// or two intervals of lag are expected and three are not.
const LagIntervals = 3

// Spec is a program's tuning configuration.
type Spec struct {
	Mode Mode
	// Suspended: the program runs no engines, so nothing is measured; the
	// strength in force follows the mode as usual.
	Suspended bool
	// Initial is the strength before any decision, and the one Manual
	// holds. Min and Max bound every strength in force.
	Initial, Min, Max float64
	// MaxStep is the largest move in one interval (default DefaultMaxStep).
	MaxStep float64
	// Interval between two measurements (default DefaultInterval).
	Interval time.Duration
	// StaleAfter: an older measurement is not acted on (default
	// DefaultStaleAfter).
	StaleAfter time.Duration
	// Settle is how long every engine a measurement counts must have run
	// the strength in force before the loss is credited to it: the cohort
	// needs time to respond (default Interval/2).
	Settle time.Duration
	// Generation is the configuration generation an engine reports while
	// it runs a strength (nil: only the strengths are compared).
	Generation func(strength float64) string
}

// WithDefaults fills the fields left zero.
func (s Spec) WithDefaults() Spec {
	if s.Mode == "" {
		s.Mode = ModeAuto
	}
	if s.MaxStep <= 0 {
		s.MaxStep = DefaultMaxStep
	}
	if s.Interval <= 0 {
		s.Interval = DefaultInterval
	}
	if s.StaleAfter <= 0 {
		s.StaleAfter = DefaultStaleAfter
	}
	if s.Settle <= 0 {
		s.Settle = s.Interval / 2
	}
	return s
}

func (s Spec) params() Params { return Params{Min: s.Min, Max: s.Max, MaxStep: s.MaxStep} }

// Record is one credited measurement, as the status history keeps it.
type Record struct {
	Time       time.Time
	Strength   float64 // in force while the loss was measured
	Loss       float64
	CohortSize int
}

// State is what the tuner keeps between reconciles: the program's status.
type State struct {
	// Strength last put in force; nil before the first reconcile.
	Strength *float64
	// Since is when Strength was put in force (zero: unknown).
	Since time.Time
	// LastTune is when a measurement was last taken (zero: never).
	LastTune time.Time
	// History holds the credited measurements, oldest first, at most
	// HistoryLimit.
	History []Record
}

// Replica is what one engine said it ran when it answered.
type Replica struct {
	// Name identifies the engine in messages: its pod's name.
	Name string
	// Strength and Generation it ran; Generation is empty when the source
	// cannot tell (Prometheus, an engine older than the field).
	Strength   float64
	Generation string
	// RunningFor is how long it had run that configuration when it
	// answered, on its own clock.
	RunningFor time.Duration
}

// Measurement is one attempt to observe the cohort loss.
type Measurement struct {
	Loss       float64
	CohortSize int
	At         time.Time
	// Err is set when no valid measurement exists (unreachable engines,
	// cohort below the minimum, ...). The tuner then holds.
	Err error
	// Replicas are the engines the measurement counts, with what each ran.
	// Spec.Advance credits the loss to the strength in force only when all
	// of them run it and have settled; Step, which keeps no program,
	// ignores them.
	Replicas []Replica
}

// Hold says why a due measurement moved nothing.
type Hold string

const (
	// Credited: the measurement was credited and the tuner decided.
	Credited Hold = ""
	// HoldFailed: the measurement failed (Measurement.Err says why).
	HoldFailed Hold = "Failed"
	// HoldStale: the measurement is older than StaleAfter.
	HoldStale Hold = "Stale"
	// HoldInvalid: the loss is not a finite non-negative number.
	HoldInvalid Hold = "Invalid"
	// HoldPending: the measurement is valid, but not every engine it
	// counts has run the strength in force for Settle, so it cannot be
	// credited to that strength.
	HoldPending Hold = "StrengthPending"
)

// Result is the outcome of one reconcile.
type Result struct {
	// State to keep (write back to the status).
	State State
	// Strength in force from now on (*State.Strength).
	Strength float64
	// Measured: a measurement was due and taken; Before is the strength
	// that was in force while it was (and before this reconcile).
	Measured bool
	Before   float64
	// RequeueAfter is when the next measurement is due (0: none is, the
	// program is not tuned).
	RequeueAfter time.Duration
	// Hold is why a measurement was not acted on (Credited when it was),
	// Why says it in words.
	Hold Hold
	Why  string
	// Lagging names the replicas that still ran another configuration
	// LagIntervals after the strength was put in force (HoldPending only).
	Lagging []string
	// Decision is the tuner's decision on a credited measurement.
	Decision Decision
}

// InForce is the strength in force: Manual holds Initial; Auto and Paused
// keep the last strength, clamped at once into the current bounds; before
// any decision, Initial.
func (s Spec) InForce(st State) float64 {
	if s.Mode == ModeManual || st.Strength == nil {
		return s.Initial
	}
	return clamp(*st.Strength, s.Min, s.Max)
}

// Advance is the tuner's entry point, called once per reconcile at now.
// It puts the strength in force (InForce); in Auto mode, when a
// measurement is due (Interval after the last), it calls measure once and
// holds unless the measurement passes the safety rules:
//   - it did not fail, is not older than StaleAfter, and its loss is a
//     finite non-negative number (Step's rules);
//   - every replica it counts runs the strength in force (and its
//     generation) and has run it for Settle (else HoldPending).
//
// A credited measurement is appended to the history (the last
// HistoryLimit are kept) and the tuner decides the next strength, never
// more than MaxStep away and never outside [Min, Max].
func (s Spec) Advance(st State, now time.Time, measure func() Measurement) Result {
	s = s.WithDefaults()
	current := s.InForce(st)
	st = st.withStrength(current, now)
	out := Result{State: st, Strength: current, Before: current}
	if s.Suspended || s.Mode != ModeAuto {
		return out
	}
	if !st.LastTune.IsZero() {
		if wait := s.Interval - now.Sub(st.LastTune); wait > 0 {
			out.RequeueAfter = wait // not due: come back exactly when it is
			return out
		}
	}
	out.RequeueAfter = s.Interval
	out.Measured = true
	st.LastTune = now
	out.State = st

	m := measure()
	if out.Hold, out.Why = screen(m, now, s.StaleAfter); out.Hold != Credited {
		return out
	}
	if why, lagging, ok := s.attribute(m.Replicas, current, now.Sub(st.Since)); !ok {
		out.Hold, out.Why, out.Lagging = HoldPending, why, lagging
		return out
	}

	st.History = appendKept(st.History, Record{Time: now, Strength: current, Loss: m.Loss, CohortSize: m.CohortSize})
	history := make([]Observation, len(st.History))
	for i, r := range st.History {
		history[i] = Observation{Strength: r.Strength, Loss: r.Loss}
	}
	out.Decision = decide(history, current, s.params())
	out.Strength = out.Decision.Strength
	out.State = st.withStrength(out.Strength, now)
	return out
}

// withStrength puts strength in force, restarting Since when it changes
// (or was never known).
func (st State) withStrength(strength float64, now time.Time) State {
	if st.Strength == nil || *st.Strength != strength || st.Since.IsZero() {
		st.Since = now
	}
	st.Strength = &strength
	return st
}

// strengthTolerance absorbs the last bits a strength may lose on its way
// through a metrics pipeline; the engines' own JSON is exact.
const strengthTolerance = 1e-9

// attribute checks that every replica runs strength (with its generation)
// and has run it for Settle. When not, why says what is missing, and the
// replicas still on another configuration once the strength has been in
// force for LagIntervals intervals (inForceFor) are named in lagging.
func (s Spec) attribute(replicas []Replica, strength float64, inForceFor time.Duration) (why string, lagging []string, ok bool) {
	if len(replicas) == 0 {
		return "no engine said which strength it runs, so the loss is not credited to it", nil, false
	}
	want := ""
	if s.Generation != nil {
		want = s.Generation(strength)
	}
	replicas = slices.SortedFunc(slices.Values(replicas), func(a, b Replica) int { return strings.Compare(a.Name, b.Name) })
	var behind, settling []string
	for _, r := range replicas {
		runs := math.Abs(r.Strength-strength) <= strengthTolerance && (want == "" || r.Generation == "" || r.Generation == want)
		switch {
		case !runs:
			behind = append(behind, fmt.Sprintf("%s (strength %.3f)", r.Name, r.Strength))
			lagging = append(lagging, r.Name)
		case r.RunningFor < s.Settle:
			settling = append(settling, fmt.Sprintf("%s (for %s)", r.Name, r.RunningFor.Round(time.Second)))
		}
	}
	if len(behind) == 0 && len(settling) == 0 {
		return "", nil, true
	}
	var parts []string
	if len(behind) > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d engines do not run it yet", len(behind), len(replicas)))
	}
	if len(settling) > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d have run it for less than the settle time %s: %s",
			len(settling), len(replicas), s.Settle, strings.Join(settling, ", ")))
	}
	why = "the loss is not credited to it: " + strings.Join(parts, "; ")
	if lagFor := time.Duration(LagIntervals) * s.Interval; inForceFor >= lagFor && len(behind) > 0 {
		why += fmt.Sprintf("; still on another configuration %s after it was put in force: %s",
			inForceFor.Round(time.Second), strings.Join(behind, ", "))
	} else {
		lagging = nil
	}
	return why, lagging, false
}

// screen is the rule every measurement passes before it is acted on: hold
// when it failed, is older than staleAfter, or its loss is not a finite
// non-negative number.
func screen(m Measurement, now time.Time, staleAfter time.Duration) (Hold, string) {
	switch {
	case m.Err != nil:
		return HoldFailed, m.Err.Error()
	case now.Sub(m.At) > staleAfter:
		return HoldStale, fmt.Sprintf("the newest loss is from %s, %s old, older than staleAfter %s",
			m.At.UTC().Format(time.RFC3339), now.Sub(m.At).Round(time.Second), staleAfter)
	case math.IsNaN(m.Loss) || math.IsInf(m.Loss, 0) || m.Loss < 0:
		return HoldInvalid, fmt.Sprintf("the loss %v is not a finite non-negative number", m.Loss)
	}
	return Credited, ""
}

// appendKept appends v and keeps the last HistoryLimit entries, in a new
// array (the caller's is never written).
func appendKept[T any](history []T, v T) []T {
	history = append(slices.Clip(history), v)
	if n := len(history); n > HistoryLimit {
		history = history[n-HistoryLimit:]
	}
	return history
}

// decide decides on a history whose last observation was measured at
// current, and judges convergence.
func decide(history []Observation, current float64, p Params) Decision {
	d := Decide(history, current, p)
	d.Converged = d.convex && converged(append(replayTargets(history, p), d.Target), current, p.MaxStep)
	return d
}

// Step is the tuner without a program, for harnesses that keep a bare
// observation history (test/tuningbench): the same rules as Advance but
// no attribution (a harness applies the strength at once). It holds the
// current strength, clamped to the bounds, on a measurement screen
// refuses (staleAfter 0: DefaultStaleAfter); otherwise it appends the
// observation (keeping the last HistoryLimit), decides and judges
// convergence.
func Step(history []Observation, current float64, p Params, m Measurement, now time.Time, staleAfter time.Duration) (Decision, []Observation) {
	current = clamp(current, p.Min, p.Max)
	if staleAfter <= 0 {
		staleAfter = DefaultStaleAfter
	}
	if hold, why := screen(m, now, staleAfter); hold != Credited {
		return Decision{Strength: current, Target: current, Reason: "holding: " + why}, history
	}
	history = appendKept(history, Observation{Strength: current, Loss: m.Loss})
	return decide(history, current, p), history
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
