package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/attune-io/attune/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestTLSHandshakeErrorsLogNoAddress: failed TLS handshakes on a real
// HTTPS server (a peer that speaks no TLS, and a client that does not
// trust the certificate) are counted and logged at debug as "TLS
// handshake refused", with no client address in the log; other net/http
// messages keep their text without the address.
func TestTLSHandshakeErrorsLogNoAddress(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "engine"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	var out testutil.LockedBuffer
	logger := slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	handshakes := prometheus.NewCounter(prometheus.CounterOpts{Name: "handshake_errors_total"})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: serverErrorLog(logger, handshakes),
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })

	// A peer that speaks no TLS.
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write([]byte("\x00\x01garbage, not a TLS record\r\n"))
	_, _ = conn.Read(make([]byte, 64)) // until the server hangs up
	_ = conn.Close()
	// A client that does not trust the certificate.
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("https://" + ln.Addr().String() + "/"); err == nil {
		_ = resp.Body.Close()
		t.Fatal("an untrusted certificate was accepted")
	}
	deadline := time.Now().Add(5 * time.Second)
	// The line is written just after the count: wait for both.
	for (counterValue(t, handshakes) < 2 || strings.Count(out.String(), "TLS handshake refused") < 2) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := counterValue(t, handshakes); n != 2 {
		t.Errorf("%v handshake errors counted, want 2", n)
	}
	logged := out.String()
	if strings.Count(logged, "TLS handshake refused") != 2 || !strings.Contains(logged, `"level":"DEBUG"`) {
		t.Errorf("log %q, want two debug lines \"TLS handshake refused\"", logged)
	}
	if strings.Contains(logged, "127.0.0.1") {
		t.Errorf("the log holds the client's address: %q", logged)
	}

	// Another net/http message: the text stays, the address goes.
	out.Reset()
	srv.ErrorLog.Printf("http: panic serving 127.0.0.1:51234: boom")
	srv.ErrorLog.Printf("http: panic serving [2001:db8::1]:443: boom")
	if logged := out.String(); strings.Contains(logged, "127.0.0.1") || strings.Contains(logged, "2001:db8") ||
		strings.Count(logged, "panic serving a client: boom") != 2 || !strings.Contains(logged, `"level":"WARN"`) {
		t.Errorf("log %q, want the messages at warn without the addresses", logged)
	}
}
