package controllers

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	engineconfig "github.com/attune-io/attune/engine/config"
)

// TestRenderEngineEstimation: spec.estimation goes into the engine
// configuration as set, and unset fields are left out (the engine's
// defaults). Every rendering parses as a valid engine configuration.
func TestRenderEngineEstimation(t *testing.T) {
	world := &wellbeingv1alpha1.VirtualWorld{Spec: wellbeingv1alpha1.VirtualWorldSpec{Namespace: "plaza", Context: wellbeingv1alpha1.ContextSocial}}
	d := func(v time.Duration) *metav1.Duration { return &metav1.Duration{Duration: v} }
	for _, tc := range []struct {
		name string
		spec wellbeingv1alpha1.Estimation
		want engineconfig.Estimation
	}{
		{"unset", wellbeingv1alpha1.Estimation{}, engineconfig.Estimation{}},
		{"the API server's defaults", wellbeingv1alpha1.Estimation{StateDecay: d(30 * time.Minute), TraitDecay: d(336 * time.Hour), StressRecovery: d(10 * time.Minute)},
			engineconfig.Estimation{StateDecay: engineconfig.Duration{Duration: 30 * time.Minute}, TraitDecay: engineconfig.Duration{Duration: 336 * time.Hour}, StressRecovery: engineconfig.Duration{Duration: 10 * time.Minute}}},
		{"accelerated, one field", wellbeingv1alpha1.Estimation{StateDecay: d(6 * time.Second)}, engineconfig.Estimation{StateDecay: engineconfig.Duration{Duration: 6 * time.Second}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := renderTestProgram()
			p.Spec.Estimation = tc.spec
			data, err := renderEngineConfig(p, world, 0.5).Render()
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := engineconfig.Parse(data)
			if err != nil {
				t.Fatalf("rendered configuration does not parse: %v\n%s", err, data)
			}
			if cfg.Estimation != tc.want {
				t.Errorf("estimation %+v, want %+v", cfg.Estimation, tc.want)
			}
			if tc.spec == (wellbeingv1alpha1.Estimation{}) && strings.Contains(string(data), `"estimation"`) {
				t.Errorf("an unset estimation is rendered: %s", data)
			}
		})
	}
}
