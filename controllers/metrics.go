package controllers

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
)

// Operator metrics, served on the manager's metrics endpoint. Labels name
// programs, never users.
var (
	programStrength = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "attune_program_strength", Help: "Intervention strength in force per program.",
	}, []string{"namespace", "program"})
	programLoss = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "attune_program_cohort_loss", Help: "Last valid cohort loss observed per program.",
	}, []string{"namespace", "program"})
	tuningDecisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "attune_tuning_decisions_total", Help: "Tuning decisions by outcome (moved, held).",
	}, []string{"decision"})
	tuningErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "attune_tuning_errors_total", Help: "Failed loss measurements by reason.",
	}, []string{"reason"})
	// programCondition follows kube-state-metrics' condition convention: one
	// series per status, 1 for the one in force, so alerts can say
	// `attune_program_condition{condition="Converged",status="false"} == 1`.
	programCondition = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "attune_program_condition", Help: "Tuning conditions per program (LossObserved, Converged, InterventionHarm): 1 for the status in force, 0 for the others.",
	}, []string{"namespace", "program", "condition", "status"})
)

// alertedConditions are the program conditions exported for alerting.
var alertedConditions = []string{
	wellbeingv1alpha1.ConditionLossObserved,
	wellbeingv1alpha1.ConditionConverged,
	wellbeingv1alpha1.ConditionInterventionHarm,
}

// recordProgramConditions exports the alerted conditions found in conds;
// one not set yet exports nothing.
func recordProgramConditions(namespace, name string, conds []metav1.Condition) {
	for _, condType := range alertedConditions {
		c := meta.FindStatusCondition(conds, condType)
		if c == nil {
			continue
		}
		for _, st := range []metav1.ConditionStatus{metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown} {
			v := 0.0
			if c.Status == st {
				v = 1
			}
			programCondition.WithLabelValues(namespace, name, condType, strings.ToLower(string(st))).Set(v)
		}
	}
}

func init() {
	metrics.Registry.MustRegister(programStrength, programLoss, tuningDecisions, tuningErrors, programCondition)
}

func forgetProgramMetrics(namespace, name string) {
	programStrength.DeleteLabelValues(namespace, name)
	programLoss.DeleteLabelValues(namespace, name)
	programCondition.DeletePartialMatch(prometheus.Labels{"namespace": namespace, "program": name})
}
