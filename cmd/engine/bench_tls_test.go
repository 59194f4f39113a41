package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/api"
	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/metrics"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/engine/telemetry"
	"github.com/attune-io/attune/engine/tlsfiles"
)

// ingestVariant is one way of serving and calling the ingest path.
type ingestVariant struct {
	name    string
	handler http.Handler
	tls     *tls.Config   // server side; nil: plain HTTP
	client  *http.Client  // reused across the run
	url     string        // filled in once listening
	done    atomic.Int64  // samples acknowledged
	errs    atomic.Int64  // failed requests
	busy    time.Duration // time measured
	rounds  []float64     // samples/s of each round
}

// BenchmarkIngestTLS measures the cost of the TLS handshake and of the
// token check on POST /v1/telemetry, in one run on one engine, with 8
// concurrent clients sending 10-sample batches. The store is bbolt with
// store.WithoutCommit (each batch is applied in a transaction that is
// rolled back), so neither the commit's fsync hides the transport's cost
// nor a growing file stalls some rounds; the durable store makes every
// ratio below closer to 1:
//
//   - bare: the ingest handler's work (decode, IngestBatch, JSON answer)
//     without the API server's middleware: no token check (the baseline);
//   - http-token: the API server over plain HTTP (token check, scope,
//     metrics, per-client limit), connections reused;
//   - https-token: the same over HTTPS (TLS 1.3, ECDSA P-256), connections
//     reused;
//   - https-newconn: HTTPS with a new connection (full handshake) for each
//     request.
//
// The variants alternate in short rounds so that a busy machine weighs on
// them alike. Figures: samples/s of each over the whole run, and the
// median over the rounds of its ratio to bare in the same round (robust to
// a round slowed by other processes). Run with `make bench-tls`; the goal
// is https-token/bare ≥ 0.9.
func BenchmarkIngestTLS(b *testing.B) {
	const clients, batchSize, rounds, users = 8, 10, 32, 400
	round := 120 * time.Millisecond
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := &config.Config{
		Program: "plaza/calm", Target: config.Vector{Attention: 0.8, Emotion: 0.7, Resilience: 0.7},
		Weights: config.Vector{Attention: 1, Emotion: 1, Resilience: 1}, Interventions: []string{"BodyScan"},
		Strength: config.Strength{Value: 0.5, Min: 0.1, Max: 0.9}, Context: "Social",
		Privacy: config.Privacy{Retention: config.Duration{Duration: time.Hour}, MinCohortSize: 11},
	}
	db, err := store.OpenBolt(b.TempDir(), store.WithoutCommit())
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	m := metrics.New(cfg.Program)
	svc, err := service.New(cfg, service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Metrics: m, Logger: logger})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := range users {
		if _, err := svc.SetConsent(ctx, fmt.Sprintf("u%d", i), []telemetry.Scope{telemetry.ScopePhysiology}); err != nil {
			b.Fatal(err)
		}
	}
	apiServer := api.New(svc, m, api.Tokens{ReadWrite: "rw-secret", ReadOnly: "ro-secret"}, logger)
	bareHandler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		samples, err := telemetry.DecodeBatch(r.Body, false)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		res, _, err := svc.IngestBatch(r.Context(), samples, service.BatchID{})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(res)
	})

	ca := newCA(b, "bench CA")
	kp := ca.leaf(b, 2, engineDNSName, time.Now().Add(time.Hour))
	vol := newSecretVolume(b, kp)
	pair, err := tlsfiles.Load(vol.certFile(), vol.keyFile())
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.pem)
	clientTLS := &tls.Config{RootCAs: pool, ServerName: engineDNSName, MinVersion: tls.VersionTLS12}
	transport := func(keepAlive bool) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: clientTLS.Clone(), MaxIdleConnsPerHost: clients, DisableKeepAlives: !keepAlive,
		}}
	}
	variants := []*ingestVariant{
		{name: "bare", handler: bareHandler, client: transport(true)},
		{name: "http-token", handler: apiServer, client: transport(true)},
		{name: "https-token", handler: apiServer, tls: pair.ServerConfig(), client: transport(true)},
		{name: "https-newconn", handler: apiServer, tls: pair.ServerConfig(), client: transport(false)},
	}
	for _, v := range variants {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := &http.Server{Handler: v.handler, ReadHeaderTimeout: 5 * time.Second}
		scheme := "http"
		if v.tls != nil {
			scheme, l = "https", tls.NewListener(l, v.tls)
		}
		go func() { _ = srv.Serve(l) }()
		defer func() { _ = srv.Close() }()
		v.url = scheme + "://" + l.Addr().String() + "/v1/telemetry"
	}

	bodies := make([][]byte, users)
	for i := range bodies {
		batch := make([]telemetry.Sample, batchSize)
		for j := range batch {
			bpm := 60 + float64(j)
			batch[j] = telemetry.Sample{User: fmt.Sprintf("u%d", i), Kind: telemetry.KindHeartRate, At: time.Now().UTC(), BPM: &bpm}
		}
		bodies[i], _ = json.Marshal(batch)
	}
	send := func(v *ingestVariant, body []byte) {
		req, _ := http.NewRequest(http.MethodPost, v.url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer rw-secret")
		resp, err := v.client.Do(req)
		if err != nil {
			v.errs.Add(1)
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			v.errs.Add(1)
			return
		}
		v.done.Add(batchSize)
	}
	measure := func(v *ingestVariant, d time.Duration, count bool) {
		before := v.done.Load()
		start := time.Now()
		deadline := start.Add(d)
		var wg sync.WaitGroup
		var next atomic.Int64
		for range clients {
			wg.Go(func() {
				for time.Now().Before(deadline) {
					send(v, bodies[next.Add(1)%users])
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		if !count {
			v.done.Store(0)
			v.errs.Store(0)
			return
		}
		v.busy += elapsed
		v.rounds = append(v.rounds, float64(v.done.Load()-before)/elapsed.Seconds())
	}
	for _, v := range variants { // warm-up: first connections, the store's pages
		measure(v, 100*time.Millisecond, false)
	}
	b.ResetTimer()
	for range b.N {
		for r := range rounds {
			// Each round starts with another variant, so none always
			// follows the garbage and closed connections of the same one.
			for i := range variants {
				measure(variants[(r+i)%len(variants)], round, true)
			}
		}
	}
	b.StopTimer()
	rate := func(v *ingestVariant) float64 { return float64(v.done.Load()) / v.busy.Seconds() }
	bare := variants[0]
	for _, v := range variants {
		if n := v.errs.Load(); n > 0 {
			b.Errorf("%s: %d failed requests", v.name, n)
		}
		ratios := make([]float64, len(v.rounds))
		for i := range ratios {
			ratios[i] = v.rounds[i] / bare.rounds[i]
		}
		slices.Sort(ratios)
		median := ratios[len(ratios)/2]
		b.Logf("%-14s %9.0f samples/s  median ×%.3f of bare (rounds ×%.3f–×%.3f)", v.name, rate(v), median, ratios[0], ratios[len(ratios)-1])
		b.ReportMetric(rate(v), v.name+"-samples/s")
		if v != bare {
			b.ReportMetric(median, v.name+"/bare")
		}
	}
}
