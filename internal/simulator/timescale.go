package simulator

import (
	"math"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/estimate"
)

// DefaultSpeedup runs the population 480 times faster than the wall
// clock: a wall-clock second is eight simulated minutes, so a demo of 80
// seconds is an afternoon and evening of ten and a half hours.
const DefaultSpeedup = 480

// OutcomeWindow is the proximal-outcome horizon the population's programs
// use: 60 minutes, two evidence time constants (estimate.DefaultStateDecay)
// and the cooldown. The engine reads an outcome from the user's state
// estimate, whose evidence decays with τ 30 minutes: after a 15-minute
// session, e^(−15/30) ≈ 60% of the weight at the end of a 30-minute window
// is on evidence from before the session ended, so the change it measures
// falls short of the true one (effects against the truth 0.75–0.88 in six
// runs, their intervals covering it in 89%); at 60 minutes e^(−45/30) ≈
// 22% (coverage 94% in five runs). A window no longer
// than the cooldown also keeps a treated person's next session out of the
// outcome. The engine's default of 10 minutes is shorter than most
// sessions (5 to 22 minutes at strengths 0–1, docs/engine-model.md).
const OutcomeWindow = 60 * time.Minute

// TimeScale maps the population's clock onto the wall clock. The engines
// see only wall-clock timestamps; they keep up because their time
// constants are set on the same scale (EngineTiming).
type TimeScale struct {
	// Speedup is how many simulated seconds pass in a wall-clock second
	// (at least 1).
	Speedup float64
}

func (s TimeScale) speedup() float64 { return math.Max(1, s.Speedup) }

// Simulated is the simulated time that passes in a wall-clock span.
func (s TimeScale) Simulated(wall time.Duration) time.Duration {
	return time.Duration(float64(wall) * s.speedup())
}

// Wall is the wall-clock span of a simulated one.
func (s TimeScale) Wall(simulated time.Duration) time.Duration {
	return time.Duration(float64(simulated) / s.speedup())
}

// EngineTiming are an engine's time constants (spec.dose and
// spec.estimation of a program).
type EngineTiming struct {
	MaxPerDay      int
	Cooldown       time.Duration
	OutcomeWindow  time.Duration
	StateDecay     time.Duration
	TraitDecay     time.Duration
	StressRecovery time.Duration
}

// EngineTiming is each of the engine's production defaults, taken as a
// span of simulated time, on the wall clock (to 100 ms, at least 1s), and
// the outcome window OutcomeWindow: at DefaultSpeedup a cooldown of 7.5s,
// an outcome window of 7.5s, evidence decay of 3.8s (attention, emotion)
// and 42m (resilience), stress recovery 1.3s. The daily cap counts a
// wall-clock day, which no speedup shortens, so it is set out of reach
// (96) and the cooldown alone spaces the sessions.
func (s TimeScale) EngineTiming() EngineTiming {
	wall := func(d time.Duration) time.Duration { return max(time.Second, s.Wall(d).Round(100*time.Millisecond)) }
	return EngineTiming{
		MaxPerDay:      min(96, int(math.Round(float64(config.DefaultMaxPerDay)*s.speedup()))),
		Cooldown:       wall(config.DefaultCooldown),
		OutcomeWindow:  wall(OutcomeWindow),
		StateDecay:     wall(estimate.DefaultStateDecay),
		TraitDecay:     wall(estimate.DefaultTraitDecay),
		StressRecovery: wall(estimate.DefaultStressRecovery),
	}
}

// ApplyTo sets the time constants of an engine configuration (an engine
// run in process).
func (t EngineTiming) ApplyTo(cfg *config.Config) {
	cooldown := config.Duration{Duration: t.Cooldown}
	cfg.Dose = config.Dose{MaxPerDay: t.MaxPerDay, Cooldown: &cooldown, OutcomeWindow: config.Duration{Duration: t.OutcomeWindow}}
	cfg.Estimation = config.Estimation{
		StateDecay: config.Duration{Duration: t.StateDecay}, TraitDecay: config.Duration{Duration: t.TraitDecay},
		StressRecovery: config.Duration{Duration: t.StressRecovery},
	}
}

// ApplyToProgram sets them in a program's spec, which the operator
// renders into its engines' configuration.
func (t EngineTiming) ApplyToProgram(spec *wellbeingv1alpha1.MeditationProgramSpec) {
	d := func(v time.Duration) *metav1.Duration { return &metav1.Duration{Duration: v} }
	spec.Dose = wellbeingv1alpha1.Dose{MaxPerDay: int32(t.MaxPerDay), Cooldown: d(t.Cooldown), OutcomeWindow: d(t.OutcomeWindow)}
	spec.Estimation = wellbeingv1alpha1.Estimation{StateDecay: d(t.StateDecay), TraitDecay: d(t.TraitDecay), StressRecovery: d(t.StressRecovery)}
}
