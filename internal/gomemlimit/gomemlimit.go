// Package gomemlimit sets the Go runtime's soft memory limit from the
// container's memory limit, so that the garbage collector works harder
// as the heap nears the limit instead of the kernel killing the process.
// Without it the runtime knows no limit: the heap may grow to twice its
// live size (GOGC=100) between collections, and an operator with 230 MB
// of live heap at 5,000 programs passes a 512Mi limit
// (docs/scale-out.md, "Memory").
package gomemlimit

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// Ratio is the share of the container's limit given to the Go heap and
// runtime; the rest is for what the runtime does not count (the kernel's
// page cache charged to the container, cgo, thread stacks).
const Ratio = 0.9

// RefreshInterval is how often the container's limit is read again: a
// pod's resources can be resized in place (Kubernetes 1.35 and later).
const RefreshInterval = time.Minute

// FromContainer sets the runtime's memory limit to Ratio of the cgroup's
// (v1 or v2) and refreshes it until ctx ends. An explicit GOMEMLIMIT, or
// AUTOMEMLIMIT=off, wins; AUTOMEMLIMIT=0.8 sets another ratio. In a cgroup
// without a memory limit the runtime gets none. Where there are no cgroups
// to read (a local run on macOS) it says so once and sets nothing. It
// returns the limit in force, in bytes.
func FromContainer(ctx context.Context, log *slog.Logger) int64 {
	if _, err := memlimit.FromCgroup(); err != nil && !errors.Is(err, memlimit.ErrNoLimit) {
		log.Info("no cgroup memory limit to follow; GOMEMLIMIT left as it is", "reason", err.Error())
		return debug.SetMemoryLimit(-1)
	}
	return set(ctx, log, memlimit.FromCgroup)
}

func set(ctx context.Context, log *slog.Logger, provider memlimit.Provider) int64 {
	// An error (an unreadable file) is logged by memlimit and leaves the
	// runtime as it was: a missing limit is not worth failing to start over.
	limit, _ := memlimit.Set(memlimit.WithRatio(Ratio), memlimit.WithProvider(provider), memlimit.WithLogger(log),
		memlimit.WithRefreshInterval(ctx, RefreshInterval))
	return limit
}
