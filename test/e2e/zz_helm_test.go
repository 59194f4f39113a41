//go:build e2e

package e2e

// This file's tests run last: they replace the in-process operator with one
// installed by the Helm chart.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
)

func helmCmd(t *testing.T, args ...string) string {
	t.Helper()
	h := os.Getenv("HELM")
	if h == "" {
		t.Fatal("HELM is not set: run `make test-e2e`")
	}
	out, err := exec.Command(h, append(args, "--kubeconfig", stack.Kubeconfig)...).CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func applyFile(t *testing.T, path string, mutate ...func(*unstructured.Unstructured)) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &obj.Object); err != nil {
		t.Fatal(err)
	}
	for _, m := range mutate {
		m(obj)
	}
	if err := stack.Client.Create(context.Background(), obj); err != nil {
		t.Fatalf("apply %s: %v", path, err)
	}
}

// TestHelmInstallRBACUpgradeUninstall installs the chart, runs the manager
// as the chart's ServiceAccount (so a missing RBAC rule fails with
// "forbidden"), reconciles the samples, upgrades with a changed CRD, and
// uninstalls keeping the CRDs and the users' objects.
func TestHelmInstallRBACUpgradeUninstall(t *testing.T) {
	ctx := context.Background()
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	chart := filepath.Join(root, "charts", "attune")

	// The chart owns the CRDs from now on: remove the stack's operator and
	// the CRDs it installed.
	stack.StopOperator()
	for _, name := range []string{"virtualworlds.wellbeing.attune.io", "meditationprograms.wellbeing.attune.io"} {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := stack.Client.Get(ctx, client.ObjectKey{Name: name}, crd); err == nil {
			_ = stack.Client.Delete(ctx, crd)
		}
		eventually(t, 60*time.Second, "CRD "+name+" removed", func() error {
			if err := stack.Client.Get(ctx, client.ObjectKey{Name: name}, &apiextensionsv1.CustomResourceDefinition{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("still present (%v)", err)
			}
			return nil
		})
	}

	helmCmd(t, "install", "attune", chart, "--namespace", "attune-system", "--create-namespace")
	eventually(t, 30*time.Second, "CRDs established", func() error {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := stack.Client.Get(ctx, client.ObjectKey{Name: "meditationprograms.wellbeing.attune.io"}, crd); err != nil {
			return err
		}
		for _, c := range crd.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("not established")
	})

	// The manager, as the chart's ServiceAccount.
	cfg := controllers.RESTConfig(stack.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:attune-system:attune"}
	logStart := fileSize(stack.OperatorLog)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: stack.Scheme, Cache: controllers.CacheOptions(), Metrics: metricsserver.Options{BindAddress: "0"},
		LeaderElection: true, LeaderElectionID: "attune-operator.wellbeing.attune.io", LeaderElectionNamespace: "attune-system",
		// The stopped in-process operator registered the same controller names.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	// As the chart's Deployment runs it: Secrets only through the
	// world-secrets ClusterRole it binds in each world namespace.
	if err := controllers.SetupWithManager(mgr, controllers.Options{OperatorNamespace: "attune-system",
		SecretAccess: &controllers.SecretAccess{ClusterRole: "attune-world-secrets", ServiceAccount: "attune", Namespace: "attune-system"}}); err != nil {
		t.Fatal(err)
	}
	mgrCtx, cancelManager := context.WithCancel(ctx)
	mgrDone := make(chan error, 1)
	go func() { mgrDone <- mgr.Start(mgrCtx) }()
	var stopOnce sync.Once
	stopManager := func() {
		stopOnce.Do(func() {
			cancelManager()
			if err := <-mgrDone; err != nil {
				t.Error(err)
			}
		})
	}
	defer stopManager()

	applyFile(t, filepath.Join(root, "config", "samples", "wellbeing_v1alpha1_virtualworld.yaml"))
	// The sample keeps its users on a claim, as a real cluster should;
	// this one has no StorageClass, so the store goes on an emptyDir.
	applyFile(t, filepath.Join(root, "config", "samples", "wellbeing_v1alpha1_meditationprogram.yaml"), func(o *unstructured.Unstructured) {
		if err := unstructured.SetNestedField(o.Object, true, "spec", "engine", "store", "embedded", "ephemeral"); err != nil {
			t.Fatal(err)
		}
	})
	eventually(t, 90*time.Second, "samples reconciled by the chart's ServiceAccount", func() error {
		w := &wellbeingv1alpha1.VirtualWorld{}
		if err := stack.Client.Get(ctx, client.ObjectKey{Name: "harbor-social"}, w); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(w.Status.Conditions, wellbeingv1alpha1.ConditionReady) {
			return fmt.Errorf("world not Ready: %+v", w.Status.Conditions)
		}
		p := &wellbeingv1alpha1.MeditationProgram{}
		if err := stack.Client.Get(ctx, client.ObjectKey{Namespace: "harbor-social", Name: "evening-calm"}, p); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(p.Status.Conditions, wellbeingv1alpha1.ConditionReady) {
			return fmt.Errorf("program not Ready: %+v", p.Status.Conditions)
		}
		return nil
	})
	if log := readFrom(stack.OperatorLog, logStart); strings.Contains(log, "forbidden") {
		t.Errorf("the chart's RBAC lacks a rule:\n%s", grep(log, "forbidden"))
	}

	// helm upgrade with a CRD that gained an optional field updates it.
	changed := filepath.Join(t.TempDir(), "attune")
	if out, err := exec.Command("cp", "-r", chart, changed).CombinedOutput(); err != nil {
		t.Fatalf("copy chart: %v %s", err, out)
	}
	crdFile := filepath.Join(changed, "files", "crds", "wellbeing.attune.io_virtualworlds.yaml")
	data, _ := os.ReadFile(crdFile)
	marker := "              displayName:\n"
	if !strings.Contains(string(data), marker) {
		t.Fatal("cannot find displayName in the VirtualWorld CRD")
	}
	data = []byte(strings.Replace(string(data), marker, "              contactEmail:\n                description: contactEmail is a new optional field.\n                type: string\n"+marker, 1))
	if err := os.WriteFile(crdFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	helmCmd(t, "upgrade", "attune", changed, "--namespace", "attune-system")
	eventually(t, 30*time.Second, "CRD upgraded", func() error {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := stack.Client.Get(ctx, client.ObjectKey{Name: "virtualworlds.wellbeing.attune.io"}, crd); err != nil {
			return err
		}
		if _, ok := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties["contactEmail"]; !ok {
			return fmt.Errorf("contactEmail not in the schema")
		}
		return nil
	})

	// helm uninstall keeps the CRDs and the users' objects.
	helmCmd(t, "uninstall", "attune", "--namespace", "attune-system")
	time.Sleep(3 * time.Second)
	for _, name := range []string{"virtualworlds.wellbeing.attune.io", "meditationprograms.wellbeing.attune.io"} {
		if err := stack.Client.Get(ctx, client.ObjectKey{Name: name}, &apiextensionsv1.CustomResourceDefinition{}); err != nil {
			t.Errorf("CRD %s gone after uninstall: %v", name, err)
		}
	}
	if err := stack.Client.Get(ctx, client.ObjectKey{Namespace: "harbor-social", Name: "evening-calm"}, &wellbeingv1alpha1.MeditationProgram{}); err != nil {
		t.Errorf("the program is gone after uninstall: %v", err)
	}
	stopManager()
	deleteWorld(t, "harbor-social")
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

func readFrom(path string, offset int64) string {
	data, err := os.ReadFile(path)
	if err != nil || int64(len(data)) < offset {
		return ""
	}
	return string(data[offset:])
}

func grep(text, needle string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, needle) {
			out = append(out, line)
		}
	}
	if len(out) > 10 {
		out = out[:10]
	}
	return strings.Join(out, "\n")
}
