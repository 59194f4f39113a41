package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/attune-io/attune/internal/pki"
)

var (
	epoch    = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	svcNames = []string{"calm-engine", "calm-engine.harbor", "calm-engine.harbor.svc", "calm-engine.harbor.svc.cluster.local"}
)

func newCA(t *testing.T, now time.Time) pki.KeyPair {
	t.Helper()
	ca, err := pki.NewCA("attune-ca harbor", now, pki.CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func parse(t *testing.T, k pki.KeyPair) *x509.Certificate {
	t.Helper()
	c, err := k.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCA(t *testing.T) {
	ca := parse(t, newCA(t, epoch))
	if !ca.IsCA || !ca.BasicConstraintsValid || ca.MaxPathLen != 0 || !ca.MaxPathLenZero {
		t.Errorf("CA constraints: IsCA=%v basic=%v maxPathLen=%d", ca.IsCA, ca.BasicConstraintsValid, ca.MaxPathLen)
	}
	if ca.KeyUsage&x509.KeyUsageCertSign == 0 || ca.KeyUsage&x509.KeyUsageCRLSign == 0 {
		t.Errorf("CA key usage %b lacks certSign or cRLSign", ca.KeyUsage)
	}
	if got := ca.NotAfter.Sub(epoch); got != pki.CAValidity {
		t.Errorf("CA valid for %s after issue, want %s", got, pki.CAValidity)
	}
	if !ca.NotBefore.Before(epoch) {
		t.Errorf("CA notBefore %s is not backdated before %s", ca.NotBefore, epoch)
	}
	pub, ok := ca.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", ca.PublicKey)
	}
	if err := ca.CheckSignatureFrom(ca); err != nil {
		t.Errorf("CA is not self-signed: %v", err)
	}
}

func TestServingCertificate(t *testing.T) {
	caPair := newCA(t, epoch)
	serving, err := pki.IssueServing(caPair, svcNames, epoch, pki.ServingValidity)
	if err != nil {
		t.Fatal(err)
	}
	leaf := parse(t, serving)
	if !slices.Equal(leaf.DNSNames, svcNames) || leaf.Subject.CommonName != svcNames[0] {
		t.Errorf("SANs %v CN %q, want %v", leaf.DNSNames, leaf.Subject.CommonName, svcNames)
	}
	if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature || !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("serving usages: IsCA=%v keyUsage=%b ext=%v", leaf.IsCA, leaf.KeyUsage, leaf.ExtKeyUsage)
	}
	if got := leaf.NotAfter.Sub(epoch); got != pki.ServingValidity {
		t.Errorf("serving certificate valid for %s after issue, want %s", got, pki.ServingValidity)
	}
	for _, name := range svcNames {
		if err := pki.Verify(leaf, caPair.CertPEM, name, epoch); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if err := pki.Verify(leaf, caPair.CertPEM, "other-engine.harbor.svc", epoch); err == nil {
		t.Error("verified for a name it does not carry")
	}
	if err := pki.Verify(leaf, caPair.CertPEM, svcNames[2], leaf.NotAfter.Add(time.Second)); err == nil {
		t.Error("verified after expiry")
	}
	if err := pki.Verify(leaf, newCA(t, epoch).CertPEM, svcNames[2], epoch); err == nil {
		t.Error("verified against another CA")
	}
}

func TestServingCertificateNeverOutlivesItsCA(t *testing.T) {
	caPair, err := pki.NewCA("short", epoch, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := pki.IssueServing(caPair, svcNames, epoch, pki.ServingValidity)
	if err != nil {
		t.Fatal(err)
	}
	if leaf, ca := parse(t, serving), parse(t, caPair); !leaf.NotAfter.Equal(ca.NotAfter) {
		t.Errorf("serving notAfter %s, want the CA's %s", leaf.NotAfter, ca.NotAfter)
	}
}

func TestIssueServingRefuses(t *testing.T) {
	caPair := newCA(t, epoch)
	if _, err := pki.IssueServing(caPair, nil, epoch, pki.ServingValidity); err == nil {
		t.Error("issued without DNS names")
	}
	leafPair, err := pki.IssueServing(caPair, svcNames, epoch, pki.ServingValidity)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.IssueServing(leafPair, svcNames, epoch, pki.ServingValidity); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Errorf("a leaf signed a certificate: %v", err)
	}
	if _, err := pki.IssueServing(pki.KeyPair{CertPEM: caPair.CertPEM, KeyPEM: leafPair.KeyPEM}, svcNames, epoch, pki.ServingValidity); err == nil {
		t.Error("issued with a key that is not the CA's")
	}
}

func TestRenewalTimeIsTwoThirdsOfTheLifetime(t *testing.T) {
	leaf := parse(t, must(pki.IssueServing(newCA(t, epoch), svcNames, epoch, pki.ServingValidity)))
	lifetime := leaf.NotAfter.Sub(leaf.NotBefore)
	want := leaf.NotBefore.Add(lifetime * 2 / 3)
	if got := pki.RenewalTime(leaf); got.Sub(want).Abs() > time.Second {
		t.Errorf("renewal at %s, want %s (2/3 of %s)", got, want, lifetime)
	}
}

func TestBundleKeepsThePreviousCAUntilItExpires(t *testing.T) {
	oldCA := newCA(t, epoch)
	rotatedAt := epoch.Add(pki.CAValidity * 2 / 3)
	newCAPair := newCA(t, rotatedAt)
	bundle, err := pki.Bundle(newCAPair.CertPEM, oldCA.CertPEM, rotatedAt)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCertificates(bundle)
	if err != nil || len(certs) != 2 || !certs[0].Equal(parse(t, newCAPair)) || !certs[1].Equal(parse(t, oldCA)) {
		t.Fatalf("bundle after rotation: %d certificates (%v), want the new CA then the old", len(certs), err)
	}
	// A serving certificate of the old CA, issued just before the
	// rotation, still verifies against the bundle; so does one of the new.
	oldLeaf := parse(t, must(pki.IssueServing(oldCA, svcNames, rotatedAt.Add(-time.Minute), pki.ServingValidity)))
	newLeaf := parse(t, must(pki.IssueServing(newCAPair, svcNames, rotatedAt, pki.ServingValidity)))
	for name, leaf := range map[string]*x509.Certificate{"old CA's": oldLeaf, "new CA's": newLeaf} {
		if err := pki.Verify(leaf, bundle, svcNames[3], rotatedAt.Add(time.Hour)); err != nil {
			t.Errorf("%s serving certificate against the bundle: %v", name, err)
		}
	}
	// Re-bundling keeps one copy of each, and drops the old CA once expired.
	again, err := pki.Bundle(newCAPair.CertPEM, bundle, rotatedAt)
	if err != nil || string(again) != string(bundle) {
		t.Errorf("re-bundling changed the bundle (%v)", err)
	}
	later, err := pki.Bundle(newCAPair.CertPEM, bundle, parse(t, oldCA).NotAfter)
	if err != nil || string(later) != string(newCAPair.CertPEM) {
		t.Errorf("the expired CA is still bundled (%v)", err)
	}
}

func TestParseCertificatesRefuses(t *testing.T) {
	for name, data := range map[string]string{
		"empty":    "",
		"not PEM":  "hello",
		"key only": string(newCA(t, epoch).KeyPEM),
		"trailing": string(newCA(t, epoch).CertPEM) + "junk",
		"bad DER":  "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
	} {
		if _, err := pki.ParseCertificates([]byte(data)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

// TestHandshake serves HTTPS on loopback with an issued certificate and
// reaches it by IP with the Service's name, as the operator reaches engine
// pods: trusted with the CA, refused with another.
func TestHandshake(t *testing.T) {
	caPair := newCA(t, time.Now())
	serving := must(pki.IssueServing(caPair, svcNames, time.Now(), pki.ServingValidity))
	cert, err := tls.X509KeyPair(serving.CertPEM, serving.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()

	get := func(bundle []byte) error {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(bundle)
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: svcNames[2], MinVersion: tls.VersionTLS12}}}
		resp, err := c.Get("https://" + srv.Listener.Addr().(*net.TCPAddr).String())
		if err != nil {
			return err
		}
		return resp.Body.Close()
	}
	if err := get(caPair.CertPEM); err != nil {
		t.Errorf("trusted CA: %v", err)
	}
	var unknown x509.UnknownAuthorityError
	if err := get(newCA(t, time.Now()).CertPEM); !errors.As(err, &unknown) {
		t.Errorf("another CA: %v, want an unknown authority", err)
	}
}

func must(k pki.KeyPair, err error) pki.KeyPair {
	if err != nil {
		panic(err)
	}
	return k
}
