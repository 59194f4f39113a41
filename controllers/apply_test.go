package controllers_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
	changes, err := controllers.ApplyChild(ctx, k8s, scheme, owner, desired())
	if err != nil || len(changes) != 1 {
		t.Fatalf("first apply: changes %v, err %v; want it created", changes, err)
	}
	changes, err = controllers.ApplyChild(ctx, k8s, scheme, owner, desired())
	if err != nil || len(changes) != 0 {
		t.Fatalf("second apply of the same Secret: changes %v, err %v; want no write", changes, err)
	}
	changed := desired()
	changed.Data["clients.json"] = []byte(`{"clients": [{}]}`)
	if changes, err = controllers.ApplyChild(ctx, k8s, scheme, owner, changed); err != nil || len(changes) != 1 {
		t.Fatalf("apply of changed data: changes %v, err %v; want it updated", changes, err)
	}
}
