package controllers

import (
	"context"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// AppliedChildren is what the reconcilers' appliers remember.
type AppliedChildren = appliedChildren

// Remembered is how many children m remembers as declared.
func (m *AppliedChildren) Remembered() int { return m.len() }

// Spared is how many comparisons m has spared.
func (m *AppliedChildren) Spared() int64 { return m.hits.Load() }

// ApplyChild applies desired, owned by owner, through the reconcilers'
// applier with c and applied (nil: no memory), and returns the changes
// it recorded (none: no write).
func ApplyChild(ctx context.Context, c client.Client, scheme *runtime.Scheme, applied *AppliedChildren, owner, desired client.Object) ([]string, error) {
	a := &childApplier{client: c, scheme: scheme, reader: c, recorder: &events.FakeRecorder{}, applied: applied}
	err := a.apply(ctx, owner, desired)
	return a.changes, err
}
