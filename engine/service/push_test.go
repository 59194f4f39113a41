package service_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
)

// TestPushedStrengthRunsUntilTheFileBringsIt: a pushed strength is in
// force at once; a file that still holds the older strength (the kubelet
// is late) does not undo it; the file that brings the pushed values
// changes nothing (same generation, same runningSince); later the file
// wins again, and a push no file follows yields to the file when its hold
// ends.
func TestPushedStrengthRunsUntilTheFileBringsIt(t *testing.T) {
	var mu sync.Mutex
	now := benchNow
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	db, err := store.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	file := benchConfig() // strength 0.5 in [0.1, 0.9]
	svc, err := service.New(file, service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	cohort := func() service.CohortSummary {
		t.Helper()
		c, err := svc.Cohort(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	pushed := config.Strength{Value: 0.7, Min: 0.1, Max: 0.9}
	advance(time.Minute)
	pushedAt := clock()
	res, err := svc.PushStrength(pushed, pushed.Generation())
	if err != nil || !res.Applied || res.Generation != pushed.Generation() || !res.RunningSince.Equal(pushedAt) {
		t.Fatalf("push: %+v, %v; want applied, generation %s since %v", res, err, pushed.Generation(), pushedAt)
	}
	if c := cohort(); c.Strength != 0.7 || c.Generation != pushed.Generation() {
		t.Fatalf("after the push: strength %v generation %s, want 0.7 %s", c.Strength, c.Generation, pushed.Generation())
	}
	if res, err := svc.PushStrength(pushed, pushed.Generation()); err != nil || res.Applied || !res.RunningSince.Equal(pushedAt) {
		t.Errorf("the same push again: %+v, %v; want not applied, running since %v", res, err, pushedAt)
	}

	// The kubelet delivers a file that still holds 0.5, with another
	// change: the change applies, the strength stays pushed.
	late := *file
	late.Target.Emotion = 0.2
	advance(time.Minute)
	svc.SetConfig(&late)
	if c := cohort(); c.Strength != 0.7 || !c.RunningSince.Equal(pushedAt) || svc.Config().Target.Emotion != 0.2 {
		t.Errorf("after a late file: strength %v since %v emotion target %v; want 0.7 since %v, 0.2", c.Strength, c.RunningSince, svc.Config().Target.Emotion, pushedAt)
	}
	// The file that brings the pushed values changes nothing.
	caughtUp := late
	caughtUp.Strength = pushed
	advance(time.Minute)
	svc.SetConfig(&caughtUp)
	if c := cohort(); c.Strength != 0.7 || c.Generation != pushed.Generation() || !c.RunningSince.Equal(pushedAt) {
		t.Errorf("after the file caught up: strength %v generation %s since %v; want 0.7 %s since %v", c.Strength, c.Generation, c.RunningSince, pushed.Generation(), pushedAt)
	}
	// From then on the file is the source again.
	next := caughtUp
	next.Strength.Value = 0.6
	svc.SetConfig(&next)
	if c := cohort(); c.Strength != 0.6 {
		t.Errorf("a file after the push caught up: strength %v, want 0.6", c.Strength)
	}

	// A push no file follows yields to the file when its hold ends.
	defer service.SetPushHold(200 * time.Millisecond)()
	orphan := config.Strength{Value: 0.3, Min: 0.1, Max: 0.9}
	if _, err := svc.PushStrength(orphan, orphan.Generation()); err != nil {
		t.Fatal(err)
	}
	if c := cohort(); c.Strength != 0.3 {
		t.Fatalf("after the second push: strength %v, want 0.3", c.Strength)
	}
	deadline := time.Now().Add(10 * time.Second)
	for cohort().Strength != 0.6 {
		if time.Now().After(deadline) {
			t.Fatalf("the hold ended 10 s ago and the strength is still %v, not the file's 0.6", cohort().Strength)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPushedStrengthIsValidated: a push is refused, naming the field,
// when its generation is not its values' or the values are not a valid
// strength; nothing changes.
func TestPushedStrengthIsValidated(t *testing.T) {
	db, err := store.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	svc, err := service.New(benchConfig(), service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	ok := config.Strength{Value: 0.7, Min: 0.1, Max: 0.9}
	for _, tc := range []struct {
		name       string
		st         config.Strength
		generation string
		field      string
	}{
		{"another generation", ok, config.Strength{Value: 0.6, Min: 0.1, Max: 0.9}.Generation(), "generation"},
		{"no generation", ok, "", "generation"},
		{"value above 1", config.Strength{Value: 1.5, Min: 0.1, Max: 0.9}, config.Strength{Value: 1.5, Min: 0.1, Max: 0.9}.Generation(), "strength.value"},
		{"value outside its bounds", config.Strength{Value: 0.95, Min: 0.1, Max: 0.9}, config.Strength{Value: 0.95, Min: 0.1, Max: 0.9}.Generation(), "strength"},
	} {
		_, err := svc.PushStrength(tc.st, tc.generation)
		fe, isField := errors.AsType[*config.FieldError](err)
		if !isField || fe.Field != tc.field {
			t.Errorf("%s: error %v, want a FieldError on %s", tc.name, err, tc.field)
		}
	}
	if s := svc.Config().Strength; s.Value != 0.5 {
		t.Errorf("after refused pushes the strength is %v, want the file's 0.5", s.Value)
	}
}
