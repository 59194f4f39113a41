package controllers

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attune-io/attune/internal/pki"
)

// transportServer serves HTTPS on loopback with a certificate for names
// from ca, counting the connections it accepts.
func transportServer(t *testing.T, ca pki.KeyPair, names ...string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	now := time.Now()
	serving, err := pki.IssueServing(ca, names, now, pki.ServingValidity)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(serving.CertPEM, serving.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func readOnce(t *testing.T, tr *http.Transport, url string) error {
	t.Helper()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	buf := make([]byte, 8)
	_, _ = resp.Body.Read(buf)
	return nil
}

// Reads of one program's engines reuse a kept-alive connection, verified
// for the program's server name against the world's bundle; a changed
// bundle gets a new transport, and another name never shares one.
func TestEngineTransportsReuseConnectionsPerNameAndBundle(t *testing.T) {
	now := time.Now()
	ca, err := pki.NewCA("attune-ca test", now, pki.CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	const name = "calm-engine.harbor.svc"
	srv, conns := transportServer(t, ca, name)
	cache := newTransportCache(2)

	tr, err := cache.get(name, ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		again, err := cache.get(name, ca.CertPEM)
		if err != nil || again != tr {
			t.Fatalf("get for the same name and bundle: %p, %v; want the cached %p", again, err, tr)
		}
		if err := readOnce(t, again, srv.URL); err != nil {
			t.Fatalf("read: %v", err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("three reads opened %d connections, want 1 (kept alive)", n)
	}

	// Another program's name at the same address: its own transport,
	// and the certificate (for name) is refused for it.
	other, err := cache.get("other-engine.harbor.svc", ca.CertPEM)
	if err != nil || other == tr {
		t.Fatalf("another name shares the transport (%v)", err)
	}
	var hostname x509.HostnameError
	if err := readOnce(t, other, srv.URL); !errors.As(err, &hostname) {
		t.Errorf("read for another name: %v, want a hostname error", err)
	}

	// A new CA in the bundle: a new transport, and the server's
	// certificate from the old CA is refused once the bundle drops it.
	newCA, err := pki.NewCA("attune-ca test 2", now, pki.CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := cache.get(name, newCA.CertPEM)
	if err != nil || rotated == tr {
		t.Fatalf("a changed bundle kept the transport (%v)", err)
	}
	var unknown x509.UnknownAuthorityError
	if err := readOnce(t, rotated, srv.URL); !errors.As(err, &unknown) {
		t.Errorf("read with a bundle without the server's CA: %v, want an unknown authority error", err)
	}

	// Bounded: a third name evicts the least recently used.
	if _, err := cache.get("third-engine.harbor.svc", ca.CertPEM); err != nil {
		t.Fatal(err)
	}
	if n := cache.order.Len(); n != 2 {
		t.Errorf("cache holds %d transports, want at most 2", n)
	}
	if _, ok := cache.entries["other-engine.harbor.svc"]; ok {
		t.Error("the least recently used transport was kept")
	}

	if _, err := cache.get(name, []byte("not a certificate")); err == nil {
		t.Error("a bundle without certificates was accepted")
	}
}
