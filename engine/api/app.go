package api

import (
	"errors"
	"io/fs"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/attune-io/attune/engine/telemetry"
)

// routeWebClient registers what a browser client needs besides the /v1
// API: the static web client at /app/ (app.dir in the configuration; off by
// default) and the privacy facts its consent screen states (GET
// /v1/privacy). Both read the configuration per request, so a reload
// applies at once.
func (s *Server) routeWebClient() {
	s.mux.HandleFunc("GET /app", func(w http.ResponseWriter, r *http.Request) {
		// The browser keeps the URL fragment (which carries the token)
		// across the redirect.
		http.Redirect(w, r, "/app/", http.StatusMovedPermanently)
	})
	s.mux.HandleFunc("GET /app/", s.serveApp)
	s.routeAny("GET /v1/privacy", nil, s.getPrivacy) // any valid token: a user token shows its consent screen
}

// appContentSecurityPolicy confines the client to its own files. It may
// call any engine (connect-src), since the URL fragment names the engine;
// framing is left open, so a world can embed the client.
const appContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
	"connect-src 'self' http: https:; object-src 'none'; base-uri 'none'; form-action 'none'"

// serveApp serves a file of the web client directory. Names resolve inside
// the directory only (os.Root: no "..", no symlink out of it), and
// directories are never listed.
func (s *Server) serveApp(w http.ResponseWriter, r *http.Request) {
	dir := s.svc.Config().App.Dir
	if dir == "" {
		s.reject(w, http.StatusNotFound, "not_found", "the web client is not enabled on this engine (app.dir in its configuration)", "path")
		return
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		s.log.Error("web client directory unreadable", "error", err)
		s.reject(w, http.StatusInternalServerError, "internal", "the web client directory is unreadable", "")
		return
	}
	defer func() { _ = root.Close() }()
	name := strings.TrimPrefix(r.URL.Path, "/app/")
	if name == "" || strings.HasSuffix(name, "/") {
		name += "index.html"
	}
	f, err := root.Open(name)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("web client file refused", "error", err)
		}
		s.reject(w, http.StatusNotFound, "not_found", "no such file of the web client", "path")
		return
	}
	defer func() { _ = f.Close() }()
	info, err := f.Stat()
	if err != nil || info.IsDir() {
		s.reject(w, http.StatusNotFound, "not_found", "no such file of the web client", "path")
		return
	}
	h := w.Header()
	h.Set("Content-Security-Policy", appContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	// Revalidate every time: a rebuilt client must not mix with cached
	// modules of the previous build.
	h.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, info.Name(), info.ModTime(), f)
}

// PrivacyNotice is the answer to GET /v1/privacy: the facts a consent
// screen states, from the engine's own configuration.
type PrivacyNotice struct {
	// Context is the world's context (Social, Workplace, ...).
	Context string `json:"context"`
	// Retention is how long a user's data is kept after they were last
	// seen (a Go duration), and RetentionSeconds the same in seconds.
	Retention        string `json:"retention"`
	RetentionSeconds int64  `json:"retentionSeconds"`
	// EmotionFromPhysiology says whether physiological signals may count
	// toward emotion in this world (false in Workplace and Education).
	EmotionFromPhysiology bool `json:"emotionFromPhysiology"`
	// MinCohortSize is k: no aggregate covers fewer users.
	MinCohortSize int `json:"minCohortSize"`
	// PolicyVersion is the privacy notice's version the program declares
	// (consent.policyVersion; absent when it declares none): a consent
	// request must name it. RequireReconsent says that consent given under
	// another version no longer counts.
	PolicyVersion    string `json:"policyVersion,omitempty"`
	RequireReconsent bool   `json:"requireReconsent,omitempty"`
	// Scopes are every consent scope, in the API's order.
	Scopes []ScopeNotice `json:"scopes"`
}

// ScopeNotice is what one consent scope covers.
type ScopeNotice struct {
	Scope telemetry.Scope `json:"scope"`
	// Kinds are the sample kinds that need this scope (none for research).
	Kinds []telemetry.Kind `json:"kinds"`
	// Prohibited is true when this world refuses the scope's samples
	// whatever the consent (physiology in Workplace and Education: EU AI
	// Act, Art. 5(1)(f)).
	Prohibited bool `json:"prohibited,omitempty"`
}

func (s *Server) getPrivacy(w http.ResponseWriter, _ *http.Request) {
	cfg := s.svc.Config()
	notice := PrivacyNotice{
		Context:               cfg.Context,
		Retention:             cfg.Privacy.Retention.String(),
		RetentionSeconds:      int64(cfg.Privacy.Retention.Duration / time.Second),
		EmotionFromPhysiology: !cfg.ProhibitsBiometricEmotion(),
		MinCohortSize:         cfg.Privacy.MinCohortSize,
		PolicyVersion:         cfg.Consent.PolicyVersion,
		RequireReconsent:      cfg.Consent.RequireReconsent,
	}
	for _, scope := range telemetry.Scopes {
		n := ScopeNotice{Scope: scope, Kinds: []telemetry.Kind{}}
		for _, k := range telemetry.Kinds {
			if k.Scope() == scope && scope != telemetry.ScopeResearch {
				n.Kinds = append(n.Kinds, k)
			}
		}
		n.Prohibited = cfg.ProhibitsBiometricEmotion() && slices.ContainsFunc(n.Kinds, telemetry.Kind.IsPhysiological)
		notice.Scopes = append(notice.Scopes, n)
	}
	writeJSON(w, http.StatusOK, notice)
}

// Methods and headers a cross-origin page may use.
const (
	corsAllowMethods  = "GET, POST, DELETE"
	corsAllowHeaders  = "Authorization, Content-Type, Idempotency-Key"
	corsExposeHeaders = "Idempotent-Replayed, Retry-After"
	corsMaxAgeSeconds = "600"
)

// cors applies the configured allowed origins (cors.allowedOrigins; none
// by default) and answers preflight requests itself; handled reports that
// the response is complete. An origin that is not listed gets no CORS
// headers, so the browser withholds the answer from its page. Credentials
// are not allowed: the API authenticates by bearer token, never cookies.
func (s *Server) cors(w http.ResponseWriter, r *http.Request) (handled bool) {
	allowed := s.svc.Config().CORS.AllowedOrigins
	if len(allowed) == 0 {
		return false
	}
	w.Header().Add("Vary", "Origin")
	origin := r.Header.Get("Origin")
	if origin == "" || !slices.Contains(allowed, origin) {
		return false
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Methods", corsAllowMethods)
		h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
		h.Set("Access-Control-Max-Age", corsMaxAgeSeconds)
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
	return false
}
