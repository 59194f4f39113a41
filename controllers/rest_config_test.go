package controllers_test

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/attune-io/attune/controllers"
)

// TestOperatorAsksForUncompressedResponses sends a request through
// client-go's own transport, as configured for the operator and as left
// alone, to a loopback HTTPS server (an API server always serves TLS)
// that records what it is asked to encode. Over plain HTTP client-go uses
// Go's default transport and the setting would not apply.
func TestOperatorAsksForUncompressedResponses(t *testing.T) {
	var (
		mu        sync.Mutex
		encodings []string
	)
	server := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		encodings = append(encodings, r.Header.Get("Accept-Encoding"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"harbor"}}`))
	}))
	defer server.Close()

	get := func(cfg *rest.Config) string {
		t.Helper()
		clients, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var ns *corev1.Namespace
		if ns, err = clients.CoreV1().Namespaces().Get(context.Background(), "harbor", metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
		if ns.Name != "harbor" {
			t.Fatalf("got namespace %q", ns.Name)
		}
		mu.Lock()
		defer mu.Unlock()
		return encodings[len(encodings)-1]
	}
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: server.Certificate().Raw})
	plain := &rest.Config{Host: server.URL, TLSClientConfig: rest.TLSClientConfig{CAData: ca}}
	if got := get(plain); got != "gzip" {
		t.Fatalf("a plain client-go config asked for Accept-Encoding %q, want gzip (the control: client-go changed)", got)
	}
	if got := get(controllers.RESTConfig(plain)); got != "" {
		t.Errorf("the operator's config asked for Accept-Encoding %q, want none", got)
	}
	if plain.DisableCompression {
		t.Error("RESTConfig changed the config it was given")
	}
}
