// Package postgres gives tests a real, throwaway PostgreSQL server
// (internal/devstack/postgres), stopped at the test's cleanup.
package postgres

import (
	"context"
	"errors"
	"os"
	"testing"

	devpg "github.com/attune-io/attune/internal/devstack/postgres"
)

// Server is a running PostgreSQL server.
type Server = devpg.Server

// Installed reports whether the server binaries are on this machine.
func Installed() bool { return devpg.Installed() }

// Start starts a server for the test. Without the binaries the test skips,
// unless ATTUNE_REQUIRE_POSTGRES is set (CI sets it), when it fails.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := devpg.Launch()
	if errors.Is(err, devpg.ErrNotInstalled) && os.Getenv("ATTUNE_REQUIRE_POSTGRES") == "" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Database creates a fresh database on s and returns its connection string.
func Database(t testing.TB, s *Server, name string) string {
	t.Helper()
	conn, err := s.CreateDatabase(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}
