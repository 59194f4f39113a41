package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/telemetry"
)

// ingestClient is one client of TestAcknowledgedIngestSurvivesKill9: it
// owns two users, and every batch it sends carries samples of both, a
// different number for each, so a batch stored in part shows in either
// user's count.
type ingestClient struct {
	users [2]string
	// acked counts each user's samples in batches answered 200.
	acked [2]int64
	// pending is the batch in flight at the kill (nil: none), its fate
	// unknown until the restarted engine is asked.
	pending *pendingIngest
	sent    int
}

type pendingIngest struct {
	key     string
	samples []telemetry.Sample
	counts  [2]int64
}

// batch builds the client's next batch: n questionnaire samples for its
// first user and n+1 for its second.
func (c *ingestClient) batch(rng *rand.Rand, now time.Time) *pendingIngest {
	n := 1 + rng.IntN(3)
	p := &pendingIngest{key: fmt.Sprintf("%s-batch-%d", c.users[0], c.sent), counts: [2]int64{int64(n), int64(n + 1)}}
	for u, count := range p.counts {
		for k := range count {
			mood := 1 + int(k)%5
			p.samples = append(p.samples, telemetry.Sample{User: c.users[u], Kind: telemetry.KindQuestionnaire,
				At: now.Add(-time.Duration(k+1) * time.Second), Mood: &mood, BRS: []int{4, 2, 4, 2, 3, 2}})
		}
	}
	c.sent++
	return p
}

// TestAcknowledgedIngestSurvivesKill9 runs a real engine process (bbolt,
// encrypted at rest) under concurrent ingest, where commits share
// transactions and fsyncs (the group commit), kills it with SIGKILL at a
// random moment, restarts it on the same data directory, and checks, for
// every client's two users, that every sample of every batch answered 200
// is stored and that the batch in flight at the kill is stored whole or
// not at all (never one user's part without the other's). The in-flight
// batch is then sent again with its Idempotency-Key: a batch the killed
// engine had committed is answered from its record (replayed, the same
// count) and stored once; one it had not is stored now. Three kills.
func TestAcknowledgedIngestSurvivesKill9(t *testing.T) {
	const clients, rounds = 24, 3
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 19))
	t.Logf("seed %d", seed)
	e := newProcessEngine(t, "")
	ctx := context.Background()
	e.start()
	all := make([]*ingestClient, clients)
	var wg sync.WaitGroup
	for i := range all {
		c := &ingestClient{users: [2]string{fmt.Sprintf("gc-%02d-a", i), fmt.Sprintf("gc-%02d-b", i)}}
		all[i] = c
		wg.Go(func() {
			for _, u := range c.users {
				if _, err := e.client.SetConsent(ctx, u, telemetry.ScopeQuestionnaire); err != nil {
					t.Errorf("consent %s: %v", u, err)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	var totalAcked, storedInFlight, lostInFlight int
	for round := range rounds {
		var mu sync.Mutex // guards the clients' counts and rng
		for i, c := range all {
			wg.Go(func() {
				crng := rand.New(rand.NewPCG(seed, uint64(round*clients+i)))
				for {
					p := c.batch(crng, time.Now().UTC())
					res, _, err := e.client.IngestWithKey(ctx, p.samples, p.key)
					mu.Lock()
					if err != nil {
						c.pending = p // killed: its fate is unknown
						mu.Unlock()
						return
					}
					if res.Accepted != len(p.samples) {
						t.Errorf("%s: accepted %d of %d samples", p.key, res.Accepted, len(p.samples))
					}
					c.acked[0] += p.counts[0]
					c.acked[1] += p.counts[1]
					totalAcked++
					mu.Unlock()
				}
			})
		}
		mu.Lock()
		wait := time.Duration(150+rng.IntN(700)) * time.Millisecond
		mu.Unlock()
		time.Sleep(wait)
		e.proc.Kill()
		wg.Wait()
		ackedBefore := totalAcked

		e.start() // the same data directory
		for _, c := range all {
			var stored [2]int64
			for u, id := range c.users {
				st, err := e.client.State(ctx, id)
				if err != nil {
					t.Fatalf("round %d: state of %s after the restart: %v", round, id, err)
				}
				stored[u] = st.Samples
			}
			p := c.pending
			c.pending = nil
			var inFlight [2]int64
			if p != nil {
				inFlight = p.counts
			}
			committed := stored == [2]int64{c.acked[0] + inFlight[0], c.acked[1] + inFlight[1]} && p != nil
			switch {
			case committed:
				storedInFlight++
			case stored == c.acked:
				if p != nil {
					lostInFlight++
				}
			default:
				t.Errorf("round %d: %s stores %v samples after the kill; acknowledged %v, in flight %v: an acknowledged sample is lost or a batch is half stored",
					round, c.users, stored, c.acked, inFlight)
				continue
			}
			if p == nil {
				continue
			}
			// The client retries the batch whose answer it never got.
			res, replayed, err := e.client.IngestWithKey(ctx, p.samples, p.key)
			if err != nil {
				t.Fatalf("round %d: retry of %s: %v", round, p.key, err)
			}
			if replayed != committed || res.Accepted != len(p.samples) {
				t.Errorf("round %d: retry of %s (committed before the kill: %v) answered replayed=%v accepted %d of %d",
					round, p.key, committed, replayed, res.Accepted, len(p.samples))
			}
			c.acked[0] += p.counts[0]
			c.acked[1] += p.counts[1]
			for u, id := range c.users {
				st, err := e.client.State(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if st.Samples != c.acked[u] {
					t.Errorf("round %d: after the retry of %s, %s stores %d samples, want %d (stored once)", round, p.key, id, st.Samples, c.acked[u])
				}
			}
		}
		t.Logf("round %d: killed after %v, %d batches acknowledged so far", round, wait, ackedBefore)
		if round == 0 && ackedBefore == 0 {
			t.Fatal("no batch was acknowledged before the kill: the test exercised nothing")
		}
	}
	e.proc.Stop()
	t.Logf("%d kills: %d batches acknowledged before a kill (all stored); of those in flight at a kill, %d had been committed (answered from their record on retry), %d not (stored on retry)",
		rounds, totalAcked, storedInFlight, lostInFlight)
	if storedInFlight+lostInFlight == 0 {
		t.Error("no batch was in flight at any kill: the test exercised nothing")
	}
}
