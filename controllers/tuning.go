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
)

// Tuning defaults mirror the CRD defaults for objects written before them.
const (
	defaultInterval   = 60 * time.Second
	defaultStaleAfter = 5 * time.Minute
	defaultMaxStep    = 0.05
)

func tuningInterval(p *wellbeingv1alpha1.MeditationProgram) time.Duration {
	if d := p.Spec.Tuning.Interval; d != nil && d.Duration > 0 {
		return d.Duration
	}
	return defaultInterval
}

func staleAfter(p *wellbeingv1alpha1.MeditationProgram) time.Duration {
	if d := p.Spec.Tuning.StaleAfter; d != nil && d.Duration > 0 {
		return d.Duration
	}
	return defaultStaleAfter
}

func tuningParams(p *wellbeingv1alpha1.MeditationProgram) tuning.Params {
	step := p.Spec.Tuning.MaxStep
	if step <= 0 {
		step = defaultMaxStep
	}
	return tuning.Params{Min: p.Spec.Strength.Min, Max: p.Spec.Strength.Max, MaxStep: step}
}

// reconcileTuning decides the strength in force. Manual holds
// strength.initial; Paused freezes the last strength; Auto measures the
// cohort loss once per interval and lets the tuner move the strength. Every
// path clamps into the current bounds at once. A failed, stale or too-small
// measurement holds the strength and says why in LossObserved.
func (r *MeditationProgramReconciler) reconcileTuning(ctx context.Context, _ *childApplier, rc *programReconcile) error {
	p, st := rc.program, rc.status
	rc.strength = StrengthInForce(p)
	st.Strength = &rc.strength
	defer func() { programStrength.WithLabelValues(p.Namespace, p.Name).Set(rc.strength) }()

	if p.Spec.Suspend || p.Spec.Tuning.Mode != wellbeingv1alpha1.TuningAuto {
		why := fmt.Sprintf("tuning mode %s: the strength is held at %.3f", p.Spec.Tuning.Mode, rc.strength)
		if p.Spec.Suspend {
			why = "the program is suspended: no measurements"
		}
		rc.conds.set(wellbeingv1alpha1.ConditionLossObserved, metav1.ConditionUnknown, wellbeingv1alpha1.ReasonTuningDisabled, why)
		rc.conds.set(wellbeingv1alpha1.ConditionConverged, metav1.ConditionUnknown, wellbeingv1alpha1.ReasonTuningDisabled, why)
		return nil
	}

	interval := tuningInterval(p)
	now := r.Clock.Now()
	if st.LastTuneTime != nil {
		if wait := interval - now.Sub(st.LastTuneTime.Time); wait > 0 {
			rc.requeueAfter = wait // not due: come back exactly when it is
			return nil
		}
	}
	rc.requeueAfter = interval
	st.LastTuneTime = &metav1.Time{Time: now}

	reader := r.lossReader(p)
	m, err := reader.Read(ctx, p, minCohortSize(rc.world))
	if err == nil && now.Sub(m.At) > staleAfter(p) {
		err = &MeasurementError{Reason: wellbeingv1alpha1.ReasonStale, Message: fmt.Sprintf(
			"the newest loss is from %s, older than staleAfter %s", m.At.UTC().Format(time.RFC3339), staleAfter(p))}
	}
	if err != nil {
		r.holdOnError(rc, err)
		return nil
	}

	st.ConsecutiveErrors = 0
	st.Loss = &wellbeingv1alpha1.LossObservation{Value: m.Loss, CohortSize: int32(m.CohortSize), ObservedAt: metav1.Time{Time: m.At}}
	programLoss.WithLabelValues(p.Namespace, p.Name).Set(m.Loss)
	rc.conds.set(wellbeingv1alpha1.ConditionLossObserved, metav1.ConditionTrue, wellbeingv1alpha1.ReasonObserved,
		fmt.Sprintf("cohort loss %.4f over %d users (%s)", m.Loss, m.CohortSize, m.Sources))
	// The effects at this measurement replace the last ones, with the
	// strength in force while they were measured (before this decision).
	st.Effects = statusEffects(m.Effects, p.Spec.Interventions, m.At, rc.strength)

	params := tuningParams(p)
	history := observations(st.History)
	decision, _ := tuning.Step(history, rc.strength, params,
		tuning.Measurement{Loss: m.Loss, CohortSize: m.CohortSize, At: m.At}, now, staleAfter(p))
	st.History = append(st.History, wellbeingv1alpha1.TuningRecord{
		Time: metav1.Time{Time: now}, Strength: rc.strength, Loss: m.Loss, CohortSize: int32(m.CohortSize),
	})
	if n := len(st.History); n > wellbeingv1alpha1.MaxTuningHistory {
		st.History = append([]wellbeingv1alpha1.TuningRecord(nil), st.History[n-wellbeingv1alpha1.MaxTuningHistory:]...)
	}

	if decision.Strength != rc.strength {
		r.Recorder.Eventf(p, nil, "Normal", "StrengthChanged", "Tune", "strength %.3f → %.3f: %s (loss %.4f over %d users)",
			rc.strength, decision.Strength, decision.Reason, m.Loss, m.CohortSize)
		tuningDecisions.WithLabelValues("moved").Inc()
	} else {
		tuningDecisions.WithLabelValues("held").Inc()
	}
	rc.strength = decision.Strength
	st.Strength = &rc.strength
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

func (r *MeditationProgramReconciler) holdOnError(rc *programReconcile, err error) {
	reason := wellbeingv1alpha1.ReasonMetricsUnavailable
	var me *MeasurementError
	if errors.As(err, &me) {
		reason = me.Reason
	}
	rc.status.ConsecutiveErrors++
	tuningErrors.WithLabelValues(reason).Inc()
	tuningDecisions.WithLabelValues("held").Inc()
	message := fmt.Sprintf("holding the strength at %.3f: %v", rc.strength, err)
	rc.conds.set(wellbeingv1alpha1.ConditionLossObserved, metav1.ConditionFalse, reason, message)
	if rc.status.ConsecutiveErrors == 1 { // one warning per outage, not one per interval
		r.Recorder.Eventf(rc.program, nil, "Warning", reason, "Measure", "%s", message)
	}
}

func (r *MeditationProgramReconciler) lossReader(p *wellbeingv1alpha1.MeditationProgram) LossReader {
	if p.Spec.Tuning.Source.Type == wellbeingv1alpha1.LossSourcePrometheus {
		return &PrometheusLossReader{HTTP: r.HTTPClient}
	}
	return &EngineLossReader{Client: r.Client, HTTP: r.HTTPClient}
}

func observations(history []wellbeingv1alpha1.TuningRecord) []tuning.Observation {
	out := make([]tuning.Observation, len(history))
	for i, h := range history {
		out[i] = tuning.Observation{Strength: h.Strength, Loss: h.Loss}
	}
	return out
}
