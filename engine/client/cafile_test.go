package client_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/client"
)

// issuingCA is a CA that issues serving certificates for the test.
type issuingCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newIssuingCA(t *testing.T, name string) *issuingCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &issuingCA{cert: cert, key: key}
}

func (ca *issuingCA) pem() []byte { return certPEM(ca.cert.Raw) }

func (ca *issuingCA) serving(t *testing.T, dnsName string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func replaceFile(t *testing.T, path string, content []byte) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// TestCAFileRotation: the engine moves to a certificate of a new CA (a
// CA rotation); the client of WithCAFile refuses it until the mounted
// bundle names the new CA, then trusts it without a new client; a
// replacement with no certificate in it keeps the bundle in use. The
// server closes every connection, so each request verifies anew.
func TestCAFileRotation(t *testing.T) {
	const name = "calm-engine.plaza.svc"
	oldCA, newCA := newIssuingCA(t, "old CA"), newIssuingCA(t, "new CA")
	var serving atomic.Pointer[tls.Certificate]
	serving.Store(oldCA.serving(t, name))
	h, _ := newEngineHandler(t, engineConfig("Social", 1))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	srv.SetKeepAlivesEnabled(false)
	go func() {
		_ = srv.Serve(tls.NewListener(l, &tls.Config{MinVersion: tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return serving.Load(), nil }}))
	}()
	t.Cleanup(func() { _ = srv.Close() })

	caFile := filepath.Join(t.TempDir(), "ca.crt")
	replaceFile(t, caFile, oldCA.pem())
	c := newClient(t, "https://"+l.Addr().String(), client.WithCAFile(caFile), client.WithServerName(name),
		client.WithToken(roToken), client.WithRetry(client.NoRetry))
	ctx := ctxFor(t)
	if _, err := c.Cohort(ctx); err != nil {
		t.Fatalf("with the old CA: %v", err)
	}

	serving.Store(newCA.serving(t, name))
	var verification *tls.CertificateVerificationError
	if _, err := c.Cohort(ctx); !errors.As(err, &verification) {
		t.Fatalf("a certificate of a CA not yet in the bundle: %v, want a verification error", err)
	}
	replaceFile(t, caFile, append(oldCA.pem(), newCA.pem()...))
	if _, err := c.Cohort(ctx); err != nil {
		t.Fatalf("after the bundle named the new CA: %v", err)
	}
	replaceFile(t, caFile, []byte("half-written"))
	if _, err := c.Cohort(ctx); err != nil {
		t.Fatalf("after an unusable bundle replacement (the last good one stays): %v", err)
	}
	replaceFile(t, caFile, oldCA.pem())
	if _, err := c.Cohort(ctx); !errors.As(err, &verification) {
		t.Fatalf("after the new CA left the bundle: %v, want a verification error", err)
	}
}
