// Package proc holds the process and port helpers that the local
// development stack (the local cluster, engine runtime, PostgreSQL) and the
// tests share. It must not import testing: the attune CLI links it.
package proc

import (
	"net"
	"os"
	"time"
)

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
