// Package api serves the engine's HTTP API (JSON under /v1), its metrics and
// probes. It authenticates callers with bearer tokens and maps the
// service's errors to status codes with {"error", "field"} bodies.
package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/attune-io/attune/engine/metrics"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/telemetry"
)

// MaxBodyBytes bounds a request body (413 beyond).
const MaxBodyBytes = 1 << 20

// Tokens are the bearer tokens the API accepts.
type Tokens struct {
	ReadWrite string
	ReadOnly  string
}

// Server is the HTTP API.
type Server struct {
	svc     *service.Service
	metrics *metrics.Metrics
	log     *slog.Logger
	tokens  atomic.Pointer[Tokens]
	mux     *http.ServeMux
}

// New builds the API over a service.
func New(svc *service.Service, m *metrics.Metrics, tokens Tokens, log *slog.Logger) *Server {
	s := &Server{svc: svc, metrics: m, log: log, mux: http.NewServeMux()}
	s.SetTokens(tokens)
	s.route("POST /v1/users/{id}/consent", readWrite, s.postConsent)
	s.route("DELETE /v1/users/{id}/consent", readWrite, s.deleteConsent)
	s.route("POST /v1/telemetry", readWrite, s.postTelemetry)
	s.route("GET /v1/users/{id}/state", readWrite, s.getState)
	s.route("POST /v1/users/{id}/decisions", readWrite, s.postDecision)
	s.route("GET /v1/decisions", readWrite, s.getDecisions)
	s.route("DELETE /v1/users/{id}", readWrite, s.deleteUser)
	s.route("GET /v1/cohort", readOnly, s.getCohort)
	metricsHandler := promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
	s.route("GET /metrics", readOnly, metricsHandler.ServeHTTP)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	// Ready only while the store answers: with a shared store down, the
	// Service stops sending requests that would fail. Liveness stays
	// independent of the database, so an outage does not restart pods.
	//
	// The text-model server degrades readiness instead of failing it: its
	// v2 ready endpoint (GET /v2/models/{name}/ready) is asked, and when it
	// does not answer ready, or the breaker is open, the engine stays ready
	// with "textModel": "fallback" (and the reason) in the body — texts are
	// still scored, by VADER, so taking the pod out of service would lose
	// telemetry for no gain. "textModel" is absent without a model server.
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.svc.Ready(ctx); err != nil {
			s.log.Warn("not ready: the store does not answer", "error", err)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": "the state store does not answer"})
			return
		}
		body := map[string]string{"status": "ready"}
		if st, ok := s.svc.TextModelStatus(ctx); ok {
			body["textModel"] = st.State
			if st.Reason != "" {
				body["textModelReason"] = st.Reason
			}
		}
		writeJSON(w, http.StatusOK, body)
	})
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.reject(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path, "path")
	})
	return s
}

// SetTokens swaps the accepted tokens (e.g. after the Secret rotated).
func (s *Server) SetTokens(t Tokens) { s.tokens.Store(&t) }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

type access int

const (
	readOnly access = iota // the read-only token or the read-write token
	readWrite
)

// route registers a handler with authentication and latency measurement.
// The route label is the pattern, never the path: paths carry user IDs.
func (s *Server) route(pattern string, need access, h http.HandlerFunc) {
	duration := s.metrics.RequestDuration
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			duration.WithLabelValues(pattern, strconv.Itoa(rec.status)).Observe(time.Since(start).Seconds())
		}()
		granted, ok := s.authenticate(r)
		if !ok {
			rec.Header().Set("WWW-Authenticate", `Bearer realm="attune-engine"`)
			s.reject(rec, http.StatusUnauthorized, "unauthenticated", "missing or invalid bearer token", "Authorization")
			return
		}
		if granted < need {
			s.reject(rec, http.StatusForbidden, "read_only_token", "the read-only token may only read /v1/cohort and /metrics", "Authorization")
			return
		}
		h(rec, r)
	})
}

func (s *Server) authenticate(r *http.Request) (access, bool) {
	header := r.Header.Get("Authorization")
	token, found := strings.CutPrefix(header, "Bearer ")
	if !found || token == "" {
		return 0, false
	}
	t := s.tokens.Load()
	// Compare against both in constant time, whichever matches.
	rw := t.ReadWrite != "" && subtle.ConstantTimeCompare([]byte(token), []byte(t.ReadWrite)) == 1
	ro := t.ReadOnly != "" && subtle.ConstantTimeCompare([]byte(token), []byte(t.ReadOnly)) == 1
	switch {
	case rw:
		return readWrite, true
	case ro:
		return readOnly, true
	}
	return 0, false
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// errorBody is every error response.
type errorBody struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

func (s *Server) reject(w http.ResponseWriter, status int, reason, message, field string) {
	s.metrics.RequestsRejected.WithLabelValues(reason).Inc()
	writeJSON(w, status, errorBody{Error: message, Field: field})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// fail maps a service or decoding error to a response.
func (s *Server) fail(w http.ResponseWriter, err error) {
	var tErr *telemetry.Error
	var consent *service.ConsentError
	var prohibited *service.ProhibitedError
	var request *service.RequestError
	switch {
	case errors.As(err, &tErr) && tErr.TooLarge:
		s.reject(w, http.StatusRequestEntityTooLarge, "too_large", tErr.Message, tErr.Field)
	case errors.As(err, &tErr):
		s.reject(w, http.StatusBadRequest, "invalid", tErr.Message, tErr.Field)
	case errors.As(err, &consent):
		s.reject(w, http.StatusForbidden, "no_consent", consent.Error(), consent.Field)
	case errors.As(err, &prohibited):
		s.reject(w, http.StatusForbidden, "prohibited_context", prohibited.Error(), prohibited.Field)
	case errors.As(err, &request):
		s.reject(w, http.StatusBadRequest, "invalid", request.Message, request.Field)
	case errors.Is(err, service.ErrIdempotencyMismatch):
		s.reject(w, http.StatusUnprocessableEntity, "idempotency_mismatch", err.Error(), "Idempotency-Key")
	case errors.Is(err, service.ErrUnknownDecision):
		s.reject(w, http.StatusGone, "decision_expired", "the decision this Idempotency-Key answered is no longer kept (retention period)", "Idempotency-Key")
	case errors.Is(err, service.ErrUnknownUser):
		s.reject(w, http.StatusNotFound, "unknown_user", "unknown user", "id")
	case errors.Is(err, service.ErrBusy):
		w.Header().Set("Retry-After", "1")
		s.reject(w, http.StatusServiceUnavailable, "busy", err.Error(), "")
	default:
		s.log.Error("request failed", "error", err)
		s.reject(w, http.StatusInternalServerError, "internal", "internal error; nothing was stored", "")
	}
}

func userID(w http.ResponseWriter, r *http.Request, s *Server) (string, bool) {
	id := r.PathValue("id")
	if err := telemetry.ValidUserID(id); err != nil {
		message := err.Error()
		if e, ok := errors.AsType[*telemetry.Error](err); ok {
			message = e.Message // the path segment is named by the field "id", not "user"
		}
		s.reject(w, http.StatusBadRequest, "invalid", message, "id")
		return "", false
	}
	return id, true
}

type consentRequest struct {
	Scopes []telemetry.Scope `json:"scopes"`
}

func (s *Server) decodeScopes(w http.ResponseWriter, r *http.Request, required bool) ([]telemetry.Scope, bool) {
	var req consentRequest
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		if !required && errors.Is(err, io.EOF) { // no body: withdraw every scope
			return nil, true
		}
		s.reject(w, http.StatusBadRequest, "invalid", fmt.Sprintf("invalid JSON: %v", err), "scopes")
		return nil, false
	}
	if required && len(req.Scopes) == 0 {
		s.reject(w, http.StatusBadRequest, "invalid", fmt.Sprintf("at least one scope is required; known scopes: %v", telemetry.Scopes), "scopes")
		return nil, false
	}
	for i, sc := range req.Scopes {
		if !slices.Contains(telemetry.Scopes, sc) {
			s.reject(w, http.StatusBadRequest, "invalid", fmt.Sprintf("unknown scope %q; known scopes: %v", sc, telemetry.Scopes), fmt.Sprintf("scopes[%d]", i))
			return nil, false
		}
	}
	return req.Scopes, true
}

func (s *Server) postConsent(w http.ResponseWriter, r *http.Request) {
	id, ok := userID(w, r, s)
	if !ok {
		return
	}
	scopes, ok := s.decodeScopes(w, r, true)
	if !ok {
		return
	}
	consent, err := s.svc.SetConsent(r.Context(), id, scopes)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, consent)
}

func (s *Server) deleteConsent(w http.ResponseWriter, r *http.Request) {
	id, ok := userID(w, r, s)
	if !ok {
		return
	}
	scopes, ok := s.decodeScopes(w, r, false)
	if !ok {
		return
	}
	consent, err := s.svc.WithdrawConsent(r.Context(), id, scopes)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, consent)
}

func (s *Server) postTelemetry(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	ndjson := strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-ndjson")
	samples, err := telemetry.DecodeBatch(r.Body, ndjson)
	if err != nil {
		s.fail(w, err)
		return
	}
	result, err := s.svc.Ingest(r.Context(), samples)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, result)
}

func (s *Server) getState(w http.ResponseWriter, r *http.Request) {
	id, ok := userID(w, r, s)
	if !ok {
		return
	}
	state, err := s.svc.State(r.Context(), id)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, state)
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request) {
	id, ok := userID(w, r, s)
	if !ok {
		return
	}
	if err := s.svc.Erase(r.Context(), id); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) getCohort(w http.ResponseWriter, r *http.Request) {
	cohort, err := s.svc.Cohort(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, cohort)
}

// MaxIdempotencyKeyBytes bounds an Idempotency-Key header.
const MaxIdempotencyKeyBytes = 255

// idempotencyKey reads the optional Idempotency-Key header: printable
// ASCII, at most MaxIdempotencyKeyBytes.
func idempotencyKey(r *http.Request) (string, error) {
	key := r.Header.Get("Idempotency-Key")
	if len(key) > MaxIdempotencyKeyBytes {
		return "", fmt.Errorf("longer than %d bytes", MaxIdempotencyKeyBytes)
	}
	for i := range len(key) {
		if key[i] < 0x21 || key[i] > 0x7e {
			return "", errors.New("must be printable ASCII without spaces")
		}
	}
	return key, nil
}

func (s *Server) postDecision(w http.ResponseWriter, r *http.Request) {
	id, ok := userID(w, r, s)
	if !ok {
		return
	}
	key, err := idempotencyKey(r)
	if err != nil {
		s.reject(w, http.StatusBadRequest, "invalid", "Idempotency-Key: "+err.Error(), "Idempotency-Key")
		return
	}
	var req service.DecisionRequest
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) { // no body: the defaults
		s.reject(w, http.StatusBadRequest, "invalid", fmt.Sprintf("invalid JSON: %v", err), "body")
		return
	}
	d, replayed, err := s.svc.Decide(r.Context(), id, req, key)
	if err != nil {
		s.fail(w, err)
		return
	}
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeJSON(w, http.StatusOK, d)
}

// getDecisions exports the decision log as NDJSON: decisions taken at or
// after ?since= (RFC 3339; all when absent), pseudonymous, only of users
// who granted the research scope.
func (s *Server) getDecisions(w http.ResponseWriter, r *http.Request) {
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		var err error
		if since, err = time.Parse(time.RFC3339Nano, v); err != nil {
			s.reject(w, http.StatusBadRequest, "invalid", "since: want an RFC 3339 time such as 2026-12-01T00:00:00Z", "since")
			return
		}
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	wrote := false
	err := s.svc.ExportDecisions(r.Context(), since, func(d service.ExportedDecision) error {
		wrote = true
		return enc.Encode(d)
	})
	if err != nil {
		if !wrote {
			s.fail(w, err)
			return
		}
		// The status is sent: end the stream early so the client sees a
		// truncated body rather than a complete-looking one.
		s.log.Error("decision export failed mid-stream", "error", err)
		panic(http.ErrAbortHandler)
	}
}
