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

// errSecretAccessPending means the world's Secret-access RoleBinding is
// applied but the API server does not yet authorize what it grants: the
// RBAC authorizer sees a new binding a moment after it is stored, and
// until then every Secret read in the namespace would be refused.
var errSecretAccessPending = errors.New("secret access not yet in force")

const (
	// secretAccessRecheck is how soon a world whose binding is not yet in
	// force is reconciled again.
	secretAccessRecheck = 250 * time.Millisecond
	// secretAccessGrace is how long a new binding may take to come into
	// force before the wait is an error: past it the ClusterRole is
	// missing or lacks verbs, which no wait mends.
	secretAccessGrace = 30 * time.Second
)

// secretVerbs are the verbs the world-secrets ClusterRole must grant
// (config/rbac/world_secrets_role.yaml says what each is for).
var secretVerbs = []string{"get", "list", "watch", "create", "update", "patch", "delete"}

// awaitedAccess records, by world, when a binding the operator created or
// changed was applied, until the API server is seen to authorize it. An
// unchanged binding is not checked again: this is the wait after a write,
// not a per-reconcile audit. The zero value is ready to use.
type awaitedAccess struct {
	mu    sync.Mutex
	since map[string]time.Time
}

// start notes that world's binding was written at now; a wait already
// running keeps its start.
func (w *awaitedAccess) start(world string, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.since == nil {
		w.since = map[string]time.Time{}
	}
	if _, ok := w.since[world]; !ok {
		w.since[world] = now
	}
}

// awaited says since when world's binding is awaited (false: it is not).
func (w *awaitedAccess) awaited(world string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	since, ok := w.since[world]
	return since, ok
}

// done ends the wait for world (in force, or the world is gone).
func (w *awaitedAccess) done(world string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.since, world)
}

// awaitSecretAccess returns errSecretAccessPending while the binding the
// operator just wrote for world is not yet in force, and an error naming
// the ClusterRole and the missing verbs once the grace has passed. It asks
// the API server with SelfSubjectAccessReviews, which every authenticated
// user may create (system:basic-user) and which the same authorizer
// answers as the reads that follow.
func (r *VirtualWorldReconciler) awaitSecretAccess(ctx context.Context, world *wellbeingv1alpha1.VirtualWorld) error {
	since, ok := r.accessAwaited.awaited(world.Name)
	if !ok {
		return nil
	}
	var missing []string
	for _, verb := range secretVerbs {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: world.Spec.Namespace, Verb: verb, Resource: "secrets"},
		}}
		if err := r.Create(ctx, review); err != nil {
			return fmt.Errorf("review access to Secrets in %s: %w", world.Spec.Namespace, err)
		}
		if !review.Status.Allowed {
			missing = append(missing, verb)
		}
	}
	if len(missing) == 0 {
		r.accessAwaited.done(world.Name)
		return nil
	}
	if waited := r.Clock.Now().Sub(since); waited < secretAccessGrace {
		return errSecretAccessPending
	}
	return fmt.Errorf("RoleBinding %s/%s still does not let the operator %s Secrets after %s: check that ClusterRole %s exists and grants %s on secrets",
		world.Spec.Namespace, SecretAccessBindingName, strings.Join(missing, ", "), secretAccessGrace, r.SecretAccess.ClusterRole, strings.Join(secretVerbs, ", "))
}
