package controllers_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/attune-io/attune/controllers"
)

// applyExchanges records, for each PATCH passing through it, what the
// request asked to be answered in and what the answer was.
type applyExchanges struct {
	next http.RoundTripper
	mu   sync.Mutex
	// byPath is the last exchange of each path: "accept -> answer".
	byPath map[string]string
}

func (a *applyExchanges) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := a.next.RoundTrip(req)
	if err == nil && req.Method == http.MethodPatch {
		a.mu.Lock()
		a.byPath[req.URL.Path] = req.Header.Get("Accept") + " -> " + resp.Header.Get("Content-Type")
		a.mu.Unlock()
	}
	return resp, err
}

func (a *applyExchanges) of(path string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.byPath[path]
}

// TestAppliesLeaveTheAnswerUndecoded applies through the reconcilers'
// client on the suite's API server: a built-in kind, namespaced and
// cluster-scoped, is written as declared with its answer asked for in
// protobuf and not decoded into the object applied; a kind outside the
// scheme (the PodMonitor) is answered in JSON, also undecoded; an invalid
// object fails with the API server's own error; a Secret's answer is still
// decoded, since the client remembers the Secret from it.
func TestAppliesLeaveTheAnswerUndecoded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "answerless-"}}
	create(t, ns)
	exchanges := &applyExchanges{byPath: map[string]string{}}
	cfg := rest.CopyConfig(restConfig)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { exchanges.next = rt; return exchanges })
	own := ownObjectsClient(ctx, t, cfg, ns.Name)

	apply := func(obj map[string]any) (*unstructured.Unstructured, error) {
		u := &unstructured.Unstructured{Object: obj}
		return u, own.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(controllers.FieldOwner), client.ForceOwnership)
	}
	const protobuf = "application/vnd.kubernetes.protobuf"

	// Another manager owns the field first: without ForceOwnership the
	// apply would conflict.
	theirs := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "declared", Namespace: ns.Name}, Data: map[string]string{"k": "theirs"}}
	if err := k8s.Create(ctx, theirs, client.FieldOwner("someone-else")); err != nil {
		t.Fatal(err)
	}
	for _, value := range []string{"first", "second"} {
		u, err := apply(map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": "declared", "namespace": ns.Name}, "data": map[string]any{"k": value}})
		if err != nil {
			t.Fatal(err)
		}
		if u.GetResourceVersion() != "" || u.GetUID() != "" {
			t.Errorf("the applied ConfigMap was filled from the answer (resourceVersion %q)", u.GetResourceVersion())
		}
		got := &corev1.ConfigMap{}
		get(t, client.ObjectKey{Namespace: ns.Name, Name: "declared"}, got)
		if got.Data["k"] != value {
			t.Errorf("ConfigMap data %v after applying %q", got.Data, value)
		}
		var applied bool
		for _, m := range got.ManagedFields {
			applied = applied || m.Manager == controllers.FieldOwner && m.Operation == metav1.ManagedFieldsOperationApply
		}
		if !applied {
			t.Errorf("managed fields %+v: no apply by %s", got.ManagedFields, controllers.FieldOwner)
		}
	}
	if got := exchanges.of("/api/v1/namespaces/" + ns.Name + "/configmaps/declared"); !strings.HasPrefix(got, protobuf) || !strings.HasSuffix(got, "-> "+protobuf) {
		t.Errorf("the ConfigMap's apply: %q, want protobuf asked for and answered", got)
	}

	labelled := ns.Name + "-labelled"
	if _, err := apply(map[string]any{"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": labelled, "labels": map[string]any{"attune-test": "answerless"}}}); err != nil {
		t.Fatal(err)
	}
	gotNS := &corev1.Namespace{}
	get(t, client.ObjectKey{Name: labelled}, gotNS)
	if gotNS.Labels["attune-test"] != "answerless" {
		t.Errorf("cluster-scoped apply: labels %v", gotNS.Labels)
	}
	defer func() { _ = k8s.Delete(context.Background(), gotNS) }()

	monitor := map[string]any{"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
		"metadata": map[string]any{"name": "answerless", "namespace": ns.Name},
		"spec":     map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": "engine"}}, "podMetricsEndpoints": []any{map[string]any{"port": "http"}}}}
	u, err := apply(monitor)
	if err != nil {
		t.Fatal(err)
	}
	if u.GetResourceVersion() != "" {
		t.Error("the applied PodMonitor was filled from the answer")
	}
	stored := &unstructured.Unstructured{}
	stored.SetAPIVersion("monitoring.coreos.com/v1")
	stored.SetKind("PodMonitor")
	get(t, client.ObjectKey{Namespace: ns.Name, Name: "answerless"}, stored)
	if got := exchanges.of("/apis/monitoring.coreos.com/v1/namespaces/" + ns.Name + "/podmonitors/answerless"); !strings.HasSuffix(got, "-> application/json") {
		t.Errorf("the PodMonitor's apply: %q, want a JSON answer", got)
	}

	_, err = apply(map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "declared", "namespace": ns.Name}, "data": map[string]any{"not a key!": "v"}})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "data[not a key!]") {
		t.Errorf("invalid ConfigMap: %v, want the API server's Invalid naming data[not a key!]", err)
	}

	secret, err := apply(map[string]any{"apiVersion": "v1", "kind": "Secret",
		"metadata": map[string]any{"name": "applied", "namespace": ns.Name}, "stringData": map[string]any{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	if secret.GetResourceVersion() == "" {
		t.Error("the applied Secret was not filled from the answer, which the client remembers it from")
	}
}
