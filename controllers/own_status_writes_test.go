package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
)

// TestOwnStatusWritesDetectAStaleCopy: after a status write, a copy with an
// older (or no) measurement time is stale, the copy read back (whole
// seconds) and newer ones are not; another program of the same name, a
// status written without a measurement and a forgotten program are never
// stale.
func TestOwnStatusWritesDetectAStaleCopy(t *testing.T) {
	at := time.Date(2026, 12, 2, 14, 30, 43, 33_000_000, time.UTC)
	program := func(uid types.UID, lastTune *time.Time) *wellbeingv1alpha1.MeditationProgram {
		p := &wellbeingv1alpha1.MeditationProgram{ObjectMeta: metav1.ObjectMeta{Namespace: "w", Name: "p", UID: uid}}
		if lastTune != nil {
			p.Status.LastTuneTime = &metav1.Time{Time: *lastTune}
		}
		return p
	}
	ptrTo := func(t time.Time) *time.Time { return &t }
	clock := at
	w := ownStatusWrites{now: func() time.Time { return clock }}
	if w.stale(program("a", nil)) {
		t.Fatal("stale before any write")
	}
	w.wrote(program("a", &at))
	cases := []struct {
		name  string
		copy  *wellbeingv1alpha1.MeditationProgram
		stale bool
	}{
		{"the previous measurement", program("a", ptrTo(at.Add(-10*time.Second))), true},
		{"no measurement yet", program("a", nil), true},
		{"as read back, whole seconds", program("a", ptrTo(at.Truncate(time.Second))), false},
		{"as written", program("a", &at), false},
		{"a later one", program("a", ptrTo(at.Add(10*time.Second))), false},
		{"a new program of the same name", program("b", nil), false},
	}
	for _, c := range cases {
		if got := w.stale(c.copy); got != c.stale {
			t.Errorf("%s: stale = %v, want %v", c.name, got, c.stale)
		}
	}
	w.wrote(program("a", nil)) // a status without a measurement: nothing to be behind of
	if w.stale(program("a", nil)) {
		t.Error("stale after a write without a measurement")
	}
	w.wrote(program("a", &at))
	w.forget(types.NamespacedName{Namespace: "w", Name: "p"})
	if w.stale(program("a", nil)) {
		t.Error("stale after forget")
	}
	w.wrote(program("a", &at))
	clock = at.Add(ownWriteWindow + time.Second)
	if w.stale(program("a", nil)) {
		t.Errorf("an older copy %s after the write still counts as stale", ownWriteWindow+time.Second)
	}
}
