package service_test

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/engine/telemetry"
	"github.com/attune-io/attune/test/postgres"
)

// TestCohortCannotBeDifferenced plays an adversary who reads every
// publication of the cohort and differences successive ones to learn one
// user's contribution (the loss of a user who just answered a
// questionnaire). The users' true losses, read one by one, show that the
// attack works on the raw aggregate: with only the target changed, n·L'
// − n·L is exactly the target's change. The published cohort does not
// change until 5 users' contributions changed (the floor k = 5), so the
// adversary's difference is zero after the target alone, and after the
// republication mixes five users' changes, far from the target's own.
// The publication holds across a restart, and replicas of a shared store
// publish the same.
func TestCohortCannotBeDifferenced(t *testing.T) {
	ctx := context.Background()
	const k, users = 5, 20
	for _, backend := range []string{"bolt", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			now := benchNow
			clock := func() time.Time { return now }
			var open func() store.Store
			if backend == "bolt" {
				dir := t.TempDir()
				open = func() store.Store {
					db, err := store.OpenBolt(dir)
					if err != nil {
						t.Fatal(err)
					}
					return db
				}
			} else {
				conn := postgres.Start(t).ConnString
				open = func() store.Store {
					db, err := store.OpenPostgres(ctx, conn, "bench/p")
					if err != nil {
						t.Fatal(err)
					}
					return db
				}
			}
			cfg := benchConfig()
			cfg.Privacy.MinCohortSize = k
			start := func() (*service.Service, store.Store) {
				db := open()
				t.Cleanup(func() { _ = db.Close() })
				svc, err := service.New(cfg, service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Now: clock})
				if err != nil {
					t.Fatal(err)
				}
				return svc, db
			}
			svc, db := start()
			answer := func(user string, mood int) {
				t.Helper()
				if _, err := svc.Ingest(ctx, []telemetry.Sample{{User: user, Kind: telemetry.KindQuestionnaire, At: now, Mood: &mood}}); err != nil {
					t.Fatal(err)
				}
			}
			join := func(user string, mood int) {
				t.Helper()
				if _, err := svc.SetConsent(ctx, user, []telemetry.Scope{telemetry.ScopeQuestionnaire}); err != nil {
					t.Fatal(err)
				}
				answer(user, mood)
			}
			name := func(i int) string { return fmt.Sprintf("user-%02d", i) }
			for i := range users {
				join(name(i), 1+i%5)
			}
			// rawTotal is the sum of the users' own losses: what an
			// aggregate without protection would be, times its size.
			rawTotal := func(n int) float64 {
				sum := 0.0
				for i := range n {
					st, err := svc.State(ctx, name(i))
					if err != nil || st.Loss == nil {
						t.Fatalf("%s: %+v %v", name(i), st, err)
					}
					sum += *st.Loss
				}
				return sum
			}
			read := func() service.CohortSummary {
				t.Helper()
				c, err := svc.Cohort(ctx)
				if err != nil || !c.Published {
					t.Fatalf("cohort %+v, %v", c, err)
				}
				return c
			}
			total := func(c service.CohortSummary) float64 { return *c.Loss * float64(*c.Size) }

			lossOf := func(i int) float64 {
				st, err := svc.State(ctx, name(i))
				if err != nil || st.Loss == nil {
					t.Fatalf("%s: %+v %v", name(i), st, err)
				}
				return *st.Loss
			}
			before := map[int]float64{}
			for i := range users {
				before[i] = lossOf(i)
			}
			a := read()
			if math.Abs(total(a)-rawTotal(users)) > 1e-9 {
				t.Fatalf("the first publication %v is not the cohort's own %v", total(a), rawTotal(users))
			}
			now = now.Add(time.Second)
			targetBefore := rawTotal(8) - rawTotal(7) // user-07's loss
			answer(name(7), 5)                        // the target answers again, far from before (mood 3)
			targetAfter := rawTotal(8) - rawTotal(7)
			rawAttack := rawTotal(users) - total(a) // the difference an unprotected aggregate would give
			if math.Abs(rawAttack-(targetAfter-targetBefore)) > 1e-9 || math.Abs(targetAfter-targetBefore) < 1e-3 {
				t.Fatalf("the attack on the raw aggregate gives %v, the target's change is %v: the test does not show the threat", rawAttack, targetAfter-targetBefore)
			}
			b := read()
			if *b.Loss != *a.Loss || *b.Size != *a.Size || *b.Means.Emotion != *a.Means.Emotion || !b.ObservedAt.Equal(a.ObservedAt) {
				t.Fatalf("after the target alone the publication changed: %+v → %+v", a, b)
			}
			// Up to k−1 changes (the target, a newcomer, two more answers)
			// publish nothing new either.
			join(name(users), 2)
			answer(name(1), 5)
			answer(name(2), 5)
			if c := read(); *c.Loss != *a.Loss || *c.Size != users {
				t.Fatalf("after %d changes: size %d loss %v, want the first publication", k-1, *c.Size, *c.Loss)
			}
			// The k-th change publishes the cohort as it is now.
			answer(name(3), 5)
			c := read()
			if *c.Size != users+1 || math.Abs(total(c)-rawTotal(users+1)) > 1e-9 || !c.ObservedAt.Equal(now) {
				t.Fatalf("after %d changes: size %d total %v observed %v, want the fresh cohort (%v)", k, *c.Size, total(c), c.ObservedAt, rawTotal(users+1))
			}
			// The adversary's difference now mixes five users: it is the
			// sum of their changes (the newcomer's whole loss among them),
			// of which the target's is one part the others hide.
			attack := total(c) - total(a)
			others := lossOf(users)
			for _, i := range []int{1, 2, 3} {
				others += lossOf(i) - before[i]
			}
			if math.Abs(attack-(targetAfter-targetBefore)-others) > 1e-9 {
				t.Errorf("differencing the publications gives %v, want the five changes' sum %v", attack, targetAfter-targetBefore+others)
			}
			if math.Abs(others) < 1e-3 {
				t.Errorf("the other changes sum to %v: they hide nothing of the target's %v", others, targetAfter-targetBefore)
			}

			// A restart (or another replica) publishes the same until k
			// more changes.
			_ = db.Close()
			svc, _ = start() // closed at cleanup
			answer(name(4), 5)
			if d := read(); *d.Loss != *c.Loss || !d.ObservedAt.Equal(c.ObservedAt) {
				t.Errorf("after a restart and one change: %v at %v, want the last publication %v at %v", *d.Loss, d.ObservedAt, *c.Loss, c.ObservedAt)
			}
			if backend == "postgres" {
				replica, _ := start()
				r, err := replica.Cohort(ctx)
				if err != nil || *r.Loss != *c.Loss {
					t.Errorf("another replica publishes %+v, %v; want %v", r, err, *c.Loss)
				}
			}
		})
	}
}
