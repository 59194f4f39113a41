// Package simulator is a synthetic population whose steady-state cohort loss
// is U-shaped in the intervention strength. Tests, benchmarks and the demo
// use it two ways: directly (Model, fast, for the tuner's benchmark) and
// through real engines' HTTP API (Driver, for integration and the demo).
package simulator

import (
	"math"
	"math/rand/v2"
)

// Params configure a population.
type Params struct {
	Users int `json:"users"`
	// OptimumMean and OptimumSD describe the per-user optimal strength.
	OptimumMean float64 `json:"optimumMean"`
	OptimumSD   float64 `json:"optimumSD"`
	// Noise is the standard deviation of each state dimension's random walk
	// per step.
	Noise float64 `json:"noise"`
	// MeasurementNoise is the standard deviation added to a measured
	// cohort loss (what imperfect estimation adds).
	MeasurementNoise float64 `json:"measurementNoise"`
	// Churn is the fraction of users replaced by newcomers per interval.
	Churn float64 `json:"churn"`
	// StepsPerInterval is how many state updates one tuning interval spans.
	StepsPerInterval int        `json:"stepsPerInterval"`
	Seed             uint64     `json:"seed"`
	Target           [3]float64 `json:"target"`
	Weights          [3]float64 `json:"weights"`
}

// DefaultParams is a 200-user cohort with optimum around 0.45.
func DefaultParams() Params {
	return Params{
		Users: 200, OptimumMean: 0.45, OptimumSD: 0.08, Noise: 0.01, MeasurementNoise: 0.002,
		Churn: 0.02, StepsPerInterval: 4, Seed: 1,
		Target: [3]float64{0.8, 0.7, 0.7}, Weights: [3]float64{1, 1, 1},
	}
}

// Dynamics constants: per step, a user's state moves toward the target at
// rate alpha·effect, drifts back to the user's own baseline at rate gamma,
// and strength beyond the user's optimum costs burden·excess.
const (
	alpha  = 0.3
	gamma  = 0.1
	burden = 0.25
)

// User is one synthetic person.
type User struct {
	ID       int
	State    [3]float64 // attention, emotion, resilience in [0,1]
	Baseline [3]float64 // where the user drifts without intervention
	Optimum  float64    // the strength that helps this user most
}

// Model is the population.
type Model struct {
	P      Params
	Users  []User
	rng    *rand.Rand
	nextID int
}

// New draws a population.
func New(p Params) *Model {
	m := &Model{P: p, rng: rand.New(rand.NewPCG(p.Seed, 0x5eed))}
	for range p.Users {
		m.Users = append(m.Users, m.newUser())
	}
	return m
}

func (m *Model) newUser() User {
	u := User{ID: m.nextID}
	m.nextID++
	for d, mean := range [3]float64{0.45, 0.45, 0.5} {
		u.Baseline[d] = clamp01(mean + 0.1*m.rng.NormFloat64())
	}
	u.State = u.Baseline
	u.Optimum = math.Min(0.98, math.Max(0.02, m.P.OptimumMean+m.P.OptimumSD*m.rng.NormFloat64()))
	return u
}

// effect is how much of the possible improvement a strength achieves, and
// excess how far it overshoots the user's optimum.
func effect(strength, optimum float64) (eff, excess float64) {
	return math.Min(strength, optimum) / optimum, math.Max(0, strength-optimum)
}

// Step advances every user by one step under a strength.
func (m *Model) Step(strength float64) {
	for i := range m.Users {
		u := &m.Users[i]
		eff, excess := effect(strength, u.Optimum)
		for d := range 3 {
			s := u.State[d]
			s += alpha*eff*(m.P.Target[d]-s) + gamma*(u.Baseline[d]-s) - burden*excess + m.P.Noise*m.rng.NormFloat64()
			u.State[d] = clamp01(s)
		}
	}
}

// Interval runs one tuning interval: the steps, then churn.
func (m *Model) Interval(strength float64) {
	for range m.P.StepsPerInterval {
		m.Step(strength)
	}
	for i := range m.Users {
		if m.rng.Float64() < m.P.Churn {
			m.Users[i] = m.newUser()
		}
	}
}

// UserLoss is Σ w (s − s*)² / Σ w.
func (m *Model) UserLoss(u *User) float64 {
	var num, den float64
	for d := range 3 {
		diff := u.State[d] - m.P.Target[d]
		num += m.P.Weights[d] * diff * diff
		den += m.P.Weights[d]
	}
	return num / den
}

// CohortLoss is the true mean loss.
func (m *Model) CohortLoss() float64 {
	var sum float64
	for i := range m.Users {
		sum += m.UserLoss(&m.Users[i])
	}
	return sum / float64(len(m.Users))
}

// MeasuredLoss is the cohort loss as imperfect estimation reports it.
func (m *Model) MeasuredLoss() float64 {
	return math.Max(0, m.CohortLoss()+m.P.MeasurementNoise*m.rng.NormFloat64())
}

// Oracle finds the best fixed strength on a fine grid over [lo, hi]: for
// each candidate, a fresh population with the same seed (common random
// numbers) runs to steady state and its mean cohort loss is measured.
func Oracle(p Params, lo, hi float64) (bestStrength, bestLoss float64) {
	bestLoss = math.Inf(1)
	for s := lo; s <= hi+1e-9; s += 0.005 {
		m := New(p)
		for range 40 {
			m.Interval(s)
		}
		var sum float64
		for range 40 {
			m.Interval(s)
			sum += m.CohortLoss()
		}
		if l := sum / 40; l < bestLoss {
			bestStrength, bestLoss = s, l
		}
	}
	return bestStrength, bestLoss
}

func clamp01(v float64) float64 { return math.Min(1, math.Max(0, v)) }
