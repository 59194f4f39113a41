package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers/tuning"
	"github.com/attune-io/attune/engine/contract"
)

// tuningSpec maps the program's spec to the tuner's (the tuner applies
// its defaults to what the API server has not defaulted).
func tuningSpec(p *wellbeingv1alpha1.MeditationProgram) tuning.Spec {
	t, bounds := p.Spec.Tuning, p.Spec.Strength
	return tuning.Spec{
		Mode:       tuning.Mode(t.Mode),
		Suspended:  p.Spec.Suspend,
		Initial:    bounds.Initial,
		Min:        bounds.Min,
		Max:        bounds.Max,
		MaxStep:    t.MaxStep,
		Interval:   durationOf(t.Interval),
		StaleAfter: durationOf(t.StaleAfter),
		Settle:     durationOf(t.Settle),
		// The generation the engines report while running a strength:
		// the hash of the strength and bounds the ConfigMap holds.
		Generation: func(strength float64) string {
			return contract.Strength{Value: strength, Min: bounds.Min, Max: bounds.Max}.Generation()
		},
	}
}

func durationOf(d *metav1.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.Duration
}

// tuningState maps the program's status to the tuner's state.
func tuningState(st *wellbeingv1alpha1.MeditationProgramStatus) tuning.State {
	out := tuning.State{Strength: st.Strength}
	if st.StrengthSince != nil {
		out.Since = st.StrengthSince.Time
	}
	if st.LastTuneTime != nil {
		out.LastTune = st.LastTuneTime.Time
	}
	for _, h := range st.History {
		out.History = append(out.History, tuning.Record{Time: h.Time.Time, Strength: h.Strength, Loss: h.Loss, CohortSize: int(h.CohortSize)})
	}
	return out
}

// setTuningState writes the tuner's state back into the status.
func setTuningState(st *wellbeingv1alpha1.MeditationProgramStatus, s tuning.State) {
	st.Strength = s.Strength
	st.StrengthSince = optionalTime(s.Since)
	st.LastTuneTime = optionalTime(s.LastTune)
	st.History = nil
	for _, h := range s.History {
		st.History = append(st.History, wellbeingv1alpha1.TuningRecord{Time: metav1.Time{Time: h.Time}, Strength: h.Strength, Loss: h.Loss, CohortSize: int32(h.CohortSize)})
	}
}

func optionalTime(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	return &metav1.Time{Time: t}
}

// StrengthInForce is the strength the program's engines run now
// (tuning.Spec.InForce).
func StrengthInForce(p *wellbeingv1alpha1.MeditationProgram) float64 {
	return tuningSpec(p).InForce(tuningState(&p.Status))
}

// reconcileTuning lets the tuner put the strength in force and, in Auto
// mode once per interval, measure the cohort loss and decide
// (tuning.Spec.Advance); it keeps the status, conditions, events and
// metrics. A measurement the tuner does not credit holds the strength and
// says why in LossObserved.
func (r *MeditationProgramReconciler) reconcileTuning(ctx context.Context, _ *childApplier, rc *programReconcile) error {
	p, st := rc.program, rc.status
	spec := tuningSpec(p)
	var read LossMeasurement
	var readErr error
	out := spec.Advance(tuningState(st), r.Clock.Now(), func() tuning.Measurement {
		read, readErr = r.lossReader(p).Read(ctx, p, minCohortSize(rc.world))
		return tuning.Measurement{Loss: read.Loss, CohortSize: read.CohortSize, At: read.At, Err: readErr, Replicas: read.Replicas}
	})
	setTuningState(st, out.State)
	rc.strength = out.Strength
	// Push the strength when it moved, or when a replica was found still
	// running another (a push it missed): strength_push.go.
	rc.pushStrength = p.Status.Strength == nil || *p.Status.Strength != out.Strength || (out.Measured && out.Hold == tuning.HoldPending)
	rc.requeueAfter = out.RequeueAfter
	defer func() { programStrength.WithLabelValues(p.Namespace, p.Name).Set(rc.strength) }()

	if s := spec.WithDefaults(); s.Suspended || s.Mode != tuning.ModeAuto {
		why := fmt.Sprintf("tuning mode %s: the strength is held at %.3f", s.Mode, rc.strength)
		if s.Suspended {
			why = "the program is suspended: no measurements"
		}
		rc.conds.set(wellbeingv1alpha1.ConditionLossObserved, metav1.ConditionUnknown, wellbeingv1alpha1.ReasonTuningDisabled, why)
		rc.conds.set(wellbeingv1alpha1.ConditionConverged, metav1.ConditionUnknown, wellbeingv1alpha1.ReasonTuningDisabled, why)
		return nil
	}
	if !out.Measured {
		return nil
	}

	switch out.Hold {
	case tuning.Credited:
	case tuning.HoldPending:
		// Not credited to a strength, and no failure either (the engines
		// answered): the effects, estimated from each decision with its
		// own dose, are as valid as ever, and the harm watch must not wait
		// for a lagging replica.
		st.ConsecutiveErrors = 0
		st.Effects = statusEffects(read.Effects, p.Spec.Interventions, read.At, out.Before)
		tuningDecisions.WithLabelValues("held").Inc()
		rc.conds.set(wellbeingv1alpha1.ConditionLossObserved, metav1.ConditionFalse, wellbeingv1alpha1.ReasonStrengthPending,
			fmt.Sprintf("holding the strength at %.3f: %s (cohort loss %.4f over %d users, %s)", rc.strength, out.Why, read.Loss, read.CohortSize, read.Sources))
		return nil
	default:
		r.holdOnError(rc, out.Hold, readErr, out.Why)
		return nil
	}

	m, decision := read, out.Decision
	st.ConsecutiveErrors = 0
	st.Loss = &wellbeingv1alpha1.LossObservation{Value: m.Loss, CohortSize: int32(m.CohortSize), ObservedAt: metav1.Time{Time: m.At}}
	programLoss.WithLabelValues(p.Namespace, p.Name).Set(m.Loss)
	rc.conds.set(wellbeingv1alpha1.ConditionLossObserved, metav1.ConditionTrue, wellbeingv1alpha1.ReasonObserved,
		fmt.Sprintf("cohort loss %.4f over %d users (%s)", m.Loss, m.CohortSize, m.Sources))
	// The effects at this measurement replace the last ones, with the
	// strength in force while they were measured (before this decision).
	st.Effects = statusEffects(m.Effects, p.Spec.Interventions, m.At, out.Before)

	if decision.Strength != out.Before {
		r.Recorder.Eventf(p, nil, "Normal", "StrengthChanged", "Tune", "strength %.3f → %.3f: %s (loss %.4f over %d users)",
			out.Before, decision.Strength, decision.Reason, m.Loss, m.CohortSize)
		tuningDecisions.WithLabelValues("moved").Inc()
	} else {
		tuningDecisions.WithLabelValues("held").Inc()
	}
	if decision.Converged {
		rc.conds.set(wellbeingv1alpha1.ConditionConverged, metav1.ConditionTrue, wellbeingv1alpha1.ReasonConverged,
			fmt.Sprintf("the fitted optimum %.3f is stable and within one step of the strength in force", decision.Target))
	} else {
		rc.conds.set(wellbeingv1alpha1.ConditionConverged, metav1.ConditionFalse, wellbeingv1alpha1.ReasonSearching, decision.Reason)
	}
	return nil
}

// reconcileEffects keeps status.effects to spec.interventions, sets
// InterventionHarm from them once effects have been published, and queues
// EffectDetected for each intervention whose interval has come to exclude
// zero since the status last written. It runs every reconcile, measured or
// not; the effects themselves change only with a valid measurement
// (reconcileTuning), and the event and condition follow status.effects,
// so an unchanged finding writes and emits nothing.
func (r *MeditationProgramReconciler) reconcileEffects(_ context.Context, _ *childApplier, rc *programReconcile) error {
	p, st := rc.program, rc.status
	st.Effects = prunedEffects(st.Effects, p.Spec.Interventions)
	rc.effectEvents = effectEvents(p.Status.Effects, st.Effects)
	alreadySet := meta.FindStatusCondition(st.Conditions, wellbeingv1alpha1.ConditionInterventionHarm) != nil
	if status, reason, message, ok := harmCondition(st.Effects, alreadySet); ok {
		rc.conds.set(wellbeingv1alpha1.ConditionInterventionHarm, status, reason, message)
	}
	return nil
}

// emitEffectEvents emits the queued EffectDetected events. It runs only
// once the status holding the new effects is written: a reconcile that
// read a stale program (its own last status write not yet in the cache)
// would find the finding new again, but its status write fails on the
// stale resource version, and its events must not be emitted either.
func (r *MeditationProgramReconciler) emitEffectEvents(p *wellbeingv1alpha1.MeditationProgram, events []effectEvent) {
	for _, e := range events {
		r.Recorder.Eventf(p, nil, e.Type, wellbeingv1alpha1.EventReasonEffectDetected, e.Action, "%s", e.Message)
	}
}

// holdOnError records a failed, stale or invalid measurement: the reason
// is the reader's (MetricsUnavailable, CohortTooSmall) for a failed read,
// Stale for a stale one.
func (r *MeditationProgramReconciler) holdOnError(rc *programReconcile, hold tuning.Hold, err error, why string) {
	reason := wellbeingv1alpha1.ReasonMetricsUnavailable
	var me *MeasurementError
	switch {
	case hold == tuning.HoldStale:
		reason = wellbeingv1alpha1.ReasonStale
	case errors.As(err, &me):
		reason = me.Reason
	}
	rc.status.ConsecutiveErrors++
	tuningErrors.WithLabelValues(reason).Inc()
	tuningDecisions.WithLabelValues("held").Inc()
	message := fmt.Sprintf("holding the strength at %.3f: %s", rc.strength, why)
	rc.conds.set(wellbeingv1alpha1.ConditionLossObserved, metav1.ConditionFalse, reason, message)
	if rc.status.ConsecutiveErrors == 1 { // one warning per outage, not one per interval
		r.Recorder.Eventf(rc.program, nil, "Warning", reason, "Measure", "%s", message)
	}
}

func (r *MeditationProgramReconciler) lossReader(p *wellbeingv1alpha1.MeditationProgram) LossReader {
	if p.Spec.Tuning.Source.Type == wellbeingv1alpha1.LossSourcePrometheus {
		return &PrometheusLossReader{HTTP: r.HTTPClient, Access: r.Prometheus}
	}
	return &EngineLossReader{Client: r.Client, HTTP: r.HTTPClient}
}
