package controllers

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
)

// conditionSetter stamps conditions with the reconciler's clock and the
// generation they describe, so tests control time and readers can tell a
// stale condition from a current one.
type conditionSetter struct {
	conditions *[]metav1.Condition
	generation int64
	clock      clock.PassiveClock
}

func (s conditionSetter) set(condType string, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(s.conditions, metav1.Condition{
		Type:               condType,
		Status:             status,
		Reason:             reason,
		Message:            message,
		ObservedGeneration: s.generation,
		LastTransitionTime: metav1.NewTime(s.clock.Now()),
	})
}

func boolStatus(b bool) metav1.ConditionStatus {
	if b {
		return metav1.ConditionTrue
	}
	return metav1.ConditionFalse
}
