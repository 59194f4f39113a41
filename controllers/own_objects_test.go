package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/attune-io/attune/controllers"
)

// A program's own Secrets and engine pods are listed from indexes (by
// program), not by matching every object of the world's namespace. The
// lists must be what the API server itself selects, for programs whose
// names share a prefix and beside objects that are not the operator's.
func TestIndexedListsMatchTheAPIServers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "indexed-"}}
	create(t, ns)
	programs := []string{"calm", "calm-2", "calmer"}
	for _, p := range programs {
		for i := range 2 {
			create(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: fmt.Sprintf("%s-engine-%d", p, i),
				Labels: map[string]string{controllers.LabelName: controllers.EngineAppName, controllers.LabelInstance: p}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "engine", Image: "example.test/engine:v1"}}}})
			create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: fmt.Sprintf("%s-token-%d", p, i),
				Labels: map[string]string{controllers.LabelManagedBy: controllers.ManagedByValue, controllers.LabelProgram: p, controllers.LabelComponent: fmt.Sprint("c", i)}}})
		}
	}
	// Not an engine, not the operator's, of no program.
	create(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "calm-sidecar",
		Labels: map[string]string{controllers.LabelName: "sidecar", controllers.LabelInstance: "calm"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.test/c:v1"}}}})
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "calm-planted", Labels: map[string]string{controllers.LabelProgram: "calm"}}})
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "world-key", Labels: map[string]string{controllers.LabelManagedBy: controllers.ManagedByValue}}})

	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{Scheme: scheme, Cache: controllers.CacheOptions(), Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := controllers.IndexEnginePods(ctx, mgr); err != nil {
		t.Fatal(err)
	}
	go func() { _ = mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("cache not synced")
	}
	own, err := controllers.OwnObjectsClient(ctx, mgr, ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	names := func(list client.ObjectList) []string {
		var out []string
		items, err := apimeta.ExtractList(list)
		if err != nil {
			t.Fatal(err)
		}
		for _, item := range items {
			m, err := apimeta.Accessor(item)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, m.GetName())
		}
		slices.Sort(out)
		return out
	}
	for _, p := range append(programs, "absent") {
		engines := client.MatchingLabels{controllers.LabelName: controllers.EngineAppName, controllers.LabelInstance: p}
		got, want := &corev1.PodList{}, &corev1.PodList{}
		if err := own.List(ctx, got, client.InNamespace(ns.Name), engines); err != nil {
			t.Fatal(err)
		}
		if err := k8s.List(ctx, want, client.InNamespace(ns.Name), engines); err != nil {
			t.Fatal(err)
		}
		if g, w := names(got), names(want); !slices.Equal(g, w) || (p != "absent" && len(w) != 2) {
			t.Errorf("engine pods of %s: %v, the API server selects %v", p, g, w)
		}
		for _, sel := range []client.MatchingLabels{
			{controllers.LabelManagedBy: controllers.ManagedByValue, controllers.LabelProgram: p},
			{controllers.LabelManagedBy: controllers.ManagedByValue, controllers.LabelProgram: p, controllers.LabelComponent: "c1"},
			{controllers.LabelManagedBy: controllers.ManagedByValue},
		} {
			got, want := secretMetadata(), secretMetadata()
			if err := own.List(ctx, got, client.InNamespace(ns.Name), sel); err != nil {
				t.Fatal(err)
			}
			if err := k8s.List(ctx, want, client.InNamespace(ns.Name), sel); err != nil {
				t.Fatal(err)
			}
			if g, w := names(got), names(want); !slices.Equal(g, w) || (p != "absent" && len(w) == 0) {
				t.Errorf("Secrets %v: %v, the API server selects %v", sel, g, w)
			}
		}
	}
}

func secretMetadata() *metav1.PartialObjectMetadataList {
	l := &metav1.PartialObjectMetadataList{}
	l.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	return l
}
