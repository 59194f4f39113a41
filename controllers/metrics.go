package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
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
)

func init() {
	metrics.Registry.MustRegister(programStrength, programLoss, tuningDecisions, tuningErrors)
}

func forgetProgramMetrics(namespace, name string) {
	programStrength.DeleteLabelValues(namespace, name)
	programLoss.DeleteLabelValues(namespace, name)
}
