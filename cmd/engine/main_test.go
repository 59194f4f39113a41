package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/internal/testutil"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

func writeFiles(t *testing.T, strength float64, minCohort int) (dir, cfgPath, addr string) {
	t.Helper()
	dir = t.TempDir()
	for name, content := range map[string]string{"token": "rw-secret", "ro": "ro-secret", "key": "0123456789abcdef0123456789abcdef"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	addr = freeAddr(t)
	cfgPath = filepath.Join(dir, config.FileName)
	writeConfig(t, dir, cfgPath, addr, strength, minCohort)
	return dir, cfgPath, addr
}

func writeConfig(t *testing.T, dir, path, addr string, strength float64, minCohort int) {
	t.Helper()
	cfg := config.Config{
		Program: "plaza/calm", Target: config.Vector{Attention: 0.8, Emotion: 0.7, Resilience: 0.7},
		Weights: config.Vector{Attention: 1, Emotion: 1, Resilience: 1}, Interventions: []string{"BodyScan"},
		Strength: config.Strength{Value: strength, Min: 0.1, Max: 0.9}, Context: "Social",
		Privacy:   config.Privacy{Retention: config.Duration{Duration: time.Hour}, MinCohortSize: minCohort},
		TokenFile: filepath.Join(dir, "token"), ReadOnlyTokenFile: filepath.Join(dir, "ro"),
		PseudonymizationKeyFile: filepath.Join(dir, "key"), DataDir: filepath.Join(dir, "data"), ListenAddress: addr,
	}
	data, _ := json.Marshal(cfg)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestInvalidConfigurationNamesTheField(t *testing.T) {
	dir, path, addr := writeFiles(t, 0.5, 11)
	writeConfig(t, dir, path, addr, 0.5, 1)
	err := run(context.Background(), path, "", time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "privacy.minCohortSize") {
		t.Fatalf("err = %v, want one naming privacy.minCohortSize", err)
	}
}

// startEngine runs the engine (run, as main does) on the configuration at
// path, logging to logs (nil: discarded). stop ends it and returns run's
// error; the test's cleanup stops it too and fails on an error.
func startEngine(t *testing.T, path string, reload time.Duration, logs io.Writer) (stop func() error) {
	t.Helper()
	if logs == nil {
		logs = io.Discard
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, path, "", reload, slog.New(slog.NewTextHandler(logs, nil))) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("engine stopped with %v", err)
		}
	})
	return stop
}

func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestEngineServesAndReloadsWithoutRestart(t *testing.T) {
	dir, path, addr := writeFiles(t, 0.5, 11)
	startEngine(t, path, 50*time.Millisecond, nil)
	base := "http://" + addr
	waitFor(t, func() bool { code, _ := get(t, base+"/v1/cohort", "ro-secret"); return code == 200 })

	writeConfig(t, dir, path, addr, 0.65, 11)
	waitFor(t, func() bool {
		_, body := get(t, base+"/v1/cohort", "ro-secret")
		return strings.Contains(body, `"strength":0.65`)
	})

	// An invalid change is rejected, counted, and the last good one stays.
	if err := os.WriteFile(path, []byte(`{"strength": "high"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		_, m := get(t, base+"/metrics", "ro-secret")
		return strings.Contains(m, `attune_engine_config_reload_errors_total{program="plaza/calm"} 1`)
	})
	_, body := get(t, base+"/v1/cohort", "ro-secret")
	if !strings.Contains(body, `"strength":0.65`) {
		t.Errorf("after a bad change: %s", body)
	}
	_, m := get(t, base+"/metrics", "ro-secret")
	if !strings.Contains(m, fmt.Sprintf(`attune_engine_strength{program="plaza/calm"} %v`, 0.65)) {
		t.Error("the strength gauge does not show the reloaded strength")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, 25*time.Millisecond, "condition", func() error {
		if !cond() {
			return errors.New("not met")
		}
		return nil
	})
}
