//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	engineclient "github.com/attune-io/attune/engine/client"
)

// engineTrust is what a world server in the cluster uses to reach the
// program's engines over HTTPS: the world's published CA bundle and the
// Service's name (the tests dial pod addresses).
func engineTrust(t *testing.T, p *wellbeingv1alpha1.MeditationProgram) []engineclient.Option {
	t.Helper()
	trust, err := controllers.EngineTrust(context.Background(), stack.Client, p)
	if err != nil {
		t.Fatal(err)
	}
	return trust
}

// engineHTTP is a plain HTTP client with the same trust.
func engineHTTP(t *testing.T, p *wellbeingv1alpha1.MeditationProgram) *http.Client {
	t.Helper()
	cm := &corev1.ConfigMap{}
	if err := stack.Client.Get(context.Background(), client.ObjectKey{Namespace: p.Namespace, Name: controllers.CABundleConfigMapName}, cm); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(cm.Data[controllers.CABundleKey])) {
		t.Fatalf("ConfigMap %s/%s holds no CA certificate", p.Namespace, controllers.CABundleConfigMapName)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: controllers.EngineServerName(p), MinVersion: tls.VersionTLS12}}}
}
