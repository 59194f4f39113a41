package controllers

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
)

// attune_program_condition carries one series per status of each alerted
// condition, 1 for the status in force, as the alerts in
// charts/attune/files/alerts.yaml expect; a deleted program leaves none.
func TestProgramConditionMetric(t *testing.T) {
	const ns, name = "metrics-cond", "calm"
	recordProgramConditions(ns, name, []metav1.Condition{
		{Type: wellbeingv1alpha1.ConditionInterventionHarm, Status: metav1.ConditionTrue},
		{Type: wellbeingv1alpha1.ConditionLossObserved, Status: metav1.ConditionFalse},
		{Type: wellbeingv1alpha1.ConditionReady, Status: metav1.ConditionTrue},
	})
	for _, c := range []struct {
		condition, status string
		want              float64
	}{
		{wellbeingv1alpha1.ConditionInterventionHarm, "true", 1},
		{wellbeingv1alpha1.ConditionInterventionHarm, "false", 0},
		{wellbeingv1alpha1.ConditionInterventionHarm, "unknown", 0},
		{wellbeingv1alpha1.ConditionLossObserved, "false", 1},
		{wellbeingv1alpha1.ConditionLossObserved, "true", 0},
	} {
		if got := gaugeValue(t, programCondition.WithLabelValues(ns, name, c.condition, c.status)); got != c.want {
			t.Errorf("%s=%s: %v, want %v", c.condition, c.status, got, c.want)
		}
	}
	// Converged was not set and Ready is not exported: 2 conditions × 3 statuses.
	if n := seriesCount(programCondition); n != 6 {
		t.Errorf("%d series, want 6", n)
	}
	recordProgramConditions(ns, name, []metav1.Condition{{Type: wellbeingv1alpha1.ConditionInterventionHarm, Status: metav1.ConditionFalse}})
	if got := gaugeValue(t, programCondition.WithLabelValues(ns, name, wellbeingv1alpha1.ConditionInterventionHarm, "true")); got != 0 {
		t.Errorf("harm cleared, true series still %v", got)
	}
	forgetProgramMetrics(ns, name)
	if n := seriesCount(programCondition); n != 0 {
		t.Errorf("%d series after the program is forgotten, want 0", n)
	}
}

func gaugeValue(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	m := &dto.Metric{}
	if err := g.Write(m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

func seriesCount(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric)
	go func() { c.Collect(ch); close(ch) }()
	n := 0
	for range ch {
		n++
	}
	return n
}
