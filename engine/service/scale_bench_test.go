package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/metrics"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/engine/telemetry"
	"github.com/attune-io/attune/test/postgres"
)

// The engine at scale (issue 19 §2): `make bench-engine-scale USERS=n`.

// scaleUsers is the number of stored users of the scale benchmarks:
// ATTUNE_BENCH_USERS, 100,000 by default.
func scaleUsers(b *testing.B) int {
	n := 100_000
	if v := os.Getenv("ATTUNE_BENCH_USERS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1000 {
			b.Fatalf("ATTUNE_BENCH_USERS=%q: want a number of users of at least 1000", v)
		}
	}
	return n
}

// bulkLoad stores users realistic records straight into the store (the
// load generator of the issue: no HTTP, no estimation per user), in
// commits of 10,000. The record is one real user's, as the engine stored
// it after consent and a realistic batch, under each user's pseudonym.
func bulkLoad(b *testing.B, open func(testing.TB) sizedStore, users int) (template []byte, db sizedStore) {
	b.Helper()
	ctx := context.Background()
	db = open(b)
	svc, err := service.New(benchConfig(), service.Options{Store: db, Key: benchKey, Now: func() time.Time { return benchNow }})
	if err != nil {
		b.Fatal(err)
	}
	consentAll(b, svc, 20)
	var samples []telemetry.Sample
	if err := json.Unmarshal(realisticBatchFor(0), &samples); err != nil {
		b.Fatal(err)
	}
	if _, err := svc.Ingest(ctx, samples); err != nil {
		b.Fatal(err)
	}
	key := svc.Pseudonym("user-00000")
	items, err := db.Users(ctx, []string{key})
	if err != nil || items[key].Value == nil {
		b.Fatalf("the template user: %v", err)
	}
	template = items[key].Value
	const chunk = 10_000
	for from := 0; from < users; from += chunk {
		change := store.Change{Users: map[string]store.Write{}}
		for i := from; i < min(from+chunk, users); i++ {
			k := svc.Pseudonym(scaleUser(i))
			if i < 20 {
				continue // stored above
			}
			change.Users[k] = store.Write{Value: template}
		}
		if err := db.Commit(ctx, change); err != nil {
			b.Fatal(err)
		}
	}
	return template, db
}

var benchKey = []byte("0123456789abcdef0123456789abcdef")

// scaleUser is the i-th user's ID; the first 20 are realisticBatchFor(0)'s.
func scaleUser(i int) string {
	if i < 20 {
		return fmt.Sprintf("user-%05d", i)
	}
	return fmt.Sprintf("scale-%07d", i)
}

// BenchmarkScaleBolt: ATTUNE_BENCH_USERS users on bbolt (replica scope).
func BenchmarkScaleBolt(b *testing.B) { benchScale(b, openBolt()) }

// BenchmarkScaleBoltNoSync: the same without fsync, to separate the
// disk's share of the decision latency.
func BenchmarkScaleBoltNoSync(b *testing.B) { benchScale(b, openBolt(store.WithoutSync())) }

// BenchmarkScalePostgres: the same on PostgreSQL (shared scope).
func BenchmarkScalePostgres(b *testing.B) { benchScale(b, openPostgres) }

// benchScale reports, for one engine over n stored users, in one run:
//   - the cohort read and the /metrics scrape answered from the snapshot
//     against the full scan every read made before it (the same code's
//     full pass, FullScanCohort), as times and as a ratio;
//   - the refresh job's time (one full pass, the job's cost);
//   - state and decision latency p50/p99 of users read for the first
//     time (cache misses), and state of users the cache holds;
//   - bytes per user on disk, and the engine's heap and RSS per user;
//   - the engine's RSS with its user cache full (DefaultUserCacheSize
//     users read), split into anonymous memory (the engine's own: heap,
//     cache) and file pages (bbolt's memory map of the store, the kernel's
//     page cache, reclaimable).
//
// The bulk load writes the store directly and its garbage is returned to
// the OS before the engine starts, so the figures are the engine's.
func benchScale(b *testing.B, open func(testing.TB) sizedStore) {
	ctx := context.Background()
	users := scaleUsers(b)
	loadStart := time.Now()
	_, db := bulkLoad(b, open, users)
	b.Cleanup(func() { _ = db.Close() })
	load := time.Since(loadStart)
	debug.FreeOSMemory()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	rssBefore := rss()
	m := metrics.New("bench/p")
	startEngine := time.Now()
	svc, err := service.New(benchConfig(), service.Options{Store: db, Key: benchKey, Metrics: m, Now: func() time.Time { return benchNow }})
	if err != nil {
		b.Fatal(err)
	}
	m.RegisterCohort(svc)
	startup := time.Since(startEngine)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	heapPerUser := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(users)
	rssEngine := float64(rss()-rssBefore) / float64(users)

	// The refresh job: one full pass (and the first snapshot).
	refreshStart := time.Now()
	if _, err := svc.RefreshAggregates(ctx); err != nil {
		b.Fatal(err)
	}
	refresh := time.Since(refreshStart)
	c, err := svc.Cohort(ctx)
	if err != nil || !c.Published || *c.Size != users {
		b.Fatalf("cohort %+v, %v: want all %d users published", c, err, users)
	}

	const reads = 3
	fullScan := median(reads, func() error { _, err := svc.FullScanCohort(ctx); return err })
	fullScrape := median(reads, func() error {
		if _, err := svc.FullScanCohort(ctx); err != nil {
			return err
		}
		if svc.Scope() == config.ScopeShared { // the old gauge counted rows there (in memory otherwise)
			if _, err := db.CountUsers(ctx); err != nil {
				return err
			}
		}
		_, err := m.Registry.Gather()
		return err
	})
	cohortRead := median(200, func() error { _, err := svc.Cohort(ctx); return err })
	scrape := median(200, func() error { _, err := m.Registry.Gather(); return err })

	reportNamedLatencies(b, "state", 20_000, func(i int) error {
		_, err := svc.State(ctx, scaleUser((i*7919)%users))
		return err
	})
	reportNamedLatencies(b, "decision", 2_000, func(i int) error {
		_, _, err := svc.Decide(ctx, scaleUser((i*7919)%users), service.DecisionRequest{}, "")
		return err
	})

	// Fill the user cache: a running engine's steady state, each user
	// read once (a miss: one store read and decode).
	fillStart := time.Now()
	fill := min(users, service.DefaultUserCacheSize+10_000)
	for i := range fill {
		if _, err := svc.State(ctx, scaleUser(i)); err != nil {
			b.Fatal(err)
		}
	}
	fillTook := time.Since(fillStart)
	// The same reads of users the cache holds (the fill's last ones): the
	// latency of an active user, where the reads above are all misses.
	cached := min(fill, service.DefaultUserCacheSize) / 2
	reportNamedLatencies(b, "state-cached", 20_000, func(i int) error {
		_, err := svc.State(ctx, scaleUser(fill-1-(i*7919)%cached))
		return err
	})
	runtime.GC()
	var full runtime.MemStats
	runtime.ReadMemStats(&full)

	size, _ := db.Size()
	b.ReportMetric(float64(users), "users")
	b.ReportMetric(load.Seconds(), "bulk-load-s")
	b.ReportMetric(startup.Seconds(), "engine-start-s")
	b.ReportMetric(refresh.Seconds()*1e3, "refresh-ms")
	b.ReportMetric(fullScan.Seconds()*1e3, "cohort-fullscan-ms")
	b.ReportMetric(cohortRead.Seconds()*1e6, "cohort-snapshot-µs")
	b.ReportMetric(fullScan.Seconds()/cohortRead.Seconds(), "cohort-speedup-x")
	b.ReportMetric(fullScrape.Seconds()*1e3, "scrape-fullscan-ms")
	b.ReportMetric(scrape.Seconds()*1e6, "scrape-snapshot-µs")
	b.ReportMetric(fullScrape.Seconds()/scrape.Seconds(), "scrape-speedup-x")
	b.ReportMetric(float64(size)/float64(users), "db-bytes/user")
	b.ReportMetric(heapPerUser, "heap-bytes/user")
	b.ReportMetric(rssEngine, "rss-growth-bytes/user")
	b.ReportMetric(float64(svc.CachedUsers()), "cached-users")
	b.ReportMetric(fillTook.Seconds()*1e6/float64(fill), "state-miss-µs")
	b.ReportMetric(float64(full.HeapAlloc)/(1<<20), "heap-cache-full-MiB")
	b.ReportMetric(float64(rss())/(1<<20), "rss-MiB")
	b.ReportMetric(float64(rssField("RssAnon:"))/(1<<20), "rss-anon-MiB")
	b.ReportMetric(float64(rssField("RssFile:"))/(1<<20), "rss-file-MiB")
}

// reportNamedLatencies times op n times and reports its p50 and p99 as
// name-p50-µs and name-p99-µs.
func reportNamedLatencies(b *testing.B, name string, n int, op func(i int) error) {
	latencies := make([]time.Duration, n)
	for i := range latencies {
		start := time.Now()
		if err := op(i); err != nil {
			b.Fatal(err)
		}
		latencies[i] = time.Since(start)
	}
	slices.Sort(latencies)
	b.ReportMetric(float64(latencies[n/2].Nanoseconds())/1e3, name+"-p50-µs")
	b.ReportMetric(float64(latencies[n*99/100].Nanoseconds())/1e3, name+"-p99-µs")
}

// median times op n times and returns the median.
func median(n int, op func() error) time.Duration {
	times := make([]time.Duration, n)
	for i := range times {
		start := time.Now()
		if err := op(); err != nil {
			panic(err)
		}
		times[i] = time.Since(start)
	}
	slices.Sort(times)
	return times[n/2]
}

// rss is this process's resident set size in bytes (Linux).
func rss() int64 { return rssField("VmRSS:") }

// rssField is a size field of /proc/self/status in bytes (Linux).
func rssField(field string) int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkPriorConflicts3Replicas: three engines on one PostgreSQL
// store, four clients each, every client on its own users (so no two
// writers share a user row: the prior is the only row they could share).
// Each round every user gets a decision and, 11 minutes later, a sample
// that settles its outcome and learns from it. Reported: commit retries
// (ErrConflict, a serialization failure or a lost conditional write)
// per learning ingest, with the prior as the single row every learning
// commit writes (the baseline, as before) and as the refresh's merge of
// the users' own arms (now), in the same run.
func BenchmarkPriorConflicts3Replicas(b *testing.B) {
	for _, mode := range []string{"hot-row", "merged-arms"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			conn := postgres.Start(b).ConnString
			var clock atomic.Int64
			clock.Store(benchNow.UnixNano())
			now := func() time.Time { return time.Unix(0, clock.Load()).UTC() }
			replicas := make([]*service.Service, 3)
			var stores []store.Store
			for i := range replicas {
				db, err := store.OpenPostgres(ctx, conn, "bench/p")
				if err != nil {
					b.Fatal(err)
				}
				stores = append(stores, db)
				svc, err := service.New(benchConfig(), service.Options{Store: db, Key: benchKey, Now: now})
				if err != nil {
					b.Fatal(err)
				}
				if mode == "hot-row" {
					svc.UseLegacyPopulationRow()
				}
				replicas[i] = svc
			}
			b.Cleanup(func() {
				for _, db := range stores {
					_ = db.Close()
				}
			})
			const clients, perClient = 4, 25
			users := func(r, c int) []string {
				out := make([]string, perClient)
				for u := range out {
					out[u] = fmt.Sprintf("user-%05d", (r*clients+c)*perClient+u)
				}
				return out
			}
			consentAll(b, replicas[0], 3*clients*perClient)
			mood := func(u string) telemetry.Sample {
				m := 1 + len(u)%5
				return telemetry.Sample{User: u, Kind: telemetry.KindQuestionnaire, At: now(), Mood: &m, BRS: []int{2, 4, 2, 4, 2, 4}}
			}
			var busy atomic.Int64 // operations that gave up (ErrBusy)
			all := func(op func(svc *service.Service, u string) error) {
				var wg sync.WaitGroup
				for r, svc := range replicas {
					for c := range clients {
						wg.Go(func() {
							for _, u := range users(r, c) {
								if err := op(svc, u); errors.Is(err, service.ErrBusy) {
									busy.Add(1)
								} else if err != nil {
									b.Error(err)
									return
								}
							}
						})
					}
				}
				wg.Wait()
			}
			ingest := func(svc *service.Service, u string) error {
				_, err := svc.Ingest(ctx, []telemetry.Sample{mood(u)})
				return err
			}
			all(ingest)
			conflicts := func() uint64 {
				n := uint64(0)
				for _, svc := range replicas {
					n += svc.Conflicts()
				}
				return n
			}
			startConflicts, startBusy := conflicts(), busy.Load()
			b.ResetTimer()
			for range b.N {
				all(func(svc *service.Service, u string) error {
					_, _, err := svc.Decide(ctx, u, service.DecisionRequest{}, "")
					return err
				})
				clock.Add(int64(11 * time.Minute))
				all(ingest)
				clock.Add(int64(2 * time.Hour))
			}
			b.StopTimer()
			learning := float64(b.N * 3 * clients * perClient)
			b.ReportMetric(float64(conflicts()-startConflicts)/learning, "retries/learning-ingest")
			b.ReportMetric(float64(busy.Load()-startBusy)/learning, "gave-up/learning-ingest")
			if _, err := replicas[0].RefreshAggregates(ctx); err != nil {
				b.Fatal(err)
			}
			pop, err := replicas[0].StoredPopulation(ctx)
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for _, st := range pop.Arms {
				n += st.N
			}
			b.ReportMetric(float64(n)/learning, "prior-rewards/learning-ingest")
		})
	}
}
