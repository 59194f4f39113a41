package scaleout

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/telemetry"
	"github.com/attune-io/attune/internal/devstack/engineruntime"
	"github.com/attune-io/attune/test/postgres"
)

var engineBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "attune-scaleout-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	engineBinary = filepath.Join(dir, "engine")
	if err := engineruntime.BuildEngine(engineBinary); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// startOnPostgres starts n replicas of one program on a fresh PostgreSQL
// server, the connection string mounted as a Secret would be.
func startOnPostgres(t testing.TB, n, minCohort int) *Replicas {
	t.Helper()
	server := postgres.Start(t)
	secretDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(secretDir, "connectionString"), []byte(server.ConnString), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := Start(engineBinary, t.TempDir(), n, Config(secretDir, minCohort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r
}

// questionnaire is one sample for user, now.
func questionnaire(user string, i int) telemetry.Sample {
	mood := 1 + i%5
	return telemetry.Sample{User: user, Kind: telemetry.KindQuestionnaire, At: time.Now().UTC(),
		BRS: []int{1 + i%5, 3, 2 + i%4, 3, 4, 1 + (i+2)%5}, Mood: &mood}
}

// load posts batches from concurrent workers, spread over the replicas so
// that each user's samples arrive through every replica at once. It counts,
// per user, the samples acknowledged (200) and those whose fate is unknown
// (no answer: the replica died mid-request).
type load struct {
	acked, unknown map[string]int
	mu             sync.Mutex
	perReplica     []atomic.Int64 // acknowledged batches
	failures       atomic.Int64
}

func newLoad(replicas int) *load {
	return &load{acked: map[string]int{}, unknown: map[string]int{}, perReplica: make([]atomic.Int64, replicas)}
}

func (l *load) run(t testing.TB, r *Replicas, users []string, workers, batches int, afterBatch func(worker, batch int)) {
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for b := range batches {
				replica := (w + b) % len(r.Engines)
				var samples []telemetry.Sample
				counts := map[string]int{}
				for k := range 8 {
					user := users[(w*5+b*3+k)%len(users)]
					samples = append(samples, questionnaire(user, b+k))
					counts[user]++
				}
				status, body, err := r.Ingest(replica, samples)
				l.mu.Lock()
				switch {
				case err == nil && status == http.StatusOK:
					for u, n := range counts {
						l.acked[u] += n
					}
					l.perReplica[replica].Add(1)
				case err != nil:
					for u, n := range counts {
						l.unknown[u] += n
					}
					l.failures.Add(1)
				default:
					// An answer other than 200 promises nothing was stored.
					l.failures.Add(1)
					if status != http.StatusServiceUnavailable {
						t.Errorf("replica %d answered %d: %s", replica, status, body)
					}
				}
				l.mu.Unlock()
				if afterBatch != nil {
					afterBatch(w, b)
				}
			}
		})
	}
	wg.Wait()
}

func users(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("player-%03d", i)
	}
	return out
}

// TestReplicasShareOneState: three engines on one database. Concurrent
// telemetry for the same users through different replicas ends with every
// acknowledged sample in every user's state, read the same through every
// replica; the cohort is store-wide and says so; erasure through one
// replica is visible through the others at once.
func TestReplicasShareOneState(t *testing.T) {
	r := startOnPostgres(t, 3, 5)
	all := users(24)
	if err := r.ConsentAll(all); err != nil {
		t.Fatal(err)
	}
	l := newLoad(3)
	l.run(t, r, all, 6, 30, nil)
	if l.failures.Load() > 0 {
		t.Logf("%d batches answered 503 after exhausting retries (nothing stored)", l.failures.Load())
	}
	total := 0
	for _, u := range all {
		total += l.acked[u]
		for replica := range 3 {
			st, status, err := r.UserState(replica, u)
			if err != nil || status != http.StatusOK {
				t.Fatalf("state of %s via replica %d: %d %v", u, replica, status, err)
			}
			if st.Samples != int64(l.acked[u]) {
				t.Errorf("%s via replica %d: state rests on %d samples, %d were acknowledged", u, replica, st.Samples, l.acked[u])
			}
		}
	}
	if total < 6*30*8/2 {
		t.Fatalf("only %d samples acknowledged of %d sent", total, 6*30*8)
	}
	t.Logf("%d samples acknowledged for %d users through 3 replicas", total, len(all))

	for replica := range 3 {
		c, err := r.CohortOf(replica)
		if err != nil {
			t.Fatal(err)
		}
		if c.Scope != "shared" || !c.Published || c.Size == nil || *c.Size != len(all) {
			t.Errorf("cohort via replica %d = %+v (size %v), want shared and published with %d users", replica, c, c.Size, len(all))
		}
	}

	// Erasure through replica 2, then at once through the others.
	if err := r.Clients[2].Erase(context.Background(), all[0]); err != nil {
		t.Fatalf("erase: %v", err)
	}
	for replica := range 2 {
		if _, status, err := r.UserState(replica, all[0]); err != nil || status != http.StatusNotFound {
			t.Errorf("erased user via replica %d: %d %v, want 404", replica, status, err)
		}
		status, _, err := r.Ingest(replica, []telemetry.Sample{questionnaire(all[0], 0)})
		if err != nil || status != http.StatusForbidden {
			t.Errorf("telemetry for an erased user via replica %d: %d %v, want 403 (consent gone)", replica, status, err)
		}
	}
}

// TestKilledReplicaLosesNothingAcknowledged: SIGKILL one of three replicas
// mid-load; every sample any replica acknowledged, the dead one included,
// is in the state afterwards.
func TestKilledReplicaLosesNothingAcknowledged(t *testing.T) {
	r := startOnPostgres(t, 3, 5)
	all := users(12)
	if err := r.ConsentAll(all); err != nil {
		t.Fatal(err)
	}
	l := newLoad(3)
	var once sync.Once
	l.run(t, r, all, 6, 40, func(_, batch int) {
		if batch == 15 {
			once.Do(func() { r.Engines[2].Kill() })
		}
	})
	if l.perReplica[2].Load() == 0 || l.failures.Load() == 0 {
		t.Fatalf("the kill was not mid-load: replica 2 acknowledged %d batches, %d requests failed", l.perReplica[2].Load(), l.failures.Load())
	}
	for _, u := range all {
		st, status, err := r.UserState(0, u)
		if err != nil || status != http.StatusOK {
			t.Fatalf("state of %s: %d %v", u, status, err)
		}
		// A request cut off by the kill may or may not have committed.
		if st.Samples < int64(l.acked[u]) || st.Samples > int64(l.acked[u]+l.unknown[u]) {
			t.Errorf("%s: %d samples stored; acknowledged %d, unanswered %d", u, st.Samples, l.acked[u], l.unknown[u])
		}
	}
	t.Logf("replica 2 acknowledged %d batches before SIGKILL; %d requests failed", l.perReplica[2].Load(), l.failures.Load())
}
