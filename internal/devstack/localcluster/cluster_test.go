package localcluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// An error return must not panic on the nil Cluster it returns: its
// deferred Stop once dereferenced it, and CI saw the panic instead of the
// error.
func TestStartReportsAMissingBinaryWithoutPanicking(t *testing.T) {
	c, err := Start(context.Background(), Options{BinDir: t.TempDir(), StateDir: t.TempDir()})
	if err == nil || c != nil {
		t.Fatalf("Start with no binaries = (%v, %v), want (nil, error)", c, err)
	}
	if !strings.Contains(err.Error(), "etcd missing") {
		t.Fatalf("error %q does not name the missing binary", err)
	}
}

func TestWaitForEndsAtOnceOnAStop(t *testing.T) {
	calls := 0
	begun := time.Now()
	err := WaitFor(context.Background(), time.Minute, "thing", func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return stopWaiting{errors.New("its maker exited")}
	})
	if err == nil || !strings.Contains(err.Error(), "thing: its maker exited") {
		t.Fatalf("WaitFor = %v, want the stop's reason", err)
	}
	if calls != 3 || time.Since(begun) > 10*time.Second {
		t.Fatalf("WaitFor polled %d times over %s, want 3 polls and an early end", calls, time.Since(begun))
	}
}
