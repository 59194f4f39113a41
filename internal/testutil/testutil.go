// Package testutil holds helpers shared by tests in several packages.
package testutil

import (
	"bytes"
	"sync"
	"testing"
	"time"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
)

// Eventually polls check every interval until it returns nil, failing the
// test with the last error once timeout has passed.
func Eventually(t testing.TB, timeout, interval time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if last = check(); last == nil {
			return
		}
		time.Sleep(interval)
	}
	t.Fatalf("%s: still failing after %s: %v", what, timeout, last)
}

// RecentStrengths are the last n strengths in force on p: the credited
// history's, then the one in force now. The closed-loop tests judge
// convergence on their mean.
func RecentStrengths(p *wellbeingv1alpha1.MeditationProgram, n int) []float64 {
	var out []float64
	for _, h := range p.Status.History {
		out = append(out, h.Strength)
	}
	if p.Status.Strength != nil {
		out = append(out, *p.Status.Strength)
	}
	return out[max(0, len(out)-n):]
}

// LockedBuffer is a log that goroutines write while the test reads it.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Reset empties the buffer.
func (b *LockedBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}
