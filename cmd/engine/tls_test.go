package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/client"
	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/telemetry"
	"github.com/attune-io/attune/internal/testutil"
)

// engineDNSName is the Service name the test certificates are issued for;
// clients dial 127.0.0.1 and verify this name, as the operator dials pod
// IPs and verifies the Service's name.
const engineDNSName = "calm-engine.plaza.svc"

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf issues a serving certificate for dnsName; it returns the PEM
// certificate and key, as a kubernetes.io/tls Secret holds them.
func (ca *testCA) leaf(t testing.TB, serial int64, dnsName string, notAfter time.Time) keyPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: dnsName},
		NotBefore: notAfter.Add(-48 * time.Hour), NotAfter: notAfter, DNSNames: []string{dnsName},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})}
}

// keyPair is PEM content of tls.crt and tls.key.
type keyPair struct{ cert, key []byte }

// secretVolume lays out files as the kubelet does for a mounted Secret:
// dir/tls.crt -> ..data/tls.crt, ..data -> ..<version>/; put writes a new
// version directory and swaps ..data to it with one rename.
type secretVolume struct {
	dir      string
	versions int
}

func newSecretVolume(t testing.TB, kp keyPair) *secretVolume {
	t.Helper()
	v := &secretVolume{dir: filepath.Join(t.TempDir(), "serving-cert")}
	if err := os.Mkdir(v.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	v.put(t, kp)
	for _, name := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(v.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func (v *secretVolume) put(t testing.TB, kp keyPair) {
	t.Helper()
	v.versions++
	version := fmt.Sprintf("..v%d", v.versions)
	if err := os.Mkdir(filepath.Join(v.dir, version), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{"tls.crt": kp.cert, "tls.key": kp.key} {
		if err := os.WriteFile(filepath.Join(v.dir, version, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(version, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

func (v *secretVolume) certFile() string { return filepath.Join(v.dir, "tls.crt") }
func (v *secretVolume) keyFile() string  { return filepath.Join(v.dir, "tls.key") }

// enableTLS rewrites the engine configuration at path with tls set.
func enableTLS(t testing.TB, path string, v *secretVolume) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg config.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg.TLS = &config.TLS{CertFile: v.certFile(), KeyFile: v.keyFile()}
	data, _ := json.Marshal(cfg)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// servedSerial opens a new connection and returns the serial of the leaf
// the engine presents (verification is the client tests' business here).
func servedSerial(t testing.TB, addr string) int64 {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // reads the served certificate only
	if err != nil {
		return -1
	}
	defer func() { _ = conn.Close() }()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// httpsClient trusts ca and verifies engineDNSName.
func httpsClient(ca *testCA) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.pem)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: engineDNSName, MinVersion: tls.VersionTLS12},
	}}
}

func scrape(t testing.TB, c *http.Client, addr string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer ro-secret")
	resp, err := c.Do(req)
	if err != nil {
		return err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func heartRate(user string, bpm float64) []telemetry.Sample {
	return []telemetry.Sample{{User: user, Kind: telemetry.KindHeartRate, At: time.Now().UTC(), BPM: &bpm}}
}

// TestEngineRotatesCertificateUnderLoad: concurrent clients ingest and
// read the cohort over reused HTTPS connections while the Secret volume
// swaps to a new leaf of the same CA; no request fails, and new
// connections get the new certificate. The expiry gauge follows.
func TestEngineRotatesCertificateUnderLoad(t *testing.T) {
	_, path, addr := writeFiles(t, 0.5, 11)
	ca := newCA(t, "world CA")
	first := time.Now().Add(24 * time.Hour).Truncate(time.Second)
	vol := newSecretVolume(t, ca.leaf(t, 100, engineDNSName, first))
	enableTLS(t, path, vol)
	var logs testutil.LockedBuffer
	startEngine(t, path, 50*time.Millisecond, &logs)
	waitFor(t, func() bool { return servedSerial(t, addr) == 100 })
	if code, _ := get(t, "http://"+addr+"/v1/cohort", "ro-secret"); code == http.StatusOK {
		t.Fatal("plain HTTP answered on the TLS port")
	}
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := client.New("https://"+addr, client.WithCAFile(caFile), client.WithServerName(engineDNSName),
		client.WithToken("rw-secret"), client.WithRetry(client.NoRetry))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 4 {
		if _, err := c.SetConsent(ctx, fmt.Sprintf("u%d", i), telemetry.ScopePhysiology); err != nil {
			t.Fatal(err)
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var requests, failures atomic.Int64
	var firstErr atomic.Value
	for i := range 4 {
		wg.Go(func() {
			user := fmt.Sprintf("u%d", i)
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := c.Ingest(ctx, heartRate(user, 70))
				if err == nil {
					_, err = c.Cohort(ctx)
				}
				requests.Add(2)
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	second := first.Add(24 * time.Hour)
	vol.put(t, ca.leaf(t, 200, engineDNSName, second))
	waitFor(t, func() bool { return servedSerial(t, addr) == 200 })
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d requests failed during the rotation, the first: %v", n, requests.Load(), firstErr.Load())
	}
	if requests.Load() < 20 {
		t.Fatalf("only %d requests: the load did not run", requests.Load())
	}
	// A new client (new connections) verifies the new certificate.
	c2, err := client.New("https://"+addr, client.WithCABundle(ca.pem), client.WithServerName(engineDNSName), client.WithToken("ro-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Cohort(ctx); err != nil {
		t.Fatalf("after the rotation: %v", err)
	}
	m := scrape(t, httpsClient(ca), addr)
	for _, want := range []string{
		fmt.Sprintf(`attune_engine_tls_certificate_expiry_timestamp_seconds{program="plaza/calm"} %g`, float64(second.Unix())),
		`attune_engine_tls_reloads_total{program="plaza/calm"} 1`,
		`attune_engine_tls_reload_failures_total{program="plaza/calm"} 0`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	t.Logf("%d requests during the rotation, none failed", requests.Load())
}

// TestEngineKeepsLastGoodCertificate: a replacement that is not PEM, or
// whose key does not match its certificate, is refused and counted; the
// last good pair keeps serving, and a good one after it is taken.
func TestEngineKeepsLastGoodCertificate(t *testing.T) {
	_, path, addr := writeFiles(t, 0.5, 11)
	ca := newCA(t, "world CA")
	good := ca.leaf(t, 100, engineDNSName, time.Now().Add(24*time.Hour))
	vol := newSecretVolume(t, good)
	enableTLS(t, path, vol)
	var logs testutil.LockedBuffer
	startEngine(t, path, 50*time.Millisecond, &logs)
	waitFor(t, func() bool { return servedSerial(t, addr) == 100 })
	hc := httpsClient(ca)

	other := ca.leaf(t, 300, engineDNSName, time.Now().Add(24*time.Hour))
	for i, bad := range []struct {
		name string
		kp   keyPair
	}{
		{"garbage", keyPair{[]byte("not a certificate"), []byte("not a key")}},
		{"mismatched key", keyPair{other.cert, good.key}},
	} {
		vol.put(t, bad.kp)
		want := fmt.Sprintf(`attune_engine_tls_reload_failures_total{program="plaza/calm"} %d`, i+1)
		waitFor(t, func() bool { return strings.Contains(scrape(t, hc, addr), want) })
		time.Sleep(150 * time.Millisecond) // a few more polls: counted once, not at each poll
		if m := scrape(t, hc, addr); !strings.Contains(m, want) {
			t.Errorf("%s: the failure counter moved on at later polls of the same files", bad.name)
		}
		if s := servedSerial(t, addr); s != 100 {
			t.Fatalf("%s: serving serial %d, want the last good 100", bad.name, s)
		}
	}
	if !strings.Contains(logs.String(), "serving certificate change refused") {
		t.Errorf("the refusal is not logged: %s", logs.String())
	}
	vol.put(t, ca.leaf(t, 400, engineDNSName, time.Now().Add(48*time.Hour)))
	waitFor(t, func() bool { return servedSerial(t, addr) == 400 })
}

// TestEngineCertificateRefusedByClient: the engine serving an expired
// certificate, one for another name, or one from another CA is refused by
// engine/client with the world's CA bundle and the Service name, with a
// certificate verification error, and nothing reaches the store.
func TestEngineCertificateRefusedByClient(t *testing.T) {
	_, path, addr := writeFiles(t, 0.5, 11)
	ca := newCA(t, "world CA")
	vol := newSecretVolume(t, ca.leaf(t, 100, engineDNSName, time.Now().Add(24*time.Hour)))
	enableTLS(t, path, vol)
	startEngine(t, path, 50*time.Millisecond, nil)
	waitFor(t, func() bool { return servedSerial(t, addr) == 100 })
	good, err := client.New("https://"+addr, client.WithCABundle(ca.pem), client.WithServerName(engineDNSName), client.WithToken("rw-secret"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := good.SetConsent(ctx, "u1", telemetry.ScopePhysiology); err != nil {
		t.Fatal(err)
	}

	other := newCA(t, "another CA")
	for i, tc := range []struct {
		name             string
		kp               keyPair
		wantErrSubstring string
	}{
		{"expired", ca.leaf(t, 500, engineDNSName, time.Now().Add(-time.Hour)), "expired"},
		{"wrong name", ca.leaf(t, 501, "evil.example.org", time.Now().Add(24*time.Hour)), engineDNSName},
		{"another CA", other.leaf(t, 502, engineDNSName, time.Now().Add(24*time.Hour)), "unknown authority"},
	} {
		serial := int64(500 + i)
		vol.put(t, tc.kp)
		waitFor(t, func() bool { return servedSerial(t, addr) == serial })
		c, err := client.New("https://"+addr, client.WithCABundle(ca.pem), client.WithServerName(engineDNSName), client.WithToken("rw-secret"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Ingest(ctx, heartRate("u1", 70))
		var verification *tls.CertificateVerificationError
		if !errors.As(err, &verification) || !strings.Contains(err.Error(), tc.wantErrSubstring) {
			t.Errorf("%s: %v, want a certificate verification error naming %q", tc.name, err, tc.wantErrSubstring)
		}
	}
	vol.put(t, ca.leaf(t, 600, engineDNSName, time.Now().Add(24*time.Hour)))
	waitFor(t, func() bool { return servedSerial(t, addr) == 600 })
	state, err := good.State(ctx, "u1")
	if err != nil {
		t.Fatal(err)
	}
	if state.Samples != 0 {
		t.Errorf("a refused request stored %d samples", state.Samples)
	}
	// The same request over the verified connection is stored.
	if _, err := good.Ingest(ctx, heartRate("u1", 70)); err != nil {
		t.Fatal(err)
	}
	if state, err := good.State(ctx, "u1"); err != nil || state.Samples != 1 {
		t.Fatalf("after a good ingest: %+v %v", state, err)
	}
}

// TestEngineWithoutTLSWarns: without tls the engine serves plain HTTP and
// says so; turning tls on in a reloaded configuration is reported as
// taking effect at the next restart, and plain HTTP goes on meanwhile.
func TestEngineWithoutTLSWarns(t *testing.T) {
	_, path, addr := writeFiles(t, 0.5, 11)
	var logs testutil.LockedBuffer
	startEngine(t, path, 50*time.Millisecond, &logs)
	waitFor(t, func() bool { code, _ := get(t, "http://"+addr+"/v1/cohort", "ro-secret"); return code == http.StatusOK })
	if !strings.Contains(logs.String(), "tls is not set: serving plain HTTP") {
		t.Errorf("no warning about plain HTTP: %s", logs.String())
	}
	if _, m := get(t, "http://"+addr+"/metrics", "ro-secret"); strings.Contains(m, "attune_engine_tls_") {
		t.Error("TLS metrics on a plain-HTTP engine (an expiry alert would see a zero)")
	}
	ca := newCA(t, "world CA")
	enableTLS(t, path, newSecretVolume(t, ca.leaf(t, 1, engineDNSName, time.Now().Add(time.Hour))))
	waitFor(t, func() bool {
		return strings.Contains(logs.String(), "tls changes (turning it on or off, other file paths) take effect at the next restart")
	})
	if code, body := get(t, "http://"+addr+"/v1/cohort", "ro-secret"); code != http.StatusOK {
		t.Errorf("plain HTTP after the reload: %d %s", code, body)
	}
}
