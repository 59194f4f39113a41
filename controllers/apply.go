package controllers

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
)

// childApplier writes child objects with server-side apply under one field
// owner. It skips the request when the cached object already carries every
// field we would apply, so a steady state costs no writes, yet an edited or
// deleted child is restored on the next reconcile.
type childApplier struct {
	client   client.Client
	scheme   *runtime.Scheme
	recorder events.EventRecorder
	// reader reads from the API server (the manager's APIReader); nil:
	// client.
	reader client.Reader
	// applied remembers the children found as declared (nil: compare
	// every time).
	applied *appliedChildren
	// changes lists what this reconcile wrote; recordChanges turns it into
	// one event, because an event per child doubles the writes of a rollout.
	changes []string
}

// recordChanges emits one Normal event summarising the writes of a reconcile.
func (a *childApplier) recordChanges(owner client.Object) {
	if len(a.changes) == 0 {
		return
	}
	a.recorder.Eventf(owner, nil, "Normal", "ChildrenApplied", "Apply", "%s", strings.Join(a.changes, "; "))
	a.changes = nil
}

// apply makes desired (owned by owner) exist as declared; writes are
// recorded for the reconcile's event.
func (a *childApplier) apply(ctx context.Context, owner, desired client.Object) error {
	_, err := a.applyWrote(ctx, owner, desired)
	return err
}

// applyWrote is apply, also saying whether it wrote desired.
func (a *childApplier) applyWrote(ctx context.Context, owner, desired client.Object) (bool, error) {
	gvk, err := apiutil.GVKForObject(desired, a.scheme)
	if err != nil {
		return false, fmt.Errorf("resolve kind of %T: %w", desired, err)
	}
	if err := controllerutil.SetControllerReference(owner, desired, a.scheme); err != nil {
		return false, fmt.Errorf("set owner of %s %s: %w", gvk.Kind, desired.GetName(), err)
	}
	key := client.ObjectKeyFromObject(desired)
	var existing client.Object
	// A Secret the operator knows it has not (ownSecretsKnowledge) is
	// applied without a read: one there all the same is outside its
	// watch, so never a subset of desired, and would be applied anyway.
	if k, ok := a.client.(ownSecretsKnowledge); !ok || gvk != secretGVK || !k.lacksOwnSecret(key) {
		if existing, err = a.get(ctx, gvk, key); err != nil {
			return false, err
		}
	}
	var declared appliedChild
	if existing != nil && a.applied != nil {
		if declared, err = declaredAt(desired, existing.GetResourceVersion()); err != nil {
			return false, fmt.Errorf("digest %s %s: %w", gvk.Kind, desired.GetName(), err)
		}
		if a.applied.unchanged(gvk, key, declared) {
			return false, nil
		}
	}
	desiredMap, err := a.toApplyMap(desired, gvk)
	if err != nil {
		return false, err
	}
	if existing != nil {
		existingMap, err := runtime.DefaultUnstructuredConverter.ToUnstructured(existing)
		if err != nil {
			return false, fmt.Errorf("convert %s %s: %w", gvk.Kind, desired.GetName(), err)
		}
		if isSubset(desiredMap, existingMap) {
			if a.applied != nil {
				a.applied.remember(gvk, key, declared)
			}
			return false, nil
		}
	}
	u := &unstructured.Unstructured{Object: desiredMap}
	if err := a.client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		a.recorder.Eventf(owner, nil, "Warning", "ApplyFailed", "Apply", "apply %s %s: %v", gvk.Kind, desired.GetName(), err)
		return false, fmt.Errorf("apply %s %s: %w", gvk.Kind, desired.GetName(), err)
	}
	verb := "Updated"
	if existing == nil {
		verb = "Created"
	}
	a.changes = append(a.changes, fmt.Sprintf("%s %s %s", verb, gvk.Kind, desired.GetName()))
	return true, nil
}

// createSecretIfMissing creates the Secret that generate returns, only when
// none of that name exists: generated keys and tokens must never be
// overwritten once issued, and are not even generated when they exist. An
// existing Secret is accepted only when owner controls it: anyone who may
// create Secrets in the namespace could otherwise plant a key or token
// they know (a user-token signing key mints user tokens), and the engines
// would trust it. created says whether this call stored generate's Secret;
// when false, the caller must read back what is stored.
func (a *childApplier) createSecretIfMissing(ctx context.Context, owner client.Object, key client.ObjectKey, generate func() (*corev1.Secret, error)) (created bool, err error) {
	existing := &corev1.Secret{}
	if err := getGeneratedSecret(ctx, a.client, key, existing); err == nil {
		return false, checkSecretController(owner, existing)
	} else if !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("get Secret %s: %w", key, err)
	}
	secret, err := generate()
	if err != nil {
		return false, err
	}
	if err := controllerutil.SetControllerReference(owner, secret, a.scheme); err != nil {
		return false, fmt.Errorf("set owner of Secret %s: %w", key, err)
	}
	if err := a.client.Create(ctx, secret, client.FieldOwner(FieldOwner)); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return false, fmt.Errorf("create Secret %s: %w", key, err)
		}
		// It exists outside our cache's label selector, or a concurrent
		// create won: read it from the API server and check who controls it.
		if err := a.apiReader().Get(ctx, key, existing); err != nil {
			return false, fmt.Errorf("get Secret %s: %w", key, err)
		}
		return false, checkSecretController(owner, existing)
	}
	a.changes = append(a.changes, "Created Secret "+key.Name)
	return true, nil
}

var secretGVK = corev1.SchemeGroupVersion.WithKind("Secret")

// ownSecretsKnowledge is what the reconcilers' client (ownObjectsClient)
// knows of the operator's Secrets without asking the API server.
type ownSecretsKnowledge interface {
	lacksOwnSecret(key client.ObjectKey) bool
}

// getGeneratedSecret reads a Secret the operator generates, answering
// NotFound without a request when the operator has no Secret of that name
// as far as it knows (the synced watch of its namespace, and the Secrets
// this process created, hold none). The caller then creates it: a Secret
// there without the operator's label (planted) fails that create with
// AlreadyExists, and the caller reads it from the API server. This spares
// the API server a quorum read for each Secret of a new program.
func getGeneratedSecret(ctx context.Context, reader client.Reader, key client.ObjectKey, secret *corev1.Secret) error {
	if k, ok := reader.(ownSecretsKnowledge); ok && k.lacksOwnSecret(key) {
		return apierrors.NewNotFound(corev1.Resource("secrets"), key.Name)
	}
	return reader.Get(ctx, key, secret)
}

// errSecretNotControlled means a Secret the operator generates exists but
// its owner does not control it.
var errSecretNotControlled = errors.New("generated Secret not controlled by its owner")

// checkSecretController refuses a Secret owner does not control, naming it.
func checkSecretController(owner client.Object, s *corev1.Secret) error {
	if ref := metav1.GetControllerOf(s); ref != nil && ref.UID == owner.GetUID() {
		return nil
	}
	return fmt.Errorf("%w: Secret %s/%s exists and is not controlled by %s; the operator generates it and refuses one it did not create: remove it",
		errSecretNotControlled, s.Namespace, s.Name, owner.GetName())
}

// apiReader reads from the API server, past the label-filtered cache.
func (a *childApplier) apiReader() client.Reader {
	if a.reader != nil {
		return a.reader
	}
	return a.client
}

// deleteIfOwned removes an optional child that is no longer wanted, but only
// if owner controls it: we never delete what we did not create.
func (a *childApplier) deleteIfOwned(ctx context.Context, owner, obj client.Object) error {
	gvk, err := apiutil.GVKForObject(obj, a.scheme)
	if err != nil {
		return fmt.Errorf("resolve kind of %T: %w", obj, err)
	}
	existing, err := a.get(ctx, gvk, client.ObjectKeyFromObject(obj))
	if err != nil || existing == nil {
		return err
	}
	if ref := metav1.GetControllerOf(existing); ref == nil || ref.UID != owner.GetUID() {
		return nil
	}
	if err := a.client.Delete(ctx, existing); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	a.changes = append(a.changes, fmt.Sprintf("Deleted %s %s", gvk.Kind, obj.GetName()))
	return nil
}

// get reads an object from the cache; nil when it does not exist.
func (a *childApplier) get(ctx context.Context, gvk schema.GroupVersionKind, key client.ObjectKey) (client.Object, error) {
	raw, err := a.scheme.New(gvk)
	if err != nil {
		return nil, fmt.Errorf("new %s: %w", gvk.Kind, err)
	}
	obj := raw.(client.Object)
	if err := a.client.Get(ctx, key, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("get %s %s: %w", gvk.Kind, key, err)
	}
	// A read from the API server (Secrets are not cached) comes back
	// without apiVersion and kind, unlike one from the cache; without them
	// the desired object is never a subset and would be applied again on
	// every reconcile (make bench-operator-tuning).
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	return obj, nil
}

// toApplyMap converts a typed object to the map we send as an apply patch:
// with its kind, and without status and server-populated metadata.
func (a *childApplier) toApplyMap(obj client.Object, gvk schema.GroupVersionKind) (map[string]any, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("convert %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	m["apiVersion"], m["kind"] = gvk.GroupVersion().String(), gvk.Kind
	delete(m, "status")
	if meta, ok := m["metadata"].(map[string]any); ok {
		delete(meta, "creationTimestamp")
		delete(meta, "resourceVersion")
		delete(meta, "managedFields")
	}
	return m, nil
}

// isSubset reports whether every field set in want has the same value in
// have. Maps may carry extra keys in have (server defaults, other owners);
// lists must match element by element, except owner references, which must
// merely be present.
func isSubset(want, have any) bool {
	switch w := want.(type) {
	case map[string]any:
		h, ok := have.(map[string]any)
		if !ok {
			return len(w) == 0 && have == nil
		}
		for k, wv := range w {
			hv, present := h[k]
			if !present {
				if isEmpty(wv) {
					continue
				}
				return false
			}
			if k == "ownerReferences" {
				if !containsAll(wv, hv) {
					return false
				}
				continue
			}
			if !isSubset(wv, hv) {
				return false
			}
		}
		return true
	case []any:
		h, ok := have.([]any)
		if !ok || len(h) != len(w) {
			return len(w) == 0 && have == nil
		}
		for i := range w {
			if !isSubset(w[i], h[i]) {
				return false
			}
		}
		return true
	default:
		return reflect.DeepEqual(want, have)
	}
}

func isEmpty(v any) bool {
	switch t := v.(type) {
	case nil:
		return true
	case map[string]any:
		return len(t) == 0
	case []any:
		return len(t) == 0
	}
	return false
}

func containsAll(want, have any) bool {
	w, _ := want.([]any)
	h, _ := have.([]any)
	for _, wi := range w {
		found := false
		for _, hi := range h {
			if isSubset(wi, hi) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
