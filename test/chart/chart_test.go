// Package chart tests charts/attune with the real helm binary and a real
// API server (envtest): lint, render, and a server-side dry run of every
// rendered object, so the manifests are valid against real schemas.
package chart

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"
)

var chartDir = filepath.Join("..", "..", "charts", "attune")

func helmBinary(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	if h, err := filepath.Abs(filepath.Join("..", "..", "bin", "helm")); err == nil {
		if _, err := os.Stat(h); err == nil {
			return h
		}
	}
	t.Fatal("helm not found: run `make test` (it builds the pinned helm into bin/)")
	return ""
}

func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmBinary(t), args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), nil
}

func render(t *testing.T, args ...string) []*unstructured.Unstructured {
	t.Helper()
	out, err := helm(t, append([]string{"template", "attune", chartDir, "--namespace", "attune-system", "--kube-version", "1.37.2"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("decode rendered manifest: %v", err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
	return objs
}

func kinds(objs []*unstructured.Unstructured) map[string]int {
	out := map[string]int{}
	for _, o := range objs {
		out[o.GetKind()]++
	}
	return out
}

func TestLint(t *testing.T) {
	if _, err := helm(t, "lint", chartDir, "--strict"); err != nil {
		t.Error(err)
	}
	if _, err := helm(t, "lint", chartDir, "--strict", "-f", "values-nondefault.yaml"); err != nil {
		t.Error(err)
	}
}

// TestRenderedManifestsAreValid dry-runs every rendered object, default and
// non-default values, against a real kube-apiserver.
func TestRenderedManifestsAreValid(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS not set: run `make test`")
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join("testdata", "servicemonitor-crd.yaml")}}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, ns := range []string{"attune-system", "harbor-social", "arcade"} {
		obj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}}
		if err := c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}

	defaults := render(t)
	k := kinds(defaults)
	// Four ClusterRoles: the manager's (no Secret verbs), the Secret verbs
	// the operator binds per world namespace, and the secure metrics' auth
	// and reader roles; two admission policies.
	if k["CustomResourceDefinition"] != 2 || k["Deployment"] != 1 || k["ClusterRole"] != 4 || k["ClusterRoleBinding"] != 2 || k["Role"] != 1 ||
		k["ValidatingAdmissionPolicy"] != 2 || k["ValidatingAdmissionPolicyBinding"] != 2 || k["ServiceMonitor"] != 0 || k["ConfigMap"] != 0 {
		t.Errorf("default render: %v", k)
	}
	nondefault := render(t, "-f", "values-nondefault.yaml", "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")
	k = kinds(nondefault)
	// Namespaced mode: one ClusterRole (and the two secure-metrics ones),
	// the Secret verbs in each Role, and no policy on role bindings (the
	// operator creates none).
	if k["CustomResourceDefinition"] != 0 || k["ClusterRole"] != 3 || k["Role"] != 3 || k["RoleBinding"] != 3 ||
		k["ValidatingAdmissionPolicy"] != 1 || k["ServiceMonitor"] != 1 || k["ConfigMap"] != 1 {
		t.Errorf("non-default render: %v", k)
	}
	// Without the ServiceMonitor CRD in the cluster, no ServiceMonitor.
	if n := kinds(render(t, "-f", "values-nondefault.yaml"))["ServiceMonitor"]; n != 0 {
		t.Errorf("ServiceMonitor rendered without its CRD")
	}

	for name, objs := range map[string][]*unstructured.Unstructured{"default": defaults, "non-default": nondefault} {
		for _, obj := range objs {
			if err := c.Create(ctx, obj.DeepCopy(), client.DryRunAll); err != nil {
				t.Errorf("%s values: %s %s rejected by the API server: %v", name, obj.GetKind(), obj.GetName(), err)
			}
		}
	}
}

// TestChartCRDsMatchGenerated: the templated CRDs are config/crd/bases with
// only the keep annotation and chart labels added.
func TestChartCRDsMatchGenerated(t *testing.T) {
	rendered := map[string]*unstructured.Unstructured{}
	for _, o := range render(t) {
		if o.GetKind() == "CustomResourceDefinition" {
			rendered[o.GetName()] = o
		}
	}
	paths, _ := filepath.Glob(filepath.Join("..", "..", "config", "crd", "bases", "*.yaml"))
	for _, path := range paths {
		data, _ := os.ReadFile(path)
		want := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.Unmarshal(data, want); err != nil {
			t.Fatal(err)
		}
		got := rendered[want.Name]
		if got == nil {
			t.Fatalf("%s not rendered", want.Name)
		}
		if got.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
			t.Errorf("%s lacks helm.sh/resource-policy: keep", want.Name)
		}
		gotCRD := &apiextensionsv1.CustomResourceDefinition{}
		b, _ := yaml.Marshal(got.Object)
		if err := yaml.Unmarshal(b, gotCRD); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(gotCRD.Spec, want.Spec) {
			t.Errorf("%s: the chart's spec differs from config/crd/bases", want.Name)
		}
	}
	noKeep := render(t, "--set", "crds.keep=false")
	for _, o := range noKeep {
		if o.GetKind() == "CustomResourceDefinition" && o.GetAnnotations()["helm.sh/resource-policy"] != "" {
			t.Errorf("crds.keep=false still sets the keep policy on %s", o.GetName())
		}
	}
}

func TestBadValuesAreRefused(t *testing.T) {
	cases := map[string]struct {
		args []string
		want string
	}{
		"wrong type":                      {[]string{"--set", "replicaCount=two"}, "replicaCount"},
		"unknown key":                     {[]string{"--set", "replicas=2"}, "replicas"},
		"bad namespace":                   {[]string{"--set", "watchNamespaces[0]=Not_A_Namespace"}, "watchNamespaces"},
		"bad log level":                   {[]string{"--set", "logLevel=verbose"}, "logLevel"},
		"prometheus URL without a scheme": {[]string{"--set", "allowedPrometheusURLs[0]=prometheus.example.com"}, "allowedPrometheusURLs"},
		"prometheus URL with a user":      {[]string{"--set", "allowedPrometheusURLs[0]=https://u:p@prometheus.example.com"}, "allowedPrometheusURLs"},
		"cluster domain with a slash":     {[]string{"--set", "clusterDomain=cluster.local/x"}, "clusterDomain"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := helm(t, append([]string{"template", "attune", chartDir, "--kube-version", "1.37.2"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), "values don't meet the specifications of the schema") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a schema error naming %s", err, tc.want)
			}
		})
	}
}
