package controllers

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
)

// worldSetUp reports whether a world's programs may be reconciled: the
// world has been reconciled once and does not wait for its Secret access
// (reading a program's Secrets before would be refused).
func worldSetUp(w *wellbeingv1alpha1.VirtualWorld) bool {
	ready := meta.FindStatusCondition(w.Status.Conditions, wellbeingv1alpha1.ConditionReady)
	return ready != nil && ready.Reason != wellbeingv1alpha1.ReasonSecretAccessPending
}

// worldSetUpChanged passes the world updates that end or begin its set-up,
// or turn its Ready True or False, which change no generation: the
// programs waiting for it are reconciled at once rather than polling the
// world or waiting out an error back-off (a world whose Secret access came
// after the grace goes from ApplyFailed to Ready).
var worldSetUpChanged = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		before, ok := e.ObjectOld.(*wellbeingv1alpha1.VirtualWorld)
		if !ok {
			return false
		}
		after, ok := e.ObjectNew.(*wellbeingv1alpha1.VirtualWorld)
		return ok && (worldSetUp(before) != worldSetUp(after) || worldReady(before) != worldReady(after))
	},
}

// worldReady reports whether the world's Ready condition is True.
func worldReady(w *wellbeingv1alpha1.VirtualWorld) bool {
	return meta.IsStatusConditionTrue(w.Status.Conditions, wellbeingv1alpha1.ConditionReady)
}

// worldFirstSeen remembers when this process first saw each world not yet
// reconciled. A world created before the operator started (a cluster set
// up all at once, by GitOps or a chart) begins its set-up only when the
// operator sees it, so its age says nothing about how long its programs
// have waited. Entries go once the world is set up. The zero value is
// ready to use.
type worldFirstSeen struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

// since is when the set-up of world began: the later of its creation and
// this process's first sight of it unreconciled.
func (f *worldFirstSeen) since(world string, created, now time.Time) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen == nil {
		f.seen = map[string]time.Time{}
	}
	seen, ok := f.seen[world]
	if !ok {
		seen = now
		f.seen[world] = now
	}
	if created.After(seen) {
		return created
	}
	return seen
}

// forget drops world once it is set up.
func (f *worldFirstSeen) forget(world string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.seen, world)
}
