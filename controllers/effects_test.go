package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	engineconfig "github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/effects"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/internal/testutil"
	"github.com/attune-io/attune/test/postgres"
)

// trialDose lets a trial treat at every decision point: no cooldown, the
// largest daily cap, outcomes measured over ten minutes of the trial's
// clock.
func trialDose() wellbeingv1alpha1.Dose {
	return wellbeingv1alpha1.Dose{MaxPerDay: 96, Cooldown: &metav1.Duration{}, OutcomeWindow: &metav1.Duration{Duration: 10 * time.Minute}}
}

// TestEngineReaderCombinesReplicaEffects: on the embedded store each
// engine's effects rest on its own users, and the reader pools them per
// intervention; on a shared store every engine has the whole store's, and
// the reader takes one engine's. The engines are real, and their effects
// come from a micro-randomised trial run through their API in which
// BodyScan lowers the loss and MicroBreak raises it.
func TestEngineReaderCombinesReplicaEffects(t *testing.T) {
	ctx := context.Background()
	setupWorld(t, "effects-read", wellbeingv1alpha1.ContextSocial)
	reader := &controllers.EngineLossReader{Client: k8s}
	bs, mb := wellbeingv1alpha1.BodyScan, wellbeingv1alpha1.MicroBreak
	truth := map[string]int{string(bs): helpsMood, string(mb): harmsMood}

	// Two engines, each with its own bbolt store and its own users (the
	// embedded store allows one replica; two answer at once during a
	// rolling update, each with the users it served).
	embedded := newProgram("effects-read", "pooled", "effects-read")
	embedded.Spec.Interventions = []wellbeingv1alpha1.Intervention{bs, mb}
	embedded.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual // the test reads, not the operator
	embedded.Spec.Strength.Initial = 0.9
	embedded.Spec.Dose = trialDose()
	create(t, embedded)
	cfg, _ := programEngineConfig(t, embedded)
	minCohort := cfg.Privacy.MinCohortSize // the world's, as the operator rendered it
	clock := &trialClock{}
	a := startTrialEngine(t, embedded, openBolt(t), clock)
	b := startTrialEngine(t, embedded, openBolt(t), clock)
	tr := newTrial(t, clock, truth)
	tr.enrol("a", 2*minCohort, a)
	tr.enrol("b", minCohort+3, b)
	tr.runUntil("both replicas publish BodyScan, replica a MicroBreak", 200, func() error {
		ca, cb := a.cohort(), b.cohort()
		return errors.Join(wantSign(ca, bs, signHelps), wantSign(ca, mb, signHarms), wantSign(cb, bs, signHelps))
	})
	perReplica := []contract.CohortSummary{a.cohort(), b.cohort()}
	announce(t, embedded, a, b)
	if perReplica[0].Size == nil || perReplica[1].Size == nil {
		t.Fatalf("a replica publishes no cohort: %+v", perReplica)
	}
	var m controllers.LossMeasurement
	wantSize := *perReplica[0].Size + *perReplica[1].Size
	eventually(t, "both engines read", func() error {
		var err error
		m, err = reader.Read(ctx, embedded, minCohort)
		if err == nil && m.CohortSize != wantSize {
			err = fmt.Errorf("cohort %d, want %d (%s)", m.CohortSize, wantSize, m.Sources)
		}
		return err
	})
	// What the reader must make of it: per intervention, the
	// inverse-variance pool of the replicas that publish it.
	var want []effects.Effect
	for _, iv := range []wellbeingv1alpha1.Intervention{bs, mb} {
		var list []effects.Effect
		for i, c := range perReplica {
			if e, ok := effectOf(c, iv); ok {
				t.Logf("replica %d: %s", i, describe(e))
				list = append(list, e)
			}
		}
		pooled, ok := effects.Combine(list)
		if !ok {
			t.Fatalf("no %s effect to pool", iv)
		}
		if len(list) == 2 && pooled.Users != list[0].Users+list[1].Users {
			t.Errorf("pooled %s rests on %d users, want %d + %d", iv, pooled.Users, list[0].Users, list[1].Users)
		}
		want = append(want, pooled)
	}
	if !slices.Equal(m.Effects, want) {
		t.Errorf("effects\n%+v\nwant the per-intervention pool\n%+v", m.Effects, want)
	}
	for _, e := range m.Effects {
		t.Logf("pooled: %s", describe(e))
	}
	if len(m.Effects) != 2 || !effects.Helps(m.Effects[0]) || !effects.Harms(m.Effects[1]) {
		t.Errorf("pooled effects %+v: want BodyScan to help and MicroBreak to harm, as in the trial", m.Effects)
	}

	// Two replicas on one PostgreSQL database: the users are served by
	// either, and each estimates over the whole store.
	shared := newProgram("effects-read", "shared", "effects-read")
	shared.Spec.Interventions = []wellbeingv1alpha1.Intervention{bs}
	shared.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual
	shared.Spec.Strength.Initial = 0.9
	shared.Spec.Dose = trialDose()
	sharedStore(shared, "shared-postgres", 2)
	server := postgres.Start(t)
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "shared-postgres", Namespace: "effects-read"},
		Data: map[string][]byte{engineconfig.PostgresConnectionStringKey: []byte(server.ConnString)}})
	create(t, shared)
	sharedCfg, _ := programEngineConfig(t, shared)
	openShared := func() store.Store {
		secret := &corev1.Secret{}
		get(t, client.ObjectKey{Namespace: "effects-read", Name: "shared-postgres"}, secret)
		db, err := store.OpenPostgres(ctx, string(secret.Data[engineconfig.PostgresConnectionStringKey]), sharedCfg.Program)
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	sharedClock := &trialClock{}
	x := startTrialEngine(t, shared, openShared(), sharedClock)
	y := startTrialEngine(t, shared, openShared(), sharedClock)
	str := newTrial(t, sharedClock, truth)
	str.enrol("s", minCohort+3, x, y)
	str.runUntil("the shared store publishes BodyScan", 200, func() error {
		return wantSign(x.cohort(), bs, signHelps)
	})
	announce(t, shared, x, y)
	var whole contract.CohortSummary
	eventually(t, "shared store read", func() error {
		// Either replica answers for the whole store (an estimate may be
		// up to 10 s old on a shared store: wait until they agree).
		cx, cy := x.cohort(), y.cohort()
		if cx.Scope != engineconfig.ScopeShared || cx.Size == nil || cy.Size == nil || *cx.Size != *cy.Size || len(cx.Effects) != 1 || !slices.Equal(cx.Effects, cy.Effects) {
			return fmt.Errorf("replicas disagree: %+v and %+v", cx, cy)
		}
		whole = cx
		var err error
		m, err = reader.Read(ctx, shared, minCohort)
		return err
	})
	t.Logf("shared store: %s (cohort %d)", describe(whole.Effects[0]), *whole.Size)
	if len(m.Effects) != 1 || m.Effects[0] != whole.Effects[0] || m.CohortSize != *whole.Size {
		t.Errorf("shared store effects %+v over %d users, want one engine's %+v over %d (not pooled with itself)", m.Effects, m.CohortSize, whole.Effects, *whole.Size)
	}
}

// sameEffects is nil when status.effects are the engine's published
// effects.
func sameEffects(got []wellbeingv1alpha1.InterventionEffect, published []effects.Effect) error {
	if len(got) != len(published) {
		return fmt.Errorf("effects %+v, want the engine's %+v", got, published)
	}
	for i, e := range published {
		g := got[i]
		if string(g.Intervention) != e.Intervention || g.Estimate != e.Estimate || g.StdErr != e.StdErr || g.Lower != e.Lower || g.Upper != e.Upper ||
			int(g.Users) != e.Users || int(g.Decisions) != e.Decisions || int(g.Treated) != e.Treated || int(g.Control) != e.Control {
			return fmt.Errorf("effect %+v, want the engine's %s", g, describe(e))
		}
	}
	return nil
}

// TestProgramReportsEffectsHarmAndEvents: the operator writes the effects
// of a valid measurement into status.effects, sets InterventionHarm from
// them, and emits EffectDetected once when an interval comes to exclude
// zero. The engine is real; its effects come from a micro-randomised
// trial in which FocusedAttention lowers the loss and ResonanceBreathing
// raises it, until its harm is reversed.
func TestProgramReportsEffectsHarmAndEvents(t *testing.T) {
	setupWorld(t, "effects-loop", wellbeingv1alpha1.ContextSocial)
	p := newProgram("effects-loop", "watched", "effects-loop") // FocusedAttention, ResonanceBreathing
	p.Spec.Tuning = wellbeingv1alpha1.Tuning{Mode: wellbeingv1alpha1.TuningAuto, Interval: &metav1.Duration{Duration: 10 * time.Second}, MaxStep: 0.05}
	p.Spec.Strength.Initial = 0.9
	p.Spec.Dose = trialDose()
	create(t, p)
	// Before any effect is published the condition is absent.
	waitReconciled(t, p)
	if c := meta.FindStatusCondition(p.Status.Conditions, wellbeingv1alpha1.ConditionInterventionHarm); c != nil {
		t.Errorf("InterventionHarm %s/%s before any effect was published", c.Status, c.Reason)
	}

	fa, rb := wellbeingv1alpha1.FocusedAttention, wellbeingv1alpha1.ResonanceBreathing
	cfg, _ := programEngineConfig(t, p)
	clock := &trialClock{}
	engine := startTrialEngine(t, p, openBolt(t), clock)
	tr := newTrial(t, clock, map[string]int{string(fa): helpsMood, string(rb): harmsMood})
	tr.enrol("u", 2*cfg.Privacy.MinCohortSize, engine)
	// The engine is announced only once the trial has found both effects:
	// the operator sees no intermediate state.
	tr.runUntil("FocusedAttention helps, ResonanceBreathing harms", 200, func() error {
		c := engine.cohort()
		return errors.Join(wantSign(c, fa, signHelps), wantSign(c, rb, signHarms))
	})
	first := engine.cohort()
	for _, e := range first.Effects {
		t.Logf("published: %s", describe(e))
	}
	announce(t, p, engine)

	waitEffects := func(what string, check func([]wellbeingv1alpha1.InterventionEffect) error) {
		t.Helper()
		testutil.Eventually(t, 40*time.Second, 200*time.Millisecond, what, func() error {
			get(t, client.ObjectKeyFromObject(p), p)
			return check(p.Status.Effects)
		})
	}
	waitEffects("harmful effect in status", func(es []wellbeingv1alpha1.InterventionEffect) error {
		return sameEffects(es, first.Effects)
	})
	harmful, _ := effectOf(first, rb)
	got := p.Status.Effects[1]
	if got.ObservedAt.IsZero() || got.Strength != p.Status.History[len(p.Status.History)-1].Strength {
		t.Errorf("ResonanceBreathing = %+v, want it stamped with the measurement and its strength", got)
	}
	if err := conditionIs(p.Status.Conditions, wellbeingv1alpha1.ConditionInterventionHarm, metav1.ConditionTrue, wellbeingv1alpha1.ReasonHarmDetected); err != nil {
		t.Error(err)
	}
	if v := programConditionValue(t, p.Namespace, p.Name, wellbeingv1alpha1.ConditionInterventionHarm, "true"); v != 1 {
		t.Errorf("attune_program_condition{InterventionHarm,true} = %v while harm is flagged, want 1", v)
	}
	if c := meta.FindStatusCondition(p.Status.Conditions, wellbeingv1alpha1.ConditionInterventionHarm); c != nil &&
		(!strings.Contains(c.Message, fmt.Sprintf("ResonanceBreathing (effect %+.4f", harmful.Estimate)) || strings.Contains(c.Message, "FocusedAttention")) {
		t.Errorf("InterventionHarm message %q, want ResonanceBreathing alone named", c.Message)
	}
	waitEvents(t, p, map[string]int{"Warning ResonanceBreathing": 1, "Normal FocusedAttention": 1})

	// ResonanceBreathing's harm is reversed: the trial goes on, now with
	// it lowering the loss, until its interval over the whole log spans
	// zero. The condition turns False and no event repeats.
	tr.truth[string(rb)] = helpsMood
	tr.runUntil("ResonanceBreathing's interval spans zero", 400, func() error {
		c := engine.cohort()
		return errors.Join(wantSign(c, fa, signHelps), wantSign(c, rb, signSpans))
	})
	second := engine.cohort()
	for _, e := range second.Effects {
		t.Logf("published: %s", describe(e))
	}
	waitEffects("harm gone from status", func(es []wellbeingv1alpha1.InterventionEffect) error {
		return sameEffects(es, second.Effects)
	})
	if err := conditionIs(p.Status.Conditions, wellbeingv1alpha1.ConditionInterventionHarm, metav1.ConditionFalse, wellbeingv1alpha1.ReasonNoHarmDetected); err != nil {
		t.Error(err)
	}
	if v := programConditionValue(t, p.Namespace, p.Name, wellbeingv1alpha1.ConditionInterventionHarm, "true"); v != 0 {
		t.Errorf("attune_program_condition{InterventionHarm,true} = %v after harm cleared, want 0", v)
	}
	waitEvents(t, p, map[string]int{"Warning ResonanceBreathing": 1, "Normal FocusedAttention": 1})

	// The same finding at the next measurement: no new event.
	measured := p.Status.LastTuneTime
	waitEffects("next measurement", func(es []wellbeingv1alpha1.InterventionEffect) error {
		if p.Status.LastTuneTime.Equal(measured) {
			return fmt.Errorf("no measurement since %v", measured)
		}
		return sameEffects(es, second.Effects)
	})
	time.Sleep(time.Second) // events are written asynchronously
	waitEvents(t, p, map[string]int{"Warning ResonanceBreathing": 1, "Normal FocusedAttention": 1})
}

// waitEvents waits until the program's EffectDetected events, counted by
// "Type Intervention", are exactly want.
func waitEvents(t *testing.T, p *wellbeingv1alpha1.MeditationProgram, want map[string]int) {
	t.Helper()
	eventually(t, "EffectDetected events", func() error {
		list := &eventsv1.EventList{}
		if err := k8s.List(context.Background(), list, client.InNamespace(p.Namespace)); err != nil {
			return err
		}
		got := map[string]int{}
		for _, e := range list.Items {
			if e.Regarding.Name != p.Name || e.Reason != wellbeingv1alpha1.EventReasonEffectDetected {
				continue
			}
			if e.Type != corev1.EventTypeNormal && e.Type != corev1.EventTypeWarning {
				return fmt.Errorf("event type %q", e.Type)
			}
			n := 1 // a repeat of the same finding folds into a series
			if e.Series != nil {
				n = int(e.Series.Count)
			}
			got[e.Type+" "+strings.Fields(e.Note)[0]] += n
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("events %v, want %v", got, want)
		}
		return nil
	})
}
