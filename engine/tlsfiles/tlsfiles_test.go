package tlsfiles_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/tlsfiles"
)

// selfSigned returns a PEM certificate and key with the serial.
func selfSigned(t *testing.T, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	return selfSignedUntil(t, serial, time.Now().Add(time.Hour))
}

// selfSignedUntil is selfSigned expiring at notAfter.
func selfSignedUntil(t *testing.T, serial int64, notAfter time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "engine"}, DNSNames: []string{"engine"},
		NotBefore: notAfter.Add(-2 * time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

func write(t *testing.T, dir string, certPEM, keyPEM []byte) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for path, content := range map[string][]byte{certFile: certPEM, keyFile: keyPEM} {
		if err := os.WriteFile(path+".tmp", content, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

// TestPairReload: Load refuses a mismatched pair naming the files; Reload
// takes a changed pair, reports a refused content once and keeps the last
// good pair in the meantime; the server config is TLS 1.2 or later.
func TestPairReload(t *testing.T) {
	dir := t.TempDir()
	cert1, key1 := selfSigned(t, 1)
	cert2, key2 := selfSigned(t, 2)
	certFile, keyFile := write(t, dir, cert1, key2)
	if _, err := tlsfiles.Load(certFile, keyFile); err == nil || !strings.Contains(err.Error(), certFile) {
		t.Fatalf("a mismatched pair: %v, want an error naming %s", err, certFile)
	}
	write(t, dir, cert1, key1)
	p, err := tlsfiles.Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := p.ServerConfig(); cfg.MinVersion != tls.VersionTLS12 || cfg.GetCertificate == nil {
		t.Errorf("server config: min version %x, GetCertificate set %v", cfg.MinVersion, cfg.GetCertificate != nil)
	}
	if changed, err := p.Reload(); changed || err != nil {
		t.Errorf("unchanged files: changed %v, %v", changed, err)
	}

	write(t, dir, cert2, key1) // a half-done rotation
	if _, err := p.Reload(); err == nil {
		t.Error("a mismatched replacement was not reported")
	}
	if _, err := p.Reload(); err != nil {
		t.Errorf("the same refused content was reported again: %v", err)
	}
	if s := p.Leaf().SerialNumber.Int64(); s != 1 {
		t.Errorf("serving serial %d after a refused replacement, want 1", s)
	}
	write(t, dir, cert2, key2)
	if changed, err := p.Reload(); !changed || err != nil {
		t.Fatalf("a good replacement: changed %v, %v", changed, err)
	}
	got, _ := p.GetCertificate(&tls.ClientHelloInfo{})
	if got.Leaf.SerialNumber.Int64() != 2 {
		t.Errorf("GetCertificate serves serial %d, want 2", got.Leaf.SerialNumber.Int64())
	}
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Reload(); err == nil || !strings.Contains(err.Error(), "key file") {
		t.Errorf("a missing key file: %v", err)
	}
	if _, err := p.Reload(); err != nil {
		t.Errorf("a key file still missing was reported again: %v", err)
	}
	write(t, dir, cert2, key2) // back, unchanged: nothing to put in force
	if changed, err := p.Reload(); changed || err != nil {
		t.Errorf("the same pair back: changed %v, %v", changed, err)
	}
	if s := p.Leaf().SerialNumber.Int64(); s != 2 {
		t.Errorf("serving serial %d, want 2", s)
	}
}

// TestReloadRereadsASwapBetweenTheReads: a certificate and key that do
// not match when first read (the kubelet swapped the files between the
// two reads) are read again after a pause, and the pair then in force is
// taken without a refusal.
func TestReloadRereadsASwapBetweenTheReads(t *testing.T) {
	dir := t.TempDir()
	cert1, key1 := selfSigned(t, 1)
	cert2, key2 := selfSigned(t, 2)
	certFile, keyFile := write(t, dir, cert1, key1)
	p, err := tlsfiles.Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	write(t, dir, cert2, key1) // the first read: new certificate, old key
	swapped := false
	p.OnSwapPause(func() {
		write(t, dir, cert2, key2) // the swap completes
		swapped = true
	})
	if changed, err := p.Reload(); !changed || err != nil || !swapped {
		t.Fatalf("a swap between the reads: changed %v, %v (re-read: %v), want the new pair taken", changed, err, swapped)
	}
	if s := p.Leaf().SerialNumber.Int64(); s != 2 {
		t.Errorf("serving serial %d, want 2", s)
	}

}
