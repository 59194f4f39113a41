package controllers

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"time"

	"k8s.io/utils/lru"

	"github.com/attune-io/attune/internal/pki"
)

// maxCertificateChecks bounds the remembered checks: one per program's
// serving certificate and one per world's CA, with room for twice the
// programs the operator is measured with (docs/scale-out.md).
const maxCertificateChecks = 20_000

// certificateChecks remembers what the program reconciles would otherwise
// work out again from the same PEM bytes every time: parsing, matching a
// key to its certificate and verifying a P-256 signature took a tenth of
// the operator's CPU with 1,000 programs tuning every minute. A result is
// keyed by a SHA-256 digest of everything it depends on (the PEMs, the
// bundle, the names), so a changed Secret, a replaced CA or renamed
// Service is checked afresh; what depends on the time (expiry, renewal)
// is judged at every reconcile from the validity kept. The zero value is
// ready to use.
type certificateChecks struct {
	once    sync.Once
	results *lru.Cache // digest -> checkedCertificate
}

// checkedCertificate is the outcome of the time-independent checks of one
// certificate, with its validity period.
type checkedCertificate struct {
	// sound: it passed every check that does not depend on the time (the
	// zero value: it did not, or did not parse).
	sound               bool
	notBefore, notAfter time.Time
}

func (c *certificateChecks) memo(digest [sha256.Size]byte, check func() checkedCertificate) checkedCertificate {
	c.once.Do(func() { c.results = lru.New(maxCertificateChecks) })
	if v, ok := c.results.Get(digest); ok {
		return v.(checkedCertificate)
	}
	v := check()
	c.results.Add(digest, v)
	return v
}

// digest hashes parts, each preceded by its length so that no two lists
// of parts share a digest.
func digest(kind string, parts ...[]byte) [sha256.Size]byte {
	h := sha256.New()
	for _, p := range append([][]byte{[]byte(kind)}, parts...) {
		h.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(p))))
		h.Write(p)
	}
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// usableCA is the package's usableCA, remembered, with the expiry judged
// at now.
func (c *certificateChecks) usableCA(k pki.KeyPair, now time.Time) bool {
	r := c.memo(digest("ca", k.CertPEM, k.KeyPEM), func() checkedCertificate {
		cert, ok := usableCA(k, time.Time{}) // every time check is made below
		if cert == nil {
			return checkedCertificate{}
		}
		return checkedCertificate{sound: ok, notBefore: cert.NotBefore, notAfter: cert.NotAfter}
	})
	return r.sound && !now.After(r.notAfter)
}

// servingDue is servingSound, remembered, with the renewal judged at now:
// the validity of the serving certificate k (zero when it does not parse)
// and whether it must be issued again (not sound, or 2/3 through its
// lifetime).
func (c *certificateChecks) servingDue(k pki.KeyPair, bundle []byte, names []string, now time.Time) (checkedCertificate, bool) {
	parts := [][]byte{k.CertPEM, k.KeyPEM, bundle}
	for _, n := range names {
		parts = append(parts, []byte(n))
	}
	r := c.memo(digest("serving", parts...), func() checkedCertificate {
		leaf, sound := servingSound(k, bundle, names)
		if leaf == nil {
			return checkedCertificate{}
		}
		return checkedCertificate{sound: sound, notBefore: leaf.NotBefore, notAfter: leaf.NotAfter}
	})
	return r, !r.sound || !now.Before(pki.RenewalBetween(r.notBefore, r.notAfter))
}
