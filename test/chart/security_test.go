package chart

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	"github.com/attune-io/attune/internal/testutil"
)

// The chart's default install, as helm template renders it in render().
const (
	releaseNamespace = "attune-system"
	operatorUser     = "system:serviceaccount:attune-system:attune"
)

// TestOperatorHoldsOnlyWhatItNeeds installs the chart's RBAC and admission
// policies on a real API server, runs the operator as the chart's
// ServiceAccount (impersonated, so every request is authorized as that
// account's), and checks both sides: a world and a program reconcile in
// full (namespace, the RoleBinding that grants Secrets there, key and
// token Secrets, a deleted token issued again, the user's PostgreSQL
// Secret read), while Secrets anywhere else, cluster-wide Secret lists,
// binding other roles or binding outside world namespaces, and changing
// namespaces the operator does not own are all refused.
func TestOperatorHoldsOnlyWhatItNeeds(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS not set: run `make test`")
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd", "bases")}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = wellbeingv1alpha1.AddToScheme(scheme)
	admin, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, ns := range []string{releaseNamespace, "unrelated"} {
		if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := admin.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "unrelated", Name: "db-password"},
		StringData: map[string]string{"password": "s3cret"}}); err != nil {
		t.Fatal(err)
	}

	// config/ (kubectl apply -k config/default) ships the same policies and
	// Secret role for attune-system/attune-manager: valid against the same
	// server (a policy's CEL compiles when it is created).
	for _, path := range []string{filepath.Join("..", "..", "config", "admission", "policies.yaml"), filepath.Join("..", "..", "config", "rbac", "world_secrets_role.yaml")} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(string(data)), 4096)
		for {
			u := &unstructured.Unstructured{}
			if err := dec.Decode(&u.Object); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				t.Fatalf("%s: %v", path, err)
			}
			if len(u.Object) == 0 {
				continue
			}
			if err := admin.Create(ctx, u, client.DryRunAll); err != nil {
				t.Errorf("%s: %s %s rejected: %v", path, u.GetKind(), u.GetName(), err)
			}
		}
	}
	// The chart's objects, as installed; the CRDs came with envtest. The
	// world-secrets ClusterRole is held back until the first world has
	// bound it, so that the operator meets a binding not yet in force, as
	// it does for a moment after every binding it creates.
	var deployment *appsv1.Deployment
	objects := render(t)
	for _, obj := range objects {
		if obj.GetKind() == "Deployment" {
			deployment = &appsv1.Deployment{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, deployment); err != nil {
				t.Fatal(err)
			}
		}
	}
	if deployment == nil {
		t.Fatal("the chart renders no Deployment")
	}
	roleFlag := flagValue(deployment, "--world-secrets-cluster-role")
	sa := deployment.Spec.Template.Spec.ServiceAccountName
	if roleFlag == "" || "system:serviceaccount:"+releaseNamespace+":"+sa != operatorUser {
		t.Fatalf("the Deployment runs as %q with --world-secrets-cluster-role=%q", sa, roleFlag)
	}
	var secretsRole *unstructured.Unstructured
	for _, obj := range objects {
		switch {
		case obj.GetKind() == "CustomResourceDefinition", obj.GetKind() == "Service", obj.GetKind() == "Deployment":
			continue
		case obj.GetKind() == "ClusterRole" && obj.GetName() == roleFlag:
			secretsRole = obj
			continue
		}
		if err := admin.Create(ctx, obj); err != nil {
			t.Fatalf("install %s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
	if secretsRole == nil {
		t.Fatalf("the chart renders no ClusterRole %s", roleFlag)
	}

	// Admission: a world may not claim the operator's namespace (the
	// chart's policy; it takes effect a moment after it is created), nor
	// Kubernetes' own (the schema).
	eventually(t, "the world-namespace policy in force", func() error {
		err := admin.Create(ctx, world("claims-operator", releaseNamespace), client.DryRunAll)
		if err == nil || !strings.Contains(err.Error(), "spec.namespace must not be attune-system, the Attune operator's own namespace") {
			return fmt.Errorf("err = %v", err)
		}
		return nil
	})
	for _, ns := range []string{"kube-system", "default"} {
		if err := admin.Create(ctx, world("claims-"+ns, ns), client.DryRunAll); err == nil || !strings.Contains(err.Error(), "spec.namespace must not be") {
			t.Errorf("world in %s: err = %v", ns, err)
		}
	}

	// The operator, as the chart's ServiceAccount, with the chart's flags.
	operatorCfg := controllers.RESTConfig(cfg)
	operatorCfg.Impersonate = rest.ImpersonationConfig{UserName: operatorUser,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + releaseNamespace, "system:authenticated"}}
	operatorLog := &testutil.LockedBuffer{}
	mgr, err := ctrl.NewManager(operatorCfg, ctrl.Options{
		Logger: zap.New(zap.WriteTo(operatorLog)), Scheme: scheme, Cache: controllers.CacheOptions(),
		Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := controllers.SetupWithManager(mgr, controllers.Options{
		OperatorNamespace: releaseNamespace, EngineImage: "example.test/engine:v1",
		SecretAccess: &controllers.SecretAccess{ClusterRole: roleFlag, ServiceAccount: sa, Namespace: releaseNamespace},
	}); err != nil {
		t.Fatal(err)
	}
	mgrCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mgrCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})

	// The positive set. Until the Secret role exists the world waits,
	// saying why, without an error or a refused Secret read.
	if err := admin.Create(ctx, world("harbor", "harbor-social")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "world waiting for its Secret access", func() error {
		w := &wellbeingv1alpha1.VirtualWorld{}
		if err := admin.Get(ctx, client.ObjectKey{Name: "harbor"}, w); err != nil {
			return err
		}
		c := meta.FindStatusCondition(w.Status.Conditions, wellbeingv1alpha1.ConditionReady)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != wellbeingv1alpha1.ReasonSecretAccessPending {
			return fmt.Errorf("Ready: %+v", c)
		}
		if want := "RoleBinding " + controllers.SecretAccessBindingName + " in namespace harbor-social"; !strings.Contains(c.Message, want) {
			return fmt.Errorf("message %q does not name %s", c.Message, want)
		}
		return nil
	})
	// A program created meanwhile waits too, and says so once the wait
	// has lasted a few seconds (none is written for a moment's wait).
	early := harborProgram("early")
	if err := admin.Create(ctx, early); err != nil {
		t.Fatal(err)
	}
	eventually(t, "program waiting for its world", func() error {
		if err := admin.Get(ctx, client.ObjectKeyFromObject(early), early); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(early.Status.Conditions, wellbeingv1alpha1.ConditionReady); c == nil || c.Reason != wellbeingv1alpha1.ReasonWorldNotReady {
			return fmt.Errorf("Ready: %+v", c)
		}
		return nil
	})
	time.Sleep(time.Second) // a few more checks while it waits
	if err := admin.Get(ctx, client.ObjectKey{Namespace: "harbor-social", Name: controllers.PseudonymizationKeySecretName}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("key Secret before the operator may create it: err = %v", err)
	}
	if log := operatorLog.String(); strings.Contains(log, "Reconciler error") || strings.Contains(log, "forbidden") {
		t.Errorf("the wait for Secret access logged an error:\n%s", log)
	}
	if err := admin.Create(ctx, secretsRole); err != nil {
		t.Fatal(err)
	}
	eventually(t, "world Ready", func() error {
		w := &wellbeingv1alpha1.VirtualWorld{}
		if err := admin.Get(ctx, client.ObjectKey{Name: "harbor"}, w); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(w.Status.Conditions, wellbeingv1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("Ready: %+v", c)
		}
		return nil
	})
	// The waiting program is reconciled when its world's set-up ends: it
	// has no recheck pending by then (the world's CA bundle appearing may
	// also enqueue it; TestWorldSetUpChangedPassesOnlyTheEndsOfSetUp
	// holds the world's event itself).
	eventually(t, "the waiting program Reconciled once its world is set up", func() error {
		if err := admin.Get(ctx, client.ObjectKeyFromObject(early), early); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(early.Status.Conditions, wellbeingv1alpha1.ConditionReconciled); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("Reconciled: %+v", c)
		}
		return nil
	})
	if err := admin.Delete(ctx, early); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{}
	if err := admin.Get(ctx, client.ObjectKey{Namespace: "harbor-social", Name: controllers.SecretAccessBindingName}, binding); err != nil {
		t.Fatal(err)
	}
	if binding.RoleRef.Name != roleFlag || len(binding.Subjects) != 1 || binding.Subjects[0].Name != sa {
		t.Errorf("binding %+v", binding)
	}
	if err := admin.Get(ctx, client.ObjectKey{Namespace: "harbor-social", Name: controllers.PseudonymizationKeySecretName}, &corev1.Secret{}); err != nil {
		t.Errorf("key Secret: %v", err)
	}
	if err := admin.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "harbor-social", Name: "calm-postgres"},
		StringData: map[string]string{"host": "db.example.test"}}); err != nil {
		t.Fatal(err)
	}
	program := harborProgram("calm")
	program.Spec.Engine = wellbeingv1alpha1.EngineSpec{Replicas: ptr.To[int32](2), Store: wellbeingv1alpha1.EngineStore{Type: wellbeingv1alpha1.StorePostgreSQL,
		Postgres: &wellbeingv1alpha1.PostgresStore{SecretRef: wellbeingv1alpha1.SecretReference{Name: "calm-postgres"}}}}
	if err := admin.Create(ctx, program); err != nil {
		t.Fatal(err)
	}
	token := client.ObjectKey{Namespace: "harbor-social", Name: "calm-engine-token"}
	eventually(t, "engine Deployment with the store Secret read", func() error {
		d := &appsv1.Deployment{}
		if err := admin.Get(ctx, client.ObjectKey{Namespace: "harbor-social", Name: "calm-engine"}, d); err != nil {
			return err
		}
		if d.Spec.Template.Annotations[controllers.StoreSecretHashKey] == "" {
			return errors.New("no store-secret hash: the operator did not read the PostgreSQL Secret")
		}
		return admin.Get(ctx, token, &corev1.Secret{})
	})
	issued := &corev1.Secret{}
	if err := admin.Get(ctx, token, issued); err != nil {
		t.Fatal(err)
	}
	if err := admin.Delete(ctx, issued); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted token Secret issued again (the per-namespace watch)", func() error {
		again := &corev1.Secret{}
		if err := admin.Get(ctx, token, again); err != nil {
			return err
		}
		if again.UID == issued.UID {
			return errors.New("still the old Secret")
		}
		return nil
	})
	// An existing namespace is not adopted.
	if err := admin.Create(ctx, world("squatter", "unrelated")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "NamespaceConflict", func() error {
		w := &wellbeingv1alpha1.VirtualWorld{}
		if err := admin.Get(ctx, client.ObjectKey{Name: "squatter"}, w); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(w.Status.Conditions, wellbeingv1alpha1.ConditionReady); c == nil || c.Reason != wellbeingv1alpha1.ReasonNamespaceConflict {
			return fmt.Errorf("Ready: %+v", c)
		}
		return nil
	})

	// The negative set, as the operator's ServiceAccount.
	operator, err := client.New(operatorCfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	forbidden := func(what string, err error) {
		t.Helper()
		if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			t.Errorf("%s: err = %v, want it refused", what, err)
		}
	}
	forbidden("read a Secret in an unrelated namespace", operator.Get(ctx, client.ObjectKey{Namespace: "unrelated", Name: "db-password"}, &corev1.Secret{}))
	forbidden("read a Secret in kube-system", operator.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "anything"}, &corev1.Secret{}))
	forbidden("list Secrets cluster-wide", operator.List(ctx, &corev1.SecretList{}))
	forbidden("list Secrets in an unrelated namespace", operator.List(ctx, &corev1.SecretList{}, client.InNamespace("unrelated")))
	forbidden("create a Secret in an unrelated namespace", operator.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "unrelated", Name: "planted"}}))
	forbidden("bind the Secret role in an unrelated namespace", operator.Create(ctx, secretsBinding("unrelated", roleFlag, sa, releaseNamespace)))
	forbidden("bind the Secret role to another account", operator.Create(ctx, secretsBinding("harbor-social", roleFlag, "default", "harbor-social")))
	forbidden("bind cluster-admin in a world namespace", operator.Create(ctx, secretsBinding("harbor-social", "cluster-admin", sa, releaseNamespace)))
	for _, ns := range []string{"unrelated", "kube-system"} {
		patch := fmt.Appendf(nil, `{"metadata":{"labels":{"app.kubernetes.io/managed-by":"attune-operator"},"ownerReferences":[{"apiVersion":"wellbeing.attune.io/v1alpha1","kind":"VirtualWorld","name":"squatter","uid":"%s","controller":true}]}}`, worldUID(t, admin, "squatter"))
		forbidden("take over namespace "+ns, operator.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, client.RawPatch(types.MergePatchType, patch)))
	}
	// The API server's own answer to "may it?", for the record.
	for _, tc := range []struct {
		verb, namespace string
		allowed         bool
	}{
		{"get", "harbor-social", true},
		{"create", "harbor-social", true},
		{"get", "unrelated", false},
		{"list", "", false},
		{"watch", "", false},
		{"get", releaseNamespace, false},
	} {
		review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: operatorUser,
			Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + releaseNamespace},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: tc.verb, Resource: "secrets", Namespace: tc.namespace}}}
		if err := admin.Create(ctx, review); err != nil {
			t.Fatal(err)
		}
		if review.Status.Allowed != tc.allowed {
			t.Errorf("may the operator %s Secrets in %q? %v, want %v", tc.verb, tc.namespace, review.Status.Allowed, tc.allowed)
		}
	}
}

func world(name, namespace string) *wellbeingv1alpha1.VirtualWorld {
	return &wellbeingv1alpha1.VirtualWorld{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: wellbeingv1alpha1.VirtualWorldSpec{Namespace: namespace, Context: wellbeingv1alpha1.ContextSocial}}
}

func secretsBinding(namespace, role, account, accountNamespace string) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "escalate"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: account, Namespace: accountNamespace}},
	}
}

func worldUID(t *testing.T, c client.Client, name string) types.UID {
	t.Helper()
	w := &wellbeingv1alpha1.VirtualWorld{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: name}, w); err != nil {
		t.Fatal(err)
	}
	return w.UID
}

// flagValue is the value of --name=value in the manager container's args.
func flagValue(d *appsv1.Deployment, name string) string {
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, a := range c.Args {
			if v, ok := strings.CutPrefix(a, name+"="); ok {
				return v
			}
		}
	}
	return ""
}

func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestManagerFlagsFollowValues: cluster mode binds the Secret role per
// world namespace, namespaced mode does not (its Roles hold the verbs);
// the Prometheus allowlist and cluster domain reach the manager.
func TestManagerFlagsFollowValues(t *testing.T) {
	deploymentOf := func(objs []*unstructured.Unstructured) *appsv1.Deployment {
		for _, o := range objs {
			if o.GetKind() == "Deployment" {
				d := &appsv1.Deployment{}
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, d); err != nil {
					t.Fatal(err)
				}
				return d
			}
		}
		t.Fatal("no Deployment rendered")
		return nil
	}
	cluster := deploymentOf(render(t))
	if got := flagValue(cluster, "--world-secrets-cluster-role"); got != "attune-world-secrets" {
		t.Errorf("cluster mode: --world-secrets-cluster-role=%q", got)
	}
	if got := flagValue(cluster, "--allowed-prometheus-urls"); got != "" {
		t.Errorf("default: --allowed-prometheus-urls=%q, want none", got)
	}
	namespaced := deploymentOf(render(t, "-f", "values-nondefault.yaml"))
	if got := flagValue(namespaced, "--world-secrets-cluster-role"); got != "" {
		t.Errorf("namespaced mode: --world-secrets-cluster-role=%q, want none", got)
	}
	if got := flagValue(namespaced, "--allowed-prometheus-urls"); got != "https://prometheus.example.com/tenant-a" {
		t.Errorf("--allowed-prometheus-urls=%q", got)
	}
	if got := flagValue(namespaced, "--cluster-domain"); got != "corp.internal" {
		t.Errorf("--cluster-domain=%q", got)
	}
	env := map[string]bool{}
	for _, e := range cluster.Spec.Template.Spec.Containers[0].Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name+"="+e.ValueFrom.FieldRef.FieldPath] = true
		}
	}
	if !env["POD_SERVICE_ACCOUNT=spec.serviceAccountName"] || !env["POD_NAMESPACE=metadata.namespace"] {
		t.Errorf("the manager does not learn its ServiceAccount and namespace: %v", env)
	}
}

// harborProgram is a program of the world harbor (namespace harbor-social).
func harborProgram(name string) *wellbeingv1alpha1.MeditationProgram {
	return &wellbeingv1alpha1.MeditationProgram{
		ObjectMeta: metav1.ObjectMeta{Namespace: "harbor-social", Name: name},
		Spec: wellbeingv1alpha1.MeditationProgramSpec{
			WorldRef:      wellbeingv1alpha1.WorldReference{Name: "harbor"},
			Target:        wellbeingv1alpha1.StateVector{Attention: 0.8, Emotion: 0.7, Resilience: 0.75},
			Weights:       wellbeingv1alpha1.Weights{Attention: 1, Emotion: 1, Resilience: 1},
			Interventions: []wellbeingv1alpha1.Intervention{wellbeingv1alpha1.FocusedAttention},
			Strength:      wellbeingv1alpha1.StrengthBounds{Initial: 0.5, Min: 0.1, Max: 0.9},
		},
	}
}
