package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
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

// commitVariant is one engine of BenchmarkDurableIngest: its store is
// durable with the group commit, durable with one transaction and fsync
// per commit (solo), or not durable (bbolt NoSync), and it is driven by a
// given number of concurrent clients.
type commitVariant struct {
	name    string
	clients int
	mode    string // "durable", "solo" or "nofsync"
	url     string
	bodies  [][][]byte // per client: its own users' batches
	done    atomic.Int64
	errs    atomic.Int64
	busy    time.Duration
	rounds  []float64
	backend *store.Bolt
	stats0  store.CommitStats // at the start of the measured rounds
	// fsyncs: the disk probe's fsync times taken right after each of
	// this variant's rounds.
	fsyncs []time.Duration
}

// probeFsync writes 4 KiB to a file in dir and fsyncs it, as a commit's
// page write and flush would: what the disk makes a commit wait for at
// that moment.
func probeFsync(f *os.File) time.Duration {
	buf := make([]byte, 4096)
	start := time.Now()
	if _, err := f.WriteAt(buf, 0); err != nil {
		return -1
	}
	if err := f.Sync(); err != nil {
		return -1
	}
	return time.Since(start)
}

// BenchmarkDurableIngest measures what the durable commit costs under
// concurrent ingest: one engine on bbolt, encrypted at rest as a world
// with a keyring runs it (store.Sealed), served over HTTP on loopback
// (the API server with its token check), with 8 and 64 concurrent
// clients each sending 10-sample batches for users of its own (a user's
// requests are serialised by the engine whatever the store). Each client
// count runs against three engines alike but for the store:
//
//   - durable: as in production; concurrent commits share one
//     transaction and one fsync (the embedded store's group commit);
//   - solo: durable, one transaction and fsync per commit
//     (store.WithoutGroupCommit), what the group commit saves;
//   - nofsync: store.WithoutSync (bbolt NoSync: pages written, never
//     flushed), the ceiling a durable commit can reach.
//
// The variants alternate in short rounds so that a busy machine weighs on
// them alike. Figures per client count: durable/nofsync and solo/nofsync,
// each variant's samples/s over all its rounds against nofsync's, and the
// median over the rounds of the same ratio within a round (a disk shared
// with other work stalls some rounds' fsyncs for far longer than others').
// Run with `make bench-group-commit`; the goal is durable/nofsync ≥ 0.8
// at 64 clients.
func BenchmarkDurableIngest(b *testing.B) {
	const batchSize, usersPerClient, rounds = 10, 8, 16
	round := 300 * time.Millisecond
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := &config.Config{
		Program: "plaza/calm", Target: config.Vector{Attention: 0.8, Emotion: 0.7, Resilience: 0.7},
		Weights: config.Vector{Attention: 1, Emotion: 1, Resilience: 1}, Interventions: []string{"BodyScan"},
		Strength: config.Strength{Value: 0.5, Min: 0.1, Max: 0.9}, Context: "Social",
		Privacy: config.Privacy{Retention: config.Duration{Duration: time.Hour}, MinCohortSize: 11},
	}
	secret := []byte("0123456789abcdef0123456789abcdef")
	keyring, err := store.NewKeyring("kek-1", map[string][]byte{"kek-1": bytes.Repeat([]byte{7}, store.KEKSize)})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var variants []*commitVariant
	for _, clients := range []int{8, 64} {
		for _, mode := range []string{"durable", "solo", "nofsync"} {
			variants = append(variants, &commitVariant{name: fmt.Sprintf("%s-%d", mode, clients), clients: clients, mode: mode})
		}
	}
	for _, v := range variants {
		var opts []store.Option
		switch v.mode {
		case "solo":
			opts = append(opts, store.WithoutGroupCommit())
		case "nofsync":
			opts = append(opts, store.WithoutSync())
		}
		backend, err := store.OpenBolt(b.TempDir(), opts...)
		if err != nil {
			b.Fatal(err)
		}
		v.backend = backend
		db, err := store.NewSealed(ctx, backend, keyring, secret)
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = db.Close() }()
		m := metrics.New(cfg.Program)
		svc, err := service.New(cfg, service.Options{Store: db, Key: secret, Metrics: m, Logger: logger})
		if err != nil {
			b.Fatal(err)
		}
		v.bodies = make([][][]byte, v.clients)
		var wg sync.WaitGroup
		for c := range v.clients {
			wg.Go(func() {
				for u := range usersPerClient {
					user := fmt.Sprintf("c%02d-u%d", c, u)
					if _, err := svc.SetConsent(ctx, user, []telemetry.Scope{telemetry.ScopePhysiology}); err != nil {
						b.Error(err)
						return
					}
					batch := make([]telemetry.Sample, batchSize)
					for j := range batch {
						bpm := 60 + float64(j)
						batch[j] = telemetry.Sample{User: user, Kind: telemetry.KindHeartRate, At: time.Now().UTC(), BPM: &bpm}
					}
					body, _ := json.Marshal(batch)
					v.bodies[c] = append(v.bodies[c], body)
				}
			})
		}
		wg.Wait()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := &http.Server{Handler: api.New(svc, m, api.Tokens{ReadWrite: "rw-secret", ReadOnly: "ro-secret"}, logger),
			ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(l) }()
		defer func() { _ = srv.Close() }()
		v.url = "http://" + l.Addr().String() + "/v1/telemetry"
	}
	if b.Failed() {
		return
	}
	probe, err := os.Create(filepath.Join(b.TempDir(), "fsync-probe"))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = probe.Close() }()
	httpClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	send := func(v *commitVariant, body []byte) {
		req, _ := http.NewRequest(http.MethodPost, v.url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer rw-secret")
		resp, err := httpClient.Do(req)
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
	measure := func(v *commitVariant, d time.Duration, count bool) {
		before := v.done.Load()
		start := time.Now()
		deadline := start.Add(d)
		var wg sync.WaitGroup
		for c := range v.clients {
			wg.Go(func() {
				for i := 0; time.Now().Before(deadline); i++ {
					send(v, v.bodies[c][i%usersPerClient])
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
		v.fsyncs = append(v.fsyncs, probeFsync(probe))
	}
	for _, v := range variants { // warm-up: connections, the files' first pages
		measure(v, 100*time.Millisecond, false)
	}
	for _, v := range variants {
		v.stats0 = v.backend.CommitStats()
	}
	b.ResetTimer()
	for range b.N {
		for r := range rounds {
			for i := range variants {
				// Rotate which of a client count's three goes first.
				measure(variants[i-i%3+(i+r)%3], round, true)
			}
		}
	}
	b.StopTimer()
	// Printed, not logged: a benchmark's log keeps only its first lines.
	report := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	rate := func(v *commitVariant) float64 { return float64(v.done.Load()) / v.busy.Seconds() }
	for _, v := range variants {
		if n := v.errs.Load(); n > 0 {
			b.Errorf("%s: %d failed requests", v.name, n)
		}
		b.ReportMetric(rate(v), v.name+"-samples/s")
		st := v.backend.CommitStats()
		groups, changes, busy := st.Groups-v.stats0.Groups, st.Changes-v.stats0.Changes, st.Busy-v.stats0.Busy
		per := func(d time.Duration) float64 { return d.Seconds() * 1000 / float64(max(groups, 1)) }
		report("%-10s %6.0f samples/s  %5.1f changes per transaction, committer busy %3.0f%%; per transaction %5.2f ms: apply %4.2f, spill %4.2f, write + fsync %5.2f, meta + fsync and the rest %5.2f; %4.1f pages",
			v.name, rate(v), float64(changes)/float64(max(groups, 1)), 100*busy.Seconds()/v.busy.Seconds(), per(busy),
			per(st.Apply-v.stats0.Apply), per(st.Spill-v.stats0.Spill), per(st.Write-v.stats0.Write),
			per(busy-(st.Apply-v.stats0.Apply)-(st.Spill-v.stats0.Spill)-(st.Write-v.stats0.Write)),
			float64(st.Pages-v.stats0.Pages)/float64(max(groups, 1)))
	}
	// The disk's fsync time after each round, against how the durable
	// engines fared in that round: a quiet disk is what the goal needs.
	var probes []time.Duration
	for _, v := range variants {
		probes = append(probes, v.fsyncs...)
	}
	slices.Sort(probes)
	median := probes[len(probes)/2]
	report("disk: 4 KiB write + fsync after each round: p50 %.2f ms, p90 %.2f ms, max %.2f ms",
		ms(median), ms(probes[len(probes)*9/10]), ms(probes[len(probes)-1]))
	for i := 0; i < len(variants); i += 3 {
		nofsync := variants[i+2]
		for _, v := range variants[i : i+2] {
			ratios := make([]float64, len(v.rounds))
			for r := range ratios {
				ratios[r] = v.rounds[r] / nofsync.rounds[r]
			}
			var quiet, busy []float64 // rounds after which the disk's fsync was below / above the median
			for r := range ratios {
				if v.fsyncs[r] <= median {
					quiet = append(quiet, ratios[r])
				} else {
					busy = append(busy, ratios[r])
				}
			}
			slices.Sort(ratios)
			whole := rate(v) / rate(nofsync)
			report("%2d clients: %-7s %8.0f samples/s, nofsync %8.0f samples/s: ×%.3f; median of the rounds ×%.3f (×%.3f–×%.3f)",
				v.clients, v.mode, rate(v), rate(nofsync), whole, ratios[len(ratios)/2], ratios[0], ratios[len(ratios)-1])
			report("            median of the rounds on a quiet disk (fsync ≤ p50) ×%.3f (%d rounds), on a busy one ×%.3f (%d)",
				medianOf(quiet), len(quiet), medianOf(busy), len(busy))
			b.ReportMetric(whole, fmt.Sprintf("%s/nofsync-%d", v.mode, v.clients))
			b.ReportMetric(ratios[len(ratios)/2], fmt.Sprintf("%s/nofsync-%d-median", v.mode, v.clients))
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func medianOf(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	xs = slices.Clone(xs)
	slices.Sort(xs)
	return xs[len(xs)/2]
}
