package controllers

import (
	"container/list"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers/tuning"
	engineclient "github.com/attune-io/attune/engine/client"
	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/effects"
)

// MeasurementError is a failed loss measurement with the condition reason
// it maps to (MetricsUnavailable, CohortTooSmall, Stale).
type MeasurementError struct {
	Reason  string
	Message string
}

func (e *MeasurementError) Error() string { return e.Message }

func unavailable(format string, args ...any) error {
	return &MeasurementError{Reason: wellbeingv1alpha1.ReasonMetricsUnavailable, Message: fmt.Sprintf(format, args...)}
}

// LossMeasurement is a valid cohort-loss observation.
type LossMeasurement struct {
	Loss       float64
	CohortSize int
	At         time.Time
	// Sources says what it rests on, e.g. "3/3 engines".
	Sources string
	// Effects are the interventions' published effects, one per
	// intervention, sorted by name: on the embedded store pooled over the
	// replicas that answered, on a shared store the one engine's. The
	// Prometheus source reports none.
	Effects []effects.Effect
	// Replicas are the engines the measurement counts, each with the
	// strength it ran and for how long: the tuner credits the loss to the
	// strength in force only when all of them run it, settled.
	Replicas []tuning.Replica
}

// LossReader measures a program's cohort loss.
type LossReader interface {
	Read(ctx context.Context, p *wellbeingv1alpha1.MeditationProgram, minCohort int) (LossMeasurement, error)
}

// EngineLossReader reads GET /v1/cohort from every ready engine pod, found
// by label selector and addressed by pod IP (EndpointSlices reject the
// loopback addresses a local cluster uses), with the read-only token.
type EngineLossReader struct {
	Client client.Reader
	HTTP   *http.Client
	// Timeout bounds each engine call (default 3s).
	Timeout time.Duration
}

// engineEndpoint is a ready engine pod and its address.
type engineEndpoint struct {
	pod, addr string
}

// engineAnswer is one engine's GET /v1/cohort, or why it gave none.
type engineAnswer struct {
	engineEndpoint
	cohort contract.CohortSummary
	err    error
}

// replica is what the engine said it runs, for attribution.
func (a engineAnswer) replica() tuning.Replica {
	c := a.cohort
	running := c.ObservedAt.Sub(c.RunningSince)
	if c.RunningSince.IsZero() {
		// An engine older than the field: it cannot say, so it is not
		// held back by the settle time (its strength is still compared).
		running = time.Duration(math.MaxInt64)
	}
	return tuning.Replica{Name: a.pod, Strength: c.Strength, Generation: c.Generation, RunningFor: running}
}

func (r *EngineLossReader) Read(ctx context.Context, p *wellbeingv1alpha1.MeditationProgram, minCohort int) (LossMeasurement, error) {
	pods := &corev1.PodList{}
	if err := r.Client.List(ctx, pods, client.InNamespace(p.Namespace), client.MatchingLabels(EngineSelectorLabels(p))); err != nil {
		return LossMeasurement{}, unavailable("list engine pods: %v", err)
	}
	var endpoints []engineEndpoint
	for i := range pods.Items {
		if addr, ok := engineAddress(&pods.Items[i]); ok {
			endpoints = append(endpoints, engineEndpoint{pod: pods.Items[i].Name, addr: addr})
		}
	}
	if len(endpoints) == 0 {
		return LossMeasurement{}, unavailable("no ready engine pods")
	}
	slices.SortFunc(endpoints, func(a, b engineEndpoint) int { return strings.Compare(a.pod, b.pod) })
	secret := &corev1.Secret{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: engineTokenName(p)}, secret); err != nil {
		return LossMeasurement{}, unavailable("read engine token: %v", err)
	}
	token := strings.TrimSpace(string(secret.Data[contract.ReadOnlyTokenKey]))
	bundle, err := worldBundle(ctx, r.Client, p)
	if err != nil {
		return LossMeasurement{}, err
	}
	hc, trust, err := r.engineHTTP(EngineServerName(p), bundle)
	if err != nil {
		return LossMeasurement{}, unavailable("the world's CA bundle (ConfigMap %s, key %s): %v", CABundleConfigMapName, CABundleKey, err)
	}
	answers := r.fetchAll(ctx, endpoints, token, hc, trust)
	if err := untrusted(answers); err != nil {
		return LossMeasurement{}, err
	}
	if usesPostgres(p) {
		return readShared(answers, minCohort)
	}

	var weighted float64
	var size, reachable, published int
	var errs []string
	var oldest time.Time
	var replicaEffects [][]effects.Effect
	var replicas []tuning.Replica
	for _, a := range answers {
		if a.err != nil {
			errs = append(errs, a.err.Error())
			continue
		}
		reachable++
		c := a.cohort
		if c.Scope == contract.ScopeShared {
			// An engine still on a shared store (mid-rollout to embedded):
			// its store-wide cohort would be counted once per replica.
			continue
		}
		// Every replica whose answer enters the measurement, published or
		// not (its effects do), must run the strength credited.
		replicas = append(replicas, a.replica())
		// Each effect is published on its own k-anonymity floor, so a
		// replica whose cohort loss is not published may still have some.
		replicaEffects = append(replicaEffects, c.Effects)
		if !c.Published || c.Size == nil || c.Loss == nil {
			continue
		}
		if math.IsNaN(*c.Loss) || math.IsInf(*c.Loss, 0) || *c.Loss < 0 {
			return LossMeasurement{}, unavailable("an engine reported an invalid loss %v", *c.Loss)
		}
		published++
		weighted += *c.Loss * float64(*c.Size)
		size += *c.Size
		if oldest.IsZero() || c.ObservedAt.Before(oldest) {
			oldest = c.ObservedAt
		}
	}
	if reachable == 0 {
		return LossMeasurement{}, unavailable("no engine answered (%d tried): %s", len(endpoints), strings.Join(errs, "; "))
	}
	if size < minCohort || size == 0 {
		return LossMeasurement{}, &MeasurementError{Reason: wellbeingv1alpha1.ReasonCohortTooSmall, Message: fmt.Sprintf(
			"the reachable engines (%d of %d) publish a cohort of %d users, below the world's minimum of %d", reachable, len(endpoints), size, minCohort)}
	}
	return LossMeasurement{
		Loss: weighted / float64(size), CohortSize: size, At: oldest,
		Sources: fmt.Sprintf("%d/%d engines answered, %d published", reachable, len(endpoints), published),
		Effects: combineReplicaEffects(replicaEffects, minCohort), Replicas: replicas,
	}, nil
}

// fetchAll reads every engine's cohort at once.
func (r *EngineLossReader) fetchAll(ctx context.Context, endpoints []engineEndpoint, token string, hc *http.Client, trust []engineclient.Option) []engineAnswer {
	answers := make([]engineAnswer, len(endpoints))
	var wg sync.WaitGroup
	for i, e := range endpoints {
		answers[i].engineEndpoint = e
		wg.Go(func() {
			answers[i].cohort, answers[i].err = r.fetch(ctx, e.addr, token, hc, trust)
		})
	}
	wg.Wait()
	return answers
}

// readShared takes the cohort from one engine on a shared store: every
// replica computes it over the whole store, so summing them would count
// each user once per replica. The first engine (by pod name) that answers
// with the shared scope gives it; one still on the embedded store
// (mid-rollout) is passed over. Every engine on the shared store is read
// all the same, because each serves users of that cohort: the loss is
// credited to a strength only when all of them run it.
func readShared(answers []engineAnswer, minCohort int) (LossMeasurement, error) {
	var errs []string
	var replicas []tuning.Replica
	first := -1
	for i, a := range answers {
		switch {
		case a.err != nil:
			errs = append(errs, a.err.Error())
		case a.cohort.Scope != contract.ScopeShared:
			errs = append(errs, fmt.Sprintf("%s: cohort scope %q, not yet on the shared store", a.addr, a.cohort.Scope))
		default:
			replicas = append(replicas, a.replica())
			if first < 0 {
				first = i
			}
		}
	}
	if first < 0 {
		return LossMeasurement{}, unavailable("no engine answered with the shared store's cohort (%d tried): %s", len(answers), strings.Join(errs, "; "))
	}
	c := answers[first].cohort
	if !c.Published || c.Size == nil || c.Loss == nil || *c.Size < minCohort {
		return LossMeasurement{}, &MeasurementError{Reason: wellbeingv1alpha1.ReasonCohortTooSmall, Message: fmt.Sprintf(
			"the shared store's cohort is below the world's minimum of %d users", minCohort)}
	}
	if math.IsNaN(*c.Loss) || math.IsInf(*c.Loss, 0) || *c.Loss < 0 {
		return LossMeasurement{}, unavailable("an engine reported an invalid loss %v", *c.Loss)
	}
	return LossMeasurement{
		Loss: *c.Loss, CohortSize: *c.Size, At: c.ObservedAt,
		Sources: fmt.Sprintf("shared store, read through engine %d of %d", first+1, len(answers)),
		// Every replica estimates over the whole store: one engine's.
		Effects:  combineReplicaEffects([][]effects.Effect{c.Effects}, minCohort),
		Replicas: replicas,
	}, nil
}

// engineAddress is host:port of a ready engine pod.
func engineAddress(pod *corev1.Pod) (string, bool) {
	if pod.Status.PodIP == "" || !pod.DeletionTimestamp.IsZero() {
		return "", false
	}
	ready := false
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			ready = true
		}
	}
	if !ready {
		return "", false
	}
	port := int32(engineHTTPPort)
	for _, c := range pod.Spec.Containers {
		if c.Name != "engine" {
			continue
		}
		for _, cp := range c.Ports {
			if cp.Name == engineHTTPPortStr {
				port = cp.ContainerPort
			}
		}
	}
	return net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(port))), true
}

// fetch reads one engine's GET /v1/cohort through the engine client, once:
// the operator reads again at the next interval rather than retrying
// within this one. Effects in the answer are the published ones only.
func (r *EngineLossReader) fetch(ctx context.Context, addr, token string, hc *http.Client, trust []engineclient.Option) (contract.CohortSummary, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	opts := append([]engineclient.Option{engineclient.WithHTTPClient(hc), engineclient.WithToken(token), engineclient.WithRetry(engineclient.NoRetry)}, trust...)
	c, err := engineclient.New("https://"+addr, opts...)
	if err != nil {
		return contract.CohortSummary{}, fmt.Errorf("%s: %w", addr, err)
	}
	cohort, err := c.Cohort(ctx)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return contract.CohortSummary{}, fmt.Errorf("%s: timed out after %s", addr, timeout)
		}
		return contract.CohortSummary{}, fmt.Errorf("%s: %w", addr, err)
	}
	return cohort, nil
}

// engineHTTP is the client a read of the engines serving name goes
// through, verifying them against bundle for that name. A reader given
// its own HTTP client gets the trust as engine client options (the engine
// client then clones its transport per read); otherwise the program's
// kept-alive transport from engineTransports, so that a read each interval
// reuses the connection of the last one rather than a new handshake.
func (r *EngineLossReader) engineHTTP(name string, bundle []byte) (*http.Client, []engineclient.Option, error) {
	if r.HTTP != nil {
		return r.HTTP, []engineclient.Option{engineclient.WithCABundle(bundle), engineclient.WithServerName(name)}, nil
	}
	t, err := engineTransports.get(name, bundle)
	if err != nil {
		return nil, nil, err
	}
	return &http.Client{Transport: t}, nil, nil
}

// maxEngineTransports bounds the kept transports: one per program read
// (5,000 programs fit); the least recently used goes first.
const maxEngineTransports = 10000

// engineIdleTimeout keeps a connection to an engine across a 60 s tuning
// interval (and a reconcile's delay); a program read less often makes a
// new handshake per read.
const engineIdleTimeout = 150 * time.Second

var engineTransports = newTransportCache(maxEngineTransports)

// transportCache holds one transport per engine server name, built for
// the world's CA bundle it was last asked with. Its connections are pooled
// by address only, so a transport is never shared across server names:
// a connection verified for one program's name would otherwise serve
// another program's request at the same address (every engine of a local
// cluster is on 127.0.0.1). A changed bundle (a new CA, or one dropped)
// replaces the transport and closes the old one's connections, so that
// none verified against a bundle no longer in force is used again.
type transportCache struct {
	mu      sync.Mutex
	max     int
	order   *list.List // of *cachedTransport, most recently used first
	entries map[string]*list.Element
}

type cachedTransport struct {
	name   string
	digest [sha256.Size]byte
	t      *http.Transport
}

func newTransportCache(maxEntries int) *transportCache {
	return &transportCache{max: maxEntries, order: list.New(), entries: map[string]*list.Element{}}
}

func (c *transportCache) get(name string, bundle []byte) (*http.Transport, error) {
	digest := sha256.Sum256(bundle)
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[name]; ok {
		ct := e.Value.(*cachedTransport)
		if ct.digest == digest {
			c.order.MoveToFront(e)
			return ct.t, nil
		}
		c.remove(e)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		return nil, errors.New("no PEM certificate in it")
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: name}
	// One connection per engine pod: a program's reads of a pod follow
	// one another, an interval apart.
	t.MaxIdleConnsPerHost = 1
	t.MaxIdleConns = 16
	t.IdleConnTimeout = engineIdleTimeout
	c.entries[name] = c.order.PushFront(&cachedTransport{name: name, digest: digest, t: t})
	for c.order.Len() > c.max {
		c.remove(c.order.Back())
	}
	return t, nil
}

func (c *transportCache) remove(e *list.Element) {
	ct := c.order.Remove(e).(*cachedTransport)
	delete(c.entries, ct.name)
	// A connection still in use is closed when its read ends, or idles
	// out: no new read reaches this transport.
	ct.t.CloseIdleConnections()
}

// PrometheusLossReader runs instant queries against a Prometheus server
// that Access permits.
type PrometheusLossReader struct {
	HTTP    *http.Client
	Timeout time.Duration
	// Access says which addresses may be queried (default: Services in
	// the cluster only).
	Access PrometheusAccess
}

// DefaultLossQuery is the program's cohort loss; the engines label their
// metrics with program="<ns>/<name>". On the embedded store each engine
// reports its own users: the size-weighted mean over engines. On a shared
// store every engine reports the whole cohort: their average (they differ
// only by when each was scraped).
func DefaultLossQuery(p *wellbeingv1alpha1.MeditationProgram) string {
	sel := fmt.Sprintf(`{program=%q}`, p.Namespace+"/"+p.Name)
	if usesPostgres(p) {
		return fmt.Sprintf(`avg(attune_engine_cohort_loss%s)`, sel)
	}
	return fmt.Sprintf(`sum(attune_engine_cohort_loss%s * attune_engine_cohort_size%s) / sum(attune_engine_cohort_size%s)`, sel, sel, sel)
}

// DefaultSizeQuery is the program's published cohort size: the sum over
// engines, or on a shared store any one engine's (the largest).
func DefaultSizeQuery(p *wellbeingv1alpha1.MeditationProgram) string {
	sel := fmt.Sprintf(`{program=%q}`, p.Namespace+"/"+p.Name)
	if usesPostgres(p) {
		return fmt.Sprintf(`max(attune_engine_cohort_size%s)`, sel)
	}
	return fmt.Sprintf(`sum(attune_engine_cohort_size%s)`, sel)
}

func (r *PrometheusLossReader) Read(ctx context.Context, p *wellbeingv1alpha1.MeditationProgram, minCohort int) (LossMeasurement, error) {
	src := p.Spec.Tuning.Source.Prometheus
	if src == nil || src.Address == "" {
		return LossMeasurement{}, unavailable("spec.tuning.source.prometheus.address is not set")
	}
	if err := r.Access.Check(src.Address); err != nil {
		return LossMeasurement{}, unavailable("%v", err)
	}
	query := src.Query
	if query == "" {
		query = DefaultLossQuery(p)
	}
	loss, at, err := r.query(ctx, src.Address, query)
	if err != nil {
		return LossMeasurement{}, err
	}
	size, _, err := r.query(ctx, src.Address, DefaultSizeQuery(p))
	if err != nil {
		return LossMeasurement{}, err
	}
	if int(size) < minCohort {
		return LossMeasurement{}, &MeasurementError{Reason: wellbeingv1alpha1.ReasonCohortTooSmall,
			Message: fmt.Sprintf("Prometheus reports a cohort of %d users, below the world's minimum of %d", int(size), minCohort)}
	}
	if loss < 0 {
		return LossMeasurement{}, unavailable("Prometheus returned a negative loss %v", loss)
	}
	replicas, err := r.strengths(ctx, src.Address, p)
	if err != nil {
		return LossMeasurement{}, err
	}
	// No effects: the Prometheus source reads only the loss and the size
	// (docs/tuning.md).
	return LossMeasurement{Loss: loss, CohortSize: int(size), At: at, Sources: "prometheus " + src.Address, Replicas: replicas}, nil
}

// StrengthQueries read what the program's engines ran, for attribution:
// the strength each exports now (attune_engine_strength, one series per
// scraped engine) and how far it moved over the last window (the highest
// minus the lowest sample in it; 0: the engine ran that strength
// throughout). The gauge carries no generation, so only strengths are
// compared.
func StrengthQueries(p *wellbeingv1alpha1.MeditationProgram, window time.Duration) (current, spread string) {
	sel := fmt.Sprintf(`{program=%q}`, p.Namespace+"/"+p.Name)
	w := fmt.Sprintf("%dms", max(window.Milliseconds(), 1))
	return "attune_engine_strength" + sel,
		fmt.Sprintf(`max_over_time(attune_engine_strength%s[%s]) - min_over_time(attune_engine_strength%s[%s])`, sel, w, sel, w)
}

// strengths are the scraped engines as the tuner's replicas: each with the
// strength it exports, run for the settle time when it exported nothing
// else over the settle window (the samples cannot say more precisely when
// it changed), for no time otherwise.
func (r *PrometheusLossReader) strengths(ctx context.Context, address string, p *wellbeingv1alpha1.MeditationProgram) ([]tuning.Replica, error) {
	settle := tuningSpec(p).WithDefaults().Settle
	currentQuery, spreadQuery := StrengthQueries(p, settle)
	current, err := r.queryVector(ctx, address, currentQuery)
	if err != nil {
		return nil, err
	}
	spread, err := r.queryVector(ctx, address, spreadQuery)
	if err != nil {
		return nil, err
	}
	steady := map[string]bool{}
	for _, s := range spread {
		if v, err := strconv.ParseFloat(s.value, 64); err == nil && v == 0 {
			steady[seriesKey(s.labels)] = true
		}
	}
	var out []tuning.Replica
	for _, c := range current {
		v, err := strconv.ParseFloat(c.value, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		replica := tuning.Replica{Name: seriesName(c.labels), Strength: v}
		if steady[seriesKey(c.labels)] {
			replica.RunningFor = settle
		}
		out = append(out, replica)
	}
	return out, nil
}

// seriesKey identifies a series by its labels, the metric name aside
// (functions and arithmetic drop it).
func seriesKey(labels map[string]string) string {
	keys := slices.Sorted(maps.Keys(labels))
	var b strings.Builder
	for _, k := range keys {
		if k != "__name__" {
			fmt.Fprintf(&b, "%s=%q,", k, labels[k])
		}
	}
	return b.String()
}

// seriesName names an engine's series in messages: its pod where the
// scrape configuration labels it, else its scrape address.
func seriesName(labels map[string]string) string {
	for _, k := range []string{"pod", "kubernetes_pod_name", "instance"} {
		if v := labels[k]; v != "" {
			return v
		}
	}
	return seriesKey(labels)
}

// query runs one instant query and insists on exactly one finite sample.
func (r *PrometheusLossReader) query(ctx context.Context, address, query string) (float64, time.Time, error) {
	samples, err := r.queryVector(ctx, address, query)
	if err != nil {
		return 0, time.Time{}, err
	}
	switch n := len(samples); {
	case n == 0:
		return 0, time.Time{}, unavailable("prometheus query %q returned no series", query)
	case n > 1:
		return 0, time.Time{}, unavailable("prometheus query %q returned %d series, want exactly one", query, n)
	}
	v, err := strconv.ParseFloat(samples[0].value, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, time.Time{}, unavailable("prometheus query %q returned a value that is not a finite number", query)
	}
	return v, samples[0].at, nil
}

// promSample is one series of an instant query's answer.
type promSample struct {
	labels map[string]string
	at     time.Time
	value  string // as Prometheus wrote it
}

// queryVector runs one instant query and returns every series.
func (r *PrometheusLossReader) queryVector(ctx context.Context, address, query string) ([]promSample, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	endpoint := strings.TrimRight(address, "/") + "/api/v1/query?query=" + url.QueryEscape(query)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return nil, unavailable("prometheus request: %v", err)
	}
	// What the server says goes to the operator's log; a condition gets
	// only its class (PrometheusAccess).
	logger := log.FromContext(ctx).WithValues("prometheus", address)
	resp, err := noRedirects(r.HTTP).Do(req)
	switch {
	case errors.Is(err, errRedirect):
		return nil, unavailable("prometheus %s: %v", address, errRedirect)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return nil, unavailable("prometheus %s did not answer within %s", address, timeout)
	case err != nil:
		logger.Info("prometheus query failed", "error", err.Error())
		return nil, unavailable("prometheus %s could not be reached (the operator's log has the error)", address)
	}
	defer func() { _ = resp.Body.Close() }()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string  `json:"metric"`
				Value  [2]json.RawMessage `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	var errorType struct {
		ErrorType string `json:"errorType"`
	}
	raw, readErr := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	status := fmt.Sprintf("HTTP %dxx", resp.StatusCode/100)
	if readErr != nil || json.Unmarshal(raw, &body) != nil || (body.Status != "success" && body.Status != "error") {
		logger.Info("prometheus answer is not an API response", "status", resp.StatusCode)
		return nil, unavailable("prometheus %s: the answer (%s) is not a Prometheus API response", address, status)
	}
	if body.Status != "success" {
		_ = json.Unmarshal(raw, &errorType)
		kind := "an unknown error type"
		if slices.Contains(prometheusErrorTypes, errorType.ErrorType) {
			kind = errorType.ErrorType
		}
		logger.Info("prometheus query failed", "status", resp.StatusCode, "errorType", errorType.ErrorType, "error", body.Error)
		return nil, unavailable("prometheus query failed (%s, %s); the operator's log has Prometheus's message", kind, status)
	}
	out := make([]promSample, 0, len(body.Data.Result))
	for _, res := range body.Data.Result {
		var ts float64
		var text string
		if err := json.Unmarshal(res.Value[0], &ts); err != nil {
			return nil, unavailable("prometheus %s: a sample's timestamp is not a number", address)
		}
		if err := json.Unmarshal(res.Value[1], &text); err != nil {
			return nil, unavailable("prometheus %s: a sample's value is not a string", address)
		}
		sec, frac := math.Modf(ts)
		out = append(out, promSample{labels: res.Metric, at: time.Unix(int64(sec), int64(frac*1e9)), value: text})
	}
	return out, nil
}
