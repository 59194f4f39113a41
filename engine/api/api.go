// Package api serves the engine's HTTP API (JSON under /v1), its metrics and
// probes. It authenticates callers with bearer tokens and maps the
// service's errors to status codes with {"error", "field"} bodies.
package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/attune-io/attune/engine/auth"
	"github.com/attune-io/attune/engine/metrics"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/strictjson"
	"github.com/attune-io/attune/engine/telemetry"
)

// MaxBodyBytes bounds a request body (413 beyond).
const MaxBodyBytes = 1 << 20

// DefaultMaxInFlightPerClient bounds the requests one client (one token)
// may have in progress at once; beyond it the engine answers 429.
const DefaultMaxInFlightPerClient = 64

// Media types of request bodies.
const (
	MediaJSON   = "application/json"
	MediaNDJSON = "application/x-ndjson"
)

// Server is the HTTP API.
type Server struct {
	svc      *service.Service
	metrics  *metrics.Metrics
	log      *slog.Logger
	tokens   atomic.Pointer[Tokens]
	mux      *http.ServeMux
	inFlight *clientLimiter
	backup   BackupSource // backup.go; nil: no backups here
	// backupRunning admits one backup at a time (backup.go).
	backupRunning atomic.Bool
}

// Option configures a Server.
type Option func(*Server)

// WithMaxInFlightPerClient bounds the requests one client token may have in
// progress at once (default DefaultMaxInFlightPerClient). A request over
// the bound is answered 429 with Retry-After at once, so a client whose
// bodies trickle in (the server reads a body for up to 30 s) holds at most
// this many of the engine's connections.
func WithMaxInFlightPerClient(n int) Option {
	return func(s *Server) { s.inFlight.limit = max(n, 1) }
}

// New builds the API over a service.
func New(svc *service.Service, m *metrics.Metrics, tokens Tokens, log *slog.Logger, opts ...Option) *Server {
	s := &Server{svc: svc, metrics: m, log: log, mux: http.NewServeMux(),
		inFlight: &clientLimiter{limit: DefaultMaxInFlightPerClient, active: map[string]int{}}}
	for _, o := range opts {
		o(s)
	}
	s.SetTokens(tokens)
	// Scopes per route: docs/engine-api.md, "Who may call, and for what".
	s.route("POST /v1/users/{id}/consent", auth.ScopeConsent, s.postConsent)
	s.route("DELETE /v1/users/{id}/consent", auth.ScopeConsent, s.deleteConsent)
	s.route("POST /v1/telemetry", auth.ScopeIngest, s.postTelemetry)
	s.route("GET /v1/users/{id}/state", auth.ScopeReadState, s.getState)
	s.route("GET /v1/users/{id}/export", auth.ScopeExport, s.getExport) // export.go
	s.route("POST /v1/users/{id}/decisions", auth.ScopeDecide, s.postDecision)
	s.route("GET /v1/decisions", auth.ScopeResearch, s.getDecisions)
	s.route("DELETE /v1/users/{id}", auth.ScopeErase, s.deleteUser)
	s.route("GET /v1/cohort", auth.ScopeCohort, s.getCohort)
	s.routeBackup() // backup.go
	// strength.go: the operator's push of the tuned strength.
	s.routeStrength()
	// auth.go: user tokens, minted by a client with ingest or decide.
	s.routeAny("POST /v1/users/{id}/tokens", auth.MintScopes, s.postUserToken)
	s.routeWebClient() // app.go: /app/ and GET /v1/privacy
	metricsHandler := promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
	s.route("GET /metrics", auth.ScopeMetrics, metricsHandler.ServeHTTP)
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
		if allowed := s.allowedMethods(r); len(allowed) > 0 {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			s.reject(w, http.StatusMethodNotAllowed, "method_not_allowed",
				fmt.Sprintf("method %s is not allowed here; allowed: %s", r.Method, strings.Join(allowed, ", ")), "method")
			return
		}
		// The path is not repeated: it may carry a user ID.
		s.reject(w, http.StatusNotFound, "not_found", "no such endpoint", "path")
	})
	return s
}

// probedMethods are the methods an Allow header may list.
var probedMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions}

// allowedMethods are the methods some route serves at r's path, found by
// asking the mux itself (the catch-all "/" does not count).
func (s *Server) allowedMethods(r *http.Request) []string {
	var allowed []string
	for _, m := range probedMethods {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != "" && pattern != "/" {
			allowed = append(allowed, m)
		}
	}
	return allowed
}

// clientLimiter counts each client's requests in progress.
type clientLimiter struct {
	mu     sync.Mutex
	limit  int
	active map[string]int
}

// acquire takes one of client's slots; false when all are taken.
func (l *clientLimiter) acquire(client string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.active[client] >= l.limit {
		return false
	}
	l.active[client]++
	return true
}

func (l *clientLimiter) release(client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.active[client]--; l.active[client] <= 0 {
		delete(l.active, client)
	}
}

// SetTokens swaps the accepted tokens (e.g. after the Secret rotated).
func (s *Server) SetTokens(t Tokens) { s.tokens.Store(&t) }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.cors(w, r) { // app.go: cross-origin browser clients
		return
	}
	s.mux.ServeHTTP(w, r)
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
	// Outcome is "unknown" when the request's writes may or may not have
	// been stored (contract.OutcomeUnknown).
	Outcome string `json:"outcome,omitempty"`
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
	case errors.Is(err, service.ErrOutcomeUnknown):
		// No Retry-After: that promises nothing was stored. A request
		// with an Idempotency-Key may be retried (a committed batch is
		// then answered from its record); others must check first.
		s.log.Error("commit outcome unknown", "error", err)
		s.metrics.RequestsRejected.WithLabelValues("outcome_unknown").Inc()
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "the state store failed while the commit was in flight; whether it was stored is unknown", Outcome: "unknown"})
	case errors.Is(err, service.ErrStoreUnavailable):
		s.log.Warn("store unavailable", "error", err)
		w.Header().Set("Retry-After", strconv.Itoa(storeRetryAfterSeconds))
		s.reject(w, http.StatusServiceUnavailable, "store_unavailable", "the state store is unavailable; nothing was stored, retry", "")
	default:
		s.log.Error("request failed", "error", err)
		s.reject(w, http.StatusInternalServerError, "internal", "internal error", "")
	}
}

// userID is the {id} path segment, refused (400, field "id") unless it is
// a canonical user ID (telemetry.ValidUserID, docs/engine-api.md).
func userID(w http.ResponseWriter, r *http.Request, s *Server) (string, bool) {
	id := r.PathValue("id")
	if err := telemetry.ValidUserID(id); err != nil {
		message := err.Error()
		if e, ok := errors.AsType[*telemetry.Error](err); ok {
			message = e.Message // the path segment is named by the field "id", not "user"
		}
		s.reject(w, http.StatusBadRequest, "invalid", "the path segment {id}, the user ID: "+message, "id")
		return "", false
	}
	return id, true
}

// mediaType checks the request's Content-Type against the types the route
// reads (415 otherwise) and returns the one it names. A request without
// one is read as JSON; a charset other than UTF-8 is refused.
func (s *Server) mediaType(w http.ResponseWriter, r *http.Request, accepted ...string) (string, bool) {
	header := r.Header.Get("Content-Type")
	if header == "" {
		return MediaJSON, true
	}
	media, params, err := mime.ParseMediaType(header)
	if err == nil && slices.Contains(accepted, media) {
		if cs, ok := params["charset"]; !ok || strings.EqualFold(cs, "utf-8") {
			return media, true
		}
	}
	s.reject(w, http.StatusUnsupportedMediaType, "unsupported_media_type",
		fmt.Sprintf("Content-Type must be %s (UTF-8)", strings.Join(accepted, " or ")), "Content-Type")
	return "", false
}

// decodeBody reads a JSON body strictly into v (engine/strictjson): no
// duplicate or case-variant keys, no unknown fields, each error naming its
// field. An empty body is refused unless optional (found reports it).
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any, optional bool) (found, ok bool) {
	if _, ok := s.mediaType(w, r, MediaJSON); !ok {
		return false, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if tooLarge, isTooLarge := errors.AsType[*http.MaxBytesError](err); isTooLarge {
			s.reject(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("request body larger than %d bytes", tooLarge.Limit), "body")
			return false, false
		}
		s.reject(w, http.StatusBadRequest, "invalid", "read body: "+err.Error(), "body")
		return false, false
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if optional {
			return false, true
		}
		s.reject(w, http.StatusBadRequest, "invalid", "a JSON body is required", "body")
		return false, false
	}
	if err := strictjson.Decode(body, v); err != nil {
		field, message := "body", err.Error()
		if e, isStrict := errors.AsType[*strictjson.Error](err); isStrict {
			message = e.Message
			if f := e.Field(""); f != "" {
				field = f
			}
		}
		s.reject(w, http.StatusBadRequest, "invalid", message, field)
		return false, false
	}
	return true, true
}

type consentRequest struct {
	Scopes []telemetry.Scope `json:"scopes"`
	// PolicyVersion is the privacy notice's version the user saw (POST).
	PolicyVersion string `json:"policyVersion,omitempty"`
}

func (s *Server) decodeConsent(w http.ResponseWriter, r *http.Request, required bool) (consentRequest, bool) {
	var req consentRequest
	found, ok := s.decodeBody(w, r, &req, !required)
	if !ok {
		return req, false
	}
	if !found { // no body: withdraw every scope
		return req, true
	}
	if required && len(req.Scopes) == 0 {
		s.reject(w, http.StatusBadRequest, "invalid", fmt.Sprintf("at least one scope is required; known scopes: %v", telemetry.Scopes), "scopes")
		return req, false
	}
	for i, sc := range req.Scopes {
		if !slices.Contains(telemetry.Scopes, sc) {
			s.reject(w, http.StatusBadRequest, "invalid", fmt.Sprintf("unknown scope %q; known scopes: %v", sc, telemetry.Scopes), fmt.Sprintf("scopes[%d]", i))
			return req, false
		}
	}
	return req, true
}

func (s *Server) postConsent(w http.ResponseWriter, r *http.Request) {
	id, ok := userID(w, r, s)
	if !ok {
		return
	}
	req, ok := s.decodeConsent(w, r, true)
	if !ok {
		return
	}
	consent, err := s.svc.Grant(r.Context(), id, service.ConsentChange{Scopes: req.Scopes, PolicyVersion: req.PolicyVersion, Source: clientName(r)})
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
	req, ok := s.decodeConsent(w, r, false)
	if !ok {
		return
	}
	consent, err := s.svc.Withdraw(r.Context(), id, service.ConsentChange{Scopes: req.Scopes, Source: clientName(r)})
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, consent)
}

func (s *Server) postTelemetry(w http.ResponseWriter, r *http.Request) {
	media, ok := s.mediaType(w, r, MediaJSON, MediaNDJSON)
	if !ok {
		return
	}
	key, ok := s.idempotencyKey(w, r)
	if !ok {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	// The body's digest identifies the batch's content for its retries.
	digest := sha256.New()
	samples, err := telemetry.DecodeBatch(io.TeeReader(r.Body, digest), media == MediaNDJSON)
	if err != nil {
		s.fail(w, err)
		return
	}
	if !s.samplesAllowed(w, r, samples) { // auth.go: a user token's own samples only
		return
	}
	batch := service.BatchID{Key: key}
	if key != "" {
		_, _ = io.Copy(digest, r.Body) // what the decoder left unread
		batch.Digest = hex.EncodeToString(digest.Sum(nil))
	}
	result, replayed, err := s.svc.IngestBatch(r.Context(), samples, batch)
	if err != nil {
		s.fail(w, err)
		return
	}
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeJSON(w, http.StatusOK, result)
}

// storeRetryAfterSeconds is the Retry-After of a 503 for a store that is
// down: long enough not to hammer a restarting database.
const storeRetryAfterSeconds = 2

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
// ASCII, at most MaxIdempotencyKeyBytes; a bad one is answered 400 here (ok false).
func (s *Server) idempotencyKey(w http.ResponseWriter, r *http.Request) (string, bool) {
	key := r.Header.Get("Idempotency-Key")
	why := ""
	if len(key) > MaxIdempotencyKeyBytes {
		why = fmt.Sprintf("longer than %d bytes", MaxIdempotencyKeyBytes)
	}
	for i := range len(key) {
		if key[i] < 0x21 || key[i] > 0x7e {
			why = "must be printable ASCII without spaces"
		}
	}
	if why != "" {
		s.reject(w, http.StatusBadRequest, "invalid", "Idempotency-Key: "+why, "Idempotency-Key")
		return "", false
	}
	return key, true
}

func (s *Server) postDecision(w http.ResponseWriter, r *http.Request) {
	id, ok := userID(w, r, s)
	if !ok {
		return
	}
	key, ok := s.idempotencyKey(w, r)
	if !ok {
		return
	}
	var req service.DecisionRequest
	if _, ok := s.decodeBody(w, r, &req, true); !ok { // no body: the defaults
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
