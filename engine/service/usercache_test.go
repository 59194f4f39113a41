package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/engine/telemetry"
)

// decisionIDs matches decision IDs, whose suffix is random: two engines
// given the same requests differ only there.
var decisionIDs = regexp.MustCompile(`[0-9a-f]{16}-[0-9a-f]{8}`)

// answer is an operation's result as JSON with the decision IDs blanked,
// or its error.
func answer(v any, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	b, jerr := json.Marshal(v)
	if jerr != nil {
		return "marshal: " + jerr.Error()
	}
	return decisionIDs.ReplaceAllString(string(b), "ID")
}

// TestBoundedUserCacheMatchesUnbounded: an engine whose user cache holds
// 3 of 40 users (nearly every operation a miss, entries evicted all the
// time) answers a random sequence of consent, ingest, state, decision,
// export, erasure, retention sweep and cohort reads exactly as one that
// caches every user, each on its own bbolt file; an erased or expired
// user is never served from the cache; and a new engine over the small
// cache's store, started cold, answers every user's state as the
// unbounded one does: nothing acknowledged was lost with an eviction.
func TestBoundedUserCacheMatchesUnbounded(t *testing.T) {
	ctx := context.Background()
	now := benchNow
	clock := func() time.Time { return now }
	open := func(size int) (*service.Service, store.Store) {
		db, err := store.OpenBolt(t.TempDir(), store.WithoutSync())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		svc, err := service.New(benchConfig(), service.Options{Store: db, Key: benchKey, Now: clock, UserCacheSize: size, AggregateInterval: -1, EffectsMinInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(svc.Close)
		return svc, db
	}
	const users, small = 40, 3
	bounded, boundedDB := open(small)
	full, _ := open(1_000_000)
	user := func(i int) string { return fmt.Sprintf("cache-user-%02d", i) }
	rng := rand.New(rand.NewPCG(19, 2))
	erased := map[int]bool{}
	for step := range 600 {
		now = now.Add(time.Duration(1+rng.IntN(600)) * time.Second)
		if rng.IntN(40) == 0 {
			now = now.Add(time.Duration(rng.IntN(500)) * time.Hour) // some users pass the retention period
		}
		u := rng.IntN(users)
		var op string
		var do func(svc *service.Service) string
		switch x := rng.IntN(100); {
		case x < 15:
			op = "consent"
			scopes := telemetry.Scopes
			if rng.IntN(4) == 0 {
				scopes = []telemetry.Scope{telemetry.ScopeBehaviour}
			}
			do = func(svc *service.Service) string { return answer(svc.SetConsent(ctx, user(u), scopes)) }
		case x < 20:
			op = "withdraw"
			do = func(svc *service.Service) string { return answer(svc.WithdrawConsent(ctx, user(u), nil)) }
		case x < 45:
			op = "ingest"
			var batch []telemetry.Sample
			for range 1 + rng.IntN(6) {
				mood := 1 + rng.IntN(5)
				batch = append(batch, telemetry.Sample{User: user(rng.IntN(users)), Kind: telemetry.KindQuestionnaire, At: now, Mood: &mood, BRS: []int{1 + rng.IntN(5), 2, 3, 4, 2, 3}})
			}
			do = func(svc *service.Service) string { return answer(svc.Ingest(ctx, batch)) }
		case x < 60:
			op = "state"
			do = func(svc *service.Service) string { return answer(svc.State(ctx, user(u))) }
		case x < 75:
			op = "decision"
			do = func(svc *service.Service) string {
				d, _, err := svc.Decide(ctx, user(u), service.DecisionRequest{}, "")
				return answer(d, err)
			}
		case x < 82:
			op = "export"
			do = func(svc *service.Service) string {
				e, err := svc.Export(ctx, user(u))
				return answer(e, err)
			}
		case x < 88:
			op = "erase"
			do = func(svc *service.Service) string { return answer(nil, svc.Erase(ctx, user(u))) }
		case x < 94:
			op = "sweep"
			do = func(svc *service.Service) string { return answer(svc.Sweep(ctx)) }
		default:
			op = "cohort"
			do = func(svc *service.Service) string {
				c, err := svc.Cohort(ctx)
				c.RunningSince = time.Time{}
				return answer(c, err)
			}
		}
		got, want := do(bounded), do(full)
		if got != want {
			t.Fatalf("step %d (%s %s): the bounded cache answered\n%s\nthe unbounded one\n%s", step, op, user(u), got, want)
		}
		if n := bounded.CachedUsers(); n > small {
			t.Fatalf("step %d (%s): %d users cached, the bound is %d", step, op, n, small)
		}
		if op == "erase" && got == answer(nil, nil) {
			erased[u] = true
			if _, err := bounded.State(ctx, user(u)); !errors.Is(err, service.ErrUnknownUser) {
				t.Fatalf("step %d: the erased user's state: %v, want ErrUnknownUser", step, err)
			}
		}
	}
	if len(erased) == 0 {
		t.Fatal("the sequence erased no user: it tested no erasure")
	}
	// A cold engine over the bounded one's store: what it answers comes
	// from the store alone.
	cold, err := service.New(benchConfig(), service.Options{Store: boundedDB, Key: benchKey, Now: clock, UserCacheSize: small, AggregateInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cold.Close)
	known := 0
	for u := range users {
		got, want := answer(cold.State(ctx, user(u))), answer(full.State(ctx, user(u)))
		if got != want {
			t.Fatalf("%s after a restart: %s, the unbounded engine %s", user(u), got, want)
		}
		if _, err := full.State(ctx, user(u)); err == nil {
			known++
		}
	}
	if known == 0 {
		t.Fatal("no user is stored at the end: the comparison tested nothing")
	}
}

// TestBoundedUserCacheConcurrentIngest: eight writers on twelve users
// through a cache of two entries, so entries are evicted while others
// are locked; every acknowledged sample is counted in the user's state
// afterwards, in this engine and in a cold one over the same store.
func TestBoundedUserCacheConcurrentIngest(t *testing.T) {
	ctx := context.Background()
	db, err := store.OpenBolt(t.TempDir(), store.WithoutSync())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	opts := service.Options{Store: db, Key: benchKey, Now: func() time.Time { return benchNow }, UserCacheSize: 2, AggregateInterval: -1}
	svc, err := service.New(benchConfig(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	const users = 12
	user := func(i int) string { return fmt.Sprintf("writer-user-%02d", i) }
	for u := range users {
		if _, err := svc.SetConsent(ctx, user(u), telemetry.Scopes); err != nil {
			t.Fatal(err)
		}
	}
	var acked [users]atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range 60 {
				a, b := rng.IntN(users), rng.IntN(users)
				mood := 3
				batch := []telemetry.Sample{
					{User: user(a), Kind: telemetry.KindQuestionnaire, At: benchNow, Mood: &mood},
					{User: user(b), Kind: telemetry.KindQuestionnaire, At: benchNow, Mood: &mood},
				}
				if _, err := svc.Ingest(ctx, batch); err != nil {
					t.Error(err)
					return
				}
				acked[a].Add(1)
				acked[b].Add(1)
				if _, err := svc.State(ctx, user(rng.IntN(users))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := svc.CachedUsers(); n > 2 {
		t.Fatalf("%d users cached after the writers, the bound is 2", n)
	}
	cold, err := service.New(benchConfig(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cold.Close)
	for u := range users {
		for name, s := range map[string]*service.Service{"the engine": svc, "a cold engine": cold} {
			st, err := s.State(ctx, user(u))
			if err != nil {
				t.Fatal(err)
			}
			if st.Samples != acked[u].Load() {
				t.Fatalf("%s: %s counts %d samples, %d were acknowledged", user(u), name, st.Samples, acked[u].Load())
			}
		}
	}
}
