// Package scaleout runs several real engine processes of one program on
// one PostgreSQL database, as a Deployment with several replicas behind a
// Service would, and drives them over HTTP.
package scaleout

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/attune-io/attune/engine/client"
	engineconfig "github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/telemetry"
	"github.com/attune-io/attune/internal/devstack/engineruntime"
	"github.com/attune-io/attune/internal/devstack/proc"
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
	// Clients call the replicas (Clients[i] replica i) with the read-write
	// token, readOnly with the read-only one. They never retry: the tests
	// count what each replica answered, and a transport error is a batch
	// whose fate is unknown.
	Clients  []*client.Client
	readOnly []*client.Client
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
	r := &Replicas{}
	httpClient := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer func() {
		if err != nil {
			r.Stop() // the replicas started before the failure
		}
	}()
	for i := range n {
		dir := filepath.Join(root, "replica-"+strconv.Itoa(i))
		port, err := proc.FreePort()
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
		rw, err := client.New(p.URL(), client.WithHTTPClient(httpClient), client.WithToken(Token), client.WithRetry(client.NoRetry))
		if err != nil {
			return nil, err
		}
		ro, err := client.New(p.URL(), client.WithHTTPClient(httpClient), client.WithToken(ReadOnlyToken), client.WithRetry(client.NoRetry))
		if err != nil {
			return nil, err
		}
		r.Clients, r.readOnly = append(r.Clients, rw), append(r.readOnly, ro)
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

// Status is the HTTP status of a client call's outcome and the engine's
// error message: 200 when err is nil, the engine's answer for a
// *client.APIError, and err itself when no answer came (status 0).
func Status(err error) (int, string, error) {
	if err == nil {
		return http.StatusOK, "", nil
	}
	var apiErr *client.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Status, apiErr.Error(), nil
	}
	return 0, "", err
}

// Consent gives user every consent scope through replica i.
func (r *Replicas) Consent(i int, user string) error {
	_, err := r.Clients[i].SetConsent(context.Background(), user, telemetry.ScopeBehaviour, telemetry.ScopePhysiology, telemetry.ScopeText, telemetry.ScopeQuestionnaire)
	if err != nil {
		return fmt.Errorf("consent %s via replica %d: %w", user, i, err)
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

// Ingest posts one batch through replica i and returns the status and
// the engine's error message (status 0 with the error when no answer
// came: the batch's fate is unknown).
func (r *Replicas) Ingest(i int, samples []telemetry.Sample) (int, string, error) {
	_, err := r.Clients[i].Ingest(context.Background(), samples)
	return Status(err)
}

// UserState reads a user's state through replica i (status 404: unknown).
func (r *Replicas) UserState(i int, user string) (contract.UserState, int, error) {
	st, err := r.Clients[i].State(context.Background(), user)
	status, _, err := Status(err)
	return st, status, err
}

// CohortOf reads replica i's cohort with the read-only token.
func (r *Replicas) CohortOf(i int) (contract.CohortSummary, error) {
	c, err := r.readOnly[i].Cohort(context.Background())
	if err != nil {
		return contract.CohortSummary{}, fmt.Errorf("cohort via replica %d: %w", i, err)
	}
	return c, nil
}
