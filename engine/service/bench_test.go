package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/engine/telemetry"
	"github.com/attune-io/attune/test/postgres"
)

var benchNow = time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)

func benchConfig() *config.Config {
	return &config.Config{
		Program: "bench/p", Target: config.Vector{Attention: 0.8, Emotion: 0.7, Resilience: 0.7},
		Weights: config.Vector{Attention: 1, Emotion: 1, Resilience: 1}, Interventions: []string{"BodyScan", "MicroBreak", "ResonanceBreathing"},
		Strength: config.Strength{Value: 0.5, Min: 0.1, Max: 0.9}, Context: "Social",
		Privacy:   config.Privacy{Retention: config.Duration{Duration: 720 * time.Hour}, MinCohortSize: 11},
		TokenFile: "x", ReadOnlyTokenFile: "x", PseudonymizationKeyFile: "x", DataDir: "x", ListenAddress: "x", Seed: 1,
	}
}

// sizedStore is a store that can say how many bytes it occupies.
type sizedStore interface {
	store.Store
	Size() (int64, error)
}

func openBolt(opts ...store.Option) func(testing.TB) sizedStore {
	return func(b testing.TB) sizedStore {
		db, err := store.OpenBolt(b.TempDir(), opts...)
		if err != nil {
			b.Fatal(err)
		}
		return db
	}
}

// openPostgres is a fresh PostgreSQL server (durable commits, as shipped).
func openPostgres(b testing.TB) sizedStore {
	db, err := store.OpenPostgres(context.Background(), postgres.Start(b).ConnString, "bench/p")
	if err != nil {
		b.Fatal(err)
	}
	return db
}

func newService(b testing.TB, open func(testing.TB) sizedStore) (*service.Service, sizedStore) {
	db := open(b)
	b.Cleanup(func() { _ = db.Close() })
	svc, err := service.New(benchConfig(), service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Now: func() time.Time { return benchNow }})
	if err != nil {
		b.Fatal(err)
	}
	return svc, db
}

// realisticBatch is what one world client sends every few seconds for 20
// users: RR beats from a wearable, behaviour events, SART trials and the
// occasional chat message — 100 samples.
func realisticBatch(batch int) []byte {
	var samples []map[string]any
	at := benchNow.Add(time.Duration(batch) * time.Second).Format(time.RFC3339Nano)
	for u := range 20 {
		user := fmt.Sprintf("user-%05d", (batch*20+u)%2000)
		rr := make([]float64, 12)
		for i := range rr {
			rr[i] = 780 + float64((i*37+batch)%60)
		}
		samples = append(samples,
			map[string]any{"user": user, "kind": "rr", "at": at, "rr_ms": rr},
			map[string]any{"user": user, "kind": "behaviour", "at": at, "events": []map[string]any{{"type": "focus", "at": at}, {"type": "click", "at": at}, {"type": "task_switch", "at": at}}},
			map[string]any{"user": user, "kind": "sart", "at": at, "trials": []map[string]any{{"digit": 5, "responded": true, "rt_ms": 380}, {"digit": 3, "responded": false, "rt_ms": 0}, {"digit": 7, "responded": true, "rt_ms": 420}}},
			map[string]any{"user": user, "kind": "heart_rate", "at": at, "bpm": 72},
			map[string]any{"user": user, "kind": "text", "at": at, "text": "that was a good session, feeling calmer now"},
		)
	}
	data, _ := json.Marshal(samples)
	return data
}

func consentAll(b testing.TB, svc *service.Service, users int) {
	for u := range users {
		if _, err := svc.SetConsent(context.Background(), fmt.Sprintf("user-%05d", u), telemetry.Scopes); err != nil {
			b.Fatal(err)
		}
	}
}

const batches = 64

func benchIngest(b *testing.B, open func(testing.TB) sizedStore) {
	svc, _ := newService(b, open)
	consentAll(b, svc, 2000)
	bodies := make([][]byte, batches)
	for i := range bodies {
		bodies[i] = realisticBatch(i)
	}
	b.ResetTimer()
	samples := 0
	for i := range b.N {
		batch, err := telemetry.DecodeBatch(bytes.NewReader(bodies[i%batches]), false)
		if err != nil {
			b.Fatal(err)
		}
		res, err := svc.Ingest(context.Background(), batch)
		if err != nil {
			b.Fatal(err)
		}
		samples += res.Accepted
	}
	b.ReportMetric(float64(samples)/b.Elapsed().Seconds(), "samples/s")
}

// BenchmarkIngestDurable: parse, validate, estimate and store with an fsync
// per commit.
func BenchmarkIngestDurable(b *testing.B) { benchIngest(b, openBolt()) }

// BenchmarkIngestNoSync: the same, committed without fsync (the pages are
// written but not flushed).
func BenchmarkIngestNoSync(b *testing.B) { benchIngest(b, openBolt(store.WithoutSync())) }

// BenchmarkIngestNoCommit: the same with the commit excluded: each change
// is applied in a bbolt transaction that is rolled back.
func BenchmarkIngestNoCommit(b *testing.B) { benchIngest(b, openBolt(store.WithoutCommit())) }

// BenchmarkIngestPostgres: the same on the shared PostgreSQL store.
func BenchmarkIngestPostgres(b *testing.B) { benchIngest(b, openPostgres) }

// BenchmarkDecodeBaseline is the limit: plain encoding/json decoding of the
// same batches, no validation, no processing.
func BenchmarkDecodeBaseline(b *testing.B) {
	bodies := make([][]byte, batches)
	for i := range bodies {
		bodies[i] = realisticBatch(i)
	}
	b.ResetTimer()
	samples := 0
	for i := range b.N {
		var batch []telemetry.Sample
		if err := json.Unmarshal(bodies[i%batches], &batch); err != nil {
			b.Fatal(err)
		}
		samples += len(batch)
	}
	b.ReportMetric(float64(samples)/b.Elapsed().Seconds(), "samples/s")
}

// BenchmarkStateRecommendation measures GET-state latency (estimate and
// loss; a read draws nothing) with 10,000 stored users, and the bytes
// stored per user.
func BenchmarkStateRecommendation(b *testing.B) { benchState(b, openBolt(store.WithoutSync())) }

// BenchmarkStateRecommendationPostgres: the same on PostgreSQL, where
// every read goes to the database.
func BenchmarkStateRecommendationPostgres(b *testing.B) { benchState(b, openPostgres) }

func benchState(b *testing.B, open func(testing.TB) sizedStore) {
	svc, db := newService(b, open)
	const users = 10_000
	storeUsers(b, svc, users)
	size, _ := db.Size()
	reportLatencies(b, func(i int) error {
		_, err := svc.State(context.Background(), fmt.Sprintf("user-%05d", i%users))
		return err
	})
	b.ReportMetric(float64(size)/users, "db-bytes/user")
}

// reportLatencies times op for i in [0, b.N) and reports the p50 and p99.
func reportLatencies(b *testing.B, op func(i int) error) {
	b.ResetTimer()
	latencies := make([]time.Duration, 0, b.N)
	for i := range b.N {
		start := time.Now()
		if err := op(i); err != nil {
			b.Fatal(err)
		}
		latencies = append(latencies, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(latencies)
	b.ReportMetric(float64(latencies[len(latencies)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Nanoseconds())/1e3, "p99-µs")
}

// storeUsers consents and ingests a realistic record for users users.
func storeUsers(b *testing.B, svc *service.Service, users int) {
	consentAll(b, svc, users)
	for batch := 0; batch < users/20; batch++ {
		var samples []telemetry.Sample
		if err := json.Unmarshal(realisticBatchFor(batch), &samples); err != nil {
			b.Fatal(err)
		}
		if _, err := svc.Ingest(context.Background(), samples); err != nil {
			b.Fatal(err)
		}
	}
}

// realisticBatchFor covers users 20·batch … 20·batch+19 exactly once.
func realisticBatchFor(batch int) []byte {
	var samples []map[string]any
	at := benchNow.Format(time.RFC3339Nano)
	for u := range 20 {
		user := fmt.Sprintf("user-%05d", batch*20+u)
		rr := make([]float64, 90)
		for i := range rr {
			rr[i] = 780 + float64((i*37+u)%60)
		}
		samples = append(samples,
			map[string]any{"user": user, "kind": "rr", "at": at, "rr_ms": rr},
			map[string]any{"user": user, "kind": "questionnaire", "at": at, "brs": []int{4, 2, 3, 2, 4, 3}, "mood": 3},
			map[string]any{"user": user, "kind": "text", "at": at, "text": "busy day but fine"},
		)
	}
	data, _ := json.Marshal(samples)
	return data
}

// BenchmarkDecision measures POST-decision latency in process (settle due
// outcomes, Thompson draw, durable commit of the record and the log
// entry) with 10,000 stored users. Read it against
// BenchmarkStateRecommendation of the same run, which reads only.
func BenchmarkDecision(b *testing.B) { benchDecision(b, openBolt()) }

// BenchmarkDecisionNoSync: the same without fsync, to separate the disk's
// share.
func BenchmarkDecisionNoSync(b *testing.B) { benchDecision(b, openBolt(store.WithoutSync())) }

// BenchmarkDecisionPostgres: the same on PostgreSQL.
func BenchmarkDecisionPostgres(b *testing.B) { benchDecision(b, openPostgres) }

func benchDecision(b *testing.B, open func(testing.TB) sizedStore) {
	svc, _ := newService(b, open)
	const users = 10_000
	storeUsers(b, svc, users)
	reportLatencies(b, func(i int) error {
		_, _, err := svc.Decide(context.Background(), fmt.Sprintf("user-%05d", i%users), service.DecisionRequest{}, fmt.Sprintf("k-%d", i))
		return err
	})
}

// logDecisions writes n settled, randomised decisions of users users
// straight into the store, in commits of 5,000 (the benchmark's setup, not
// what it measures).
func logDecisions(b *testing.B, db store.Store, n, users int) {
	ctx := context.Background()
	arms := []string{"BodyScan", "MicroBreak", "ResonanceBreathing"}
	change := store.Change{Decisions: map[store.DecisionKey]store.Write{}}
	for i := range n {
		at := benchNow.Add(time.Duration(i) * time.Second)
		p := 0.1 + 0.7*float64(i%97)/96
		d := service.Decision{
			ID: store.DecisionID(at, uint32(i)), At: at, Available: true, Candidate: arms[i%3], TreatmentProbability: p,
			Action: "none", Probability: 1 - p, Instructions: "No intervention now: carry on.", PolicyVersion: "0123456789ab",
			OutcomeDue: at.Add(10 * time.Minute), Outcome: &service.Outcome{At: at.Add(10 * time.Minute), Loss: 0.2, Change: -0.01 * float64(i%7)},
		}
		if i%2 == 0 {
			d.Action, d.Probability = arms[i%3], p
		}
		loss := 0.21
		d.LossAtDecision = &loss
		value := service.EncodeDecision(&d)
		change.Decisions[store.DecisionKey{User: fmt.Sprintf("%032x", i%users), ID: d.ID}] = store.Write{Value: value}
		if len(change.Decisions) == 5000 || i == n-1 {
			if err := db.Commit(ctx, change); err != nil {
				b.Fatal(err)
			}
			change.Decisions = map[store.DecisionKey]store.Write{}
		}
	}
}

// BenchmarkEffects1M estimates every intervention's effect (WCLS) over
// 1,000,000 logged decisions of 10,000 users on bbolt, streaming: B/op
// shows the memory stays with users, not decisions. Its baseline is
// BenchmarkScanDecisions1M, the bare read of the same log.
func BenchmarkEffects1M(b *testing.B) {
	db := openBolt(store.WithoutSync())(b)
	b.Cleanup(func() { _ = db.Close() })
	logDecisions(b, db, 1_000_000, 10_000)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		all, err := service.EstimateEffects(context.Background(), db)
		if err != nil || len(all) != 3 {
			b.Fatalf("effects %v, %v", all, err)
		}
	}
}

// BenchmarkEffects1MSealed is BenchmarkEffects1M on the encrypted store,
// where every logged decision is opened before it is read.
func BenchmarkEffects1MSealed(b *testing.B) {
	db := sealed(openBolt(store.WithoutSync()))(b)
	b.Cleanup(func() { _ = db.Close() })
	logDecisions(b, db, 1_000_000, 10_000)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		all, err := service.EstimateEffects(context.Background(), db)
		if err != nil || len(all) != 3 {
			b.Fatalf("effects %v, %v", all, err)
		}
	}
}

// BenchmarkScanDecisions1M reads the same log without decoding it.
func BenchmarkScanDecisions1M(b *testing.B) {
	db := openBolt(store.WithoutSync())(b)
	b.Cleanup(func() { _ = db.Close() })
	logDecisions(b, db, 1_000_000, 10_000)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		n := 0
		if err := db.EachDecision(context.Background(), "", func(_ store.DecisionKey, it store.Item) error { n += len(it.Value); return nil }); err != nil || n == 0 {
			b.Fatal(err)
		}
	}
}

// benchKeyring is a keyring of one KEK, for the encrypted stores.
func benchKeyring(b testing.TB) *store.Keyring {
	k, err := store.NewKeyring("kek-1", map[string][]byte{"kek-1": []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		b.Fatal(err)
	}
	return k
}

// sealed opens a store like open, encrypted at rest (store.Sealed).
func sealed(open func(testing.TB) sizedStore) func(testing.TB) sizedStore {
	return func(b testing.TB) sizedStore {
		inner := open(b)
		s, err := store.NewSealed(context.Background(), inner.(store.Backend), benchKeyring(b), []byte("0123456789abcdef0123456789abcdef"))
		if err != nil {
			_ = inner.Close()
			b.Fatal(err)
		}
		return s
	}
}

// BenchmarkEncryptionCost measures what encryption at rest costs on the
// durable embedded store: ingest latency (the realistic 100-sample batch,
// fsync per commit) and state-read latency, each with and without
// encryption in the same run, alternating request by request so that the
// machine's drift falls on both alike. It reports both p99s and their
// ratios (encrypted / plain; the goal is < 1.15).
func BenchmarkEncryptionCost(b *testing.B) { benchEncryption(b, openBolt()) }

// BenchmarkEncryptionCostNoSync: the same without fsync, where the CPU
// cost of sealing is not hidden behind the disk.
func BenchmarkEncryptionCostNoSync(b *testing.B) { benchEncryption(b, openBolt(store.WithoutSync())) }

// BenchmarkEncryptionCostPostgres: the same on PostgreSQL, where every
// state read goes to the database and is opened.
func BenchmarkEncryptionCostPostgres(b *testing.B) { benchEncryption(b, openPostgres) }

func benchEncryption(b *testing.B, open func(testing.TB) sizedStore) {
	const users = 2000
	plain, _ := newService(b, open)
	encrypted, _ := newService(b, sealed(open))
	bodies := make([][]byte, batches)
	for i := range bodies {
		bodies[i] = realisticBatch(i)
	}
	ingest := func(svc *service.Service, i int) time.Duration {
		batch, err := telemetry.DecodeBatch(bytes.NewReader(bodies[i%batches]), false)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if _, err := svc.Ingest(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	state := func(svc *service.Service, i int) time.Duration {
		start := time.Now()
		if _, err := svc.State(context.Background(), fmt.Sprintf("user-%05d", (i*37)%users)); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	for _, svc := range []*service.Service{plain, encrypted} {
		consentAll(b, svc, users)
		for i := range users / 20 { // every user has a record
			ingest(svc, i)
		}
	}
	var plainIngest, sealedIngest, plainState, sealedState []time.Duration
	b.ResetTimer()
	for i := range b.N {
		// Alternate which goes first, so neither always meets a warm cache.
		if i%2 == 0 {
			plainIngest = append(plainIngest, ingest(plain, i))
			sealedIngest = append(sealedIngest, ingest(encrypted, i))
		} else {
			sealedIngest = append(sealedIngest, ingest(encrypted, i))
			plainIngest = append(plainIngest, ingest(plain, i))
		}
		for j := range 10 {
			plainState = append(plainState, state(plain, i*10+j))
			sealedState = append(sealedState, state(encrypted, i*10+j))
		}
	}
	b.StopTimer()
	p99 := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)*99/100].Nanoseconds()) / 1e3
	}
	sum := func(d []time.Duration) (t time.Duration) {
		for _, v := range d {
			t += v
		}
		return t
	}
	// The median of the paired ratios (each batch on both, back to back)
	// is the robust summary on a busy machine, where the tails are other
	// processes' doing.
	paired := func(sealed, plain []time.Duration) float64 {
		r := make([]float64, len(plain))
		for i := range plain {
			r[i] = float64(sealed[i]) / float64(plain[i])
		}
		slices.Sort(r)
		return r[len(r)/2]
	}
	b.ReportMetric(paired(sealedIngest, plainIngest), "ingest-paired-median-ratio")
	b.ReportMetric(paired(sealedState, plainState), "state-paired-median-ratio")
	b.ReportMetric(p99(plainIngest), "plain-ingest-p99-µs")
	b.ReportMetric(p99(sealedIngest), "sealed-ingest-p99-µs")
	b.ReportMetric(p99(sealedIngest)/p99(plainIngest), "ingest-p99-ratio")
	b.ReportMetric(float64(sum(sealedIngest))/float64(sum(plainIngest)), "ingest-mean-ratio")
	b.ReportMetric(p99(plainState), "plain-state-p99-µs")
	b.ReportMetric(p99(sealedState), "sealed-state-p99-µs")
	b.ReportMetric(p99(sealedState)/p99(plainState), "state-p99-ratio")
}
