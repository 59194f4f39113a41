package client_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
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
)

const (
	rwToken = "rw-token-0123456789"
	roToken = "ro-token-9876543210"
)

// engine is a real engine (service + API over bbolt in a temporary
// directory) served on loopback, as the engine/api tests run it.
type engine struct {
	url string
	srv *httptest.Server
	api *api.Server
	svc *service.Service
}

func engineConfig(worldContext string, minCohort int) *config.Config {
	return &config.Config{
		Program:       "plaza/calm",
		Target:        config.Vector{Attention: 0.8, Emotion: 0.7, Resilience: 0.7},
		Weights:       config.Vector{Attention: 1, Emotion: 1, Resilience: 1},
		Interventions: []string{"BodyScan", "MicroBreak", "ResonanceBreathing"},
		Strength:      config.Strength{Value: 0.5, Min: 0.1, Max: 0.9},
		Context:       worldContext,
		Privacy:       config.Privacy{Retention: config.Duration{Duration: 24 * time.Hour}, MinCohortSize: minCohort},
		TokenFile:     "unused", ReadOnlyTokenFile: "unused", PseudonymizationKeyFile: "unused",
		DataDir: "unused", ListenAddress: "unused", Seed: 42,
	}
}

// newEngineHandler builds the engine's API over a fresh bbolt store.
func newEngineHandler(t testing.TB, cfg *config.Config) (*api.Server, *service.Service) {
	t.Helper()
	db, err := store.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := metrics.New(cfg.Program)
	svc, err := service.New(cfg, service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Metrics: m, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	m.RegisterCohort(svc)
	return api.New(svc, m, api.Tokens{ReadWrite: rwToken, ReadOnly: roToken}, logger), svc
}

// startEngine serves a real engine over plain HTTP on loopback.
func startEngine(t testing.TB, cfg *config.Config) *engine {
	t.Helper()
	h, svc := newEngineHandler(t, cfg)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &engine{url: srv.URL, srv: srv, api: h, svc: svc}
}

// startTLSEngine serves a real engine over HTTPS (httptest's certificate,
// valid for 127.0.0.1 and example.com) on loopback.
func startTLSEngine(t testing.TB, cfg *config.Config) *engine {
	t.Helper()
	h, svc := newEngineHandler(t, cfg)
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	return &engine{url: srv.URL, srv: srv, api: h, svc: svc}
}

func mood(user string, at time.Time, m int) telemetry.Sample {
	return telemetry.Sample{User: user, Kind: telemetry.KindQuestionnaire, At: at, Mood: &m}
}

func questionnaires(user string, n int) []telemetry.Sample {
	now := time.Now().UTC()
	out := make([]telemetry.Sample, n)
	for i := range out {
		brs := []int{1 + i%5, 3, 2 + i%4, 3, 4, 1 + (i+2)%5}
		m := 1 + i%5
		out[i] = telemetry.Sample{User: user, Kind: telemetry.KindQuestionnaire, At: now, BRS: brs, Mood: &m}
	}
	return out
}

// countingTransport counts the requests that reach the network and keeps
// the Content-Type of the telemetry ones.
type countingTransport struct {
	next http.RoundTripper
	n    atomic.Int64

	mu           sync.Mutex
	contentTypes []string // of POST /v1/telemetry, in order
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	if r.URL.Path == "/v1/telemetry" {
		c.mu.Lock()
		c.contentTypes = append(c.contentTypes, r.Header.Get("Content-Type"))
		c.mu.Unlock()
	}
	return c.next.RoundTrip(r)
}

func (c *countingTransport) telemetryContentTypes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.contentTypes)
}
