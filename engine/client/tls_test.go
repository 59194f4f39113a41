package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/client"
)

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// otherCA is a CA that signed nothing the engine serves.
func otherCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "not the engine's CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM(der)
}

// dialCounter counts the TCP connections a transport opens.
func dialCounter() (*http.Transport, *atomic.Int64) {
	var n atomic.Int64
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		n.Add(1)
		return d.DialContext(ctx, network, addr)
	}}, &n
}

// TestTLSWithCABundle: the engine's certificate verifies against the CA
// bundle given as bytes or as a file, also under another server name; a CA
// that did not sign it, the system roots and a wrong name are refused at
// once, without retries.
func TestTLSWithCABundle(t *testing.T) {
	e := startTLSEngine(t, engineConfig("Social", 1))
	ctx := ctxFor(t)
	ca := certPEM(e.srv.Certificate().Raw) // httptest's certificate is its own CA
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, ca, 0o600); err != nil {
		t.Fatal(err)
	}
	port := e.url[strings.LastIndex(e.url, ":")+1:]

	for _, tc := range []struct {
		name string
		url  string
		opts []client.Option
	}{
		{"bundle", e.url, []client.Option{client.WithCABundle(ca)}},
		{"file", e.url, []client.Option{client.WithCAFile(caFile)}},
		{"server name", "https://localhost:" + port, []client.Option{client.WithCABundle(ca), client.WithServerName("example.com")}},
		{"with another bundle", e.url, []client.Option{client.WithCABundle(otherCA(t)), client.WithCABundle(ca)}},
		{"over a given TLS config and client", e.url, []client.Option{client.WithTLSConfig(&tls.Config{MinVersion: tls.VersionTLS13}),
			client.WithHTTPClient(&http.Client{Timeout: 10 * time.Second}), client.WithCAFile(caFile)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, tc.url, append(tc.opts, client.WithToken(roToken))...)
			cohort, err := c.Cohort(ctx)
			if err != nil || cohort.Scope != "replica" {
				t.Fatalf("cohort over TLS: %+v %v", cohort, err)
			}
		})
	}

	for _, tc := range []struct {
		name string
		opts []client.Option
		want string
	}{
		{"untrusted CA", []client.Option{client.WithCABundle(otherCA(t))}, "unknown authority"},
		{"system roots", nil, "unknown authority"},
		{"wrong server name", []client.Option{client.WithCABundle(ca), client.WithServerName("engine.example.org")}, "engine.example.org"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			transport, dials := dialCounter()
			c := newClient(t, e.url, append(tc.opts, client.WithToken(roToken), client.WithTransport(transport),
				client.WithRetry(client.RetryPolicy{MaxAttempts: 5, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 10 * time.Millisecond}))...)
			_, err := c.Cohort(ctx)
			var verification *tls.CertificateVerificationError
			if !errors.As(err, &verification) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want a certificate verification error naming %q", err, tc.want)
			}
			if n := dials.Load(); n != 1 {
				t.Errorf("%d connections: a certificate error is not retried", n)
			}
		})
	}

	// Plain HTTP to the TLS port is not the engine's answer either.
	c := newClient(t, "http://"+strings.TrimPrefix(e.url, "https://"), client.WithToken(roToken))
	if _, err := c.Cohort(ctx); err == nil {
		t.Error("plain HTTP to the TLS engine succeeded")
	}
}
