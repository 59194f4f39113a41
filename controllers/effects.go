package controllers

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/engine/effects"
)

// combineReplicaEffects pools each intervention's effects over engine
// replicas with disjoint users (the embedded store: scope "replica") by
// inverse-variance weighting (effects.Combine). perReplica holds one list
// per replica that answered. An effect below the world's minimum cohort
// (effects.Publishable; the engines publish none, this is a second lock)
// or without a usable estimate is left out. The result has one entry per
// intervention, sorted by name. For a shared store pass the one replica's
// list: a single entry per intervention comes back unchanged.
func combineReplicaEffects(perReplica [][]effects.Effect, minCohort int) []effects.Effect {
	byIntervention := map[string][]effects.Effect{}
	for _, replica := range perReplica {
		seen := map[string]bool{}
		for _, e := range replica {
			if seen[e.Intervention] || !effects.Publishable(e, minCohort) || !finiteEffect(e) {
				continue // one per intervention and replica: a duplicate would be counted twice
			}
			seen[e.Intervention] = true
			byIntervention[e.Intervention] = append(byIntervention[e.Intervention], e)
		}
	}
	var out []effects.Effect
	for _, name := range slices.Sorted(maps.Keys(byIntervention)) {
		if e, ok := effects.Combine(byIntervention[name]); ok && finiteEffect(e) {
			out = append(out, e)
		}
	}
	return out
}

// finiteEffect rejects what status could not hold (JSON has no NaN) or what
// is not an interval.
func finiteEffect(e effects.Effect) bool {
	for _, v := range []float64{e.Estimate, e.StdErr, e.Lower, e.Upper} {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return e.StdErr >= 0 && e.Lower <= e.Upper && e.Users >= 0 && e.Decisions >= 0 && e.Treated >= 0 && e.Control >= 0
}

// statusEffects turns a measurement's effects into status.effects: only
// interventions of spec.interventions (an engine may still report one just
// removed), one each, sorted by name, stamped with when they were observed
// and the strength then in force.
func statusEffects(measured []effects.Effect, interventions []wellbeingv1alpha1.Intervention, at time.Time, strength float64) []wellbeingv1alpha1.InterventionEffect {
	var out []wellbeingv1alpha1.InterventionEffect
	seen := map[string]bool{}
	for _, e := range measured {
		if seen[e.Intervention] || !slices.Contains(interventions, wellbeingv1alpha1.Intervention(e.Intervention)) || !finiteEffect(e) {
			continue
		}
		seen[e.Intervention] = true
		out = append(out, wellbeingv1alpha1.InterventionEffect{
			Intervention: wellbeingv1alpha1.Intervention(e.Intervention),
			Estimate:     e.Estimate, StdErr: e.StdErr, Lower: e.Lower, Upper: e.Upper,
			Users: clampInt32(e.Users), Decisions: clampInt32(e.Decisions), Treated: clampInt32(e.Treated), Control: clampInt32(e.Control),
			ObservedAt: metav1.Time{Time: at},
			Strength:   strength,
		})
	}
	slices.SortFunc(out, func(a, b wellbeingv1alpha1.InterventionEffect) int {
		return cmp.Compare(a.Intervention, b.Intervention)
	})
	return out
}

func clampInt32(n int) int32 {
	return int32(min(max(n, 0), math.MaxInt32))
}

// effectDirection is which side of zero an effect's 95% interval lies on.
type effectDirection int

const (
	spansZero effectDirection = iota
	helps                     // wholly below zero: lowers the loss
	harms                     // wholly above zero: raises the loss
)

func directionOf(e wellbeingv1alpha1.InterventionEffect) effectDirection {
	ee := effects.Effect{Lower: e.Lower, Upper: e.Upper}
	switch {
	case effects.Harms(ee):
		return harms
	case effects.Helps(ee):
		return helps
	}
	return spansZero
}

// effectEvent is an Event to emit about an effect.
type effectEvent struct {
	Type string // corev1.EventTypeNormal or EventTypeWarning
	// Action is "Estimate<Intervention>": the events API folds events of
	// equal type, action and reason about one object into one series that
	// keeps the first note, so findings about different interventions
	// need different actions to stay separate Events.
	Action  string
	Message string
}

// effectEvents are the events a new status.effects calls for compared with
// the previous one: one for each intervention whose interval has come to
// exclude zero (it did not before, or lay on the other side), Normal when
// it helps and Warning when it harms. An unchanged finding is not repeated
// every measurement.
func effectEvents(previous, current []wellbeingv1alpha1.InterventionEffect) []effectEvent {
	before := map[wellbeingv1alpha1.Intervention]effectDirection{}
	for _, e := range previous {
		before[e.Intervention] = directionOf(e)
	}
	var out []effectEvent
	for _, e := range current {
		d := directionOf(e)
		if d == spansZero || before[e.Intervention] == d {
			continue
		}
		action := "Estimate" + string(e.Intervention)
		if d == harms {
			out = append(out, effectEvent{Type: corev1.EventTypeWarning, Action: action, Message: fmt.Sprintf("%s raises the loss: %s", e.Intervention, describeEffect(e))})
		} else {
			out = append(out, effectEvent{Type: corev1.EventTypeNormal, Action: action, Message: fmt.Sprintf("%s lowers the loss: %s", e.Intervention, describeEffect(e))})
		}
	}
	return out
}

func describeEffect(e wellbeingv1alpha1.InterventionEffect) string {
	return fmt.Sprintf("effect %+.4f, 95%% interval [%+.4f, %+.4f], %d users, %d decisions (%d treated), at strength %.3f",
		e.Estimate, e.Lower, e.Upper, e.Users, e.Decisions, e.Treated, e.Strength)
}

// harmCondition is the InterventionHarm condition for status.effects, and
// whether to set it: not before effects have been published once (then
// the condition exists already, or effects are present).
func harmCondition(current []wellbeingv1alpha1.InterventionEffect, alreadySet bool) (status metav1.ConditionStatus, reason, message string, set bool) {
	if len(current) == 0 && !alreadySet {
		return "", "", "", false
	}
	var harmful []string
	for _, e := range current {
		if directionOf(e) == harms {
			harmful = append(harmful, fmt.Sprintf("%s (effect %+.4f, 95%% interval [%+.4f, %+.4f])", e.Intervention, e.Estimate, e.Lower, e.Upper))
		}
	}
	if len(harmful) > 0 {
		return metav1.ConditionTrue, wellbeingv1alpha1.ReasonHarmDetected,
			"raising the loss: " + strings.Join(harmful, "; "), true
	}
	if len(current) == 0 {
		return metav1.ConditionFalse, wellbeingv1alpha1.ReasonNoHarmDetected, "no intervention's effect is published at the last measurement", true
	}
	names := make([]string, len(current))
	for i, e := range current {
		names[i] = string(e.Intervention)
	}
	return metav1.ConditionFalse, wellbeingv1alpha1.ReasonNoHarmDetected,
		fmt.Sprintf("no intervention's 95%% interval lies wholly above zero (published: %s)", strings.Join(names, ", ")), true
}

// prunedEffects drops the effects of interventions no longer in
// spec.interventions.
func prunedEffects(current []wellbeingv1alpha1.InterventionEffect, interventions []wellbeingv1alpha1.Intervention) []wellbeingv1alpha1.InterventionEffect {
	out := slices.DeleteFunc(slices.Clone(current), func(e wellbeingv1alpha1.InterventionEffect) bool {
		return !slices.Contains(interventions, e.Intervention)
	})
	if len(out) == 0 {
		return nil
	}
	return out
}
