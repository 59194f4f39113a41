package chart

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// TestPodMonitorValues: podMonitors.* reach the manager's flags (off by
// default), the manager may write PodMonitors in cluster and namespaced
// mode, and a bad namespace name is refused by the values schema.
func TestPodMonitorValues(t *testing.T) {
	manager := func(objs []*unstructured.Unstructured) *appsv1.Deployment {
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
	defaults := manager(render(t))
	if got := flagValue(defaults, "--pod-monitors"); got != "" {
		t.Errorf("default: --pod-monitors=%q, want off", got)
	}
	if got := flagValue(defaults, "--monitoring-namespaces"); got != "" {
		t.Errorf("default: --monitoring-namespaces=%q, want none", got)
	}
	for _, mode := range [][]string{nil, {"-f", "values-nondefault.yaml"}} {
		objs := render(t, append(mode, "--set", "podMonitors.enabled=true", "--set", "podMonitors.monitoringNamespaces={monitoring,observability}")...)
		d := manager(objs)
		if got := flagValue(d, "--pod-monitors"); got != "true" {
			t.Errorf("%v: --pod-monitors=%q, want true", mode, got)
		}
		if got := flagValue(d, "--monitoring-namespaces"); got != "monitoring,observability" {
			t.Errorf("%v: --monitoring-namespaces=%q", mode, got)
		}
		if !grantsPodMonitors(t, objs) {
			t.Errorf("%v: no ClusterRole or Role of the chart lets the manager apply PodMonitors", mode)
		}
	}
	if _, err := helm(t, "template", "attune", chartDir, "--set", "podMonitors.monitoringNamespaces={Not_A_Namespace}"); err == nil || !strings.Contains(err.Error(), "monitoringNamespaces") {
		t.Errorf("a bad monitoring namespace: %v, want the schema to refuse podMonitors.monitoringNamespaces", err)
	}
}

// grantsPodMonitors reports whether a rendered (Cluster)Role grants what
// the operator's server-side apply of a PodMonitor needs.
func grantsPodMonitors(t *testing.T, objs []*unstructured.Unstructured) bool {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() != "ClusterRole" && o.GetKind() != "Role" {
			continue
		}
		role := &rbacv1.ClusterRole{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, role); err != nil {
			t.Fatal(err)
		}
		for _, r := range role.Rules {
			if slices.Contains(r.APIGroups, "monitoring.coreos.com") && slices.Contains(r.Resources, "podmonitors") &&
				slices.Contains(r.Verbs, "get") && slices.Contains(r.Verbs, "patch") && slices.Contains(r.Verbs, "create") {
				return true
			}
		}
	}
	return false
}
