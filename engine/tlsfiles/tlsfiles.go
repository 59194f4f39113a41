// Package tlsfiles serves a TLS key pair from files that may be replaced
// while the process runs: a Kubernetes Secret mounted as a volume (the
// kubelet writes a new timestamped directory and swaps the `..data`
// symlink atomically), or cert-manager's renewals of it.
//
// The pair is handed to crypto/tls through tls.Config.GetCertificate, so
// each new handshake sees the pair in force and connections already open
// keep theirs; no listener is restarted. The files are polled (read and
// compared) rather than watched with inotify, because a symlink swap in a
// parent directory is not an event on the watched path; this follows the
// approach of the Kubernetes API server's dynamic serving certificates
// (k8s.io/apiserver/pkg/server/dynamiccertificates), which also polls the
// content. A replacement that does not load (unreadable, not PEM, a key
// that does not match the certificate) is refused and the last good pair
// keeps serving.
//
// The package has no Kubernetes dependency.
package tlsfiles

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Pair is the key pair in certFile and keyFile (PEM: the certificate chain
// leaf first, and the private key), reloaded by Reload or Watch.
type Pair struct {
	certFile, keyFile string

	current atomic.Pointer[tls.Certificate]

	mu sync.Mutex
	// The content of the pair in force, to notice a change.
	certPEM, keyPEM []byte
	// The last refusal (the content and the error), so that one bad
	// replacement, or a file missing for a while, is reported once and
	// not at every poll.
	failedCert, failedKey []byte
	failedErr             string

	// pause, when set (tests), runs during the swap pause.
	pause func()
}

// Load reads the pair from the files; an error names the file or the
// mismatch.
func Load(certFile, keyFile string) (*Pair, error) {
	p := &Pair{certFile: certFile, keyFile: keyFile}
	if _, err := p.Reload(); err != nil {
		return nil, err
	}
	return p, nil
}

// swapPause is how long Reload waits before reading the files again when
// they do not make a pair: the two files are read one after the other,
// so a kubelet swap between the reads pairs the old certificate with the
// new key; a second read after the swap sees both new.
const swapPause = 200 * time.Millisecond

// Reload reads the files and, when their content changed since the pair
// in force was loaded, puts the new pair in force. changed is true when a
// new pair was put in force. An error means the files changed to
// something that does not load (read twice, swapPause apart, before it
// is refused) or cannot be read; the pair in force stays, and the same
// refusal is not reported again. An expired certificate is put in force
// like any other (clients refuse it, and the expiry gauge shows it).
func (p *Pair) Reload() (changed bool, err error) {
	certPEM, keyPEM, err := p.read()
	if err != nil {
		return false, p.refuse(nil, nil, err)
	}
	if p.inForce(certPEM, keyPEM) {
		return false, nil
	}
	cert, err := p.parse(certPEM, keyPEM)
	if err != nil {
		// Perhaps a swap between the two reads: once more.
		time.Sleep(swapPause)
		if p.pause != nil {
			p.pause()
		}
		if certPEM, keyPEM, err = p.read(); err != nil {
			return false, p.refuse(nil, nil, err)
		}
		if p.inForce(certPEM, keyPEM) {
			return false, nil
		}
		if cert, err = p.parse(certPEM, keyPEM); err != nil {
			return false, p.refuse(certPEM, keyPEM, err)
		}
	}
	p.mu.Lock()
	p.certPEM, p.keyPEM = certPEM, keyPEM
	p.failedCert, p.failedKey, p.failedErr = nil, nil, ""
	p.mu.Unlock()
	p.current.Store(&cert)
	return true, nil
}

// read reads the two files.
func (p *Pair) read() (certPEM, keyPEM []byte, err error) {
	if certPEM, err = os.ReadFile(p.certFile); err != nil {
		return nil, nil, fmt.Errorf("certificate file: %w", err)
	}
	if keyPEM, err = os.ReadFile(p.keyFile); err != nil {
		return nil, nil, fmt.Errorf("key file: %w", err)
	}
	return certPEM, keyPEM, nil
}

// inForce reports whether the content is the pair in force (and, if so,
// forgets the last refusal).
func (p *Pair) inForce(certPEM, keyPEM []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	same := p.current.Load() != nil && bytes.Equal(certPEM, p.certPEM) && bytes.Equal(keyPEM, p.keyPEM)
	if same {
		p.failedCert, p.failedKey, p.failedErr = nil, nil, ""
	}
	return same
}

// parse loads the pair from PEM.
func (p *Pair) parse(certPEM, keyPEM []byte) (tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return cert, fmt.Errorf("key pair %s, %s: %w", p.certFile, p.keyFile, err)
	}
	if cert.Leaf == nil { // X509KeyPair fills it since Go 1.23; kept for clarity
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return cert, fmt.Errorf("certificate %s: %w", p.certFile, err)
		}
	}
	return cert, nil
}

// refuse returns err unless it repeats the last refusal (the same content,
// nil for an unreadable file, and the same error), which it returns as nil.
// Before a pair is in force (Load) every error is returned.
func (p *Pair) refuse(certPEM, keyPEM []byte, err error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.current.Load() != nil && err.Error() == p.failedErr &&
		bytes.Equal(certPEM, p.failedCert) && bytes.Equal(keyPEM, p.failedKey) {
		return nil
	}
	p.failedCert, p.failedKey, p.failedErr = certPEM, keyPEM, err.Error()
	return err
}

// Certificate is the pair in force.
func (p *Pair) Certificate() *tls.Certificate { return p.current.Load() }

// Leaf is the leaf certificate in force (its serial, names and NotAfter).
func (p *Pair) Leaf() *x509.Certificate { return p.current.Load().Leaf }

// GetCertificate is the tls.Config hook: the pair in force at each
// handshake.
func (p *Pair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return p.current.Load(), nil
}

// ServerConfig is a server tls.Config serving the pair: TLS 1.2 or later,
// Go's default cipher suites and curves.
func (p *Pair) ServerConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: p.GetCertificate}
}

// Watch calls Reload every interval until ctx ends, calling loaded with
// the new leaf after each change put in force and failed with each
// refused replacement.
func (p *Pair) Watch(ctx context.Context, interval time.Duration, loaded func(*x509.Certificate), failed func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := p.Reload()
		switch {
		case err != nil:
			failed(err)
		case changed:
			loaded(p.Leaf())
		}
	}
}
