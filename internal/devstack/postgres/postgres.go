// Package postgres runs a real, throwaway PostgreSQL server for tests and
// the demo:
// initdb in a temporary directory, the server on a loopback port with trust
// authentication, stopped with pg_ctl (and its files removed) at cleanup.
// The server runs as a child process rather than through pg_ctl start,
// which would daemonise it and let it outlive a test that crashes. It uses
// Debian's postgresql package (.ci/run installs it).
package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/attune-io/attune/internal/devstack/proc"
)

// Server is a running PostgreSQL server.
type Server struct {
	// ConnString reaches the server's "postgres" database as a superuser.
	ConnString string
	Dir        string
	bin        string
	cred       *syscall.Credential
	cmd        *exec.Cmd
	exited     chan struct{}
}

// binDir finds initdb and postgres: $ATTUNE_POSTGRES_BIN, else the newest
// /usr/lib/postgresql/*/bin.
func binDir() (string, error) {
	if dir := os.Getenv("ATTUNE_POSTGRES_BIN"); dir != "" {
		return dir, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", ErrNotInstalled
}

// ErrNotInstalled: the PostgreSQL server binaries are not on this machine.
var ErrNotInstalled = errors.New("PostgreSQL server binaries not found: install Debian's postgresql package (.ci/run does) or set ATTUNE_POSTGRES_BIN")

// Installed reports whether the server binaries are on this machine.
func Installed() bool {
	_, err := binDir()
	return err == nil
}

// Launch starts a server outside a test (the local stack, the demo); the
// caller stops it.
func Launch() (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	return start(bin)
}

// start runs initdb and the server. PostgreSQL refuses to run as root, so
// as root both run as the postgres user the package creates.
func start(bin string) (*Server, error) {
	dir, err := os.MkdirTemp("", "attune-pg-")
	if err != nil {
		return nil, err
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	_ = os.Chmod(dir, 0o700)
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "attune", "--auth=trust", "-E", "UTF8", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w: %s", err, out)
	}
	port, err := proc.FreePort()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return nil, err
	}
	if cred != nil {
		_ = logFile.Chown(int(cred.Uid), int(cred.Gid))
	}
	// Not daemonised (unlike pg_ctl): the server dies with the test process.
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	s := &Server{
		ConnString: fmt.Sprintf("postgres://attune@127.0.0.1:%d/postgres?sslmode=disable", port),
		Dir:        dir, bin: bin, cred: cred, cmd: cmd, exited: make(chan struct{}),
	}
	go func() { _ = cmd.Wait(); _ = logFile.Close(); close(s.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, s.ConnString)
		cancel()
		if err == nil {
			_ = conn.Close(context.Background())
			return s, nil
		}
		select {
		case <-s.exited:
			log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("postgres exited: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("postgres not ready after 30s: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop shuts the server down (pg_ctl's fast shutdown, then kill) and
// removes its files.
func (s *Server) Stop() {
	stop := exec.Command(filepath.Join(s.bin, "pg_ctl"), "stop", "-D", filepath.Join(s.Dir, "data"), "-m", "fast", "-w", "-t", "10")
	stop.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	if err := stop.Run(); err != nil {
		_ = s.cmd.Process.Signal(syscall.SIGINT)
	}
	proc.AwaitExit(s.cmd.Process, s.exited, 10*time.Second)
	_ = os.RemoveAll(s.Dir)
}

// CreateDatabase creates a fresh database and returns its connection
// string, so users of one server do not share state.
func (s *Server) CreateDatabase(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, s.ConnString)
	if err != nil {
		return "", fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return strings.Replace(s.ConnString, "/postgres?", "/"+name+"?", 1), nil
}
