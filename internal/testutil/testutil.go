// Package testutil holds helpers shared by tests in several packages.
package testutil

import (
	"net"
	"os"
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

// FreePort asks the kernel for an unused loopback port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// AwaitExit waits up to grace for a process that was asked to stop to
// exit (exited closes when it has), then kills it and waits for that.
func AwaitExit(p *os.Process, exited <-chan struct{}, grace time.Duration) {
	select {
	case <-exited:
	case <-time.After(grace):
		_ = p.Kill()
		<-exited
	}
}
