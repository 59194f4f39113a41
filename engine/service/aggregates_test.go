package service_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	gojson "github.com/goccy/go-json"

	"github.com/attune-io/attune/engine/effects"
	"github.com/attune-io/attune/engine/loss"
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
		// fresh: started since the last check (no snapshot of its own).
		fresh bool
	}
	// The job is never due by the clock (an hour), so a read of a large
	// program answers from the last snapshot however slow the test runs.
	start := func() *replica {
		db := open()
		svc, err := service.New(cfg, service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Now: clock, EffectsMinInterval: -1, AggregateInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return &replica{svc, db, true}
	}
	// Two replicas on a shared store, one otherwise (bbolt has one owner).
	replicas := []*replica{start()}
	if shared {
		replicas = append(replicas, start())
	}
	t.Cleanup(func() {
		for _, r := range replicas {
			r.svc.Close()
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
	var last service.CohortSummary // what the last check's refresh published
	lastUsers := -1                // and how many users it counted
	sameCohort := func(got service.CohortSummary, want loss.Aggregate) bool {
		return got.Published == want.Published && (!got.Published || *got.Size == want.Size && near(*got.Loss, want.Loss))
	}
	check := func(step int, op string) {
		t.Helper()
		if len(live) > 256 { // syncRefreshUsers: reads answer from the job's snapshot
			large++
		}
		for _, r := range replicas {
			r.svc.SettleAggregateRefreshes() // the passes commits that learnt asked for
		}
		// Reads without a forced refresh: a large program's answer from the
		// last snapshot, stale by design (the store changed since); a small
		// program's, or a replica's with no snapshot yet, from a pass of
		// its own, equal to a recomputation against the publication before.
		for _, reader := range replicas {
			if shared && op == "crash" {
				break // the refresh in flight at the crash may have stored a newer snapshot
			}
			reader.svc.ExpireSnapshotCache()
			before, err := reader.svc.StoredPublication(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got, err := reader.svc.Cohort(ctx)
			if err != nil {
				t.Fatalf("step %d (%s): cohort: %v", step, op, err)
			}
			if lastUsers > 256 && (!reader.fresh || shared) {
				if got.Published != last.Published || got.Published && (*got.Size != *last.Size || *got.Loss != *last.Loss) {
					t.Fatalf("step %d (%s): a large program's read refreshed within itself: %+v, the snapshot's %+v", step, op, got, last)
				}
				continue
			}
			want, err := reader.svc.RecomputeCohort(ctx, before)
			if err != nil {
				t.Fatal(err)
			}
			if !sameCohort(got, want) {
				t.Fatalf("step %d (%s): an unforced read's cohort %v size %v loss %v, a recomputation's %+v", step, op, got.Published, got.Size, got.Loss, want)
			}
		}
		// The job's refresh, then every replica's answer.
		r := pick()
		before, err := r.svc.StoredPublication(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ran, err := r.svc.RefreshAggregates(ctx); err != nil || !ran {
			t.Fatalf("step %d (%s): refresh ran=%v: %v", step, op, ran, err)
		}
		want, err := r.svc.RecomputeCohort(ctx, before)
		if err != nil {
			t.Fatal(err)
		}
		for _, reader := range replicas {
			reader.fresh = false
			reader.svc.ExpireSnapshotCache()
			got, err := reader.svc.Cohort(ctx)
			if err != nil {
				t.Fatalf("step %d (%s): cohort: %v", step, op, err)
			}
			if !sameCohort(got, want) {
				t.Fatalf("step %d (%s): the snapshot's cohort %v size %v loss %v, a recomputation's %+v", step, op, got.Published, got.Size, got.Loss, want)
			}
			last = got
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
			scrape := reader.svc.CohortMetrics()
			if g := scrape.StoredUsers; g != n || n != len(live) {
				t.Fatalf("step %d (%s): stored users %d, the store counts %d, the test %d", step, op, g, n, len(live))
			}
			if scrape.Published != got.Published || got.Published && (scrape.Size != *got.Size || scrape.Loss != *got.Loss) {
				t.Fatalf("step %d (%s): the scrape's cohort %+v, the API's %+v", step, op, scrape, got)
			}
		}
		lastUsers = len(live)
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
			replicas[i].svc.Close()
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

// smallProgram is an engine on bbolt with users who joined and sent a
// questionnaire each: fewer than a read refreshes within itself, so after
// a commit every read needs a pass that starts after it asked.
func smallProgram(t *testing.T, users int) (*service.Service, func(string)) {
	t.Helper()
	ctx := context.Background()
	db, err := store.OpenBolt(t.TempDir(), store.WithoutSync())
	if err != nil {
		t.Fatal(err)
	}
	cfg := benchConfig()
	cfg.Privacy.MinCohortSize = 3
	svc, err := service.New(cfg, service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Now: func() time.Time { return benchNow }, EffectsMinInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		svc.Close()
		_ = db.Close()
	})
	ingest := func(u string) {
		t.Helper()
		mood := 3
		if _, err := svc.Ingest(ctx, []telemetry.Sample{{User: u, Kind: telemetry.KindQuestionnaire, At: benchNow, Mood: &mood, BRS: []int{1, 2, 3, 2, 4, 3}}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range users {
		u := fmt.Sprintf("user-%d", i)
		if _, err := svc.SetConsent(ctx, u, telemetry.Scopes); err != nil {
			t.Fatal(err)
		}
		ingest(u)
	}
	return svc, ingest
}

// TestAggregateRefreshIsSingleFlight: readers that arrive while a pass
// runs share one pass after it, instead of one each.
func TestAggregateRefreshIsSingleFlight(t *testing.T) {
	ctx := context.Background()
	svc, ingest := smallProgram(t, 10)
	if _, err := svc.Cohort(ctx); err != nil {
		t.Fatal(err)
	}
	ingest("user-0") // a commit: the snapshot is out of date
	passes := svc.AggregateRefreshes()
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	svc.SetAggregatePassHook(func(context.Context) {
		once.Do(func() {
			close(started)
			<-release
		})
	})
	const readers = 16
	results := make(chan error, readers+1)
	read := func() {
		got, err := svc.Cohort(ctx)
		if err == nil && !got.Published {
			err = fmt.Errorf("cohort of 10 unpublished")
		}
		results <- err
	}
	go read() // starts the pass, held in the hook
	<-started
	for range readers {
		go read()
	}
	// Every reader asked during the pass: they wait on the next one.
	for {
		running, next := svc.RefreshWaiters()
		if running != 1 {
			t.Fatalf("%d readers wait on the running pass, want the one that started it", running)
		}
		if next == readers {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	for range readers + 1 {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	if got := svc.AggregateRefreshes() - passes; got != 2 {
		t.Fatalf("%d passes for %d readers during one pass, want 2 (that pass and one after it)", got, readers)
	}
}

// TestAggregateCloseStopsTheRefresh: Close cancels a pass in flight and
// waits for it; reads that need a pass fail from then on.
func TestAggregateCloseStopsTheRefresh(t *testing.T) {
	ctx := context.Background()
	svc, _ := smallProgram(t, 4)
	started, stopped := make(chan struct{}), make(chan struct{})
	svc.SetAggregatePassHook(func(ctx context.Context) {
		close(started)
		<-ctx.Done() // a pass that only ends when cancelled
		close(stopped)
	})
	read := make(chan error, 1)
	go func() { _, err := svc.Cohort(ctx); read <- err }()
	<-started
	svc.Close()
	select {
	case <-stopped:
	default:
		t.Fatal("Close returned while the pass still ran")
	}
	if err := <-read; !errors.Is(err, context.Canceled) {
		t.Fatalf("the read waiting on the cancelled pass: %v, want context.Canceled", err)
	}
	if _, err := svc.Cohort(ctx); err == nil {
		t.Fatal("a read after Close refreshed")
	}
}

// TestAggregateLearningCommitNeverWaitsForAPass: on a shared store with no
// snapshot yet (after a deploy or restore), a commit that learns asks for
// the refresh that stores the prior and returns without waiting for it;
// commits that learn within sharedSnapshotMaxAge share one pass after it.
func TestAggregateLearningCommitNeverWaitsForAPass(t *testing.T) {
	ctx := context.Background()
	db, err := store.OpenPostgres(ctx, postgres.Database(t, postgres.Start(t), "learning"), "agg/l")
	if err != nil {
		t.Fatal(err)
	}
	now := benchNow
	cfg := benchConfig()
	cfg.Privacy.MinCohortSize = 3
	svc, err := service.New(cfg, service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Now: func() time.Time { return now }, EffectsMinInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		svc.Close()
		_ = db.Close()
	})
	ingest := func(users ...string) {
		t.Helper()
		var samples []telemetry.Sample
		for _, u := range users {
			mood := 3
			samples = append(samples, telemetry.Sample{User: u, Kind: telemetry.KindQuestionnaire, At: now, Mood: &mood, BRS: []int{1, 2, 3, 2, 4, 3}})
		}
		if _, err := svc.Ingest(ctx, samples); err != nil {
			t.Fatal(err)
		}
	}
	var users []string
	for i := range 6 {
		u := fmt.Sprintf("user-%d", i)
		if _, err := svc.SetConsent(ctx, u, telemetry.Scopes); err != nil {
			t.Fatal(err)
		}
		users = append(users, u)
	}
	ingest(users...)
	decide := func() {
		t.Helper()
		for _, u := range users {
			if _, _, err := svc.Decide(ctx, u, service.DecisionRequest{}, ""); err != nil {
				t.Fatal(err)
			}
		}
		now = now.Add(11 * time.Minute) // the outcomes come due
	}
	decide()
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	svc.SetAggregatePassHook(func(context.Context) {
		once.Do(func() {
			close(started)
			<-release
		})
	})
	committed := make(chan struct{})
	go func() {
		defer close(committed)
		ingest(users...) // settles and learns from the outcomes
	}()
	select {
	case <-committed:
	case <-time.After(30 * time.Second):
		close(release)
		t.Fatal("a commit that learnt, with no snapshot, waited for a full pass")
	}
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("a commit that learnt, with no snapshot, asked for no refresh")
	}
	close(release)
	svc.SettleAggregateRefreshes()
	if got := checkPriorIsTheUsersMerge(t, ctx, svc, db, "after the first learning commit"); got == 0 {
		t.Fatal("nothing was learnt: the check checked nothing")
	}
	// Now with a snapshot: commits that learn within one rate-limit window
	// make at most one pass within the first and one after the window,
	// and the prior holds every one of them.
	passes := svc.AggregateRefreshes()
	began := time.Now()
	for range 4 {
		decide()
		ingest(users...)
	}
	// One pass at most at the start of each window of a second, plus the
	// one after the last (a slow machine may take more than one window).
	windows := 1 + int(time.Since(began)/time.Second)
	svc.SettleAggregateRefreshes()
	if got := svc.AggregateRefreshes() - passes; got < 1 || got > windows+1 {
		t.Fatalf("4 commits that learnt in %d window(s) of a second made %d passes, want 1 to %d", windows, got, windows+1)
	}
	checkPriorIsTheUsersMerge(t, ctx, svc, db, "after commits within the rate limit")
}
