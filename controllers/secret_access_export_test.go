package controllers

import (
	"context"
	"time"

	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
)

// The outcomes of SecretAccessCheck.Await.
var (
	ErrSecretAccessPending = errSecretAccessPending
	ErrSecretAccessMissing = errSecretAccessMissing
)

// SecretAccessCheck is the world reconciler's check that its Secret-access
// binding is in force, made as c's identity at clk's time.
type SecretAccessCheck struct{ r *VirtualWorldReconciler }

func NewSecretAccessCheck(c client.Client, clk clock.PassiveClock, clusterRole string) *SecretAccessCheck {
	return &SecretAccessCheck{r: &VirtualWorldReconciler{Client: c, Clock: clk, SecretAccess: &SecretAccess{ClusterRole: clusterRole}}}
}

// Await is awaitSecretAccess: when to check again, and why not yet.
func (s *SecretAccessCheck) Await(ctx context.Context, w *wellbeingv1alpha1.VirtualWorld) (time.Duration, error) {
	return s.r.awaitSecretAccess(ctx, w)
}

// BindingChanged is what the reconciler notes after writing the binding.
func (s *SecretAccessCheck) BindingChanged(w *wellbeingv1alpha1.VirtualWorld) {
	s.r.accessAwaited.changed(w.Name)
}
