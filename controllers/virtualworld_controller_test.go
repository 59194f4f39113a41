package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
)

func TestWorldCreatesNamespaceQuotaKeyAndPolicy(t *testing.T) {
	ctx := context.Background()
	w := newWorld("plaza", "plaza", wellbeingv1alpha1.ContextSocial)
	w.Spec.GPUQuota.Limit = ptr.To[int32](4)
	createWorld(t, w)

	ns := &corev1.Namespace{}
	get(t, client.ObjectKey{Name: "plaza"}, ns)
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" || ns.Labels[controllers.LabelWorld] != "plaza" {
		t.Errorf("namespace labels = %v, want restricted pod security and the world label", ns.Labels)
	}
	if ref := metav1.GetControllerOf(ns); ref == nil || ref.Kind != "VirtualWorld" || ref.Name != "plaza" {
		t.Errorf("namespace controller = %v, want VirtualWorld plaza", ref)
	}

	quota := &corev1.ResourceQuota{}
	eventually(t, "gpu quota", func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: "plaza", Name: controllers.GPUQuotaName}, quota)
	})
	if got := quota.Spec.Hard["requests.nvidia.com/gpu"]; got.Cmp(resource.MustParse("4")) != 0 {
		t.Errorf("quota requests.nvidia.com/gpu = %s, want 4", got.String())
	}

	key := &corev1.Secret{}
	eventually(t, "pseudonymization key", func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: "plaza", Name: controllers.PseudonymizationKeySecretName}, key)
	})
	if n := len(key.Data[controllers.PseudonymizationKeySecretKey]); n != 32 {
		t.Errorf("key length = %d bytes, want 32", n)
	}

	policy := &networkingv1.NetworkPolicy{}
	eventually(t, "network policy", func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: "plaza", Name: controllers.NetworkPolicyName}, policy)
	})
	admitted := policy.Spec.Ingress[0].From[0].NamespaceSelector.MatchExpressions[0].Values
	if !slices.Equal(admitted, []string{"plaza", operatorNamespace}) {
		t.Errorf("admitted namespaces = %v, want [plaza %s]", admitted, operatorNamespace)
	}
	if !slices.Equal(policy.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
		t.Errorf("policy types = %v, want [Ingress]", policy.Spec.PolicyTypes)
	}
	denyAll := &networkingv1.NetworkPolicy{}
	eventually(t, "engines' deny-all policy", func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: "plaza", Name: controllers.EngineDenyAllPolicyName}, denyAll)
	})
	if len(denyAll.Spec.Ingress)+len(denyAll.Spec.Egress) != 0 || len(denyAll.Spec.PolicyTypes) != 2 {
		t.Errorf("deny-all spec = %+v, want no rules for Ingress and Egress", denyAll.Spec)
	}

	// Two programs with one GPU each (on their model sidecars), then the
	// world's totals.
	for _, name := range []string{"calm", "focus"} {
		p := newProgram("plaza", name, "plaza")
		p.Spec.Engine.Model = &wellbeingv1alpha1.ModelSidecar{Image: "example.test/emotion:v1", ModelName: "emotion"}
		create(t, p)
	}
	eventually(t, "world totals", func() error {
		get(t, client.ObjectKey{Name: "plaza"}, w)
		if w.Status.Programs != 2 || w.Status.GPUsRequested != 2 {
			return fmt.Errorf("programs=%d gpus=%d, want 2 and 2", w.Status.Programs, w.Status.GPUsRequested)
		}
		return conditionIs(w.Status.Conditions, wellbeingv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	})
	if w.Status.ObservedGeneration != w.Generation {
		t.Errorf("observedGeneration = %d, want %d", w.Status.ObservedGeneration, w.Generation)
	}
	if got := statusWriters(w); !slices.Equal(got, []string{controllers.FieldOwner}) {
		t.Errorf("world status written by %v, want only %s", got, controllers.FieldOwner)
	}

	// Removing the limit removes the quota.
	updateSpec(t, w, func(w *wellbeingv1alpha1.VirtualWorld) { w.Spec.GPUQuota.Limit = nil })
	eventually(t, "quota removed", func() error {
		err := k8s.Get(ctx, client.ObjectKey{Namespace: "plaza", Name: controllers.GPUQuotaName}, &corev1.ResourceQuota{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("quota still there (err=%v)", err)
	})
}

func TestWorldIsolationCanBeTurnedOff(t *testing.T) {
	ctx := context.Background()
	w := newWorld("arcade", "arcade", wellbeingv1alpha1.ContextEntertainment)
	createWorld(t, w)
	key := client.ObjectKey{Namespace: "arcade", Name: controllers.NetworkPolicyName}
	eventually(t, "network policy", func() error { return k8s.Get(ctx, key, &networkingv1.NetworkPolicy{}) })
	eventually(t, "engines' deny-all policy", func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: "arcade", Name: controllers.EngineDenyAllPolicyName}, &networkingv1.NetworkPolicy{})
	})

	updateSpec(t, w, func(w *wellbeingv1alpha1.VirtualWorld) { w.Spec.Isolation.NetworkPolicy = ptr.To(false) })
	eventually(t, "network policies removed", func() error {
		for _, k := range []client.ObjectKey{key, {Namespace: "arcade", Name: controllers.EngineDenyAllPolicyName}} {
			if err := k8s.Get(ctx, k, &networkingv1.NetworkPolicy{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("%s still present (err=%v)", k.Name, err)
			}
		}
		return nil
	})
}

func TestWorldDoesNotAdoptForeignNamespace(t *testing.T) {
	ctx := context.Background()
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "someone-else"}})
	w := newWorld("squatter", "someone-else", wellbeingv1alpha1.ContextSocial)
	create(t, w)
	eventually(t, "conflict condition", func() error {
		get(t, client.ObjectKey{Name: "squatter"}, w)
		return conditionIs(w.Status.Conditions, wellbeingv1alpha1.ConditionReady, metav1.ConditionFalse, wellbeingv1alpha1.ReasonNamespaceConflict)
	})
	ns := &corev1.Namespace{}
	get(t, client.ObjectKey{Name: "someone-else"}, ns)
	if len(ns.OwnerReferences) != 0 || ns.Labels[controllers.LabelWorld] != "" {
		t.Errorf("foreign namespace was modified: owners=%v labels=%v", ns.OwnerReferences, ns.Labels)
	}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "someone-else", Name: controllers.PseudonymizationKeySecretName}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("key secret created in a foreign namespace (err=%v)", err)
	}
}

func TestWorldWithOwnKeyGetsNoGeneratedKey(t *testing.T) {
	ctx := context.Background()
	w := newWorld("clinic", "clinic", wellbeingv1alpha1.ContextHealth)
	w.Spec.Privacy.PseudonymizationKeyRef = &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "hsm-key"}, Key: "hmac"}
	createWorld(t, w)
	eventually(t, "world ready", func() error {
		get(t, client.ObjectKey{Name: "clinic"}, w)
		return conditionIs(w.Status.Conditions, wellbeingv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	})
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "clinic", Name: controllers.PseudonymizationKeySecretName}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("generated a key although the world references its own (err=%v)", err)
	}
}

func TestWorldNamespaceIsImmutable(t *testing.T) {
	w := newWorld("fixed", "fixed", wellbeingv1alpha1.ContextSocial)
	createWorld(t, w)
	// Retried on a conflict with the operator's status write: only the
	// API server's validation answer counts.
	err := tryUpdateSpec(w, func(w *wellbeingv1alpha1.VirtualWorld) { w.Spec.Namespace = "moved" })
	if err == nil || !apierrors.IsInvalid(err) || !contains(err.Error(), "spec.namespace is immutable") {
		t.Fatalf("update of spec.namespace: err = %v, want Invalid naming spec.namespace", err)
	}
}
