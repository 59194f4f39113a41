package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/attune-io/attune/engine/auth"
	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/telemetry"
)

// Tokens are the credentials the API accepts: the legacy read-write and
// read-only tokens, the named clients and the user-token key.
type Tokens = auth.Tokens

// principalKey carries the authenticated auth.Principal in a request's
// context.
type principalKey struct{}

func principalOf(r *http.Request) auth.Principal {
	p, _ := r.Context().Value(principalKey{}).(auth.Principal)
	return p
}

// route registers a handler that needs one scope.
func (s *Server) route(pattern string, need auth.Scope, h http.HandlerFunc) {
	s.routeAny(pattern, []auth.Scope{need}, h)
}

// routeAny registers a handler with authentication, a scope check and
// latency measurement: the caller needs any one of anyOf (none: any valid
// token). A user token is further confined to its own user's {id}. The
// route label is the pattern, never the path: paths carry user IDs.
func (s *Server) routeAny(pattern string, anyOf []auth.Scope, h http.HandlerFunc) {
	duration := s.metrics.RequestDuration
	hasUser := strings.Contains(pattern, "{id}")
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			duration.WithLabelValues(pattern, strconv.Itoa(rec.status)).Observe(time.Since(start).Seconds())
		}()
		p, ok := s.authenticate(r)
		if !ok {
			rec.Header().Set("WWW-Authenticate", `Bearer realm="attune-engine"`)
			s.reject(rec, http.StatusUnauthorized, "unauthenticated", "missing or invalid bearer token", "Authorization")
			return
		}
		if len(anyOf) > 0 && !slices.ContainsFunc(anyOf, p.Has) {
			s.reject(rec, http.StatusForbidden, "missing_scope", missingScope(p, anyOf), "Authorization")
			return
		}
		if p.User != "" && hasUser && r.PathValue("id") != p.User {
			s.reject(rec, http.StatusForbidden, "other_user", "a user token may act only for its own user (the token's sub is not the path's {id})", "id")
			return
		}
		limiterKey := p.Name
		if p.User != "" {
			// Each user counts alone; the key stays in memory only.
			limiterKey = "user/" + p.User
		}
		if !s.inFlight.acquire(limiterKey) {
			rec.Header().Set("Retry-After", "1")
			s.reject(rec, http.StatusTooManyRequests, "too_many_requests",
				fmt.Sprintf("this token already has %d requests in progress, the most the engine serves at once per client", s.inFlight.limit), "Authorization")
			return
		}
		defer s.inFlight.release(limiterKey)
		ctx := context.WithValue(r.Context(), clientKey{}, p.Name)
		ctx = context.WithValue(ctx, principalKey{}, p)
		h(rec, r.WithContext(ctx))
	})
}

// missingScope is the 403 message naming the scope(s) the token lacks.
func missingScope(p auth.Principal, anyOf []auth.Scope) string {
	names := make([]string, len(anyOf))
	for i, sc := range anyOf {
		names[i] = strconv.Quote(string(sc))
	}
	who := "this " + p.Name + " token"
	if p.User != "" {
		who = "a user token"
	}
	return fmt.Sprintf("%s lacks the %s scope this endpoint needs", who, strings.Join(names, " or "))
}

// authenticate finds the caller: a client token (compared by hash in
// constant time, auth.Tokens.Authenticate), else a user token when user
// tokens are on. A JWT has two dots; client tokens are tried first anyway,
// so a client token of any shape works.
func (s *Server) authenticate(r *http.Request) (auth.Principal, bool) {
	token, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !found || token == "" {
		return auth.Principal{}, false
	}
	t := s.tokens.Load()
	if p, ok := t.Authenticate(token); ok {
		return p, true
	}
	if t.Users != nil && strings.Count(token, ".") == 2 {
		if p, err := t.Users.Verify(token); err == nil {
			return p, true
		}
	}
	return auth.Principal{}, false
}

// samplesAllowed refuses (403, naming the sample) a batch from a user
// token that carries a sample of another user; nothing of it is stored.
func (s *Server) samplesAllowed(w http.ResponseWriter, r *http.Request, samples []telemetry.Sample) bool {
	p := principalOf(r)
	if p.User == "" {
		return true
	}
	for i, sample := range samples {
		if sample.User != p.User {
			s.reject(w, http.StatusForbidden, "other_user",
				"a user token may send only its own user's samples (the token's sub is not this sample's user)", fmt.Sprintf("samples[%d].user", i))
			return false
		}
	}
	return true
}

// postUserToken answers POST /v1/users/{id}/tokens: a user token for the
// user, minted for a client (never a user token) with the ingest or
// decide scope.
func (s *Server) postUserToken(w http.ResponseWriter, r *http.Request) {
	if principalOf(r).User != "" {
		s.reject(w, http.StatusForbidden, "user_token_mints", "a user token may not mint tokens; a client with the \"ingest\" or \"decide\" scope does", "Authorization")
		return
	}
	id, ok := userID(w, r, s)
	if !ok {
		return
	}
	users := s.tokens.Load().Users
	if users == nil {
		s.reject(w, http.StatusNotFound, "user_tokens_off", "user tokens are off on this engine (userTokenKeyFile in its configuration)", "path")
		return
	}
	var req contract.UserTokenRequest
	if _, ok := s.decodeBody(w, r, &req, true); !ok {
		return
	}
	if req.TTLSeconds < 0 || req.TTLSeconds > int64(auth.MaxUserTokenTTL/time.Second) {
		s.reject(w, http.StatusBadRequest, "invalid", fmt.Sprintf("must be between 1 and %d (0 or absent: %d)",
			int64(auth.MaxUserTokenTTL/time.Second), int64(auth.DefaultUserTokenTTL/time.Second)), "ttlSeconds")
		return
	}
	token, exp, err := users.Mint(id, time.Duration(req.TTLSeconds)*time.Second)
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	scopes := make([]string, len(auth.UserScopes))
	for i, sc := range auth.UserScopes {
		scopes[i] = string(sc)
	}
	writeJSON(w, http.StatusOK, contract.UserToken{Token: token, ExpiresAt: exp, Scopes: scopes})
}
