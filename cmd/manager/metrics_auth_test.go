package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

const operatorNamespace = "attune-system"

// TestMetricsNeedAnAuthorisedToken runs the manager's metrics server as
// main does, as the attune-manager ServiceAccount holding only
// config/rbac/metrics_auth_role.yaml, against a real API server: a scrape
// without a token is refused (401), one whose ServiceAccount lacks
// config/rbac/metrics_reader_role.yaml is forbidden (403), and one bound to
// it is served.
func TestMetricsNeedAnAuthorisedToken(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS not set: run `make test`")
	}
	env := &envtest.Environment{}
	adminCfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	admin, err := client.New(adminCfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	clientset := kubernetes.NewForConfigOrDie(adminCfg)

	if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}}); err != nil {
		t.Fatal(err)
	}
	for _, sa := range []string{"attune-manager", "scraper", "stranger"} {
		if err := admin.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: sa}}); err != nil {
			t.Fatal(err)
		}
	}
	applyFile(ctx, t, admin, filepath.Join("..", "..", "config", "rbac", "metrics_auth_role.yaml"))
	applyFile(ctx, t, admin, filepath.Join("..", "..", "config", "rbac", "metrics_reader_role.yaml"))
	reader := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
		"metadata": map[string]any{"name": "scraper-metrics-reader"},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "attune-metrics-reader"},
		"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "scraper", "namespace": operatorNamespace}},
	}}
	if err := admin.Create(ctx, reader); err != nil {
		t.Fatal(err)
	}

	token := func(sa string) string {
		tr, err := clientset.CoreV1().ServiceAccounts(operatorNamespace).CreateToken(ctx, sa,
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("token for %s: %v", sa, err)
		}
		return tr.Status.Token
	}
	managerCfg := rest.AnonymousClientConfig(adminCfg)
	managerCfg.BearerToken = token("attune-manager")

	addr := freeLoopbackAddr(t)
	mgr, err := ctrl.NewManager(managerCfg, ctrl.Options{
		Metrics:                metricsServerOptions(addr, true),
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	// The certificate is controller-runtime's self-signed one.
	httpClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	scrape := func(bearer string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/metrics", nil)
		if err != nil {
			return 0, "", err
		}
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer func() { _ = resp.Body.Close() }()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	// Wait for the server to listen.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, _, err := scrape(""); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("metrics server never answered: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	if code, _, err := scrape(""); err != nil || code != http.StatusUnauthorized {
		t.Errorf("scrape without a token: %d, %v; want 401", code, err)
	}
	// A token the API server cannot look up is an authentication error to
	// controller-runtime's filter, which answers 500; refused all the same.
	if code, body, err := scrape("not-a-token"); err != nil || (code != http.StatusUnauthorized && code != http.StatusInternalServerError) || strings.Contains(body, "# TYPE ") {
		t.Errorf("scrape with a forged token: %d, %v; want it refused", code, err)
	}
	if code, _, err := scrape(token("stranger")); err != nil || code != http.StatusForbidden {
		t.Errorf("scrape by a ServiceAccount without metrics-reader: %d, %v; want 403", code, err)
	}
	code, body, err := scrape(token("scraper"))
	if err != nil || code != http.StatusOK {
		t.Fatalf("scrape by a metrics-reader: %d, %v; want 200", code, err)
	}
	if !strings.Contains(body, "# TYPE ") {
		t.Errorf("authorised scrape returned no metrics:\n%.500s", body)
	}
	// Plain HTTP is not served.
	if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP scrape served metrics")
		}
	}
}

func applyFile(ctx context.Context, t *testing.T, c client.Client, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(string(data)), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return
			}
			t.Fatalf("%s: %v", path, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if err := c.Create(ctx, u); err != nil {
			t.Fatalf("%s: create %s %s: %v", path, u.GetKind(), u.GetName(), err)
		}
	}
}

// freeLoopbackAddr returns a loopback address with a port free just now; the
// metrics server binds it itself.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return fmt.Sprint(l.Addr())
}
