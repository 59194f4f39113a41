package gomemlimit

import (
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// restoreLimit puts back the runtime's limit and clears the variables that
// override ours for the test (t.Setenv restores them afterwards).
func restoreLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	for _, name := range []string{"GOMEMLIMIT", "AUTOMEMLIMIT"} {
		t.Setenv(name, "")
		if err := os.Unsetenv(name); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTheRuntimeGetsNineTenthsOfTheContainersLimit(t *testing.T) {
	restoreLimit(t)
	const container = 512 << 20 // the chart's default limit
	got := set(t.Context(), slog.New(slog.DiscardHandler), memlimit.Limit(container))
	want := int64(container) * 9 / 10
	if got != want || debug.SetMemoryLimit(-1) != want {
		t.Fatalf("limit = %d (runtime %d), want %d", got, debug.SetMemoryLimit(-1), want)
	}
}

// A platform team's own GOMEMLIMIT is theirs to set.
func TestAnExplicitGOMEMLIMITIsLeftAlone(t *testing.T) {
	restoreLimit(t)
	debug.SetMemoryLimit(300 << 20) // as the runtime reads GOMEMLIMIT=300MiB at start
	t.Setenv("GOMEMLIMIT", "300MiB")
	if got := set(t.Context(), slog.New(slog.DiscardHandler), memlimit.Limit(512<<20)); got != 300<<20 || debug.SetMemoryLimit(-1) != 300<<20 {
		t.Fatalf("limit = %d, want GOMEMLIMIT's %d", got, 300<<20)
	}
}

// A cgroup without a memory limit: the runtime gets none (not the limit it
// had, which a failed read would leave).
func TestNoContainerLimitLeavesNone(t *testing.T) {
	restoreLimit(t)
	debug.SetMemoryLimit(300 << 20)
	noLimit := func() (uint64, error) { return 0, memlimit.ErrNoLimit }
	if got := set(t.Context(), slog.New(slog.DiscardHandler), noLimit); got != math.MaxInt64 || debug.SetMemoryLimit(-1) != math.MaxInt64 {
		t.Fatalf("limit = %d (runtime %d), want none (%d)", got, debug.SetMemoryLimit(-1), int64(math.MaxInt64))
	}
}

// The real cgroup: this test binary runs again inside a memory cgroup of
// 512 MiB (v1, or v2 where that is the mount) and reports the limit
// FromContainer set. It needs root and a writable cgroup hierarchy; where
// there is none it says so and skips.
func TestFromContainerReadsARealCgroupLimit(t *testing.T) {
	if os.Getenv("ATTUNE_GOMEMLIMIT_CHILD") == "1" {
		fmt.Println("limit", FromContainer(t.Context(), slog.New(slog.DiscardHandler)))
		return
	}
	const container = 512 << 20
	dir, procs := "", ""
	for _, try := range []struct{ dir, limitFile, procs string }{
		{"/sys/fs/cgroup/memory", "memory.limit_in_bytes", "cgroup.procs"}, // v1
		{"/sys/fs/cgroup", "memory.max", "cgroup.procs"},                   // v2
	} {
		d := filepath.Join(try.dir, "attune-gomemlimit-"+strconv.Itoa(os.Getpid()))
		if err := os.Mkdir(d, 0o755); err != nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(d, try.limitFile), []byte(strconv.Itoa(container)), 0o644); err != nil {
			_ = os.Remove(d)
			continue
		}
		dir, procs = d, filepath.Join(d, try.procs)
		break
	}
	if dir == "" {
		t.Skip("no writable memory cgroup here (needs root and cgroup v1's memory hierarchy or v2's with the memory controller)")
	}
	t.Cleanup(func() { _ = os.Remove(dir) })
	cmd := exec.Command("sh", "-c", `echo $$ > "$1" && exec "$2" -test.run '^TestFromContainerReadsARealCgroupLimit$'`, "sh", procs, os.Args[0])
	cmd.Env = []string{"ATTUNE_GOMEMLIMIT_CHILD=1"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOMEMLIMIT=") && !strings.HasPrefix(kv, "AUTOMEMLIMIT=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child in %s: %v\n%s", dir, err, out)
	}
	want := fmt.Sprintf("limit %d", int64(container)*9/10)
	if !strings.Contains(string(out), want) {
		t.Fatalf("child in a %d-byte cgroup printed %q, want %q", container, out, want)
	}
}
