package store

import (
	"bufio"
	"context"
	"fmt"
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
	if status, ok := err.(*exec.ExitError); !ok || status.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
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
