package controllers

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
)

func TestWorldSetUpBeginsWhenTheOperatorFirstSeesIt(t *testing.T) {
	var seen worldFirstSeen
	start := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	created := start.Add(-time.Hour) // before this process started
	if got := seen.since("harbor", created, start); !got.Equal(start) {
		t.Errorf("first sight of an old world: since = %s, want %s", got, start)
	}
	if got := seen.since("harbor", created, start.Add(2*time.Second)); !got.Equal(start) {
		t.Errorf("second sight: since = %s, want the first sight %s", got, start)
	}
	// A world created after this process first saw its name (deleted and
	// created again) is timed from its creation.
	recreated := start.Add(5 * time.Second)
	if got := seen.since("harbor", recreated, start.Add(6*time.Second)); !got.Equal(recreated) {
		t.Errorf("recreated world: since = %s, want its creation %s", got, recreated)
	}
	seen.forget("harbor")
	later := start.Add(time.Minute)
	if got := seen.since("harbor", created, later); !got.Equal(later) {
		t.Errorf("after forget: since = %s, want %s", got, later)
	}
	if got := seen.since("lagoon", later.Add(time.Second), later); !got.Equal(later.Add(time.Second)) {
		t.Errorf("a world created after this clock's now: since = %s, want its creation", got)
	}
}

func TestWorldSetUpChangedPassesOnlyTheEndsOfSetUp(t *testing.T) {
	world := func(reason string) *wellbeingv1alpha1.VirtualWorld {
		w := &wellbeingv1alpha1.VirtualWorld{ObjectMeta: metav1.ObjectMeta{Name: "harbor"}}
		if reason != "" {
			status := metav1.ConditionFalse
			if reason == wellbeingv1alpha1.ReasonReconciled {
				status = metav1.ConditionTrue
			}
			meta.SetStatusCondition(&w.Status.Conditions, metav1.Condition{Type: wellbeingv1alpha1.ConditionReady, Status: status, Reason: reason})
		}
		return w
	}
	pending, ready, failed := wellbeingv1alpha1.ReasonSecretAccessPending, wellbeingv1alpha1.ReasonReconciled, wellbeingv1alpha1.ReasonApplyFailed
	for _, tc := range []struct {
		before, after string
		want          bool
	}{
		{"", pending, false}, // still being set up
		{pending, pending, false},
		{pending, ready, true}, // set up: its programs go on
		{"", ready, true},
		{ready, pending, true}, // a new binding to wait for
		{ready, ready, false},
		// Access granted after the grace: the programs' reads were refused
		// meanwhile, and they go on at once rather than after a back-off.
		{failed, ready, true},
		{failed, failed, false},
	} {
		if got := worldSetUpChanged.Update(event.UpdateEvent{ObjectOld: world(tc.before), ObjectNew: world(tc.after)}); got != tc.want {
			t.Errorf("Ready reason %q -> %q: passed = %v, want %v", tc.before, tc.after, got, tc.want)
		}
	}
	if worldSetUpChanged.Create(event.CreateEvent{Object: world("")}) {
		t.Error("a created world passed (GenerationChangedPredicate passes those)")
	}
}
