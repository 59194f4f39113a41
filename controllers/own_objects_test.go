package controllers_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
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

	own := ownObjectsClient(ctx, t, restConfig, ns.Name)
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

// ownObjectsClient is the reconcilers' client over a manager of its own
// (on cfg, its cache indexed as the operator's), watching the operator's
// Secrets of namespace; it stops with ctx.
func ownObjectsClient(ctx context.Context, t *testing.T, cfg *rest.Config, namespace string) client.Client {
	t.Helper()
	mgr, err := ctrl.NewManager(controllers.RESTConfig(cfg), ctrl.Options{Scheme: scheme, Cache: controllers.CacheOptions(), Metrics: metricsserver.Options{BindAddress: "0"}})
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
	own, err := controllers.OwnObjectsClient(ctx, mgr, namespace)
	if err != nil {
		t.Fatal(err)
	}
	return own
}

func secretMetadata() *metav1.PartialObjectMetadataList {
	l := &metav1.PartialObjectMetadataList{}
	l.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	return l
}

// secretReads counts the requests that read one Secret (GET
// .../secrets/name) passing through it.
type secretReads struct {
	next http.RoundTripper
	n    atomic.Int64
}

func (s *secretReads) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/secrets/") {
		s.n.Add(1)
	}
	return s.next.RoundTrip(req)
}

// The reconcilers' client knows the operator's Secrets without asking the
// API server: a generated Secret that its namespace's synced watch does
// not hold is absent (the create that follows finds a planted one), and
// one this process created is served from memory until the watch
// delivers it, and never after: from then on the watch is the truth.
func TestOwnSecretsAreKnownWithoutAsking(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "own-secrets-"}}
	create(t, ns)
	reads := &secretReads{}
	cfg := rest.CopyConfig(restConfig)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { reads.next = rt; return reads })
	own := ownObjectsClient(ctx, t, cfg, ns.Name)
	ours := map[string]string{controllers.LabelManagedBy: controllers.ManagedByValue}
	secret := func(name, data string, labels map[string]string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: name, Labels: labels}, Data: map[string][]byte{"k": []byte(data)}}
	}
	read := func(name string) (string, error) {
		s := &corev1.Secret{}
		err := own.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: name}, s)
		return string(s.Data["k"]), err
	}
	key := func(name string) client.ObjectKey { return client.ObjectKey{Namespace: ns.Name, Name: name} }

	// Absent, and known to be without a request.
	if err := controllers.GetGeneratedSecret(ctx, own, key("token"), &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Fatalf("absent generated Secret: %v, want NotFound", err)
	}
	// Created by the client: read back at once, whether or not the watch
	// has delivered it yet.
	if err := own.Create(ctx, secret("token", "created", ours)); err != nil {
		t.Fatal(err)
	}
	if data, err := read("token"); err != nil || data != "created" {
		t.Fatalf("created Secret read back: %q, %v", data, err)
	}
	if controllers.LacksOwnSecret(own, key("token")) {
		t.Error("a created Secret is taken for absent")
	}
	// Created by a server-side apply: the same.
	applied := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Secret",
		"metadata":   map[string]any{"namespace": ns.Name, "name": "clients", "labels": map[string]any{controllers.LabelManagedBy: controllers.ManagedByValue}},
		"stringData": map[string]any{"k": "applied"}}}
	if err := own.Apply(ctx, client.ApplyConfigurationFromUnstructured(applied), client.FieldOwner("test")); err != nil {
		t.Fatal(err)
	}
	if data, err := read("clients"); err != nil || data != "applied" {
		t.Fatalf("applied Secret read back: %q, %v", data, err)
	}
	if n := reads.n.Load(); n != 0 {
		t.Errorf("%d Secret reads from the API server, want 0", n)
	}

	// Remembered but never stored: served until the watch delivers its
	// name (here stored by another writer), then the watch's version.
	controllers.RememberCreatedSecret(own, secret("key", "remembered", ours))
	if data, err := read("key"); err != nil || data != "remembered" {
		t.Fatalf("remembered Secret: %q, %v", data, err)
	}
	create(t, secret("key", "stored", ours))
	eventually(t, "the watch's version served", func() error {
		if data, err := read("key"); err != nil || data != "stored" {
			return fmt.Errorf("%q, %v", data, err)
		}
		return nil
	})
	// Remembering what the watch already holds keeps nothing (were it
	// kept, the read after the deletion below would still find it).
	controllers.RememberCreatedSecret(own, secret("key", "stale", ours))
	if data, err := read("key"); err != nil || data != "stored" {
		t.Errorf("after remembering a name the watch holds: %q, %v", data, err)
	}
	// Deleted: gone, and known to be, once the watch delivers it.
	if err := k8s.Delete(ctx, secret("key", "", nil)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deletion delivered", func() error {
		if _, err := read("key"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("read after deletion: %v", err)
		}
		if !controllers.LacksOwnSecret(own, key("key")) {
			return fmt.Errorf("a deleted Secret is not known to be absent")
		}
		return nil
	})

	// A Secret without the operator's label is outside the watch: never
	// remembered, and read from the API server.
	controllers.RememberCreatedSecret(own, secret("planted", "remembered", nil))
	create(t, secret("planted", "planted", nil))
	before := reads.n.Load()
	if data, err := read("planted"); err != nil || data != "planted" {
		t.Errorf("planted Secret: %q, %v", data, err)
	}
	if reads.n.Load() != before+1 {
		t.Error("a Secret outside the watch was not read from the API server")
	}
	// The create of a generated Secret of that name is what finds it.
	if !controllers.LacksOwnSecret(own, key("planted")) {
		t.Error("a Secret outside the watch is known")
	}

	// A world's Secrets are forgotten with its watch.
	controllers.RememberCreatedSecret(own, secret("late", "remembered", ours))
	controllers.ForgetWorldSecrets(own, controllers.OwnSecretsWorld)
	if _, err := read("late"); !apierrors.IsNotFound(err) {
		t.Errorf("remembered Secret after its watch stopped: %v, want NotFound", err)
	}
}
