package controllers

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
)

// staleCacheRetry is when a reconcile skipped on a stale cached program
// runs again, should the watch event of our own write be slow to come.
const staleCacheRetry = time.Second

// ownWriteWindow bounds how long after our write an older copy counts as
// stale: an informer is milliseconds behind, and past this the older
// measurement time is taken as someone else's write (a status edited by
// hand), never as a reason to stop reconciling.
const ownWriteWindow = 10 * time.Second

// ownStatusWrites remembers, per program, the tuning measurement time of
// the last status this process wrote. The program's status is the tuner's
// state (strength in force, last measurement, history), and a reconcile
// of a cached copy from before that write (queued while the write was
// made, run before the informer has caught up) would act on the previous
// state: measure again within the interval, write the previous strength
// into the ConfigMap and push it to the engines, before its own status
// write fails on the conflict. Observed through real engines: 36 ms after
// a tuning step pushed 0.65, a stale reconcile pushed 0.75 back, and the
// next measurement was held StrengthPending. Such a reconcile is skipped
// instead, to run again on the fresh copy (the write's own watch event
// brings it).
type ownStatusWrites struct {
	mu      sync.Mutex
	written map[types.NamespacedName]writtenTuning
	// now is the wall clock (nil: time.Now); the window is about the
	// informer's lag, not the tuner's clock.
	now func() time.Time
}

type writtenTuning struct {
	uid      types.UID
	lastTune time.Time
	at       time.Time // when it was written
}

func (w *ownStatusWrites) clock() time.Time {
	if w.now != nil {
		return w.now()
	}
	return time.Now()
}

// wrote records the status just written for p.
func (w *ownStatusWrites) wrote(p *wellbeingv1alpha1.MeditationProgram) {
	w.mu.Lock()
	defer w.mu.Unlock()
	key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	if p.Status.LastTuneTime == nil {
		delete(w.written, key) // nothing to be behind of
		return
	}
	if w.written == nil {
		w.written = map[types.NamespacedName]writtenTuning{}
	}
	// As the API server stores it (RFC 3339, whole seconds), so that the
	// copy read back compares equal.
	w.written[key] = writtenTuning{uid: p.UID, lastTune: p.Status.LastTuneTime.Rfc3339Copy().Time, at: w.clock()}
}

// stale reports whether p is a copy from before the last status this
// process wrote for it, within ownWriteWindow of that write (a program
// deleted and created again under the same name is a new one).
func (w *ownStatusWrites) stale(p *wellbeingv1alpha1.MeditationProgram) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	last, ok := w.written[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}]
	if !ok || last.uid != p.UID || w.clock().Sub(last.at) > ownWriteWindow {
		return false
	}
	return p.Status.LastTuneTime == nil || p.Status.LastTuneTime.Time.Before(last.lastTune)
}

// forget drops what was recorded for a program that is gone.
func (w *ownStatusWrites) forget(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.written, key)
}
