package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	engineconfig "github.com/attune-io/attune/engine/config"
)

// TestPostgresStoreWiring: a program on the PostgreSQL store gets its
// Secret mounted as files, never copied into the ConfigMap; a missing or
// unusable Secret is reported with the field and the Secret named; a
// changed Secret rolls the engines (they connect at start).
func TestPostgresStoreWiring(t *testing.T) {
	ctx := context.Background()
	setupWorld(t, "vault", wellbeingv1alpha1.ContextSocial)
	p := newProgram("vault", "ledger", "vault")
	sharedStore(p, "ledger-postgres", 3)
	create(t, p)
	d := waitDeployment(t, p)

	var volume *corev1.Volume
	for i := range d.Spec.Template.Spec.Volumes {
		if v := &d.Spec.Template.Spec.Volumes[i]; v.Name == "postgres" {
			volume = v
		}
	}
	if volume == nil || volume.Secret == nil || volume.Secret.SecretName != "ledger-postgres" {
		t.Fatalf("postgres volume = %+v, want the Secret ledger-postgres", volume)
	}
	var mount *corev1.VolumeMount
	for i, m := range d.Spec.Template.Spec.Containers[0].VolumeMounts {
		if m.Name == "postgres" {
			mount = &d.Spec.Template.Spec.Containers[0].VolumeMounts[i]
		}
	}
	if mount == nil || !mount.ReadOnly || mount.MountPath != "/etc/attune/postgres" {
		t.Fatalf("postgres mount = %+v", mount)
	}
	cm := &corev1.ConfigMap{}
	get(t, client.ObjectKey{Namespace: "vault", Name: "ledger-engine-config"}, cm)
	cfg, err := engineconfig.Parse([]byte(cm.Data[engineconfig.FileName]))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Store.Type != engineconfig.StorePostgreSQL || cfg.Store.Postgres == nil || cfg.Store.Postgres.SecretDir != "/etc/attune/postgres" {
		t.Errorf("engine store config = %+v", cfg.Store)
	}

	waitStoreCondition := func(want string) {
		t.Helper()
		eventually(t, "store condition "+want, func() error {
			get(t, client.ObjectKeyFromObject(p), p)
			if err := conditionIs(p.Status.Conditions, wellbeingv1alpha1.ConditionDegraded, metav1.ConditionTrue, wellbeingv1alpha1.ReasonStoreSecretInvalid); err != nil {
				return err
			}
			if c := meta.FindStatusCondition(p.Status.Conditions, wellbeingv1alpha1.ConditionEngineAvailable); c == nil || c.Reason != wellbeingv1alpha1.ReasonStoreSecretInvalid || !strings.Contains(c.Message, want) {
				return fmt.Errorf("EngineAvailable = %+v, want StoreSecretInvalid saying %q", c, want)
			}
			return nil
		})
	}
	waitStoreCondition("spec.engine.store.postgres.secretRef: Secret vault/ledger-postgres not found")

	// bump changes the program, so it is reconciled now rather than at the
	// next recheck of the Secret.
	bump := func() {
		t.Helper()
		updateSpec(t, p, func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Strength.Initial += 0.01 })
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "ledger-postgres", Namespace: "vault"},
		Data: map[string][]byte{"user": []byte("attune"), "password": []byte("hunter2")}}
	create(t, secret)
	bump()
	waitStoreCondition("has neither the key connectionString nor host")

	secret.Data = map[string][]byte{"connectionString": []byte("postgres://attune:hunter2@db.internal:5432/attune")}
	if err := k8s.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	bump()
	var firstHash string
	eventually(t, "store Secret accepted", func() error {
		get(t, client.ObjectKeyFromObject(p), p)
		if c := meta.FindStatusCondition(p.Status.Conditions, wellbeingv1alpha1.ConditionDegraded); c == nil || c.Status != metav1.ConditionFalse {
			return fmt.Errorf("Degraded = %+v", c)
		}
		get(t, client.ObjectKeyFromObject(d), d)
		if firstHash = d.Spec.Template.Annotations[controllers.StoreSecretHashKey]; firstHash == "" {
			return fmt.Errorf("no %s annotation on the pod template", controllers.StoreSecretHashKey)
		}
		return nil
	})
	get(t, client.ObjectKey{Namespace: "vault", Name: "ledger-engine-config"}, cm)
	for _, leaked := range []string{"hunter2", "db.internal", "postgres://"} {
		if strings.Contains(cm.Data[engineconfig.FileName], leaked) {
			t.Errorf("the engine ConfigMap contains %q from the Secret", leaked)
		}
	}
	if strings.Contains(firstHash, "hunter2") {
		t.Error("the annotation holds the password")
	}

	// Rotated credentials roll the engines.
	secret.Data["connectionString"] = []byte("postgres://attune:correct-horse@db.internal:5432/attune")
	if err := k8s.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	bump()
	eventually(t, "rotated Secret rolls the pods", func() error {
		get(t, client.ObjectKeyFromObject(d), d)
		if h := d.Spec.Template.Annotations[controllers.StoreSecretHashKey]; h == firstHash {
			return fmt.Errorf("annotation still %s", h)
		}
		return nil
	})
}

// TestEmbeddedStoreOnAClaim: a program whose Embedded store asks for a
// volume gets an owned PersistentVolumeClaim mounted as the data volume and
// a Deployment that recreates instead of rolling (a ReadWriteOnce volume
// cannot be mounted by two pods on two nodes). Going ephemeral returns the
// engine to an emptyDir and a rolling update, and keeps the claim; asking
// for it again mounts the same claim.
func TestEmbeddedStoreOnAClaim(t *testing.T) {
	ctx := context.Background()
	setupWorld(t, "archive", wellbeingv1alpha1.ContextHealth)
	p := newProgram("archive", "journal", "archive")
	p.Spec.Engine.Store.Embedded = &wellbeingv1alpha1.EmbeddedStore{Volume: &wellbeingv1alpha1.StoreVolume{
		Size: resource.MustParse("2Gi"), StorageClassName: ptr.To("fast-ssd"),
	}}
	create(t, p)

	claim := &corev1.PersistentVolumeClaim{}
	eventually(t, "the data claim", func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: "archive", Name: "journal-engine-data"}, claim)
	})
	if got := claim.Spec.Resources.Requests[corev1.ResourceStorage]; got.Cmp(resource.MustParse("2Gi")) != 0 {
		t.Errorf("claim size = %s, want 2Gi", got.String())
	}
	if ptr.Deref(claim.Spec.StorageClassName, "") != "fast-ssd" || len(claim.Spec.AccessModes) != 1 || claim.Spec.AccessModes[0] != corev1.ReadWriteOnce {
		t.Errorf("claim class %v, access modes %v; want fast-ssd, [ReadWriteOnce]", claim.Spec.StorageClassName, claim.Spec.AccessModes)
	}
	if ref := metav1.GetControllerOf(claim); ref == nil || ref.UID != p.UID {
		t.Errorf("claim controller = %+v, want the program", ref)
	}
	if claim.Labels[controllers.LabelManagedBy] != controllers.ManagedByValue {
		t.Errorf("claim labels = %v: outside the operator's cache, drift would go unseen", claim.Labels)
	}

	dataVolume := func(d *appsv1.Deployment) corev1.VolumeSource {
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == "data" {
				return v.VolumeSource
			}
		}
		t.Fatal("no data volume")
		return corev1.VolumeSource{}
	}
	d := waitDeployment(t, p)
	if src := dataVolume(d); src.PersistentVolumeClaim == nil || src.PersistentVolumeClaim.ClaimName != "journal-engine-data" {
		t.Errorf("data volume = %+v, want the claim", src)
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType || d.Spec.Strategy.RollingUpdate != nil {
		t.Errorf("strategy = %+v, want Recreate without rollingUpdate", d.Spec.Strategy)
	}

	// The claim may grow but not shrink, and keeps its class.
	for _, change := range []struct {
		edit func(*wellbeingv1alpha1.StoreVolume)
		want string
	}{
		{func(v *wellbeingv1alpha1.StoreVolume) { v.Size = resource.MustParse("1Gi") }, "spec.engine.store.embedded.volume.size may grow but not shrink"},
		{func(v *wellbeingv1alpha1.StoreVolume) { v.StorageClassName = ptr.To("slow-hdd") }, "spec.engine.store.embedded.volume.storageClassName is immutable"},
		{func(v *wellbeingv1alpha1.StoreVolume) { v.StorageClassName = nil }, "spec.engine.store.embedded.volume.storageClassName is immutable"},
	} {
		// The operator writes the program's status meanwhile: a conflict
		// is retried on a fresh copy, only the admission error counts.
		var err error
		for range 5 {
			edited := &wellbeingv1alpha1.MeditationProgram{}
			get(t, client.ObjectKeyFromObject(p), edited)
			change.edit(edited.Spec.Engine.Store.Embedded.Volume)
			if err = k8s.Update(ctx, edited); !apierrors.IsConflict(err) {
				break
			}
		}
		if err == nil || !strings.Contains(err.Error(), change.want) {
			t.Errorf("update error = %v, want %q", err, change.want)
		}
	}

	// Ephemeral: an emptyDir and a rolling update again (the operator owns
	// rollingUpdate, so the switch back and forth applies cleanly), and
	// the claim with its data stays until the program goes.
	setVolume := func(embedded *wellbeingv1alpha1.EmbeddedStore, onClaim bool) {
		t.Helper()
		updateSpec(t, p, func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Engine.Store.Embedded = embedded })
		eventually(t, fmt.Sprintf("data volume on a claim: %t", onClaim), func() error {
			get(t, client.ObjectKeyFromObject(d), d)
			if src := dataVolume(d); (src.PersistentVolumeClaim != nil) != onClaim || (src.EmptyDir != nil) == onClaim {
				return fmt.Errorf("data volume = %+v", src)
			}
			if recreate := d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType; recreate != onClaim || (d.Spec.Strategy.RollingUpdate == nil) != onClaim {
				return fmt.Errorf("strategy = %+v", d.Spec.Strategy)
			}
			return nil
		})
	}
	setVolume(&wellbeingv1alpha1.EmbeddedStore{Ephemeral: true}, false)
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(claim), &corev1.PersistentVolumeClaim{}); err != nil {
		t.Errorf("the claim went with the volume setting: %v", err)
	}
	// And back onto the claim: rollingUpdate must go, or the API server
	// refuses the Recreate strategy, even when the operator does not own it
	// alone (here another manager co-owns it; a Deployment created before
	// the operator spelled its strategy out has one that no one owns).
	coOwned := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": d.Name, "namespace": d.Namespace},
		"spec":     map[string]any{"strategy": map[string]any{"rollingUpdate": map[string]any{"maxSurge": "25%", "maxUnavailable": "25%"}}},
	}}
	if err := k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(coOwned), client.FieldOwner("platform-team")); err != nil {
		t.Fatal(err)
	}
	setVolume(&wellbeingv1alpha1.EmbeddedStore{Volume: &wellbeingv1alpha1.StoreVolume{
		Size: resource.MustParse("2Gi"), StorageClassName: ptr.To("fast-ssd"),
	}}, true)
	get(t, client.ObjectKeyFromObject(p), p)
	if err := conditionIs(p.Status.Conditions, wellbeingv1alpha1.ConditionReconciled, metav1.ConditionTrue, wellbeingv1alpha1.ReasonReconciled); err != nil {
		t.Error(err)
	}
}
