package controllers_test

import (
	"context"
	"maps"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/attune-io/attune/controllers"
)

// An unchanged child read from the API server rather than the cache
// (Secrets, which the operator does not cache) must not be applied again:
// a typed read from the API server comes back without apiVersion and kind.
// Before the fix, every reconcile of a tuning program re-applied its
// clients-file Secret (make bench-operator-tuning).
func TestApplyUnchangedChildReadFromAPIServerWritesNothing(t *testing.T) {
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "apply-"}}
	create(t, ns)
	owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "owner", Namespace: ns.Name}}
	create(t, owner)
	desired := func() *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "child", Namespace: ns.Name, Labels: map[string]string{"a": "b"}},
			Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"clients.json": []byte(`{"clients": []}`)}}
	}
	changes, err := controllers.ApplyChild(ctx, k8s, scheme, nil, owner, desired())
	if err != nil || len(changes) != 1 {
		t.Fatalf("first apply: changes %v, err %v; want it created", changes, err)
	}
	changes, err = controllers.ApplyChild(ctx, k8s, scheme, nil, owner, desired())
	if err != nil || len(changes) != 0 {
		t.Fatalf("second apply of the same Secret: changes %v, err %v; want no write", changes, err)
	}
	changed := desired()
	changed.Data["clients.json"] = []byte(`{"clients": [{}]}`)
	if changes, err = controllers.ApplyChild(ctx, k8s, scheme, nil, owner, changed); err != nil || len(changes) != 1 {
		t.Fatalf("apply of changed data: changes %v, err %v; want it updated", changes, err)
	}
}

// The reconcilers remember the children they found as declared, so that a
// steady reconcile does not compare every child afresh; what they
// remember must never hide an edit, a deletion or a new declaration.
func TestRememberedChildrenAreAppliedWhenTheyOrTheirDeclarationChange(t *testing.T) {
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "applied-"}}
	create(t, ns)
	owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "owner", Namespace: ns.Name}}
	create(t, owner)
	declared := map[string]string{"strength": "0.5", "interval": "60s"}
	desired := func(data map[string]string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "child", Namespace: ns.Name, Labels: map[string]string{"a": "b"}},
			Data: maps.Clone(data)}
	}
	memory := &controllers.AppliedChildren{}
	// wantSpared: whether the memory, not a comparison, answers.
	apply := func(step string, data map[string]string, wantWrites int, wantSpared bool) {
		t.Helper()
		spared := memory.Spared()
		changes, err := controllers.ApplyChild(ctx, k8s, scheme, memory, owner, desired(data))
		if err != nil || len(changes) != wantWrites {
			t.Fatalf("%s: changes %v, err %v; want %d writes", step, changes, err, wantWrites)
		}
		if got := memory.Spared() > spared; got != wantSpared {
			t.Fatalf("%s: answered from memory %v, want %v", step, got, wantSpared)
		}
		got := &corev1.ConfigMap{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: "child"}, got); err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(got.Data, data) {
			t.Fatalf("%s: child holds %v, want %v", step, got.Data, data)
		}
	}
	apply("create", declared, 1, false)
	apply("unchanged: compared, then remembered", declared, 0, false)
	if n := memory.Remembered(); n != 1 {
		t.Fatalf("remembered %d children, want 1", n)
	}
	apply("unchanged again: remembered", declared, 0, true)

	// Someone else edits it: another resourceVersion, compared afresh.
	edited := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: "child"}, edited); err != nil {
		t.Fatal(err)
	}
	edited.Data["strength"] = "0.9"
	if err := k8s.Update(ctx, edited); err != nil {
		t.Fatal(err)
	}
	apply("edited by another writer: restored", declared, 1, false)
	apply("restored: compared, then remembered", declared, 0, false)

	// Deleted and created again.
	if err := k8s.Delete(ctx, edited); err != nil {
		t.Fatal(err)
	}
	apply("deleted: created again", declared, 1, false)

	// A new declaration is applied although the child did not change.
	apply("re-created: compared, then remembered", declared, 0, false)
	changed := maps.Clone(declared)
	changed["strength"] = "0.55"
	apply("new declaration", changed, 1, false)
	apply("new declaration in force", changed, 0, false)
	apply("new declaration, remembered", changed, 0, true)
	apply("the old declaration again", declared, 1, false)
}
