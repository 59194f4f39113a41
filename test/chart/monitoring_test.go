package chart

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

func findKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// The PrometheusRule is off by default, needs its CRD, and ships
// files/alerts.yaml unchanged: the rules promtool tests (test/alerts) are the
// rules installed. Every alert's runbook is a section of docs/operations.md.
func TestPrometheusRuleShipsTheTestedAlerts(t *testing.T) {
	if n := len(findKind(render(t, "--api-versions", "monitoring.coreos.com/v1/PrometheusRule"), "PrometheusRule")); n != 0 {
		t.Errorf("default values rendered %d PrometheusRules, want none", n)
	}
	if n := len(findKind(render(t, "--set", "prometheusRule.enabled=true"), "PrometheusRule")); n != 0 {
		t.Errorf("rendered %d PrometheusRules without the CRD, want none", n)
	}
	rules := findKind(render(t, "--set", "prometheusRule.enabled=true", "--set", "prometheusRule.labels.release=kps",
		"--api-versions", "monitoring.coreos.com/v1/PrometheusRule"), "PrometheusRule")
	if len(rules) != 1 {
		t.Fatalf("rendered %d PrometheusRules, want 1", len(rules))
	}
	if got := rules[0].GetLabels()["release"]; got != "kps" {
		t.Errorf("prometheusRule.labels not applied: release=%q", got)
	}

	raw, err := os.ReadFile(filepath.Join(chartDir, "files", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]any
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatalf("parse alerts.yaml: %v", err)
	}
	spec, _, _ := unstructured.NestedMap(rules[0].Object, "spec")
	if !reflect.DeepEqual(spec, file) {
		t.Errorf("the PrometheusRule's spec differs from files/alerts.yaml")
	}

	doc, err := os.ReadFile(filepath.Join(chartDir, "..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#+ (.+)$`).FindAllStringSubmatch(string(doc), -1) {
		anchors[githubAnchor(m[1])] = true
	}
	groups, _, _ := unstructured.NestedSlice(spec, "groups")
	alerts := 0
	for _, g := range groups {
		ruleList, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
		for _, r := range ruleList {
			rule := r.(map[string]any)
			name, _ := rule["alert"].(string)
			ann, _, _ := unstructured.NestedStringMap(rule, "annotations")
			for _, key := range []string{"summary", "description", "runbook_url"} {
				if ann[key] == "" {
					t.Errorf("alert %s has no %s", name, key)
				}
			}
			_, anchor, _ := strings.Cut(ann["runbook_url"], "docs/operations.md#")
			if !anchors[anchor] {
				t.Errorf("alert %s: runbook_url %q names no section of docs/operations.md", name, ann["runbook_url"])
			}
			alerts++
		}
	}
	if alerts == 0 {
		t.Fatal("no alerts found in the PrometheusRule")
	}
}

// githubAnchor is the fragment GitHub gives a Markdown heading: lower case,
// punctuation dropped, spaces as hyphens.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9'):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// The manager's metrics are HTTPS behind the API server's authn/authz by
// default: the chart grants the operator TokenReview and SubjectAccessReview
// creation, ships the metrics-reader ClusterRole (bound to metrics.readers),
// and scrapes over HTTPS with a bearer token. cmd/manager's
// TestMetricsNeedAnAuthorisedToken shows the server refusing and serving.
func TestMetricsAreServedSecurely(t *testing.T) {
	objs := render(t, "--set", "serviceMonitor.enabled=true", "--set", "metrics.readers[0].name=prometheus-k8s",
		"--set", "metrics.readers[0].namespace=monitoring", "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")
	byName := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		byName[o.GetKind()+"/"+o.GetName()] = o
	}
	deployment := byName["Deployment/attune"]
	if deployment == nil {
		t.Fatal("no Deployment/attune rendered")
	}
	containers, _, _ := unstructured.NestedSlice(deployment.Object, "spec", "template", "spec", "containers")
	managerArgs, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	if !slices.Contains(managerArgs, "--metrics-secure=true") || !slices.Contains(managerArgs, "--metrics-bind-address=:8443") {
		t.Errorf("manager args %v: want --metrics-secure=true on :8443", managerArgs)
	}

	auth := byName["ClusterRole/attune-metrics-auth"]
	reader := byName["ClusterRole/attune-metrics-reader"]
	if auth == nil || reader == nil {
		t.Fatalf("metrics ClusterRoles missing (auth %v, reader %v)", auth != nil, reader != nil)
	}
	wantAuth := []any{
		map[string]any{"apiGroups": []any{"authentication.k8s.io"}, "resources": []any{"tokenreviews"}, "verbs": []any{"create"}},
		map[string]any{"apiGroups": []any{"authorization.k8s.io"}, "resources": []any{"subjectaccessreviews"}, "verbs": []any{"create"}},
	}
	if !reflect.DeepEqual(auth.Object["rules"], wantAuth) {
		t.Errorf("metrics-auth rules %v, want %v", auth.Object["rules"], wantAuth)
	}
	wantReader := []any{map[string]any{"nonResourceURLs": []any{"/metrics"}, "verbs": []any{"get"}}}
	if !reflect.DeepEqual(reader.Object["rules"], wantReader) {
		t.Errorf("metrics-reader rules %v, want %v", reader.Object["rules"], wantReader)
	}
	sa := deployment.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["serviceAccountName"]
	for name, want := range map[string]map[string]any{
		"ClusterRoleBinding/attune-metrics-auth":   {"kind": "ServiceAccount", "name": sa, "namespace": releaseNamespace},
		"ClusterRoleBinding/attune-metrics-reader": {"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"},
	} {
		b := byName[name]
		if b == nil {
			t.Errorf("%s missing", name)
			continue
		}
		if subjects, _, _ := unstructured.NestedSlice(b.Object, "subjects"); len(subjects) != 1 || !reflect.DeepEqual(subjects[0], want) {
			t.Errorf("%s subjects %v, want [%v]", name, subjects, want)
		}
	}

	sm := byName["ServiceMonitor/attune"]
	if sm == nil {
		t.Fatal("no ServiceMonitor rendered")
	}
	endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	ep := endpoints[0].(map[string]any)
	if ep["scheme"] != "https" || ep["bearerTokenFile"] != "/var/run/secrets/kubernetes.io/serviceaccount/token" {
		t.Errorf("ServiceMonitor endpoint %v: want https with the ServiceAccount token", ep)
	}

	// metrics.secure=false: plain HTTP, no metrics RBAC, no token.
	plain := render(t, "--set", "metrics.secure=false", "--set", "serviceMonitor.enabled=true", "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")
	for _, o := range plain {
		if strings.Contains(o.GetName(), "-metrics-") && strings.HasPrefix(o.GetKind(), "ClusterRole") {
			t.Errorf("metrics.secure=false still renders %s/%s", o.GetKind(), o.GetName())
		}
		if o.GetKind() == "ServiceMonitor" {
			eps, _, _ := unstructured.NestedSlice(o.Object, "spec", "endpoints")
			if _, ok := eps[0].(map[string]any)["scheme"]; ok {
				t.Errorf("metrics.secure=false ServiceMonitor still sets a scheme: %v", eps[0])
			}
		}
	}
}
