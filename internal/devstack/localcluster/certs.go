package localcluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is what the control plane needs: a CA, the API server's serving
// certificate signed by it, the service-account signing key pair, and the
// front-proxy client certificate with which the API server's aggregator
// calls aggregated APIs (a metrics API a test serves).
type pki struct {
	caCert, serverCert, serverKey, saKey, saPub string
	proxyClientCert, proxyClientKey             string
}

// frontProxyClientName is the front-proxy client certificate's common
// name, the one --requestheader-allowed-names admits.
const frontProxyClientName = "front-proxy-client"

func writePEM(path, kind string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600)
}

func newKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	return key, der, err
}

// generatePKI writes the certificates and keys into dir.
func generatePKI(dir string) (pki, error) {
	p := pki{
		caCert: filepath.Join(dir, "ca.crt"), serverCert: filepath.Join(dir, "apiserver.crt"), serverKey: filepath.Join(dir, "apiserver.key"),
		saKey: filepath.Join(dir, "sa.key"), saPub: filepath.Join(dir, "sa.pub"),
		proxyClientCert: filepath.Join(dir, "front-proxy-client.crt"), proxyClientKey: filepath.Join(dir, "front-proxy-client.key"),
	}
	caKey, _, err := newKey()
	if err != nil {
		return p, err
	}
	now := time.Now()
	caTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "attune-local-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour * 365),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return p, fmt.Errorf("CA certificate: %w", err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	serverKey, serverKeyDER, err := newKey()
	if err != nil {
		return p, err
	}
	serverTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour * 365),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")},
	}
	serverDER, err := x509.CreateCertificate(rand.Reader, serverTemplate, ca, &serverKey.PublicKey, caKey)
	if err != nil {
		return p, fmt.Errorf("serving certificate: %w", err)
	}
	proxyKey, proxyKeyDER, err := newKey()
	if err != nil {
		return p, err
	}
	proxyTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: frontProxyClientName},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour * 365),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	proxyDER, err := x509.CreateCertificate(rand.Reader, proxyTemplate, ca, &proxyKey.PublicKey, caKey)
	if err != nil {
		return p, fmt.Errorf("front-proxy client certificate: %w", err)
	}
	_, saDER, err := newKey()
	if err != nil {
		return p, err
	}
	saKey, _ := x509.ParseECPrivateKey(saDER)
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return p, err
	}
	for _, f := range []struct {
		path, kind string
		der        []byte
	}{
		{p.caCert, "CERTIFICATE", caDER}, {p.serverCert, "CERTIFICATE", serverDER}, {p.serverKey, "EC PRIVATE KEY", serverKeyDER},
		{p.saKey, "EC PRIVATE KEY", saDER}, {p.saPub, "PUBLIC KEY", saPubDER},
		{p.proxyClientCert, "CERTIFICATE", proxyDER}, {p.proxyClientKey, "EC PRIVATE KEY", proxyKeyDER},
	} {
		if err := writePEM(f.path, f.kind, f.der); err != nil {
			return p, err
		}
	}
	return p, nil
}
