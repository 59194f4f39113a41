package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
)

// The world's wait for its Secret access, asked of the real API server's
// RBAC authorizer as an operator account that holds nothing else: pending
// (re-checked every 250 ms) within the grace, then a failure that names
// the ClusterRole and exactly the verbs it lacks, re-checked on a
// schedule of its own; in force once the role grants every verb, and not
// asked again until the binding is written again.
func TestSecretAccessWaitNamesTheMissingVerbs(t *testing.T) {
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "access-"}}
	create(t, ns)
	account := "attune-access-test"
	cfg := rest.CopyConfig(restConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns.Name + ":" + account,
		Groups: []string{"system:serviceaccounts", "system:authenticated"}}
	operator, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	role := ns.Name + "-secrets"
	clk := clocktesting.NewFakePassiveClock(time.Now())
	check := controllers.NewSecretAccessCheck(operator, clk, role)
	world := &wellbeingv1alpha1.VirtualWorld{ObjectMeta: metav1.ObjectMeta{Name: ns.Name}, Spec: wellbeingv1alpha1.VirtualWorldSpec{Namespace: ns.Name}}
	start := clk.Now()

	recheck, err := check.Await(ctx, world)
	if !errors.Is(err, controllers.ErrSecretAccessPending) || recheck != 250*time.Millisecond {
		t.Fatalf("no binding, at once: recheck %s, err %v; want pending, 250ms", recheck, err)
	}
	clk.SetTime(start.Add(31 * time.Second))
	recheck, err = check.Await(ctx, world)
	if !errors.Is(err, controllers.ErrSecretAccessMissing) || recheck != 3100*time.Millisecond ||
		!strings.Contains(err.Error(), "ClusterRole "+role) || !strings.Contains(err.Error(), "operator get, list, watch, create, update, patch, delete Secrets") {
		t.Fatalf("no binding, past the grace: recheck %s, err %v", recheck, err)
	}

	// A role short of verbs, bound: the failure names what it lacks.
	clusterRole := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: role},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "watch"}}}}
	create(t, clusterRole)
	t.Cleanup(func() { _ = k8s.Delete(ctx, clusterRole) })
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: controllers.SecretAccessBindingName},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: account, Namespace: ns.Name}}}
	create(t, binding)
	check.BindingChanged(world)
	clk.SetTime(start.Add(300 * time.Second))
	eventually(t, "the missing verbs named", func() error {
		recheck, err := check.Await(ctx, world)
		if !errors.Is(err, controllers.ErrSecretAccessMissing) || recheck != 30*time.Second ||
			!strings.Contains(err.Error(), "operator create, update, patch, delete Secrets") {
			return fmt.Errorf("recheck %s, err %v", recheck, err)
		}
		return nil
	})

	// Every verb granted: in force.
	clusterRole.Rules[0].Verbs = []string{"get", "list", "watch", "create", "update", "patch", "delete"}
	if err := k8s.Update(ctx, clusterRole); err != nil {
		t.Fatal(err)
	}
	eventually(t, "access in force", func() error {
		_, err := check.Await(ctx, world)
		return err
	})
	// Known in force, it is not asked again, even with the binding gone...
	if err := k8s.Delete(ctx, binding); err != nil {
		t.Fatal(err)
	}
	if _, err := check.Await(ctx, world); err != nil {
		t.Fatalf("in force, asked again: %v", err)
	}
	// ...until the binding is written again: a new wait, from now.
	check.BindingChanged(world)
	eventually(t, "a new wait after the binding is written", func() error {
		recheck, err := check.Await(ctx, world)
		if !errors.Is(err, controllers.ErrSecretAccessPending) || recheck != 250*time.Millisecond {
			return fmt.Errorf("recheck %s, err %v", recheck, err)
		}
		return nil
	})
}
