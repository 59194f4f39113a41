package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/attune-io/attune/engine/contract"
)

// APIError is an answer of the engine other than success, decoded from its
// {"error", "field", "outcome"} body. The engine stored nothing of a
// request it answered with an error, unless Outcome is "unknown"
// (ErrOutcomeUnknown).
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Message is the engine's "error" (or, for a body that is not the
	// engine's, the start of that body or the status text).
	Message string
	// Field names the offending input: "samples[3].rr_ms[7]", "scopes[0]",
	// "id", "Authorization", "Idempotency-Key".
	Field string
	// RetryAfter is the answer's Retry-After, 0 when absent.
	RetryAfter time.Duration
	// Outcome is contract.OutcomeUnknown when the engine's store failed
	// while the request's commit was in flight: it may have been stored.
	Outcome string
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("engine answered %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
	if e.Field != "" {
		msg += " (field " + e.Field + ")"
	}
	if e.RetryAfter > 0 {
		msg += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	return msg
}

// Errors an *APIError matches with errors.Is, by what the engine answered.
var (
	// ErrUnauthenticated: 401, a missing or wrong bearer token.
	ErrUnauthenticated = errors.New("engine: missing or invalid bearer token")
	// ErrReadOnlyToken: 403 on the Authorization field, a read-only token
	// used for more than /v1/cohort and /metrics.
	ErrReadOnlyToken = errors.New("engine: the read-only token may not call this endpoint")
	// ErrNoConsent: 403, the user has not consented to the scope the
	// request needs (telemetry of that kind, or a user unknown to the
	// engine: consent first).
	ErrNoConsent = errors.New("engine: no consent for the scope")
	// ErrProhibited: 403, data the world's context forbids (physiological
	// samples in Workplace and Education worlds).
	ErrProhibited = errors.New("engine: prohibited in this world's context")
	// ErrUnknownUser: 404 on the user's ID, a user the engine does not
	// know (never consented, or erased).
	ErrUnknownUser = errors.New("engine: unknown user")
	// ErrInvalid: 400, an input the engine rejected (Field names it).
	ErrInvalid = errors.New("engine: invalid input")
	// ErrTooLarge: 413, a body over the engine's limits.
	ErrTooLarge = errors.New("engine: request too large")
	// ErrIdempotencyMismatch: 422, an Idempotency-Key reused for a
	// different decision request.
	ErrIdempotencyMismatch = errors.New("engine: Idempotency-Key reused for a different request")
	// ErrUnavailable: 503, the engine stored nothing and asks to retry
	// (with Retry-After), or a proxy in front of it has no engine to ask.
	// It also matches ErrOutcomeUnknown's answers, which are 503 too.
	ErrUnavailable = errors.New("engine: unavailable, nothing was stored")
	// ErrOutcomeUnknown: 503 with "outcome": "unknown", the engine's store
	// failed while the commit was in flight, and the request may or may
	// not have been stored. A request with an Idempotency-Key is safe to
	// repeat (the engine then answers from what it stored); the client
	// does so itself within its retry policy.
	ErrOutcomeUnknown = errors.New("engine: whether the request was stored is unknown")
)

// Is matches the sentinel errors above.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrUnauthenticated:
		return e.Status == http.StatusUnauthorized
	case ErrReadOnlyToken:
		return e.Status == http.StatusForbidden && e.Field == "Authorization"
	case ErrNoConsent:
		return e.Status == http.StatusForbidden && strings.HasPrefix(e.Message, "no consent")
	case ErrProhibited:
		return e.Status == http.StatusForbidden && e.Field != "Authorization" && strings.Contains(e.Message, "prohibited")
	case ErrUnknownUser:
		return e.Status == http.StatusNotFound && e.Field == "id"
	case ErrInvalid:
		return e.Status == http.StatusBadRequest
	case ErrTooLarge:
		return e.Status == http.StatusRequestEntityTooLarge
	case ErrIdempotencyMismatch:
		return e.Status == http.StatusUnprocessableEntity
	case ErrUnavailable:
		return e.Status == http.StatusServiceUnavailable
	case ErrOutcomeUnknown:
		return e.Outcome == contract.OutcomeUnknown
	}
	return false
}

// ErrBatchTooLarge: a telemetry batch over the engine's limits
// (contract.MaxBatchSamples samples, contract.MaxBodyBytes bytes), refused
// by Ingest before anything is sent. IngestStream splits such batches.
var ErrBatchTooLarge = errors.New("telemetry batch over the engine's limits")

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// readAPIError decodes an error answer and closes its body.
func readAPIError(resp *http.Response) *APIError {
	defer func() { _ = resp.Body.Close() }()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &APIError{Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	var body contract.ErrorBody
	if err := json.Unmarshal(raw, &body); err == nil && body.Error != "" {
		e.Message, e.Field, e.Outcome = body.Error, body.Field, body.Outcome
		return e
	}
	// Not the engine's body (a proxy's, say): keep its start.
	e.Message = strings.TrimSpace(string(raw))
	if len(e.Message) > 256 {
		e.Message = e.Message[:256] + "…"
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

// parseRetryAfter reads delay-seconds or an HTTP date; 0 when absent or
// unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	if at, err := http.ParseTime(v); err == nil {
		if d := at.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
