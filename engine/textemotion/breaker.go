package textemotion

import (
	"errors"
	"sync"
	"time"
)

// ErrCircuitOpen: the breaker skipped the call (the server failed
// repeatedly and its backoff has not elapsed).
var ErrCircuitOpen = errors.New("model server circuit open")

// Breaker states.
const (
	BreakerClosed   = "closed"
	BreakerOpen     = "open"
	BreakerHalfOpen = "half-open"
)

// Breaker stops calling a failing model server: after Threshold
// consecutive failures it opens for Cooldown, then lets one call through
// (half-open); success closes it, failure reopens it for twice the previous
// backoff, up to MaxCooldown. Safe for concurrent use.
type Breaker struct {
	Threshold   int           // consecutive failures that open it; default 5
	Cooldown    time.Duration // first backoff; default 5s
	MaxCooldown time.Duration // longest backoff; default 1m
	Now         func() time.Time
	// OnChange, when set, is told each new state (outside the lock).
	OnChange func(state string)

	mu        sync.Mutex
	failures  int
	state     string
	backoff   time.Duration
	openUntil time.Time
	probing   bool
}

func (b *Breaker) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

func (b *Breaker) threshold() int {
	if b.Threshold > 0 {
		return b.Threshold
	}
	return 5
}

func (b *Breaker) cooldown() time.Duration {
	if b.Cooldown > 0 {
		return b.Cooldown
	}
	return 5 * time.Second
}

func (b *Breaker) maxCooldown() time.Duration {
	if b.MaxCooldown > 0 {
		return b.MaxCooldown
	}
	return time.Minute
}

// Allow reports whether a call may go to the server now. In half-open one
// probe goes through; every other caller is refused until it reports.
func (b *Breaker) Allow() bool {
	b.mu.Lock()
	var changed string
	defer func() { b.mu.Unlock(); b.notify(changed) }()
	switch b.stateLocked() {
	case BreakerClosed:
		return true
	case BreakerOpen:
		if b.now().Before(b.openUntil) {
			return false
		}
		b.state, changed = BreakerHalfOpen, BreakerHalfOpen
		fallthrough
	default: // half-open
		if b.probing {
			return false
		}
		b.probing = true
		return true
	}
}

// Success reports a call that worked: the breaker closes.
func (b *Breaker) Success() {
	b.mu.Lock()
	changed := ""
	if b.stateLocked() != BreakerClosed {
		changed = BreakerClosed
	}
	b.state, b.failures, b.backoff, b.probing = BreakerClosed, 0, 0, false
	b.mu.Unlock()
	b.notify(changed)
}

// Failure reports a failed call.
func (b *Breaker) Failure() {
	b.mu.Lock()
	changed := ""
	switch b.stateLocked() {
	case BreakerHalfOpen:
		b.backoff = min(2*b.backoff, b.maxCooldown())
		b.open()
		changed = BreakerOpen
	case BreakerClosed:
		b.failures++
		if b.failures >= b.threshold() {
			b.backoff = b.cooldown()
			b.open()
			changed = BreakerOpen
		}
	}
	b.mu.Unlock()
	b.notify(changed)
}

func (b *Breaker) open() {
	b.state, b.probing, b.failures = BreakerOpen, false, 0
	b.openUntil = b.now().Add(b.backoff)
}

// State is closed, open or half-open (open past its backoff reads
// half-open: the next call will probe).
func (b *Breaker) State() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.stateLocked()
	if st == BreakerOpen && !b.now().Before(b.openUntil) {
		return BreakerHalfOpen
	}
	return st
}

func (b *Breaker) stateLocked() string {
	if b.state == "" {
		return BreakerClosed
	}
	return b.state
}

func (b *Breaker) notify(state string) {
	if state != "" && b.OnChange != nil {
		b.OnChange(state)
	}
}
