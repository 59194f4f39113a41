package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestEstimationDefaultsAndBounds: the API server fills spec.estimation
// with the engine's defaults, and accepts the ends of each range (the
// accelerated time constants a simulated cohort uses among them).
func TestEstimationDefaultsAndBounds(t *testing.T) {
	obj := manifest(t, strings.Replace(validProgram, "NAME", "estimation-defaults", 1), "")
	if err := k8s.Create(context.Background(), obj, client.DryRunAll); err != nil {
		t.Fatal(err)
	}
	for field, want := range map[string]string{"stateDecay": "30m", "traitDecay": "336h", "stressRecovery": "10m"} {
		if got, _, _ := unstructured.NestedString(obj.Object, "spec", "estimation", field); got != want {
			t.Errorf("spec.estimation.%s defaulted to %q, want %q", field, got, want)
		}
	}
	for i, patch := range []string{
		`estimation: {stateDecay: 1s, traitDecay: 1m, stressRecovery: 1s}`,
		`estimation: {stateDecay: 24h, traitDecay: 8760h, stressRecovery: 24h}`,
		`estimation: {stateDecay: 6s, traitDecay: 1h7m12s, stressRecovery: 2s}`,
	} {
		obj := manifest(t, strings.Replace(validProgram, "NAME", fmt.Sprintf("estimation-%d", i), 1), patch)
		if err := k8s.Create(context.Background(), obj, client.DryRunAll); err != nil {
			t.Errorf("%s rejected: %v", patch, err)
		}
	}
}
