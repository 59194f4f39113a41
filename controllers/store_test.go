package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
		get(t, client.ObjectKeyFromObject(p), p)
		p.Spec.Strength.Initial += 0.01
		if err := k8s.Update(ctx, p); err != nil {
			t.Fatal(err)
		}
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
