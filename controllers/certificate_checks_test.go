package controllers

import (
	"testing"
	"time"

	"github.com/attune-io/attune/internal/pki"
)

// TestRememberedCertificateChecksFollowTheirInputs: the remembered checks
// agree with the checks made afresh (crypto/x509's verification and
// tls.X509KeyPair's key match, the ground truth) for a sound certificate,
// one of another CA, one with a foreign key and one with other names; each
// distinct input is checked once, and renewal is judged from the time
// given, not the time of the first check.
func TestRememberedCertificateChecksFollowTheirInputs(t *testing.T) {
	at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	names := []string{"calm-engine", "calm-engine.games", "calm-engine.games.svc", "calm-engine.games.svc.cluster.local"}
	ca, err := pki.NewCA("attune-ca games", at, pki.CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := pki.NewCA("attune-ca other", at, pki.CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := pki.IssueServing(ca, names, at, pki.ServingValidity)
	if err != nil {
		t.Fatal(err)
	}
	fromOther, err := pki.IssueServing(otherCA, names, at, pki.ServingValidity)
	if err != nil {
		t.Fatal(err)
	}
	foreignKey := pki.KeyPair{CertPEM: serving.CertPEM, KeyPEM: fromOther.KeyPEM}

	cases := []struct {
		name   string
		k      pki.KeyPair
		names  []string
		bundle []byte
		sound  bool
	}{
		{"sound", serving, names, ca.CertPEM, true},
		{"another CA's bundle", serving, names, otherCA.CertPEM, false},
		{"issued by another CA", fromOther, names, ca.CertPEM, false},
		{"a foreign key", foreignKey, names, ca.CertPEM, false},
		{"other names", serving, names[:3], ca.CertPEM, false},
		{"nothing", pki.KeyPair{}, names, ca.CertPEM, false},
	}
	var checks certificateChecks
	for round := range 2 { // the second round is answered from memory
		for _, c := range cases {
			_, fresh := servingSound(c.k, c.bundle, c.names)
			if fresh != c.sound {
				t.Fatalf("%s: checked afresh, sound = %v, want %v", c.name, fresh, c.sound)
			}
			validity, due := checks.servingDue(c.k, c.bundle, c.names, at)
			if due == c.sound || validity.sound != c.sound {
				t.Fatalf("round %d, %s: due = %v, sound = %v; want due = %v", round, c.name, due, validity.sound, !c.sound)
			}
		}
		if got := checks.results.Len(); got != len(cases) {
			t.Fatalf("round %d: %d remembered checks, want one per distinct input (%d)", round, got, len(cases))
		}
	}

	leaf, err := serving.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	renewal := pki.RenewalTime(leaf)
	if _, due := checks.servingDue(serving, ca.CertPEM, names, renewal.Add(-time.Second)); due {
		t.Fatal("due a second before its renewal time")
	}
	if _, due := checks.servingDue(serving, ca.CertPEM, names, renewal); !due {
		t.Fatal("not due at its renewal time")
	}

	caCert, err := ca.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	if !checks.usableCA(ca, at) || checks.usableCA(ca, caCert.NotAfter.Add(time.Second)) {
		t.Fatal("the CA is usable only until it expires")
	}
	if checks.usableCA(pki.KeyPair{CertPEM: ca.CertPEM, KeyPEM: otherCA.KeyPEM}, at) || checks.usableCA(serving, at) {
		t.Fatal("a CA with a foreign key, or a serving certificate, passed as a usable CA")
	}
}
