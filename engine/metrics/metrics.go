// Package metrics defines the engine's Prometheus metrics. No label ever
// carries a user identifier: labels are kinds, reasons and routes.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/attune-io/attune/engine/effects"
)

// Metrics are the engine's instruments, registered on their own registry.
type Metrics struct {
	constLabels       prometheus.Labels
	Registry          *prometheus.Registry
	SamplesIngested   *prometheus.CounterVec
	RequestsRejected  *prometheus.CounterVec
	RequestDuration   *prometheus.HistogramVec
	ConfigReloads     prometheus.Counter
	ConfigReloadFails prometheus.Counter
	TextFallbacks     *prometheus.CounterVec
	UsersErased       prometheus.Counter
	UsersExpired      prometheus.Counter
	Strength          prometheus.Gauge
	Decisions         *prometheus.CounterVec
	// CommitConflicts counts commits that lost a race to another writer
	// (a serialization failure on a shared store) and were retried.
	CommitConflicts prometheus.Counter

	// Text-model server calls (one per ingest batch with texts).
	TextModelDuration    *prometheus.HistogramVec
	TextModelBatchTexts  prometheus.Histogram
	TextModelCircuitOpen prometheus.Gauge

	// Serving certificate (only with TLS configured).
	TLSReloads           prometheus.Counter
	TLSReloadFails       prometheus.Counter
	TLSHandshakeErrors   prometheus.Counter
	TLSCertificateExpiry prometheus.Gauge
}

// CohortSource reports the published cohort aggregate for the collector,
// once per scrape (one snapshot answers every cohort gauge).
type CohortSource interface {
	CohortMetrics() Cohort
}

// Cohort is what a scrape reports of the cohort.
type Cohort struct {
	// Published is false below the minimum size; Loss and Size are then 0.
	Published bool
	Loss      float64
	Size      int
	// StoredUsers is the number of users with stored data.
	StoredUsers int
	// Effects are the interventions' effects that meet the cohort floor.
	Effects []effects.Effect
}

// New creates and registers the instruments. program becomes a constant
// label so that a Prometheus server can select one program's engines. The
// cohort gauges are added by RegisterCohort once their source exists.
func New(program string) *Metrics {
	constLabels := prometheus.Labels{"program": program}
	m := &Metrics{
		constLabels: constLabels,
		Registry:    prometheus.NewRegistry(),
		SamplesIngested: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attune_engine_samples_ingested_total", Help: "Telemetry samples durably stored, by kind.", ConstLabels: constLabels,
		}, []string{"kind"}),
		RequestsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attune_engine_requests_rejected_total", Help: "Rejected API requests, by reason.", ConstLabels: constLabels,
		}, []string{"reason"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "attune_engine_request_duration_seconds", Help: "API request latency by route and status code.", ConstLabels: constLabels,
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route", "code"}),
		ConfigReloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "attune_engine_config_reloads_total", Help: "Configuration changes applied without restart.", ConstLabels: constLabels,
		}),
		ConfigReloadFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "attune_engine_config_reload_errors_total", Help: "Invalid configuration changes rejected (the last good one stays).", ConstLabels: constLabels,
		}),
		TextFallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attune_engine_text_model_fallbacks_total", Help: "Text-emotion calls that fell back to VADER, by reason.", ConstLabels: constLabels,
		}, []string{"reason"}),
		TextModelDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "attune_engine_text_model_request_duration_seconds", Help: "Latency of text-model server calls (one per ingest batch), by result (ok or the fallback reason).", ConstLabels: constLabels,
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"result"}),
		TextModelBatchTexts: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "attune_engine_text_model_batch_texts", Help: "Texts sent in one text-model server call.", ConstLabels: constLabels,
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000},
		}),
		TextModelCircuitOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "attune_engine_text_model_circuit_open", Help: "1 while the text-model circuit breaker is open or half-open (texts scored by VADER).", ConstLabels: constLabels,
		}),
		TLSReloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "attune_engine_tls_reloads_total", Help: "Serving certificates put in force without restart after their files changed.", ConstLabels: constLabels,
		}),
		TLSReloadFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "attune_engine_tls_reload_failures_total", Help: "Replaced serving certificate files refused (unreadable, not PEM or a mismatched key); the last good pair keeps serving.", ConstLabels: constLabels,
		}),
		TLSHandshakeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "attune_engine_tls_handshake_errors_total", Help: "TLS handshakes that failed (a client that does not trust the certificate, speaks no TLS or hangs up); logged at debug without the peer's address.", ConstLabels: constLabels,
		}),
		TLSCertificateExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "attune_engine_tls_certificate_expiry_timestamp_seconds", Help: "NotAfter of the serving certificate in force, in seconds since the Unix epoch (absent without TLS).", ConstLabels: constLabels,
		}),
		UsersErased: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "attune_engine_users_erased_total", Help: "Users erased on request (GDPR Art. 17).", ConstLabels: constLabels,
		}),
		UsersExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "attune_engine_users_expired_total", Help: "Users deleted by the retention sweep.", ConstLabels: constLabels,
		}),
		Strength: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "attune_engine_strength", Help: "The program's intervention strength in force.", ConstLabels: constLabels,
		}),
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "attune_engine_decisions_total", Help: "Decisions taken, by action (intervention or none) and the reason a decision was not randomised (empty when it was).", ConstLabels: constLabels,
		}, []string{"action", "reason"}),
		CommitConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "attune_engine_commit_conflicts_total", Help: "Commits that lost a race to another writer of the same rows (another request or replica) and were retried from a fresh read.", ConstLabels: constLabels,
		}),
	}
	m.Registry.MustRegister(m.SamplesIngested, m.RequestsRejected, m.RequestDuration, m.ConfigReloads, m.ConfigReloadFails,
		m.TextFallbacks, m.TextModelDuration, m.TextModelBatchTexts, m.TextModelCircuitOpen, m.UsersErased, m.UsersExpired, m.Strength, m.Decisions, m.CommitConflicts,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// RegisterTLS adds the serving-certificate instruments, for an engine
// serving HTTPS; without TLS they are absent rather than zero, so an
// expiry alert does not fire on a plain-HTTP engine.
func (m *Metrics) RegisterTLS() {
	m.Registry.MustRegister(m.TLSReloads, m.TLSReloadFails, m.TLSHandshakeErrors, m.TLSCertificateExpiry)
}

// RegisterCohort adds the cohort gauges, read from source at scrape time.
func (m *Metrics) RegisterCohort(source CohortSource) {
	m.Registry.MustRegister(&cohortCollector{source: source, constLabels: m.constLabels})
}

// cohortCollector reads the cohort at scrape time and emits the loss and
// size only when the cohort is large enough to publish.
type cohortCollector struct {
	source      CohortSource
	constLabels prometheus.Labels
}

func (c *cohortCollector) descs() (loss, size, published, users, effect, effectUsers *prometheus.Desc) {
	return prometheus.NewDesc("attune_engine_cohort_loss", "Mean loss over the cohort (only when it meets the minimum size).", nil, c.constLabels),
		prometheus.NewDesc("attune_engine_cohort_size", "Users in the cohort (only when it meets the minimum size).", nil, c.constLabels),
		prometheus.NewDesc("attune_engine_cohort_published", "1 when the cohort meets the minimum size and is published.", nil, c.constLabels),
		prometheus.NewDesc("attune_engine_stored_users", "Users with stored data.", nil, c.constLabels),
		prometheus.NewDesc("attune_engine_intervention_effect", "Causal excursion effect of an intervention against none on the change of loss over the outcome window (WCLS; negative helps), with its 95% interval: bound is estimate, lower or upper. Only when it meets the minimum cohort size.", []string{"intervention", "bound"}, c.constLabels),
		prometheus.NewDesc("attune_engine_intervention_effect_users", "Users with both treated and control decisions behind an intervention's published effect.", []string{"intervention"}, c.constLabels)
}

func (c *cohortCollector) Describe(ch chan<- *prometheus.Desc) {
	loss, size, published, users, effect, effectUsers := c.descs()
	for _, d := range []*prometheus.Desc{loss, size, published, users, effect, effectUsers} {
		ch <- d
	}
}

func (c *cohortCollector) Collect(ch chan<- prometheus.Metric) {
	lossDesc, sizeDesc, publishedDesc, usersDesc, effectDesc, effectUsersDesc := c.descs()
	cohort := c.source.CohortMetrics()
	if cohort.Published {
		ch <- prometheus.MustNewConstMetric(lossDesc, prometheus.GaugeValue, cohort.Loss)
		ch <- prometheus.MustNewConstMetric(sizeDesc, prometheus.GaugeValue, float64(cohort.Size))
		ch <- prometheus.MustNewConstMetric(publishedDesc, prometheus.GaugeValue, 1)
	} else {
		ch <- prometheus.MustNewConstMetric(publishedDesc, prometheus.GaugeValue, 0)
	}
	ch <- prometheus.MustNewConstMetric(usersDesc, prometheus.GaugeValue, float64(cohort.StoredUsers))
	for _, e := range cohort.Effects {
		ch <- prometheus.MustNewConstMetric(effectDesc, prometheus.GaugeValue, e.Estimate, e.Intervention, "estimate")
		ch <- prometheus.MustNewConstMetric(effectDesc, prometheus.GaugeValue, e.Lower, e.Intervention, "lower")
		ch <- prometheus.MustNewConstMetric(effectDesc, prometheus.GaugeValue, e.Upper, e.Intervention, "upper")
		ch <- prometheus.MustNewConstMetric(effectUsersDesc, prometheus.GaugeValue, float64(e.UsersBoth), e.Intervention)
	}
}
