package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// TestBoltEachUserPages: a pass over more users than one page reads every
// user exactly once, in key order, across the page boundaries, and stops
// at fn's error.
func TestBoltEachUserPages(t *testing.T) {
	ctx := context.Background()
	db, err := OpenBolt(t.TempDir(), WithoutSync())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	const users = 2*eachUserPage + 7
	for from := 0; from < users; from += 5000 {
		change := Change{Users: map[string]Write{}}
		for i := from; i < min(from+5000, users); i++ {
			change.Users[fmt.Sprintf("u-%06d", i)] = Write{Value: fmt.Appendf(nil, "v%d", i)}
		}
		if err := db.Commit(ctx, change); err != nil {
			t.Fatal(err)
		}
	}
	i := 0
	err = db.EachUser(ctx, func(key string, item Item) error {
		if want := fmt.Sprintf("u-%06d", i); key != want || string(item.Value) != fmt.Sprintf("v%d", i) || item.Version < 1 {
			return fmt.Errorf("user %d read as %s=%q (version %d), want %s", i, key, item.Value, item.Version, want)
		}
		i++
		return nil
	})
	if err != nil || i != users {
		t.Fatalf("read %d users (%v), want %d", i, err, users)
	}
	stop := fmt.Errorf("stop")
	n := 0
	if err := db.EachUser(ctx, func(string, Item) error {
		if n++; n == eachUserPage+1 {
			return stop
		}
		return nil
	}); !errors.Is(err, stop) || n != eachUserPage+1 {
		t.Fatalf("fn's error at user %d: EachUser returned %v after %d users", eachUserPage+1, err, n)
	}
}
