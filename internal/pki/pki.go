// Package pki issues the certificates of a world's own CA: the CA itself
// and the engines' serving certificates, as PEM, with crypto/x509 and
// ECDSA P-256. It decides nothing about Kubernetes objects; the operator
// keeps what it returns in Secrets (controllers/certificates.go).
//
// It follows what the Kubernetes API server does for its self-signed
// serving certificates (k8s.io/client-go/util/cert: validity starts an hour
// early against clock skew) and cert-manager's defaults for renewal (a
// certificate is renewed when 2/3 of its lifetime has passed,
// pkg/util/pki/renewaltime.go) and for its CA issuer (the Secret's ca.crt
// is the issuing CA).
package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"
)

// Defaults of the operator's CA and serving certificates.
const (
	// CAValidity is the lifetime of a world's CA (5 years).
	CAValidity = 5 * 365 * 24 * time.Hour
	// ServingValidity is the lifetime of an engine's serving certificate
	// (90 days, cert-manager's default duration).
	ServingValidity = 90 * 24 * time.Hour
	// clockSkew backdates every certificate, as the API server's
	// self-signed ones are, so that a peer whose clock is a little behind
	// accepts a certificate issued a moment ago.
	clockSkew = time.Hour
)

// PEM block types.
const (
	certificateBlock = "CERTIFICATE"
	privateKeyBlock  = "PRIVATE KEY" // PKCS #8
)

// KeyPair is a certificate and its private key, both PEM.
type KeyPair struct {
	CertPEM, KeyPEM []byte
}

// Certificate parses the key pair's leaf certificate.
func (k KeyPair) Certificate() (*x509.Certificate, error) {
	certs, err := ParseCertificates(k.CertPEM)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// NewCA issues a self-signed CA certificate valid from now (less the
// clock-skew allowance) for validity, with a new P-256 key. It may sign
// end-entity certificates only (path length 0).
func NewCA(commonName string, now time.Time, validity time.Duration) (KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return KeyPair{}, err
	}
	template := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return KeyPair{}, fmt.Errorf("sign CA certificate: %w", err)
	}
	return encode(der, key)
}

// IssueServing issues a TLS server certificate for dnsNames (the first is
// also the subject's common name when it fits RFC 5280's 64 characters;
// clients verify the DNS names only) signed by ca, valid from now (less the
// clock-skew allowance) for validity but never past the CA's own expiry,
// with a new P-256 key.
func IssueServing(ca KeyPair, dnsNames []string, now time.Time, validity time.Duration) (KeyPair, error) {
	if len(dnsNames) == 0 {
		return KeyPair{}, errors.New("a serving certificate needs at least one DNS name")
	}
	signer, err := tls.X509KeyPair(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		return KeyPair{}, fmt.Errorf("CA key pair: %w", err)
	}
	caCert, err := x509.ParseCertificate(signer.Certificate[0])
	if err != nil {
		return KeyPair{}, fmt.Errorf("CA certificate: %w", err)
	}
	if !caCert.IsCA {
		return KeyPair{}, errors.New("the CA certificate is not a CA (basicConstraints)")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate serving key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return KeyPair{}, err
	}
	notAfter := now.Add(validity)
	if notAfter.After(caCert.NotAfter) {
		notAfter = caCert.NotAfter
	}
	var subject pkix.Name
	if len(dnsNames[0]) <= 64 {
		subject.CommonName = dnsNames[0]
	}
	template := &x509.Certificate{
		SerialNumber: serial,
		Subject:      subject,
		DNSNames:     slices.Clone(dnsNames),
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     notAfter,
		// ECDSA keys sign the handshake; no key encipherment (RFC 5480).
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, caCert, &key.PublicKey, signer.PrivateKey)
	if err != nil {
		return KeyPair{}, fmt.Errorf("sign serving certificate: %w", err)
	}
	return encode(der, key)
}

// RenewalTime is when a certificate is due for renewal: when 2/3 of its
// lifetime has passed (cert-manager's default).
func RenewalTime(cert *x509.Certificate) time.Time {
	return RenewalBetween(cert.NotBefore, cert.NotAfter)
}

// RenewalBetween is RenewalTime of a certificate valid from notBefore to
// notAfter.
func RenewalBetween(notBefore, notAfter time.Time) time.Time {
	return notAfter.Add(-notAfter.Sub(notBefore) / 3)
}

// Bundle is the PEM bundle of current followed by those of previous that
// are still valid at now and not current itself: clients that trust it
// accept certificates of the new CA and of the ones it replaced, for as
// long as those last.
func Bundle(current []byte, previous []byte, now time.Time) ([]byte, error) {
	currentCerts, err := ParseCertificates(current)
	if err != nil {
		return nil, fmt.Errorf("current CA: %w", err)
	}
	out := bytes.Clone(current)
	if len(previous) == 0 {
		return out, nil
	}
	older, err := ParseCertificates(previous)
	if err != nil {
		return nil, fmt.Errorf("previous CA bundle: %w", err)
	}
	for _, c := range older {
		if !now.Before(c.NotAfter) || slices.ContainsFunc(currentCerts, c.Equal) {
			continue
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: certificateBlock, Bytes: c.Raw})...)
	}
	return out, nil
}

// ParseCertificates parses every CERTIFICATE block of a PEM bundle; it
// fails on none, on a malformed one and on trailing bytes that are not
// PEM.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != certificateBlock {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %d: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("trailing data that is not PEM")
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}

// Verify reports whether leaf is a serving certificate for dnsName signed
// by a CA in the bundle and valid at now.
func Verify(leaf *x509.Certificate, bundle []byte, dnsName string, now time.Time) error {
	roots, err := ParseCertificates(bundle)
	if err != nil {
		return fmt.Errorf("CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	_, err = leaf.Verify(x509.VerifyOptions{DNSName: dnsName, Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

func serialNumber() (*big.Int, error) {
	// 128 random bits: RFC 5280 allows up to 20 octets, and the CA/B
	// Forum asks for at least 64 bits of entropy.
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n, nil
}

func encode(der []byte, key *ecdsa.PrivateKey) (KeyPair, error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return KeyPair{}, fmt.Errorf("encode private key: %w", err)
	}
	return KeyPair{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: certificateBlock, Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: privateKeyBlock, Bytes: keyDER}),
	}, nil
}
