// Package testutil holds helpers shared by tests in several packages.
package testutil

import (
	"testing"
	"time"
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
