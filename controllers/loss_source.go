package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	engineclient "github.com/attune-io/attune/engine/client"
	engineconfig "github.com/attune-io/attune/engine/config"
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

func (r *EngineLossReader) Read(ctx context.Context, p *wellbeingv1alpha1.MeditationProgram, minCohort int) (LossMeasurement, error) {
	pods := &corev1.PodList{}
	if err := r.Client.List(ctx, pods, client.InNamespace(p.Namespace), client.MatchingLabels(EngineSelectorLabels(p))); err != nil {
		return LossMeasurement{}, unavailable("list engine pods: %v", err)
	}
	var endpoints []string
	for i := range pods.Items {
		if addr, ok := engineAddress(&pods.Items[i]); ok {
			endpoints = append(endpoints, addr)
		}
	}
	if len(endpoints) == 0 {
		return LossMeasurement{}, unavailable("no ready engine pods")
	}
	secret := &corev1.Secret{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: engineTokenName(p)}, secret); err != nil {
		return LossMeasurement{}, unavailable("read engine token: %v", err)
	}
	token := strings.TrimSpace(string(secret.Data[ReadOnlyTokenKey]))
	if usesPostgres(p) {
		return r.readShared(ctx, endpoints, token, minCohort)
	}

	type result struct {
		cohort contract.CohortSummary
		err    error
	}
	results := make([]result, len(endpoints))
	var wg sync.WaitGroup
	for i, addr := range endpoints {
		wg.Go(func() {
			results[i].cohort, results[i].err = r.fetch(ctx, addr, token)
		})
	}
	wg.Wait()

	var weighted float64
	var size, reachable, published int
	var errs []string
	var oldest time.Time
	var replicaEffects [][]effects.Effect
	for _, res := range results {
		if res.err != nil {
			errs = append(errs, res.err.Error())
			continue
		}
		reachable++
		c := res.cohort
		if c.Scope == engineconfig.ScopeShared {
			// An engine still on a shared store (mid-rollout to embedded):
			// its store-wide cohort would be counted once per replica.
			continue
		}
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
		Effects: combineReplicaEffects(replicaEffects, minCohort),
	}, nil
}

// readShared reads the cohort from one engine on a shared store: every
// replica computes it over the whole store, so summing them would count
// each user once per replica. Engines are tried in turn until one answers
// with the shared scope; one still on the embedded store (mid-rollout) is
// passed over.
func (r *EngineLossReader) readShared(ctx context.Context, endpoints []string, token string, minCohort int) (LossMeasurement, error) {
	var errs []string
	for i, addr := range endpoints {
		c, err := r.fetch(ctx, addr, token)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if c.Scope != engineconfig.ScopeShared {
			errs = append(errs, fmt.Sprintf("%s: cohort scope %q, not yet on the shared store", addr, c.Scope))
			continue
		}
		if !c.Published || c.Size == nil || c.Loss == nil || *c.Size < minCohort {
			return LossMeasurement{}, &MeasurementError{Reason: wellbeingv1alpha1.ReasonCohortTooSmall, Message: fmt.Sprintf(
				"the shared store's cohort is below the world's minimum of %d users", minCohort)}
		}
		if math.IsNaN(*c.Loss) || math.IsInf(*c.Loss, 0) || *c.Loss < 0 {
			return LossMeasurement{}, unavailable("an engine reported an invalid loss %v", *c.Loss)
		}
		return LossMeasurement{
			Loss: *c.Loss, CohortSize: *c.Size, At: c.ObservedAt,
			Sources: fmt.Sprintf("shared store, read through engine %d of %d", i+1, len(endpoints)),
			// Every replica estimates over the whole store: one engine's.
			Effects: combineReplicaEffects([][]effects.Effect{c.Effects}, minCohort),
		}, nil
	}
	return LossMeasurement{}, unavailable("no engine answered with the shared store's cohort (%d tried): %s", len(endpoints), strings.Join(errs, "; "))
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
func (r *EngineLossReader) fetch(ctx context.Context, addr, token string) (contract.CohortSummary, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := engineclient.New("http://"+addr, engineclient.WithHTTPClient(r.httpClient()), engineclient.WithToken(token), engineclient.WithRetry(engineclient.NoRetry))
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

func (r *EngineLossReader) httpClient() *http.Client {
	if r.HTTP != nil {
		return r.HTTP
	}
	return http.DefaultClient
}

// PrometheusLossReader runs instant queries against a Prometheus server.
type PrometheusLossReader struct {
	HTTP    *http.Client
	Timeout time.Duration
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
	// No effects: the Prometheus source reads only the loss and the size
	// (docs/tuning.md).
	return LossMeasurement{Loss: loss, CohortSize: int(size), At: at, Sources: "prometheus " + src.Address}, nil
}

// query runs one instant query and insists on exactly one finite sample.
func (r *PrometheusLossReader) query(ctx context.Context, address, query string) (float64, time.Time, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	endpoint := strings.TrimRight(address, "/") + "/api/v1/query?query=" + url.QueryEscape(query)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return 0, time.Time{}, unavailable("prometheus request: %v", err)
	}
	client := r.HTTP
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, time.Time{}, unavailable("prometheus %s: %v", address, err)
	}
	defer func() { _ = resp.Body.Close() }()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Value [2]json.RawMessage `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&body); err != nil {
		return 0, time.Time{}, unavailable("prometheus %s: undecodable answer (%s): %v", address, resp.Status, err)
	}
	if body.Status != "success" {
		return 0, time.Time{}, unavailable("prometheus query failed: %s", body.Error)
	}
	switch n := len(body.Data.Result); {
	case n == 0:
		return 0, time.Time{}, unavailable("prometheus query %q returned no series", query)
	case n > 1:
		return 0, time.Time{}, unavailable("prometheus query %q returned %d series, want exactly one", query, n)
	}
	var ts float64
	var text string
	if err := json.Unmarshal(body.Data.Result[0].Value[0], &ts); err != nil {
		return 0, time.Time{}, unavailable("prometheus sample timestamp: %v", err)
	}
	if err := json.Unmarshal(body.Data.Result[0].Value[1], &text); err != nil {
		return 0, time.Time{}, unavailable("prometheus sample value: %v", err)
	}
	v, err := strconv.ParseFloat(text, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, time.Time{}, unavailable("prometheus query %q returned %q, not a finite number", query, text)
	}
	sec, frac := math.Modf(ts)
	return v, time.Unix(int64(sec), int64(frac*1e9)), nil
}
