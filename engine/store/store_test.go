package store

import (
	"errors"
	"path/filepath"

	"bufio"
	"context"
	"fmt"
	bolt "go.etcd.io/bbolt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// TestMain lets the test binary act as a writer process that is killed
// with SIGKILL right after its commits are acknowledged.
func TestMain(m *testing.M) {
	if dir := os.Getenv("STORE_KILL_CHILD_DIR"); dir != "" {
		killChild(dir)
		return
	}
	os.Exit(m.Run())
}

func killChild(dir string) {
	s, err := OpenBolt(dir)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	// Concurrent commits, as concurrent requests would make them.
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 25 {
				key := fmt.Sprintf("user-%d-%d", w, i)
				if err := s.Commit(context.Background(), Change{Users: map[string]Write{key: {Value: []byte("state of " + key)}}}); err != nil {
					fmt.Println("commit:", err)
					os.Exit(2)
				}
				fmt.Println("acked", key) // the acknowledgement a client would get
			}
		})
	}
	wg.Wait()
	// Die without closing the database or flushing anything.
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
}

func TestAcknowledgedCommitsSurviveKill9(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "STORE_KILL_CHILD_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acked []string
	scanner := bufio.NewScanner(out)
	for scanner.Scan() {
		if key, ok := strings.CutPrefix(scanner.Text(), "acked "); ok {
			acked = append(acked, key)
		} else {
			t.Errorf("child: %s", scanner.Text())
		}
	}
	err = cmd.Wait()
	if status, ok := errors.AsType[*exec.ExitError](err); !ok || status.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die by SIGKILL: %v", err)
	}
	if len(acked) != 200 {
		t.Fatalf("child acknowledged %d commits, want 200", len(acked))
	}

	s, err := OpenBolt(dir)
	if err != nil {
		t.Fatalf("reopen after kill -9: %v", err)
	}
	defer func() { _ = s.Close() }()
	stored := map[string]string{}
	if err := s.EachUser(context.Background(), func(k string, it Item) error { stored[k] = string(it.Value); return nil }); err != nil {
		t.Fatal(err)
	}
	for _, key := range acked {
		if stored[key] != "state of "+key {
			t.Errorf("acknowledged %s lost after kill -9 (got %q)", key, stored[key])
		}
	}
}

// TestBoltConvertsFilesFromBeforeVersions: a data directory written by an
// engine that stored plain values opens with every value at version 1.
func TestBoltConvertsFilesFromBeforeVersions(t *testing.T) {
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		users, _ := tx.CreateBucketIfNotExists(usersBucket)
		meta, _ := tx.CreateBucketIfNotExists(metaBucket)
		if err := users.Put([]byte("old-user"), []byte(`{"samples":3}`)); err != nil {
			return err
		}
		return meta.Put([]byte("population"), []byte(`{"arms":{}}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Close()

	s, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	ctx := context.Background()
	got, _ := s.Users(ctx, []string{"old-user"})
	if it := got["old-user"]; string(it.Value) != `{"samples":3}` || it.Version != 1 {
		t.Errorf("old user = %q v%d, want its value at version 1", it.Value, it.Version)
	}
	if m, _ := s.Meta(ctx, "population"); string(m.Value) != `{"arms":{}}` || m.Version != 1 {
		t.Errorf("old meta = %q v%d", m.Value, m.Version)
	}
	if err := s.Commit(ctx, Change{Users: map[string]Write{"old-user": {Value: []byte("new"), IfVersion: 1}}}); err != nil {
		t.Fatalf("update at the converted version: %v", err)
	}
}
