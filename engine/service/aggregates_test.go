package service_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	gojson "github.com/goccy/go-json"

	"github.com/attune-io/attune/engine/effects"
	"github.com/attune-io/attune/engine/policy"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/engine/telemetry"
	"github.com/attune-io/attune/test/postgres"
)

// TestAggregateSnapshotEqualsFullRecomputation runs random sequences of
// ingest, decisions, erasure, retention sweeps and replica crashes (the
// store closed under the engine, a refresh possibly in flight, and a new
// engine opened on it) and checks, after each step and one run of the
// refresh job, that what the engine answers from its snapshot (the cohort
// summary, its effects, the stored-users gauge and, on a shared store,
// the population prior) equals a full recomputation from the store.
// The program has more users than a read refreshes within itself
// (syncRefreshUsers), so the snapshot path is the one checked; erasures
// and sweeps take it below that too.
func TestAggregateSnapshotEqualsFullRecomputation(t *testing.T) {
	ctx := context.Background()
	for _, backend := range []string{"bolt", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			var open func() store.Store
			if backend == "bolt" {
				dir := t.TempDir()
				open = func() store.Store {
					db, err := store.OpenBolt(dir, store.WithoutSync())
					if err != nil {
						t.Fatal(err)
					}
					return db
				}
			} else {
				conn := postgres.Database(t, postgres.Start(t), "aggregates")
				open = func() store.Store {
					db, err := store.OpenPostgres(ctx, conn, "agg/p")
					if err != nil {
						t.Fatal(err)
					}
					return db
				}
			}
			checkAggregatesUnderRandomOperations(t, open, backend == "postgres", 7)
		})
	}
}

func checkAggregatesUnderRandomOperations(t *testing.T, open func() store.Store, shared bool, seed uint64) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, 1))
	now := benchNow
	clock := func() time.Time { return now }
	cfg := benchConfig()
	cfg.Privacy.MinCohortSize = 5
	cfg.Privacy.Retention.Duration = 72 * time.Hour
	type replica struct {
		svc *service.Service
		db  store.Store
	}
	start := func() *replica {
		db := open()
		svc, err := service.New(cfg, service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Now: clock, EffectsMinInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		return &replica{svc, db}
	}
	// Two replicas on a shared store, one otherwise (bbolt has one owner).
	replicas := []*replica{start()}
	if shared {
		replicas = append(replicas, start())
	}
	t.Cleanup(func() {
		for _, r := range replicas {
			_ = r.db.Close()
		}
	})
	pick := func() *replica { return replicas[rng.IntN(len(replicas))] }

	var live []string // users with stored data, as far as the test knows
	nextUser := 0
	ingest := func(r *replica, users []string) {
		t.Helper()
		var samples []telemetry.Sample
		for _, u := range users {
			mood := 1 + rng.IntN(5)
			samples = append(samples, telemetry.Sample{User: u, Kind: telemetry.KindQuestionnaire, At: now, Mood: &mood, BRS: []int{1 + rng.IntN(5), 2, 3, 2, 4, 3}})
		}
		if _, err := r.svc.Ingest(ctx, samples); err != nil {
			t.Fatal(err)
		}
	}
	join := func(r *replica, n int) {
		t.Helper()
		var users []string
		for range n {
			u := fmt.Sprintf("user-%04d", nextUser)
			nextUser++
			if _, err := r.svc.SetConsent(ctx, u, telemetry.Scopes); err != nil {
				t.Fatal(err)
			}
			users, live = append(users, u), append(live, u)
		}
		ingest(r, users)
	}
	some := func(n int) []string {
		perm := rng.Perm(len(live))
		out := make([]string, 0, n)
		for _, i := range perm[:min(n, len(perm))] {
			out = append(out, live[i])
		}
		return out
	}
	for range 15 {
		join(replicas[0], 20)
	}

	learnt, large := 0, 0
	check := func(step int, op string) {
		t.Helper()
		if len(live) > 256 { // syncRefreshUsers: reads answer from the job's snapshot
			large++
		}
		r := pick()
		if ran, err := r.svc.RefreshAggregates(ctx); err != nil || !ran {
			t.Fatalf("step %d (%s): refresh ran=%v: %v", step, op, ran, err)
		}
		for _, reader := range replicas {
			reader.svc.ExpireSnapshotCache()
			got, err := reader.svc.Cohort(ctx)
			if err != nil {
				t.Fatalf("step %d (%s): cohort: %v", step, op, err)
			}
			want, err := reader.svc.FullScanCohort(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got.Published != want.Published || got.Published && (*got.Size != want.Size || *got.Loss != want.Loss) {
				t.Fatalf("step %d (%s): the snapshot's cohort %v size %v loss %v, a full scan's %+v", step, op, got.Published, got.Size, got.Loss, want)
			}
			all, err := service.EstimateEffects(ctx, reader.db)
			if err != nil {
				t.Fatal(err)
			}
			wantEffects := slices.DeleteFunc(all, func(e effects.Effect) bool { return !effects.Publishable(e, cfg.Privacy.MinCohortSize) })
			if fmt.Sprint(got.Effects) != fmt.Sprint(wantEffects) {
				t.Fatalf("step %d (%s): the snapshot's effects %+v, the log's %+v", step, op, got.Effects, wantEffects)
			}
			n, err := reader.db.CountUsers(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if g := reader.svc.StoredUsers(); g != n || n != len(live) {
				t.Fatalf("step %d (%s): stored users %d, the store counts %d, the test %d", step, op, g, n, len(live))
			}
		}
		if shared {
			learnt = checkPriorIsTheUsersMerge(t, ctx, replicas[0].svc, replicas[0].db, fmt.Sprintf("step %d (%s)", step, op))
		}
	}
	check(0, "load")
	for step := 1; step <= 40; step++ {
		now = now.Add(time.Duration(rng.IntN(180)) * time.Minute)
		var op string
		switch x := rng.IntN(100); {
		case x < 30:
			op = "ingest"
			ingest(pick(), some(1+rng.IntN(30)))
			if rng.IntN(3) == 0 {
				join(pick(), 1+rng.IntN(5))
			}
		case x < 60:
			op = "decide"
			r := pick()
			users := some(1 + rng.IntN(40))
			for _, u := range users {
				if _, _, err := r.svc.Decide(ctx, u, service.DecisionRequest{}, ""); err != nil {
					t.Fatal(err)
				}
			}
			// Their outcomes come due and are settled (and learnt from)
			// by their next samples, on any replica.
			now = now.Add(11 * time.Minute)
			ingest(pick(), users)
		case x < 72:
			op = "erase"
			for _, u := range some(1 + rng.IntN(3)) {
				if err := pick().svc.Erase(ctx, u); err != nil {
					t.Fatal(err)
				}
				live = slices.DeleteFunc(live, func(l string) bool { return l == u })
			}
		case x < 82:
			op = "sweep"
			// Most users stay active; the rest expire.
			keep := some(len(live) - len(live)/8)
			ingest(pick(), keep)
			now = now.Add(cfg.Privacy.Retention.Duration + time.Hour)
			ingest(pick(), keep)
			if _, err := pick().svc.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
			live = keep
			join(pick(), 20)
		default:
			op = "crash"
			i := rng.IntN(len(replicas))
			// A refresh may be in flight when the store goes.
			go func(svc *service.Service) { _, _ = svc.RefreshAggregates(ctx) }(replicas[i].svc)
			_ = replicas[i].db.Close()
			replicas[i] = start()
		}
		check(step, op)
	}
	if large < 20 {
		t.Fatalf("only %d of 41 checks had more users than a read refreshes within itself: the snapshot path was hardly checked", large)
	}
	if shared && learnt == 0 {
		t.Fatal("no user's arms learnt anything: the prior's check checked nothing")
	}
}

// checkPriorIsTheUsersMerge checks that the stored prior is the pooled
// statistics of every stored user's arms, recomputed here from raw sums
// (n, Σx, Σx²), not by the engine's pairwise merge; it returns the number
// of rewards behind it.
func checkPriorIsTheUsersMerge(t *testing.T, ctx context.Context, svc *service.Service, db store.Store, at string) int {
	t.Helper()
	type sums struct{ n, sx, sxx float64 }
	want := map[string]*sums{}
	err := db.EachUser(ctx, func(_ string, item store.Item) error {
		var rec service.Record
		if err := gojson.Unmarshal(item.Value, &rec); err != nil {
			return err
		}
		for arm, st := range rec.Policy.Arms {
			w := want[arm]
			if w == nil {
				w = &sums{}
				want[arm] = w
			}
			n := float64(st.N)
			w.n += n
			w.sx += n * st.Mean
			w.sxx += st.M2 + n*st.Mean*st.Mean
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	pop, err := svc.StoredPopulation(ctx)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for arm, w := range want {
		got := pop.Arms[arm]
		if got == nil {
			got = &policy.Stats{}
		}
		mean := w.sx / w.n
		m2 := w.sxx - w.n*mean*mean
		if float64(got.N) != w.n || !near(got.Mean, mean) || !near(got.M2, m2) {
			t.Fatalf("%s: the prior's %s is %+v, the users' arms pool to n=%v mean=%v m2=%v", at, arm, *got, w.n, mean, m2)
		}
		total += got.N
	}
	for arm, got := range pop.Arms {
		if _, ok := want[arm]; !ok && got.N > 0 {
			t.Fatalf("%s: the prior has %s %+v, which no stored user's arms hold (an erased user's?)", at, arm, *got)
		}
	}
	return total
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*max(1, math.Abs(a), math.Abs(b)) }
