package tuningbench

import (
	"math"
	"math/rand/v2"
	"time"

	"gonum.org/v1/gonum/optimize"

	"github.com/attune-io/attune/controllers/tuning"
)

// A contender picks the strength for the next interval from the
// measurement of the interval just ended (one measurement per interval, the
// same budget for all). Every contender holds its strength when the
// measurement is invalid, as the reconciler holds the tuner.
type contender interface {
	next(m tuning.Measurement, now time.Time) float64
}

// contenderSpec names a contender and builds a fresh one for a seed.
type contenderSpec struct {
	name string
	make func(seed uint64) contender
}

var contenders = []contenderSpec{
	{"tuner", func(uint64) contender { return &tunerContender{s: initial} }},
	{"fixed", func(uint64) contender { return fixedContender{initial} }},
	{"random", func(seed uint64) contender {
		return &randomContender{s: initial, rng: rand.New(rand.NewPCG(seed, 99))} // #nosec: simulation only
	}},
	{"SPSA", func(seed uint64) contender { return newSPSA(seed) }},
	{"Nelder-Mead", func(uint64) contender {
		return newGonum(&optimize.NelderMead{SimplexSize: 2 * maxStep})
	}},
	{"CMA-ES", func(seed uint64) contender {
		return newGonum(&optimize.CmaEsChol{InitStepSize: 0.15, ForgetBest: true, Src: rand.NewPCG(seed, 0xc3a)})
	}},
}

// tunerContender is the operator's tuner fed as the reconciler feeds it.
type tunerContender struct {
	s       float64
	history []tuning.Observation
}

func (t *tunerContender) next(m tuning.Measurement, now time.Time) float64 {
	var d tuning.Decision
	d, t.history = tuning.Step(t.history, t.s, tuning.Params{Min: lo, Max: hi, MaxStep: maxStep}, m, now, 2*time.Hour)
	t.s = d.Strength
	return t.s
}

// maxStepOracle is a reference, not a contender: it knows where the
// optimum lies in the next interval and moves toward it by at most maxStep,
// holding on an invalid measurement like every contender. On a curve that
// stays put and responds at once, no contender bound by maxStep (the tuner,
// SPSA) can have less regret; Nelder–Mead and CMA-ES, which may jump, can.
type maxStepOracle struct {
	sc scenario
	t  int // the interval just measured
	s  float64
}

func (o *maxStepOracle) next(m tuning.Measurement, _ time.Time) float64 {
	o.t++
	if m.Err == nil && o.t < len(o.sc.argmin) {
		o.s += math.Max(-maxStep, math.Min(maxStep, o.sc.argmin[o.t]-o.s))
	}
	return o.s
}

type fixedContender struct{ s float64 }

func (f fixedContender) next(tuning.Measurement, time.Time) float64 { return f.s }

// randomContender draws each interval's strength uniformly in the bounds
// (Katib's default random algorithm, one trial per interval).
type randomContender struct {
	s   float64
	rng *rand.Rand
}

func (r *randomContender) next(m tuning.Measurement, _ time.Time) float64 {
	if m.Err == nil {
		r.s = lo + (hi-lo)*r.rng.Float64()
	}
	return r.s
}

// spsa is simultaneous-perturbation (in one dimension Kiefer–Wolfowitz with
// a random sign) stochastic approximation: two intervals per gradient
// estimate, at θ + c_kΔ then θ − c_kΔ, then θ ← θ − a_k·ĝ with the step
// clipped to maxStep and θ to the bounds. Gains follow Spall:
// a_k = a/(k+1+A)^0.602, c_k = c/(k+1)^0.101.
type spsa struct {
	theta, s     float64
	k            int
	delta, yPlus float64
	phase        int // 0: measuring the start; 1: θ+cΔ in force; 2: θ−cΔ in force
	rng          *rand.Rand
	steps        []float64 // |θ update| of each iteration, for the safety test
}

const (
	spsaA     = 6    // stability constant, ≈ 10% of the iterations
	spsaC     = 0.03 // perturbation, a little over maxStep/2
	spsaAlpha = 0.602
	spsaGamma = 0.101
)

// spsaGain is a = 2·(A+1)^0.602: an initial gain of 2, about Newton's
// 1/(2·curvature) on the benchmark's curves, so early steps are maxStep.
var spsaGain = 2 * math.Pow(spsaA+1, spsaAlpha)

func newSPSA(seed uint64) *spsa {
	return &spsa{theta: initial, s: initial, rng: rand.New(rand.NewPCG(seed, 0x5a5a))} // #nosec: simulation only
}

func (p *spsa) ck() float64 { return spsaC / math.Pow(float64(p.k+1), spsaGamma) }

func (p *spsa) next(m tuning.Measurement, _ time.Time) float64 {
	if m.Err != nil {
		return p.s // hold and repeat this evaluation
	}
	switch p.phase {
	case 1:
		p.yPlus = m.Loss
		p.s, p.phase = clampTo(p.theta-p.ck()*p.delta), 2
		return p.s
	case 2:
		// The gradient along the points actually evaluated (clamped).
		plus, minus := clampTo(p.theta+p.ck()*p.delta), p.s
		if plus != minus {
			g := (p.yPlus - m.Loss) / (plus - minus)
			a := spsaGain / math.Pow(float64(p.k+1+spsaA), spsaAlpha)
			step := math.Max(-maxStep, math.Min(maxStep, a*g))
			p.theta = clampTo(p.theta - step)
			p.steps = append(p.steps, math.Abs(step))
		}
		p.k++
	}
	p.delta = 1
	if p.rng.IntN(2) == 0 {
		p.delta = -1
	}
	p.s, p.phase = clampTo(p.theta+p.ck()*p.delta), 1
	return p.s
}

func clampTo(s float64) float64 { return math.Max(lo, math.Min(hi, s)) }

// gonumContender runs a gonum/optimize Method one function evaluation per
// interval, speaking its Method protocol directly (Init, then Run with an
// operation and a result channel): each FuncEvaluation it asks for is put in
// force for one interval (clamped to the bounds) and answered with that
// interval's measurement. MajorIteration and NoOperation tasks are answered
// at once. If the method ends (MethodDone) it holds its last best point.
type gonumContender struct {
	ops     chan optimize.Task
	results chan optimize.Task
	pending *optimize.Task // the evaluation in force
	s       float64
	best    float64
	done    bool
	started bool // a measurement has been received
}

func newGonum(method optimize.Method) *gonumContender {
	g := &gonumContender{ops: make(chan optimize.Task, 1), results: make(chan optimize.Task, 1), s: initial, best: initial}
	method.Init(1, 1)
	tasks := []optimize.Task{{Op: optimize.NoOperation, Location: &optimize.Location{X: []float64{initial}}}}
	go method.Run(g.ops, g.results, tasks)
	return g
}

func (g *gonumContender) next(m tuning.Measurement, _ time.Time) float64 {
	if g.done || m.Err != nil {
		return g.s
	}
	// The first measurement is of the initial point, which NelderMead asks
	// to evaluate first: it answers that request.
	unused := !g.started
	g.started = true
	if g.pending != nil {
		unused = false
		g.pending.F = m.Loss
		g.results <- *g.pending
		g.pending = nil
	}
	for {
		task, ok := <-g.ops
		if !ok {
			g.done, g.s = true, g.best
			return g.s
		}
		switch {
		case task.Op == optimize.MethodDone:
			g.best = clampTo(task.X[0])
			g.finish()
			g.done, g.s = true, g.best
			return g.s
		case task.Op == optimize.MajorIteration:
			g.best = clampTo(task.X[0])
			g.results <- task
		case task.Op&optimize.FuncEvaluation != 0:
			x := clampTo(task.X[0])
			if unused && x == g.s {
				unused = false
				task.F = m.Loss
				g.results <- task
				continue
			}
			g.pending, g.s = &task, x
			return g.s
		default:
			g.results <- task
		}
	}
}

// finish ends the method's Run: PostIteration, close the results, drain.
func (g *gonumContender) finish() {
	g.results <- optimize.Task{Op: optimize.PostIteration}
	close(g.results)
	for range g.ops { //nolint:revive // draining
	}
}

// close stops the method's goroutine at the end of a run.
func (g *gonumContender) close() {
	if !g.done {
		g.done = true
		g.finish()
	}
}
