package controllers_test

import (
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// programConditionValue reads attune_program_condition from the manager's
// registry, as a scrape would; -1 when the series is absent.
func programConditionValue(t *testing.T, namespace, program, condition, status string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	want := map[string]string{"namespace": namespace, "program": program, "condition": condition, "status": status}
	for _, f := range families {
		if f.GetName() != "attune_program_condition" {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if want[l.GetName()] != l.GetValue() {
					continue series
				}
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}
