package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
)

// +kubebuilder:rbac:groups=authorization.k8s.io,resources=selfsubjectaccessreviews,verbs=create

// errSecretAccessPending means the world's Secret-access RoleBinding is
// applied but the API server does not authorize what it grants: for a
// moment after a binding is stored (the RBAC authorizer sees it a little
// later), or for good when the ClusterRole is missing or lacks verbs.
// Until it does, every Secret read in the namespace would be refused.
var errSecretAccessPending = errors.New("secret access not yet in force")

// errSecretAccessMissing is errSecretAccessPending past the grace.
var errSecretAccessMissing = errors.New("secret access not in force")

const (
	// secretAccessRecheck is how soon a world whose binding is not yet in
	// force is reconciled again, within secretAccessGrace.
	secretAccessRecheck = 250 * time.Millisecond
	// secretAccessGrace is how long a binding may take to come into force
	// before the wait is reported as a failure (ApplyFailed): past it the
	// ClusterRole is missing or lacks verbs, which a person must mend.
	secretAccessGrace = 30 * time.Second
	// secretAccessMaxRecheck caps the checks' spacing past the grace, so
	// that a ClusterRole created late is noticed within it.
	secretAccessMaxRecheck = 30 * time.Second
)

// secretVerbs are the verbs the world-secrets ClusterRole must grant
// (config/rbac/world_secrets_role.yaml says what each is for).
var secretVerbs = []string{"get", "list", "watch", "create", "update", "patch", "delete"}

// awaitedAccess records, by world, whether this process has seen the
// world's binding in force, and since when it has been waiting for it.
// The first reconcile of a world in a process checks (after a restart the
// binding may be new, or its role changed), as does every reconcile after
// the operator writes the binding; once in force it is not checked again.
// The zero value is ready to use.
type awaitedAccess struct {
	mu      sync.Mutex
	since   map[string]time.Time
	inForce map[string]bool
}

// changed notes that world's binding was just written: it is checked
// again, and a wait already running keeps its start.
func (w *awaitedAccess) changed(world string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.inForce, world)
}

// waitingSince is when the wait for world's binding began (now, when it
// begins now); false when the binding is known to be in force.
func (w *awaitedAccess) waitingSince(world string, now time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.inForce[world] {
		return time.Time{}, false
	}
	if w.since == nil {
		w.since, w.inForce = map[string]time.Time{}, map[string]bool{}
	}
	since, ok := w.since[world]
	if !ok {
		since = now
		w.since[world] = now
	}
	return since, true
}

// confirm notes that world's binding is in force.
func (w *awaitedAccess) confirm(world string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.since, world)
	if w.inForce == nil {
		w.inForce = map[string]bool{}
	}
	w.inForce[world] = true
}

// forget drops what is known of a world that is gone.
func (w *awaitedAccess) forget(world string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.since, world)
	delete(w.inForce, world)
}

// awaitSecretAccess returns nil when the operator may use Secrets in the
// world's namespace, and otherwise, with when to check again,
// errSecretAccessPending (every secretAccessRecheck, within the grace)
// or, past it, errSecretAccessMissing naming the ClusterRole and the
// verbs it lacks (at a tenth of the time waited, at most
// secretAccessMaxRecheck). It asks the API
// server with SelfSubjectAccessReviews, answered by the authorizer that
// answers the reads that follow (with several API servers, one may still
// lag: the reads' own errors and retries remain the fallback).
func (r *VirtualWorldReconciler) awaitSecretAccess(ctx context.Context, world *wellbeingv1alpha1.VirtualWorld) (time.Duration, error) {
	now := r.Clock.Now()
	since, waiting := r.accessAwaited.waitingSince(world.Name, now)
	if !waiting {
		return 0, nil
	}
	waited := now.Sub(since)
	var missing []string
	for _, verb := range secretVerbs {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: world.Spec.Namespace, Verb: verb, Resource: "secrets"},
		}}
		if err := r.Create(ctx, review); err != nil {
			return 0, fmt.Errorf("review access to Secrets in %s: %w", world.Spec.Namespace, err)
		}
		if !review.Status.Allowed {
			missing = append(missing, verb)
			if waited < secretAccessGrace {
				break // the usual case, a binding just stored: one denial says enough
			}
		}
	}
	if len(missing) == 0 {
		r.accessAwaited.confirm(world.Name)
		return 0, nil
	}
	if waited < secretAccessGrace {
		return secretAccessRecheck, errSecretAccessPending
	}
	return min(waited/10, secretAccessMaxRecheck), fmt.Errorf("%w: RoleBinding %s/%s still does not let the operator %s Secrets after %s: check that ClusterRole %s exists and grants %s on secrets",
		errSecretAccessMissing, world.Spec.Namespace, SecretAccessBindingName, strings.Join(missing, ", "), waited.Truncate(time.Second), r.SecretAccess.ClusterRole, strings.Join(secretVerbs, ", "))
}
