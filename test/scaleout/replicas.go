// Package scaleout runs several real engine processes of one program on
// one PostgreSQL database, as a Deployment with several replicas behind a
// Service would, and drives them over HTTP.
package scaleout

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	engineconfig "github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/internal/testutil"
	"github.com/attune-io/attune/test/engineruntime"
)

// Tokens the replicas accept.
const (
	Token         = "scale-out-read-write-token"
	ReadOnlyToken = "scale-out-read-only-token"
)

// Program is the program every replica serves.
const Program = "plaza/calm"

// Replicas are engine processes of one program.
type Replicas struct {
	Engines []*engineruntime.Process
	client  *http.Client
}

// Config is the engine configuration the replicas share; postgresDir is
// the mounted Secret's directory, empty for the embedded store.
func Config(postgresDir string, minCohort int) *engineconfig.Config {
	cfg := &engineconfig.Config{
		Program:       Program,
		Target:        engineconfig.Vector{Attention: 0.8, Emotion: 0.7, Resilience: 0.7},
		Weights:       engineconfig.Vector{Attention: 1, Emotion: 1, Resilience: 1},
		Interventions: []string{"BodyScan", "MicroBreak", "ResonanceBreathing"},
		Strength:      engineconfig.Strength{Value: 0.5, Min: 0.1, Max: 0.9},
		Context:       "Social",
		Privacy:       engineconfig.Privacy{Retention: engineconfig.Duration{Duration: 24 * time.Hour}, MinCohortSize: minCohort},
		Seed:          7,
	}
	if postgresDir != "" {
		cfg.Store = engineconfig.Store{Type: engineconfig.StorePostgreSQL, Postgres: &engineconfig.PostgresStore{SecretDir: postgresDir}}
	}
	return cfg
}

// Start launches n replicas of binary with cfg, each in its own directory
// under root (its own data directory, the same key and tokens).
func Start(binary, root string, n int, cfg *engineconfig.Config) (_ *Replicas, err error) {
	r := &Replicas{client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	defer func() {
		if err != nil {
			r.Stop() // the replicas started before the failure
		}
	}()
	for i := range n {
		dir := filepath.Join(root, "replica-"+strconv.Itoa(i))
		port, err := testutil.FreePort()
		if err != nil {
			return nil, err
		}
		c := *cfg
		c.TokenFile = filepath.Join(dir, "token", "token")
		c.ReadOnlyTokenFile = filepath.Join(dir, "token", "read-only-token")
		c.PseudonymizationKeyFile = filepath.Join(dir, "key", "key")
		c.DataDir = filepath.Join(dir, "data")
		c.ListenAddress = "127.0.0.1:" + strconv.Itoa(port)
		rendered, err := c.Render()
		if err != nil {
			return nil, err
		}
		files := map[string][]byte{
			filepath.Join("config", engineconfig.FileName): rendered,
			filepath.Join("token", "token"):                []byte(Token),
			filepath.Join("token", "read-only-token"):      []byte(ReadOnlyToken),
			filepath.Join("key", "key"):                    []byte("0123456789abcdef0123456789abcdef"),
		}
		for name, content := range files {
			path := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return nil, err
			}
			if err := os.WriteFile(path, content, 0o600); err != nil {
				return nil, err
			}
		}
		p, err := engineruntime.Launch(binary, dir, "127.0.0.1", port)
		if err != nil {
			return nil, fmt.Errorf("replica %d: %w", i, err)
		}
		r.Engines = append(r.Engines, p)
	}
	return r, nil
}

// Stop ends every replica still running.
func (r *Replicas) Stop() {
	for _, p := range r.Engines {
		if !p.Exited() {
			p.Stop()
		}
	}
}

// Do sends a request to replica i and returns the status and body.
func (r *Replicas) Do(i int, method, path, token string, body any) (int, []byte, error) {
	var reader io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		reader = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, r.Engines[i].URL()+path, reader)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// Consent gives user every consent scope through replica i.
func (r *Replicas) Consent(i int, user string) error {
	status, body, err := r.Do(i, http.MethodPost, "/v1/users/"+user+"/consent", Token, map[string]any{"scopes": []string{"behaviour", "physiology", "text"}})
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("consent %s via replica %d: %d %s", user, i, status, body)
	}
	return nil
}

// ConsentAll gives every user consent, through the replicas in turn.
func (r *Replicas) ConsentAll(users []string) error {
	for i, u := range users {
		if err := r.Consent(i%len(r.Engines), u); err != nil {
			return err
		}
	}
	return nil
}

// State is the part of GET /v1/users/{id}/state the tests read.
type State struct {
	Samples int64    `json:"samples"`
	Loss    *float64 `json:"loss"`
}

// UserState reads a user's state through replica i (status 404: unknown).
func (r *Replicas) UserState(i int, user string) (State, int, error) {
	status, body, err := r.Do(i, http.MethodGet, "/v1/users/"+user+"/state", Token, nil)
	if err != nil || status != http.StatusOK {
		return State{}, status, err
	}
	var st State
	err = json.Unmarshal(body, &st)
	return st, status, err
}

// Cohort is the part of GET /v1/cohort the tests read.
type Cohort struct {
	Published bool   `json:"published"`
	Size      *int   `json:"size"`
	Scope     string `json:"scope"`
}

// CohortOf reads replica i's cohort with the read-only token.
func (r *Replicas) CohortOf(i int) (Cohort, error) {
	status, body, err := r.Do(i, http.MethodGet, "/v1/cohort", ReadOnlyToken, nil)
	if err != nil {
		return Cohort{}, err
	}
	if status != http.StatusOK {
		return Cohort{}, fmt.Errorf("cohort via replica %d: %d %s", i, status, body)
	}
	var c Cohort
	err = json.Unmarshal(body, &c)
	return c, err
}
