package scaleout

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/telemetry"
	"github.com/attune-io/attune/test/postgres"
)

// batchFor is one world client's batch: 20 users × 5 samples (RR beats,
// behaviour events, SART trials, a questionnaire, a chat line).
func batchFor(batch, users int) []telemetry.Sample {
	at := time.Now().UTC()
	var samples []telemetry.Sample
	for u := range 20 {
		user := fmt.Sprintf("bench-%05d", (batch*20+u)%users)
		rr := make([]float64, 12)
		for i := range rr {
			rr[i] = 790 + float64((i*31+batch+u)%50)
		}
		samples = append(samples,
			telemetry.Sample{User: user, Kind: telemetry.KindRR, At: at, RRms: rr},
			telemetry.Sample{User: user, Kind: telemetry.KindBehaviour, At: at, Events: []telemetry.Event{{Type: "focus", At: at}, {Type: "task_switch", At: at}}},
			telemetry.Sample{User: user, Kind: telemetry.KindSART, At: at, Trials: []telemetry.Trial{{Digit: 4, Responded: true, RTms: 350}, {Digit: 3, Responded: false, RTms: 0}}},
			telemetry.Sample{User: user, Kind: telemetry.KindQuestionnaire, At: at, BRS: []int{4, 2, 3, 3, 4, 2}},
			telemetry.Sample{User: user, Kind: telemetry.KindText, At: at, Text: "calmer after the breathing exercise"},
		)
	}
	return samples
}

type scaleFigures struct {
	samplesPerSec float64
	p50, p99      time.Duration
	ingestErrors  int64
	stateErrors   int64
}

// spread runs op for i = 0 … n-1 on clients concurrent clients; op learns
// which client runs it.
func spread(clients, n int, op func(client, i int)) {
	var wg sync.WaitGroup
	var next atomic.Int64
	for c := range clients {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				op(c, i)
			}
		})
	}
	wg.Wait()
}

// measure drives replicas with concurrent clients: consent for every user,
// batches of 100 samples (ingest throughput), then state reads (latency).
func measure(b *testing.B, r *Replicas, users, batches, clients, reads int) scaleFigures {
	spread(clients, users, func(_, u int) {
		if err := r.Consent(u%len(r.Engines), fmt.Sprintf("bench-%05d", u)); err != nil {
			b.Error(err)
		}
	})

	bodies := make([][]telemetry.Sample, batches)
	for i := range bodies {
		bodies[i] = batchFor(i, users)
	}
	var acknowledged, failed atomic.Int64
	start := time.Now()
	spread(clients, batches, func(_, i int) {
		status, body, err := r.Ingest(i%len(r.Engines), bodies[i])
		if err != nil || status != http.StatusOK {
			failed.Add(1)
			b.Logf("batch %d: %d %s %v", i, status, body, err)
			return
		}
		acknowledged.Add(int64(len(bodies[i])))
	})
	fig := scaleFigures{samplesPerSec: float64(acknowledged.Load()) / time.Since(start).Seconds(), ingestErrors: failed.Load()}

	var stateErrors atomic.Int64
	latencies := make([][]time.Duration, clients)
	spread(clients, reads, func(c, i int) {
		t0 := time.Now()
		_, status, err := r.UserState(i%len(r.Engines), fmt.Sprintf("bench-%05d", (i*7919)%users))
		if err != nil || status != http.StatusOK {
			stateErrors.Add(1)
			return
		}
		latencies[c] = append(latencies[c], time.Since(t0))
	})
	fig.stateErrors = stateErrors.Load()
	all := slices.Concat(latencies...)
	slices.Sort(all)
	if len(all) > 0 {
		fig.p50, fig.p99 = all[len(all)/2], all[len(all)*99/100]
	}
	return fig
}

// BenchmarkScaleOut measures, in one run and under the same load, ingest
// throughput (samples/s over HTTP, durable commits) and state +
// recommendation latency for: one engine on the embedded bbolt store (the
// baseline), one engine on PostgreSQL, and three engines on one PostgreSQL
// database. Run with `make bench-scaleout`.
func BenchmarkScaleOut(b *testing.B) {
	const users, batches, clients, reads = 2000, 400, 8, 4000
	server := postgres.Start(b)
	configs := []struct {
		name     string
		replicas int
		shared   bool
	}{{"bolt-1", 1, false}, {"postgres-1", 1, true}, {"postgres-3", 3, true}}
	results := map[string]scaleFigures{}
	for _, c := range configs {
		secretDir := ""
		if c.shared {
			secretDir = b.TempDir()
			conn := postgres.Database(b, server, "bench_"+fmt.Sprint(c.replicas))
			if err := os.WriteFile(filepath.Join(secretDir, "connectionString"), []byte(conn), 0o600); err != nil {
				b.Fatal(err)
			}
		}
		r, err := Start(engineBinary, b.TempDir(), c.replicas, Config(secretDir, 11))
		if err != nil {
			b.Fatal(err)
		}
		fig := measure(b, r, users, batches, clients, reads)
		r.Stop()
		if fig.ingestErrors > 0 || fig.stateErrors > 0 {
			b.Errorf("%s: %d failed batches, %d failed reads", c.name, fig.ingestErrors, fig.stateErrors)
		}
		results[c.name] = fig
		b.Logf("%-10s %8.0f samples/s  state p50 %6.2f ms  p99 %6.2f ms", c.name, fig.samplesPerSec,
			float64(fig.p50.Microseconds())/1000, float64(fig.p99.Microseconds())/1000)
		b.ReportMetric(fig.samplesPerSec, c.name+"-samples/s")
		b.ReportMetric(float64(fig.p99.Microseconds())/1000, c.name+"-p99-ms")
	}
	base := results["bolt-1"].samplesPerSec
	b.ReportMetric(results["postgres-1"].samplesPerSec/base, "pg1/bolt1")
	b.ReportMetric(results["postgres-3"].samplesPerSec/base, "pg3/bolt1")
}
