// Package client is a Go client of the engine's HTTP API (docs/engine-api.md):
// consent, telemetry, decisions, state, the decision log export, erasure and
// the cohort, with typed requests and answers from engine/contract.
//
// It links no storage driver (engine/contract is its only engine
// dependency besides the pure telemetry, config and model packages), so
// world clients, tests and the operator can use it.
//
// # Authentication
//
// Every request carries the bearer token of the client's TokenSource:
// StaticToken, or FileToken for a mounted Secret, which is re-read when the
// file changes so a rotated token is used without a restart.
//
// # Retries
//
// A request is retried (RetryPolicy: bounded attempts, exponential backoff
// with jitter, never past the context's deadline) only when repeating it
// cannot store anything twice:
//
//   - 503 with Retry-After, for every request: the engine sends it when
//     nothing was stored (a write lost too many races with other
//     replicas, or its store is down). The client waits at least
//     Retry-After.
//   - Connection failures before the request was sent (dial errors), for
//     every request.
//   - Other transport errors (a lost answer), 503 without Retry-After
//     (among them ErrOutcomeUnknown: the store failed during the commit)
//     and 502, 504, 429 (from proxies in front of the engine), only for
//     requests that are safe to repeat: GET, DELETE, the consent POST (it
//     replaces the scopes), and decisions and telemetry batches, which
//     always carry an Idempotency-Key (a random one unless the caller
//     gives one), so a repeat returns the logged decision, or the answer
//     recorded with the committed batch, and stores nothing twice.
//
// An *APIError means nothing of the request was stored, except one that
// matches ErrOutcomeUnknown; any other error after the request was sent
// (a lost answer once the retries are spent) leaves its fate unknown,
// and repeating it with the same Idempotency-Key (IngestWithKey, Decide)
// is safe.
//
// Certificate errors are never retried.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/telemetry"
)

// DefaultUserAgent is the User-Agent of a client without WithUserAgent.
const DefaultUserAgent = "attune-engine-client-go/1"

// RetryPolicy bounds the retries of one request (see the package comment
// for which requests are retried on what).
type RetryPolicy struct {
	// MaxAttempts counts every attempt, the first included; 1 or less
	// disables retries.
	MaxAttempts int
	// InitialBackoff is the wait before the second attempt; it doubles
	// with each further one, up to MaxBackoff. Each wait is drawn at
	// random between half the value and the whole (jitter), so clients
	// that failed together do not retry in step.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// MaxRetryAfter is the longest Retry-After the client waits for; a
	// longer one is returned as the request's error at once.
	MaxRetryAfter time.Duration
}

// DefaultRetry is the policy of a client without WithRetry.
var DefaultRetry = RetryPolicy{MaxAttempts: 4, InitialBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second, MaxRetryAfter: 30 * time.Second}

// NoRetry sends every request once.
var NoRetry = RetryPolicy{MaxAttempts: 1}

// Client calls one engine (or one engine Service). It is safe for
// concurrent use.
type Client struct {
	base      string // scheme://host[:port][/prefix], without a trailing slash
	http      *http.Client
	tokens    TokenSource
	retry     RetryPolicy
	userAgent string
}

// Option configures a Client.
type Option func(*settings) error

type settings struct {
	httpClient *http.Client
	transport  http.RoundTripper
	tlsConfig  *tls.Config
	caPEM      [][]byte
	caFiles    []string
	serverName string
	tokens     TokenSource
	retry      *RetryPolicy
	userAgent  string
}

func (s *settings) tls() bool {
	return s.tlsConfig != nil || len(s.caPEM) > 0 || len(s.caFiles) > 0 || s.serverName != ""
}

// WithHTTPClient sends the requests with c (its Transport, Timeout,
// redirect policy and cookie jar; the client sets no Timeout of its own,
// the request's context bounds each call). With TLS options c's Transport
// must be an *http.Transport (or nil) and is cloned, not changed.
func WithHTTPClient(c *http.Client) Option {
	return func(s *settings) error {
		if c == nil {
			return errors.New("WithHTTPClient: nil client")
		}
		s.httpClient = c
		return nil
	}
}

// WithTransport sends the requests through rt, overriding the HTTP
// client's Transport. With TLS options rt must be an *http.Transport.
func WithTransport(rt http.RoundTripper) Option {
	return func(s *settings) error {
		if rt == nil {
			return errors.New("WithTransport: nil transport")
		}
		s.transport = rt
		return nil
	}
}

// WithTLSConfig starts the TLS configuration from cfg (cloned); CA bundles
// and WithServerName apply on top of it.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(s *settings) error {
		if cfg == nil {
			return errors.New("WithTLSConfig: nil config")
		}
		s.tlsConfig = cfg.Clone()
		return nil
	}
}

// WithCABundle trusts the PEM certificates in pem to sign the engine's
// certificate, instead of the system's roots. It may be given more than
// once, also with WithCAFile: every bundle is trusted.
func WithCABundle(pem []byte) Option {
	return func(s *settings) error {
		s.caPEM = append(s.caPEM, bytes.Clone(pem))
		return nil
	}
}

// WithCAFile is WithCABundle with the PEM read from path (a mounted
// ca.crt) when New runs, and read again when the file changes (checked
// before each request), so a rotated CA bundle in a mounted ConfigMap or
// Secret is trusted without a new client. New connections use the new
// bundle; connections already verified stay until they close. An
// unreadable or empty replacement keeps the bundle in use.
func WithCAFile(path string) Option {
	return func(s *settings) error {
		s.caFiles = append(s.caFiles, path)
		return nil
	}
}

// WithServerName verifies the engine's certificate for name instead of the
// URL's host (an engine reached by pod IP whose certificate names its
// Service).
func WithServerName(name string) Option {
	return func(s *settings) error {
		s.serverName = name
		return nil
	}
}

// WithTokenSource authenticates every request with ts's token.
func WithTokenSource(ts TokenSource) Option {
	return func(s *settings) error {
		if ts == nil {
			return errors.New("WithTokenSource: nil source")
		}
		s.tokens = ts
		return nil
	}
}

// WithToken is WithTokenSource(StaticToken(token)).
func WithToken(token string) Option { return WithTokenSource(StaticToken(token)) }

// WithRetry sets the retry policy (DefaultRetry without it; NoRetry sends
// each request once).
func WithRetry(p RetryPolicy) Option {
	return func(s *settings) error {
		if p.MaxAttempts > 1 && (p.InitialBackoff <= 0 || p.MaxBackoff < p.InitialBackoff) {
			return fmt.Errorf("WithRetry: InitialBackoff (%s) must be positive and at most MaxBackoff (%s)", p.InitialBackoff, p.MaxBackoff)
		}
		s.retry = &p
		return nil
	}
}

// WithUserAgent sets the User-Agent header (DefaultUserAgent without it).
func WithUserAgent(ua string) Option {
	return func(s *settings) error {
		s.userAgent = ua
		return nil
	}
}

// New returns a client of the engine at baseURL (http or https, for example
// http://evening-calm-engine.harbor-social:8080; a path prefix is kept).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("engine URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("engine URL %q: the scheme must be http or https", baseURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("engine URL %q: no host", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("engine URL %q: must not carry a query, fragment or user information", baseURL)
	}
	s := &settings{}
	for _, opt := range opts {
		if err := opt(s); err != nil {
			return nil, err
		}
	}
	c := &Client{
		base:      strings.TrimRight(u.Scheme+"://"+u.Host+u.EscapedPath(), "/"),
		tokens:    s.tokens,
		retry:     DefaultRetry,
		userAgent: DefaultUserAgent,
	}
	if s.retry != nil {
		c.retry = *s.retry
	}
	if s.userAgent != "" {
		c.userAgent = s.userAgent
	}
	hc := &http.Client{}
	if s.httpClient != nil {
		copied := *s.httpClient
		hc = &copied
	}
	if s.transport != nil {
		hc.Transport = s.transport
	}
	if s.tls() {
		if u.Scheme != "https" {
			return nil, fmt.Errorf("engine URL %q: TLS options need an https URL", baseURL)
		}
		rt := hc.Transport
		if rt == nil {
			rt = http.DefaultTransport
		}
		base, ok := rt.(*http.Transport)
		if !ok {
			return nil, fmt.Errorf("TLS options need an *http.Transport, the client has a %T", rt)
		}
		t := base.Clone()
		files, err := s.readCAFiles()
		if err != nil {
			return nil, err
		}
		if t.TLSClientConfig, err = s.tlsClientConfig(files); err != nil {
			return nil, err
		}
		hc.Transport = t
		if len(s.caFiles) > 0 {
			hc.Transport = newCAFileTransport(s, base, t, files)
		}
	} else if hc.Transport == nil {
		// A transport of its own: tuning it never touches the process's.
		hc.Transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	c.http = hc
	return c, nil
}

// caFile is one WithCAFile bundle as last read.
type caFile struct {
	info os.FileInfo
	pem  []byte
}

// readCAFiles reads the WithCAFile bundles, each with the file's state
// before the read (so a change during the read is seen at the next check).
func (s *settings) readCAFiles() ([]caFile, error) {
	files := make([]caFile, len(s.caFiles))
	for i, path := range s.caFiles {
		info, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("CA bundle: %w", err)
		}
		pem, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("CA bundle: %w", err)
		}
		files[i] = caFile{info: info, pem: pem}
	}
	return files, nil
}

func (s *settings) tlsClientConfig(files []caFile) (*tls.Config, error) {
	cfg := s.tlsConfig.Clone() // nil stays nil
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	bundles := slices.Clone(s.caPEM)
	for _, f := range files {
		bundles = append(bundles, f.pem)
	}
	if len(bundles) > 0 {
		pool := x509.NewCertPool()
		for i, pem := range bundles {
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("CA bundle %d: no PEM certificate in it", i+1)
			}
		}
		cfg.RootCAs = pool
	}
	if s.serverName != "" {
		cfg.ServerName = s.serverName
	}
	return cfg, nil
}

// caFileTransport follows the WithCAFile bundles: before each request it
// looks at the files (os.Stat: another file, size or modification time,
// as FileToken does, which sees the kubelet's symlink swap of a mounted
// ConfigMap) and, when one changed, reads them again and sends from then
// on through a new transport trusting the new bundles; the old one's idle
// connections are closed, and its requests in flight finish. A bundle
// that cannot be read or holds no certificate keeps the current
// transport, and is tried again at the next request, so a rotation
// caught half-written is picked up once it is whole.
type caFileTransport struct {
	settings *settings
	base     *http.Transport

	mu      sync.Mutex
	current *http.Transport
	files   []caFile
}

func newCAFileTransport(s *settings, base, current *http.Transport, files []caFile) *caFileTransport {
	return &caFileTransport{settings: s, base: base, current: current, files: files}
}

func (c *caFileTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return c.transport().RoundTrip(r)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// transport in use.
func (c *caFileTransport) CloseIdleConnections() { c.transport().CloseIdleConnections() }

func (c *caFileTransport) transport() *http.Transport {
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := false
	for i, path := range c.settings.caFiles {
		info, err := os.Stat(path)
		if err == nil && !unchanged(c.files[i].info, info) {
			changed = true
			break
		}
	}
	if !changed {
		return c.current
	}
	files, err := c.settings.readCAFiles()
	if err != nil {
		return c.current
	}
	cfg, err := c.settings.tlsClientConfig(files)
	if err != nil {
		return c.current
	}
	next := c.base.Clone()
	next.TLSClientConfig = cfg
	old := c.current
	c.current, c.files = next, files
	old.CloseIdleConnections()
	return next
}

// request is one API call, sent once or more.
type request struct {
	method, path string
	query        url.Values
	body         []byte // nil: no body
	contentType  string
	header       http.Header
	// safe: repeating it after a lost answer stores nothing twice.
	safe bool
	// want is the success status.
	want int
}

// userPath is /v1/users/{id}/rest with the ID escaped.
func userPath(user, rest string) (string, error) {
	if err := telemetry.ValidUserID(user); err != nil {
		return "", err
	}
	if user == "/" {
		// Go's ServeMux takes a segment that unescapes to "/" for a
		// trailing slash, so the engine cannot route this ID.
		return "", fmt.Errorf("user ID %q cannot be addressed in the engine's URL paths", user)
	}
	segment := url.PathEscape(user)
	if user == "." || user == ".." {
		// PathEscape leaves dots alone, and a segment . or .. would be
		// resolved away by the URL's reader: escape them too.
		segment = strings.Repeat("%2E", len(user))
	}
	return "/v1/users/" + segment + rest, nil
}

// do sends r, retrying as the policy and the package comment allow, and
// returns the successful answer with its body open (the caller closes it).
func (c *Client) do(ctx context.Context, r *request) (*http.Response, error) {
	target := c.base + r.path
	if len(r.query) > 0 {
		target += "?" + r.query.Encode()
	}
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("request URL: %w", err)
	}
	attempts := max(c.retry.MaxAttempts, 1)
	for attempt := 1; ; attempt++ {
		resp, err := c.send(ctx, u, r)
		var lastErr error
		retry, retryAfter := false, time.Duration(0)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return nil, err
			}
			var tokenErr *tokenError
			if errors.As(err, &tokenErr) {
				return nil, tokenErr.err
			}
			lastErr = err
			retry = retryableTransport(err, r.safe)
		case resp.StatusCode == r.want:
			return resp, nil
		default:
			_, hasRetryAfter := resp.Header["Retry-After"]
			apiErr := readAPIError(resp)
			lastErr = apiErr
			switch resp.StatusCode {
			case http.StatusServiceUnavailable:
				// With Retry-After the engine promises nothing was stored:
				// safe to repeat whatever the request.
				retry = hasRetryAfter || r.safe
				retryAfter = apiErr.RetryAfter
			case http.StatusBadGateway, http.StatusGatewayTimeout, http.StatusTooManyRequests:
				retry = r.safe
				retryAfter = apiErr.RetryAfter
			}
		}
		if !retry || attempt >= attempts {
			return nil, lastErr
		}
		wait := c.backoff(attempt)
		if retryAfter > 0 {
			if c.retry.MaxRetryAfter > 0 && retryAfter > c.retry.MaxRetryAfter {
				return nil, lastErr
			}
			// At least what the engine asked, plus jitter so replicas'
			// clients do not all come back in the same instant.
			wait = retryAfter + time.Duration(rand.Int64N(int64(wait)/2+1))
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return nil, lastErr // the retry could not finish in time
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, lastErr
		case <-timer.C:
		}
	}
}

// backoff is the jittered wait before attempt+1: InitialBackoff doubled per
// attempt, at most MaxBackoff, drawn from [half, whole].
func (c *Client) backoff(attempt int) time.Duration {
	d := c.retry.InitialBackoff
	if d <= 0 {
		d = DefaultRetry.InitialBackoff
	}
	limit := c.retry.MaxBackoff
	if limit < d {
		limit = d
	}
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// tokenError is a TokenSource's failure: the request was not sent.
type tokenError struct{ err error }

func (e *tokenError) Error() string { return e.err.Error() }

func (c *Client) send(ctx context.Context, u *url.URL, r *request) (*http.Response, error) {
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), body)
	if err != nil {
		return nil, err
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", contract.ContentTypeJSON)
	}
	req.Header.Set("User-Agent", c.userAgent)
	if c.tokens != nil {
		token, err := c.tokens.Token(ctx)
		if err != nil {
			return nil, &tokenError{err: fmt.Errorf("bearer token: %w", err)}
		}
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return c.http.Do(req)
}

// retryableTransport reports whether a request that failed with err (no
// answer) may be sent again: a certificate error never; a connection that
// was never made always (nothing was sent); anything else only when safe.
func retryableTransport(err error, safe bool) bool {
	var unknownAuthority x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var hostname x509.HostnameError
	var verification *tls.CertificateVerificationError
	var record tls.RecordHeaderError
	if errors.As(err, &unknownAuthority) || errors.As(err, &invalid) || errors.As(err, &hostname) ||
		errors.As(err, &verification) || errors.As(err, &record) {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return safe
}

// call sends r and decodes the JSON answer into out (nil: discard it).
func (c *Client) call(ctx context.Context, r *request, out any) (http.Header, error) {
	resp, err := c.do(ctx, r)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return resp.Header, nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAnswerBytes)).Decode(out); err != nil {
		return nil, fmt.Errorf("decode the engine's answer: %w", err)
	}
	return resp.Header, nil
}

// maxAnswerBytes bounds a JSON answer (a cohort with every effect is a
// few KiB).
const maxAnswerBytes = 16 << 20

func jsonBody(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return b, nil
}
