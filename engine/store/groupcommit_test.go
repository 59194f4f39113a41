package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// TestGroupCommitIsolatesAFailingChange: changes sharing one transaction
// (one group of the committer) each commit or fail alone. A change whose
// write fails inside the transaction (bbolt refuses an empty key) gets its
// own error and stores nothing; a change that conflicts gets ErrConflict;
// every other change of the group is committed, durably, as bbolt's
// DB.Batch would (the failing call rerun alone, the others retried).
func TestGroupCommitIsolatesAFailingChange(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Commit(ctx, Change{Users: map[string]Write{"taken": {Value: []byte("v1")}}}); err != nil {
		t.Fatal(err)
	}
	const good = 6
	var group []commitRequest
	add := func(c Change) chan error {
		r := commitRequest{change: c, result: make(chan error, 1)}
		group = append(group, r)
		return r.result
	}
	var goods []chan error
	for i := range good / 2 {
		goods = append(goods, add(Change{Users: map[string]Write{fmt.Sprintf("user-%d", i): {Value: []byte("batch")}},
			Batches: map[string]Batch{fmt.Sprintf("batch-%d", i): {Value: []byte("answer")}}}))
	}
	// Its second write fails after its first was applied in the shared
	// transaction: neither may stay.
	failing := add(Change{Users: map[string]Write{"half": {Value: []byte("x")}, "": {Value: []byte("empty key")}}})
	conflicting := add(Change{Users: map[string]Write{"taken": {Value: []byte("lost race")}}}) // read at version 0
	for i := good / 2; i < good; i++ {
		goods = append(goods, add(Change{Users: map[string]Write{fmt.Sprintf("user-%d", i): {Value: []byte("batch")}}}))
	}
	// The committer's own goroutine waits for commits on the channel; the
	// group is handed over as the committer would hand it.
	s.commitGroup(group)

	if err := <-failing; err == nil || errors.Is(err, ErrConflict) {
		t.Errorf("the change with an empty key: %v, want its own write error", err)
	}
	if err := <-conflicting; !errors.Is(err, ErrConflict) {
		t.Errorf("the conflicting change: %v, want ErrConflict", err)
	}
	for i, ch := range goods {
		if err := <-ch; err != nil {
			t.Errorf("change %d of the group failed with %v: only its own failure may fail a change", i, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// What was answered is what is on disk.
	s, err = OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	users, err := s.Users(ctx, []string{"half", "taken", "user-0", "user-5"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := users["half"]; ok {
		t.Error("the failed change is half stored")
	}
	if got := string(users["taken"].Value); got != "v1" {
		t.Errorf("the conflicting change overwrote the user: %q", got)
	}
	for _, k := range []string{"user-0", "user-5"} {
		if users[k].Version != 1 {
			t.Errorf("%s: %+v, want stored once at version 1", k, users[k])
		}
	}
	if b, err := s.Batch(ctx, "batch-0"); err != nil || string(b.Value) != "answer" {
		t.Errorf("batch-0's record: %q, %v", b.Value, err)
	}
}
