package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	"github.com/attune-io/attune/engine/auth"
	"github.com/attune-io/attune/internal/pki"
)

// plantSecret creates a Secret the operator would generate, as anyone who
// may create Secrets in the world's namespace could: with a key they know
// and no owner (or the operator's labels, to be in its cache).
func plantSecret(t *testing.T, namespace, name string, labels map[string]string, data map[string][]byte) {
	t.Helper()
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels}, Data: data})
}

// A planted signing key (or engine token) is refused: the program says
// which Secret, no engine config or Deployment points at it, and the
// program's NetworkPolicy exists all the same (it comes before the steps
// that fail).
func TestPlantedProgramSecretsAreRefused(t *testing.T) {
	ctx := context.Background()
	createWorld(t, newWorld("planted", "planted", wellbeingv1alpha1.ContextSocial))
	cases := []struct {
		program, secret string
		labels          map[string]string
	}{
		// Outside the operator's label-filtered cache: AlreadyExists on create.
		{"signing", "signing-engine-user-token-key", nil},
		// In the cache (the operator's labels copied): found on the first read.
		{"tokens", "tokens-engine-token", map[string]string{controllers.LabelManagedBy: controllers.ManagedByValue, controllers.LabelProgram: "tokens", controllers.LabelWorld: "planted"}},
	}
	for _, c := range cases {
		plantSecret(t, "planted", c.secret, c.labels, map[string][]byte{"key": []byte(strings.Repeat("k", 32)), "read-write": []byte("known"), "read-only": []byte("known")})
		p := newProgram("planted", c.program, "planted")
		create(t, p)
		eventually(t, c.program+": refused", func() error {
			get(t, client.ObjectKeyFromObject(p), p)
			if err := conditionIs(p.Status.Conditions, wellbeingv1alpha1.ConditionReconciled, metav1.ConditionFalse, wellbeingv1alpha1.ReasonApplyFailed); err != nil {
				return err
			}
			if msg := conditionMessage(p.Status.Conditions, wellbeingv1alpha1.ConditionReconciled); !strings.Contains(msg, c.secret) || !strings.Contains(msg, "not controlled") {
				return fmt.Errorf("message %q does not name Secret %s", msg, c.secret)
			}
			return nil
		})
		for _, obj := range []client.Object{&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: c.program + "-engine-config"}}, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: c.program + "-engine"}}} {
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: "planted", Name: obj.GetName()}, obj); !apierrors.IsNotFound(err) {
				t.Errorf("%s: %T %s exists (err=%v): nothing may point at a planted Secret", c.program, obj, obj.GetName(), err)
			}
		}
		get(t, client.ObjectKey{Namespace: "planted", Name: c.program + "-engine"}, &networkingv1.NetworkPolicy{})
		s := &corev1.Secret{}
		get(t, client.ObjectKey{Namespace: "planted", Name: c.secret}, s)
		if len(s.OwnerReferences) != 0 {
			t.Errorf("%s: the planted Secret was adopted: %v", c.program, s.OwnerReferences)
		}
	}
}

// A planted pseudonymization key or keyring is refused by the world. The
// world generates both in the reconcile that creates its namespace, so it
// starts with its own keys referenced, the keys are planted under the
// generated names, and then the references are removed.
func TestPlantedWorldKeySecretsAreRefused(t *testing.T) {
	ctx := context.Background()
	w := newWorld("planted-keys", "planted-keys", wellbeingv1alpha1.ContextSocial)
	w.Spec.Privacy.PseudonymizationKeyRef = &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "mine"}, Key: "key"}
	w.Spec.Privacy.KeyEncryptionKeySecretRef = &corev1.LocalObjectReference{Name: "my-keyring"}
	createWorld(t, w)
	for i, name := range []string{controllers.PseudonymizationKeySecretName, controllers.KeyEncryptionKeySecretName} {
		plantSecret(t, "planted-keys", name, nil, map[string][]byte{"key": []byte(strings.Repeat("k", 32))})
		if i == 1 {
			if err := k8s.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "planted-keys", Name: controllers.PseudonymizationKeySecretName}}); err != nil {
				t.Fatal(err)
			}
		}
		updateSpec(t, w, func(w *wellbeingv1alpha1.VirtualWorld) {
			if i == 0 {
				w.Spec.Privacy.PseudonymizationKeyRef = nil
			} else {
				w.Spec.Privacy.KeyEncryptionKeySecretRef = nil
			}
		})
		eventually(t, name+": refused", func() error {
			get(t, client.ObjectKey{Name: w.Name}, w)
			if w.Status.ObservedGeneration != w.Generation {
				return fmt.Errorf("generation %d not observed", w.Generation)
			}
			if err := conditionIs(w.Status.Conditions, wellbeingv1alpha1.ConditionReady, metav1.ConditionFalse, wellbeingv1alpha1.ReasonApplyFailed); err != nil {
				return err
			}
			if msg := conditionMessage(w.Status.Conditions, wellbeingv1alpha1.ConditionReady); !strings.Contains(msg, name) || !strings.Contains(msg, "not controlled") {
				return fmt.Errorf("message %q does not name Secret %s", msg, name)
			}
			return nil
		})
	}
	// The operator generated its own pseudonymization key in place of
	// the removed planted one, under the world's control.
	eventually(t, "generated key", func() error {
		s := &corev1.Secret{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: "planted-keys", Name: controllers.PseudonymizationKeySecretName}, s); err != nil {
			return err
		}
		if ref := metav1.GetControllerOf(s); ref == nil || ref.UID != w.UID {
			return fmt.Errorf("controller %v, want the world", ref)
		}
		return nil
	})
}

// When the API read says NotFound but the client's Secret is there by the
// time of the create (another writer won), the clients file gets the
// stored token's hash, never that of a token nobody stored; and a Secret
// found that way that the program does not control is refused.
func TestClientTokenCreatedConcurrentlyIsReadBack(t *testing.T) {
	ctx := context.Background()
	// No such world: the running operator stops at the world step and
	// leaves the client's Secret to this test.
	p := newProgram("default", "token-race", "nowhere-race")
	p.Spec.Access.Clients = []wellbeingv1alpha1.AccessClient{accessClient("game-server", 1, wellbeingv1alpha1.ScopeIngest)}
	create(t, p)
	get(t, client.ObjectKeyFromObject(p), p)
	name := controllers.ClientSecretName(p, "game-server")
	stored := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: p.Namespace, Annotations: map[string]string{controllers.TokenGenerationKey: "1"}},
		Data:       map[string][]byte{controllers.ClientTokenKey: []byte("the-token-the-other-writer-stored")},
	}
	create(t, stored)
	_, err := controllers.ReconcileClientTokenAfterStaleRead(ctx, k8s, scheme, p, "game-server")
	if err == nil || !strings.Contains(err.Error(), "is not this program's") {
		t.Fatalf("a Secret the program does not control: err = %v, want a refusal", err)
	}
	get(t, client.ObjectKeyFromObject(stored), stored)
	stored.OwnerReferences = []metav1.OwnerReference{{APIVersion: wellbeingv1alpha1.GroupVersion.String(), Kind: "MeditationProgram",
		Name: p.Name, UID: p.UID, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}
	if err := k8s.Update(ctx, stored); err != nil {
		t.Fatal(err)
	}
	hash, err := controllers.ReconcileClientTokenAfterStaleRead(ctx, k8s, scheme, p, "game-server")
	if err != nil {
		t.Fatal(err)
	}
	if want := auth.HashToken("the-token-the-other-writer-stored"); hash != want {
		t.Fatalf("clients-file hash %s, want the stored token's %s", hash, want)
	}
}

// conditionMessage is a condition's message.
func conditionMessage(conds []metav1.Condition, condType string) string {
	for _, c := range conds {
		if c.Type == condType {
			return c.Message
		}
	}
	return ""
}

// A planted serving certificate (a key pair the planter knows, without
// the operator's labels, so outside its watch) is replaced by one the
// world's CA issues, under the program's control: the operator creates
// the Secret, finds it there, and writes over it.
func TestPlantedServingCertificateIsReplaced(t *testing.T) {
	ctx := context.Background()
	createWorld(t, newWorld("planted-tls", "planted-tls", wellbeingv1alpha1.ContextSocial))
	planterCA, err := pki.NewCA("planter", time.Now(), pki.CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	p := newProgram("planted-tls", "serving", "planted-tls")
	planted, err := pki.IssueServing(planterCA, controllers.EngineDNSNames(p), time.Now(), pki.ServingValidity)
	if err != nil {
		t.Fatal(err)
	}
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "planted-tls", Name: "serving-engine-tls"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: planted.CertPEM, corev1.TLSPrivateKeyKey: planted.KeyPEM, "ca.crt": planterCA.CertPEM}})
	create(t, p)
	eventually(t, "the serving certificate replaced", func() error {
		s, ca := &corev1.Secret{}, &corev1.Secret{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: "planted-tls", Name: "serving-engine-tls"}, s); err != nil {
			return err
		}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: "planted-tls", Name: controllers.CASecretName}, ca); err != nil {
			return err
		}
		if ref := metav1.GetControllerOf(s); ref == nil || ref.UID != p.UID {
			return fmt.Errorf("controller %v, want the program", ref)
		}
		if string(s.Data[corev1.TLSPrivateKeyKey]) == string(planted.KeyPEM) {
			return fmt.Errorf("the planted key is still served")
		}
		leaf, err := pki.KeyPair{CertPEM: s.Data[corev1.TLSCertKey]}.Certificate()
		if err != nil {
			return err
		}
		return pki.Verify(leaf, ca.Data[corev1.TLSCertKey], controllers.EngineDNSNames(p)[0], time.Now())
	})
}
