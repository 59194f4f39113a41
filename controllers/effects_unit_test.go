package controllers

import (
	"math"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	engineconfig "github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/effects"
)

// These tests are pure functions of their inputs; they run in the envtest
// binary (the package's TestMain) but touch no API server.

func effect(intervention string, estimate, stdErr float64, usersBoth int) effects.Effect {
	return effects.Effect{
		Intervention: intervention, Estimate: estimate, StdErr: stdErr,
		Lower: estimate - 1.96*stdErr, Upper: estimate + 1.96*stdErr,
		Users: usersBoth + 2, UsersBoth: usersBoth, Decisions: 10 * usersBoth, Treated: 4 * usersBoth, Control: 6 * usersBoth,
	}
}

// TestCombineReplicaEffects: on the embedded store each replica estimates
// over its own users, and the operator pools each intervention's estimates
// by inverse-variance weighting; on a shared store the one engine's list
// passes through unchanged.
func TestCombineReplicaEffects(t *testing.T) {
	const k = 11
	a := effect("BodyScan", -0.02, 0.01, 20)
	b := effect("BodyScan", -0.04, 0.02, 15)
	// The pooled estimate: weights 1/0.01² = 10000 and 1/0.02² = 2500.
	wantEstimate := (10000*-0.02 + 2500*-0.04) / 12500
	wantStdErr := 1 / math.Sqrt(12500)

	cases := []struct {
		name       string
		perReplica [][]effects.Effect
		want       []string // interventions, in order
		check      func(t *testing.T, got []effects.Effect)
	}{
		{"no replica reports effects", [][]effects.Effect{nil, {}}, nil, nil},
		{"one replica: unchanged", [][]effects.Effect{{a}}, []string{"BodyScan"}, func(t *testing.T, got []effects.Effect) {
			if got[0] != a {
				t.Errorf("got %+v, want %+v unchanged", got[0], a)
			}
		}},
		{"two replicas: inverse-variance pooled, counts summed", [][]effects.Effect{{a}, {b}}, []string{"BodyScan"}, func(t *testing.T, got []effects.Effect) {
			g := got[0]
			if math.Abs(g.Estimate-wantEstimate) > 1e-12 || math.Abs(g.StdErr-wantStdErr) > 1e-12 {
				t.Errorf("estimate %v ± %v, want %v ± %v", g.Estimate, g.StdErr, wantEstimate, wantStdErr)
			}
			if g.Lower >= g.Estimate || g.Upper <= g.Estimate {
				t.Errorf("interval [%v, %v] does not contain %v", g.Lower, g.Upper, g.Estimate)
			}
			if g.Users != a.Users+b.Users || g.UsersBoth != 35 || g.Decisions != a.Decisions+b.Decisions || g.Treated != a.Treated+b.Treated || g.Control != a.Control+b.Control {
				t.Errorf("counts %+v, want the sums of both replicas", g)
			}
		}},
		{"interventions kept apart and sorted", [][]effects.Effect{{effect("MicroBreak", 0.01, 0.01, 12), a}, {effect("FocusedAttention", 0.02, 0.005, 30)}},
			[]string{"BodyScan", "FocusedAttention", "MicroBreak"}, nil},
		{"below the minimum cohort: left out (a second lock behind the engine)", [][]effects.Effect{{effect("BodyScan", -0.02, 0.01, k-1)}}, nil, nil},
		{"one replica below the minimum: the other stands alone", [][]effects.Effect{{a}, {effect("BodyScan", 0.5, 0.01, k-1)}}, []string{"BodyScan"}, func(t *testing.T, got []effects.Effect) {
			if got[0] != a {
				t.Errorf("got %+v, want replica a's alone", got[0])
			}
		}},
		{"no usable standard error: left out", [][]effects.Effect{{{Intervention: "BodyScan", UsersBoth: 20}}}, nil, nil},
		{"not finite: left out", [][]effects.Effect{{{Intervention: "BodyScan", Estimate: math.NaN(), StdErr: 0.1, Lower: -1, Upper: 1, UsersBoth: 20}}}, nil, nil},
		{"a duplicate within one replica is counted once", [][]effects.Effect{{a, a}}, []string{"BodyScan"}, func(t *testing.T, got []effects.Effect) {
			if got[0] != a {
				t.Errorf("got %+v, want a once", got[0])
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := combineReplicaEffects(tc.perReplica, k)
			var names []string
			for _, e := range got {
				names = append(names, e.Intervention)
			}
			if strings.Join(names, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("interventions %v, want %v", names, tc.want)
			}
			if tc.check != nil {
				tc.check(t, got)
			}
		})
	}
}

// TestStatusEffects: status.effects keeps the program's interventions only,
// one each, sorted, stamped with the time and the strength in force.
func TestStatusEffects(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	measured := []effects.Effect{
		effect("MicroBreak", 0.01, 0.01, 12),
		effect("BodyScan", -0.02, 0.01, 20),
		effect("BodyScan", 0.3, 0.01, 20),           // a duplicate: the first stands
		effect("ResilienceTraining", 0.1, 0.01, 20), // not in the spec (removed)
		{Intervention: "FocusedAttention", Estimate: math.Inf(1), UsersBoth: 20},
	}
	spec := []wellbeingv1alpha1.Intervention{wellbeingv1alpha1.MicroBreak, wellbeingv1alpha1.BodyScan, wellbeingv1alpha1.FocusedAttention}
	got := statusEffects(measured, spec, at, 0.45)
	if len(got) != 2 || got[0].Intervention != wellbeingv1alpha1.BodyScan || got[1].Intervention != wellbeingv1alpha1.MicroBreak {
		t.Fatalf("effects %+v, want BodyScan and MicroBreak", got)
	}
	want := wellbeingv1alpha1.InterventionEffect{
		Intervention: wellbeingv1alpha1.BodyScan, Estimate: -0.02, StdErr: 0.01, Lower: measured[1].Lower, Upper: measured[1].Upper,
		Users: 22, Decisions: 200, Treated: 80, Control: 120, ObservedAt: metav1.Time{Time: at}, Strength: 0.45,
	}
	if got[0] != want {
		t.Errorf("BodyScan = %+v\nwant %+v", got[0], want)
	}
	if statusEffects(nil, spec, at, 0.45) != nil {
		t.Error("no effects measured: want nil (no status field)")
	}
	if pruned := prunedEffects(got, []wellbeingv1alpha1.Intervention{wellbeingv1alpha1.MicroBreak}); len(pruned) != 1 || pruned[0].Intervention != wellbeingv1alpha1.MicroBreak || len(got) != 2 {
		t.Errorf("pruned to MicroBreak: %+v (original %d entries)", pruned, len(got))
	}
}

func statusEffect(intervention wellbeingv1alpha1.Intervention, estimate, lower, upper float64) wellbeingv1alpha1.InterventionEffect {
	return wellbeingv1alpha1.InterventionEffect{Intervention: intervention, Estimate: estimate, Lower: lower, Upper: upper, StdErr: (upper - lower) / 3.92, Users: 30, Decisions: 300, Treated: 120, Control: 180, Strength: 0.5}
}

// TestEffectEventsAndHarmCondition: an event only when an intervention's
// interval comes to exclude zero (Normal for help, Warning for harm), and
// InterventionHarm True naming each harmful intervention, False otherwise,
// unset until effects have been published once.
func TestEffectEventsAndHarmCondition(t *testing.T) {
	const bs, mb, fa = wellbeingv1alpha1.BodyScan, wellbeingv1alpha1.MicroBreak, wellbeingv1alpha1.FocusedAttention
	spanning := statusEffect(bs, 0.01, -0.02, 0.04)
	harmful := statusEffect(bs, 0.05, 0.02, 0.08)
	harmfulAgain := statusEffect(bs, 0.06, 0.01, 0.11) // other numbers, same finding
	helpful := statusEffect(bs, -0.05, -0.08, -0.02)
	cases := []struct {
		name           string
		previous, now  []wellbeingv1alpha1.InterventionEffect
		alreadySet     bool
		wantEvents     []string // "Type Intervention"
		wantCondition  metav1.ConditionStatus
		wantReason     string
		wantInMessage  []string
		wantNoSetStill bool
	}{
		{name: "nothing published, never before", wantNoSetStill: true},
		{name: "nothing published now, condition set before", alreadySet: true,
			wantCondition: metav1.ConditionFalse, wantReason: wellbeingv1alpha1.ReasonNoHarmDetected, wantInMessage: []string{"no intervention's effect is published"}},
		{name: "first effects, all spanning zero", now: []wellbeingv1alpha1.InterventionEffect{spanning},
			wantCondition: metav1.ConditionFalse, wantReason: wellbeingv1alpha1.ReasonNoHarmDetected, wantInMessage: []string{"BodyScan"}},
		{name: "interval comes to lie above zero: Warning", previous: []wellbeingv1alpha1.InterventionEffect{spanning}, now: []wellbeingv1alpha1.InterventionEffect{harmful}, alreadySet: true,
			wantEvents: []string{"Warning BodyScan"}, wantCondition: metav1.ConditionTrue, wantReason: wellbeingv1alpha1.ReasonHarmDetected,
			wantInMessage: []string{"BodyScan (effect +0.0500, 95% interval [+0.0200, +0.0800])"}},
		{name: "harm on the first measurement: Warning", now: []wellbeingv1alpha1.InterventionEffect{harmful},
			wantEvents: []string{"Warning BodyScan"}, wantCondition: metav1.ConditionTrue, wantReason: wellbeingv1alpha1.ReasonHarmDetected},
		{name: "harm persists with new numbers: no second event", previous: []wellbeingv1alpha1.InterventionEffect{harmful}, now: []wellbeingv1alpha1.InterventionEffect{harmfulAgain}, alreadySet: true,
			wantCondition: metav1.ConditionTrue, wantReason: wellbeingv1alpha1.ReasonHarmDetected, wantInMessage: []string{"+0.0600"}},
		{name: "interval comes to lie below zero: Normal", previous: []wellbeingv1alpha1.InterventionEffect{spanning}, now: []wellbeingv1alpha1.InterventionEffect{helpful}, alreadySet: true,
			wantEvents: []string{"Normal BodyScan"}, wantCondition: metav1.ConditionFalse, wantReason: wellbeingv1alpha1.ReasonNoHarmDetected},
		{name: "from help straight to harm: Warning", previous: []wellbeingv1alpha1.InterventionEffect{helpful}, now: []wellbeingv1alpha1.InterventionEffect{harmful}, alreadySet: true,
			wantEvents: []string{"Warning BodyScan"}, wantCondition: metav1.ConditionTrue, wantReason: wellbeingv1alpha1.ReasonHarmDetected},
		{name: "harm back to spanning: no event, no harm", previous: []wellbeingv1alpha1.InterventionEffect{harmful}, now: []wellbeingv1alpha1.InterventionEffect{spanning}, alreadySet: true,
			wantCondition: metav1.ConditionFalse, wantReason: wellbeingv1alpha1.ReasonNoHarmDetected},
		{name: "harmful gone from the effects: no event, no harm", previous: []wellbeingv1alpha1.InterventionEffect{harmful}, alreadySet: true,
			wantCondition: metav1.ConditionFalse, wantReason: wellbeingv1alpha1.ReasonNoHarmDetected},
		{name: "several: each harmful one named, one event each",
			previous:      []wellbeingv1alpha1.InterventionEffect{statusEffect(mb, 0.01, -0.01, 0.03)},
			now:           []wellbeingv1alpha1.InterventionEffect{harmful, statusEffect(fa, -0.03, -0.05, -0.01), statusEffect(mb, 0.04, 0.01, 0.07)},
			wantEvents:    []string{"Warning BodyScan", "Normal FocusedAttention", "Warning MicroBreak"},
			wantCondition: metav1.ConditionTrue, wantReason: wellbeingv1alpha1.ReasonHarmDetected,
			wantInMessage: []string{"BodyScan (effect +0.0500", "; MicroBreak (effect +0.0400"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var events []string
			for _, e := range effectEvents(tc.previous, tc.now) {
				events = append(events, e.Type+" "+strings.Fields(e.Message)[0])
				if e.Type != corev1.EventTypeNormal && e.Type != corev1.EventTypeWarning {
					t.Errorf("event type %q", e.Type)
				}
				if e.Action != "Estimate"+strings.Fields(e.Message)[0] {
					t.Errorf("event action %q for %q: want one action per intervention", e.Action, e.Message)
				}
				if !strings.Contains(e.Message, "95% interval") {
					t.Errorf("event message %q lacks the interval", e.Message)
				}
			}
			if strings.Join(events, ",") != strings.Join(tc.wantEvents, ",") {
				t.Errorf("events %v, want %v", events, tc.wantEvents)
			}
			status, reason, message, set := harmCondition(tc.now, tc.alreadySet)
			if tc.wantNoSetStill {
				if set {
					t.Errorf("condition set (%s/%s) before any effect was published", status, reason)
				}
				return
			}
			if !set || status != tc.wantCondition || reason != tc.wantReason {
				t.Fatalf("condition %v %s/%s (%s), want %s/%s", set, status, reason, message, tc.wantCondition, tc.wantReason)
			}
			for _, want := range tc.wantInMessage {
				if !strings.Contains(message, want) {
					t.Errorf("message %q, want it to contain %q", message, want)
				}
			}
			if status == metav1.ConditionTrue {
				for _, e := range tc.now {
					if directionOf(e) != harms && strings.Contains(message, string(e.Intervention)) {
						t.Errorf("message %q names %s, which does not harm", message, e.Intervention)
					}
				}
			}
		})
	}
}

// TestRenderEngineDose: spec.dose goes into the engine configuration as
// set; unset fields are left to the engine's defaults, and a cooldown of
// 0s stays 0s. Every rendering parses as a valid engine configuration.
func TestRenderEngineDose(t *testing.T) {
	world := &wellbeingv1alpha1.VirtualWorld{Spec: wellbeingv1alpha1.VirtualWorldSpec{Namespace: "plaza", Context: wellbeingv1alpha1.ContextSocial}}
	cases := []struct {
		name                    string
		dose                    wellbeingv1alpha1.Dose
		wantMax                 int
		wantCooldown, wantAfter time.Duration
	}{
		{"unset: the engine's defaults", wellbeingv1alpha1.Dose{}, engineconfig.DefaultMaxPerDay, engineconfig.DefaultCooldown, engineconfig.DefaultOutcomeWindow},
		{"the API server's defaults", wellbeingv1alpha1.Dose{MaxPerDay: 6, Cooldown: &metav1.Duration{Duration: time.Hour}, OutcomeWindow: &metav1.Duration{Duration: 10 * time.Minute}}, 6, time.Hour, 10 * time.Minute},
		{"set", wellbeingv1alpha1.Dose{MaxPerDay: 96, Cooldown: &metav1.Duration{Duration: 15 * time.Minute}, OutcomeWindow: &metav1.Duration{Duration: 24 * time.Hour}}, 96, 15 * time.Minute, 24 * time.Hour},
		{"no cooldown", wellbeingv1alpha1.Dose{MaxPerDay: 1, Cooldown: &metav1.Duration{}, OutcomeWindow: &metav1.Duration{Duration: time.Second}}, 1, 0, time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := renderTestProgram()
			p.Spec.Dose = tc.dose
			data, err := renderEngineConfig(p, world, 0.5).Render()
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := engineconfig.Parse(data)
			if err != nil {
				t.Fatalf("rendered configuration does not parse: %v\n%s", err, data)
			}
			d := cfg.Dose
			if d.MaxPerDayOrDefault() != tc.wantMax || d.CooldownOrDefault() != tc.wantCooldown || d.OutcomeWindowOrDefault() != tc.wantAfter {
				t.Errorf("dose in force %d / %s / %s, want %d / %s / %s",
					d.MaxPerDayOrDefault(), d.CooldownOrDefault(), d.OutcomeWindowOrDefault(), tc.wantMax, tc.wantCooldown, tc.wantAfter)
			}
			if tc.dose.Cooldown != nil && d.Cooldown == nil {
				t.Error("a set cooldown was left out of the configuration")
			}
			if tc.dose == (wellbeingv1alpha1.Dose{}) && strings.Contains(string(data), `"dose"`) {
				t.Errorf("an unset dose is rendered: %s", data)
			}
		})
	}
}

// TestRenderedModelConfigIsAccepted: for each runtime, the model section
// the operator renders passes the engine's own validation (the engine
// refuses a configuration it cannot serve, and would not start).
func TestRenderedModelConfigIsAccepted(t *testing.T) {
	world := &wellbeingv1alpha1.VirtualWorld{Spec: wellbeingv1alpha1.VirtualWorldSpec{Namespace: "plaza", Context: wellbeingv1alpha1.ContextSocial}}
	ekman := []string{"anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"}
	for _, m := range []*wellbeingv1alpha1.ModelSidecar{
		{Runtime: wellbeingv1alpha1.ModelRuntimeCustom, Image: "example/valence:1", ModelName: "valence"},
		{Runtime: wellbeingv1alpha1.ModelRuntimeKServeHuggingFace, ModelName: "emotion", Labels: ekman},
		{Runtime: wellbeingv1alpha1.ModelRuntimeTriton, ModelName: "emotion", Labels: []string{"Negative", "Neutral", "Positive"}},
		{Runtime: wellbeingv1alpha1.ModelRuntimeMLServerHuggingFace, ModelName: "emotion"},
	} {
		t.Run(string(m.Runtime), func(t *testing.T) {
			p := renderTestProgram()
			p.Spec.Engine.Model = m
			data, err := renderEngineConfig(p, world, 0.5).Render()
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := engineconfig.Parse(data)
			if err != nil {
				t.Fatalf("the engine refuses the rendered configuration: %v\n%s", err, data)
			}
			if cfg.Model == nil || cfg.Model.RuntimeOrDefault() != string(m.Runtime) || len(cfg.Model.Labels) != len(m.Labels) {
				t.Errorf("rendered model %+v for %+v", cfg.Model, m)
			}
		})
	}
}

// renderTestProgram is a minimal valid program for rendering tests.
func renderTestProgram() *wellbeingv1alpha1.MeditationProgram {
	return &wellbeingv1alpha1.MeditationProgram{
		ObjectMeta: metav1.ObjectMeta{Name: "calm", Namespace: "plaza"},
		Spec: wellbeingv1alpha1.MeditationProgramSpec{
			Target:        wellbeingv1alpha1.StateVector{Attention: 0.8, Emotion: 0.7, Resilience: 0.7},
			Weights:       wellbeingv1alpha1.Weights{Attention: 1, Emotion: 1, Resilience: 1},
			Interventions: []wellbeingv1alpha1.Intervention{wellbeingv1alpha1.BodyScan},
			Strength:      wellbeingv1alpha1.StrengthBounds{Initial: 0.5, Min: 0.1, Max: 0.9},
		},
	}
}
