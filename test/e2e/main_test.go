//go:build e2e

// Package e2e runs Attune end to end on the local cluster: real
// kube-apiserver, controller manager, scheduler, kwok nodes with fake GPUs,
// the operator, and real engine processes. Run with `make test-e2e`.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attune-io/attune/internal/devstack/localcluster"
	"github.com/attune-io/attune/internal/testutil"
)

var stack *localcluster.Stack

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	binDir := os.Getenv("ATTUNE_K8S_BIN")
	if binDir == "" {
		fmt.Fprintln(os.Stderr, "ATTUNE_K8S_BIN is not set: run `make test-e2e`")
		return 1
	}
	state, err := os.MkdirTemp("", "attune-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(state) }()
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	ctx := context.Background()
	stack, err = localcluster.StartStack(ctx, localcluster.StackOptions{
		Options:  localcluster.Options{StateDir: state, BinDir: binDir, GPUNodes: 1, GPUsPerNode: 4, CPUNodes: 1, Log: os.Stderr},
		RepoRoot: root, Postgres: true,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start local cluster:", err)
		return 1
	}
	code := m.Run()
	stack.Stop()
	// Every process the tests started must be gone.
	if left := stack.Running(); len(left) > 0 {
		fmt.Fprintln(os.Stderr, "processes still running after Stop:", left)
		code = 1
	}
	if out, _ := exec.Command("pgrep", "-f", state).Output(); strings.TrimSpace(string(out)) != "" {
		fmt.Fprintf(os.Stderr, "processes using %s still running: %s\n", state, out)
		code = 1
	}
	return code
}

func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	testutil.Eventually(t, timeout, 250*time.Millisecond, what, check)
}
