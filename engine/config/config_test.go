package config

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attune-io/attune/internal/testutil"
)

const valid = `{
  "program": "plaza/calm",
  "target": {"attention": 0.8, "emotion": 0.7, "resilience": 0.7},
  "weights": {"attention": 1, "emotion": 1, "resilience": 1},
  "interventions": ["BodyScan", "MicroBreak"],
  "strength": {"value": 0.5, "min": 0.1, "max": 0.9},
  "context": "Social",
  "privacy": {"retention": "720h", "minCohortSize": 11},
  "tokenFile": "/t", "readOnlyTokenFile": "/r", "pseudonymizationKeyFile": "/k",
  "dataDir": "/d", "listenAddress": ":8080"
}`

func TestParseValid(t *testing.T) {
	c, err := Parse([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if c.Privacy.Retention.Duration != 720*time.Hour || c.Strength.Value != 0.5 {
		t.Errorf("parsed %+v", c)
	}
}

func TestParseNamesTheField(t *testing.T) {
	cases := map[string]struct{ from, to, field string }{
		"target out of range":      {`"attention": 0.8`, `"attention": 1.8`, "target.attention"},
		"weights all zero":         {`"weights": {"attention": 1, "emotion": 1, "resilience": 1}`, `"weights": {"attention": 0, "emotion": 0, "resilience": 0}`, "weights"},
		"strength outside":         {`"value": 0.5`, `"value": 0.95`, "strength"},
		"unknown intervention":     {`"MicroBreak"`, `"Hypnosis"`, "interventions[1]"},
		"unknown context":          {`"Social"`, `"Casino"`, "context"},
		"k below 2":                {`"minCohortSize": 11`, `"minCohortSize": 1`, "privacy.minCohortSize"},
		"missing data dir":         {`"dataDir": "/d"`, `"dataDir": ""`, "dataDir"},
		"wrong type":               {`"minCohortSize": 11`, `"minCohortSize": "eleven"`, "privacy.minCohortSize"},
		"unknown store":            {`"dataDir": "/d"`, `"dataDir": "/d", "store": {"type": "Redis"}`, "store.type"},
		"postgres, no secret":      {`"dataDir": "/d"`, `"dataDir": "/d", "store": {"type": "PostgreSQL"}`, "store.postgres.secretDir"},
		"embedded with secret":     {`"dataDir": "/d"`, `"dataDir": "/d", "store": {"type": "Embedded", "postgres": {"secretDir": "/s"}}`, "store.postgres"},
		"state decay under 1s":     {`"dataDir": "/d"`, `"dataDir": "/d", "estimation": {"stateDecay": "500ms"}`, "estimation.stateDecay"},
		"trait decay above a year": {`"dataDir": "/d"`, `"dataDir": "/d", "estimation": {"traitDecay": "9000h"}`, "estimation.traitDecay"},
		"negative stress recovery": {`"dataDir": "/d"`, `"dataDir": "/d", "estimation": {"stressRecovery": "-1s"}`, "estimation.stressRecovery"},
		"relative backup token":    {`"dataDir": "/d"`, `"dataDir": "/d", "backupTokenFile": "backup/token"`, "backupTokenFile"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(strings.Replace(valid, tc.from, tc.to, 1)))
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("err = %v, want a FieldError naming %s", err, tc.field)
			}
		})
	}
	if _, err := Parse([]byte(strings.Replace(valid, `"context"`, `"contxt"`, 1))); err == nil || !strings.Contains(err.Error(), "contxt") {
		t.Errorf("unknown field: err = %v, want it named", err)
	}
}

// TestEstimationRoundTrips: the estimation time constants the operator
// renders parse back, and an omitted block stays omitted (the defaults).
func TestEstimationRoundTrips(t *testing.T) {
	c, err := Parse([]byte(strings.Replace(valid, `"dataDir": "/d"`, `"dataDir": "/d", "estimation": {"stateDecay": "6s", "traitDecay": "1h7m", "stressRecovery": "2s"}`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	want := Estimation{StateDecay: Duration{6 * time.Second}, TraitDecay: Duration{67 * time.Minute}, StressRecovery: Duration{2 * time.Second}}
	if c.Estimation != want {
		t.Fatalf("estimation = %+v, want %+v", c.Estimation, want)
	}
	out, err := c.Render()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(out)
	if err != nil || back.Estimation != want {
		t.Fatalf("after rendering: %+v, %v", back.Estimation, err)
	}
	plain, _ := Parse([]byte(valid))
	if out, _ := plain.Render(); strings.Contains(string(out), "estimation") {
		t.Errorf("an omitted estimation block was rendered:\n%s", out)
	}
}

func TestRestartHashIgnoresStrengthOnly(t *testing.T) {
	a, _ := Parse([]byte(valid))
	b, _ := Parse([]byte(valid))
	b.Strength.Value = 0.7
	if a.RestartHash() != b.RestartHash() {
		t.Error("a strength change changed the restart hash")
	}
	b.Target.Emotion = 0.2
	if a.RestartHash() == b.RestartHash() {
		t.Error("a target change kept the restart hash")
	}
	// The store is opened at start: changing it must roll the pods.
	c, _ := Parse([]byte(valid))
	c.Store = Store{Type: StorePostgreSQL, Postgres: &PostgresStore{SecretDir: "/etc/attune/postgres"}}
	if a.RestartHash() == c.RestartHash() {
		t.Error("a store change kept the restart hash")
	}
}

// writeLikeKubelet publishes content the way the kubelet updates a
// ConfigMap volume: a new timestamped directory, then an atomic rename of
// the ..data symlink; the file itself is a symlink through ..data.
func writeLikeKubelet(t *testing.T, dir, content string) {
	t.Helper()
	version := filepath.Join(dir, "..v"+time.Now().Format("150405.000000000"))
	if err := os.Mkdir(version, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(version, FileName), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(version), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, FileName)
	if _, err := os.Lstat(link); err != nil {
		if err := os.Symlink(filepath.Join("..data", FileName), link); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWatchAppliesGoodAndKeepsLastGoodOnBad(t *testing.T) {
	dir := t.TempDir()
	writeLikeKubelet(t, dir, valid)
	path := filepath.Join(dir, FileName)
	initial, _ := os.ReadFile(path)
	var strength atomic.Value
	var failures atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Watch(ctx, path, 20*time.Millisecond, initial,
		func(c *Config, _ []byte) { strength.Store(c.Strength.Value) },
		func(error) { failures.Add(1) })

	writeLikeKubelet(t, dir, strings.Replace(valid, `"value": 0.5`, `"value": 0.6`, 1))
	waitFor(t, func() bool { v, _ := strength.Load().(float64); return v == 0.6 })

	writeLikeKubelet(t, dir, strings.Replace(valid, `"value": 0.5`, `"value": 7`, 1))
	waitFor(t, func() bool { return failures.Load() == 1 })
	if v := strength.Load().(float64); v != 0.6 {
		t.Errorf("after a bad change the strength is %v, want the last good 0.6", v)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, "condition", func() error {
		if !cond() {
			return errors.New("not met")
		}
		return nil
	})
}
