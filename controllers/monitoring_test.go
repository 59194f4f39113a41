package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	"github.com/attune-io/attune/engine/auth"
	"github.com/attune-io/attune/internal/devstack/proc"
)

// scrapedNamespace is the suite's PodMonitors option: worlds whose
// namespace starts with "scraped-" are scraped, as every world is with
// --pod-monitors; the other tests' programs get no PodMonitor.
func scrapedNamespace(namespace string) bool { return strings.HasPrefix(namespace, "scraped-") }

func podMonitor(ctx context.Context, p *wellbeingv1alpha1.MeditationProgram) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(controllers.EnginePodMonitor(p).GroupVersionKind())
	err := k8s.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: controllers.PodMonitorName(p)}, u)
	return u, err
}

// endpoint is the PodMonitor's one podMetricsEndpoints entry.
func endpoint(t *testing.T, pm *unstructured.Unstructured) map[string]any {
	t.Helper()
	eps, _, _ := unstructured.NestedSlice(pm.Object, "spec", "podMetricsEndpoints")
	if len(eps) != 1 {
		t.Fatalf("podMetricsEndpoints: %d entries, want 1", len(eps))
	}
	return eps[0].(map[string]any)
}

func str(t *testing.T, m map[string]any, fields ...string) string {
	t.Helper()
	v, ok, err := unstructured.NestedString(m, fields...)
	if !ok || err != nil {
		t.Fatalf("%s: not a string in %v", strings.Join(fields, "."), m)
	}
	return v
}

// TestPodMonitorMeetsTheCRDSchema: the PodMonitor the operator renders is
// stored by an API server that has the Prometheus operator's own CRD
// (test/crds/prometheus-operator, v0.93.0), whose schema refuses a
// mistaken one; it carries a metrics-only token of its own.
func TestPodMonitorMeetsTheCRDSchema(t *testing.T) {
	ctx := context.Background()
	setupWorld(t, "scraped-schema", wellbeingv1alpha1.ContextSocial)
	p := newProgram("scraped-schema", "monitored", "scraped-schema")
	create(t, p)
	var pm *unstructured.Unstructured
	eventually(t, "PodMonitor", func() error {
		var err error
		pm, err = podMonitor(ctx, p)
		return err
	})
	get(t, client.ObjectKeyFromObject(p), p)
	if ref := metav1.GetControllerOf(pm); ref == nil || ref.UID != p.UID {
		t.Fatalf("PodMonitor's controller %+v, want the program", ref)
	}
	ep := endpoint(t, pm)
	for field, want := range map[string]string{
		"port": "http", "scheme": "https", "path": "/metrics",
		"tlsConfig.serverName":           controllers.EngineServerName(p),
		"tlsConfig.ca.configMap.name":    controllers.CABundleConfigMapName,
		"tlsConfig.ca.configMap.key":     controllers.CABundleKey,
		"authorization.type":             "Bearer",
		"authorization.credentials.name": controllers.MetricsTokenSecretName(p),
		"authorization.credentials.key":  controllers.MetricsTokenKey,
	} {
		if got := str(t, ep, strings.Split(field, ".")...); got != want {
			t.Errorf("podMetricsEndpoints[0].%s = %q, want %q", field, got, want)
		}
	}
	// It selects exactly the program's engine pods.
	d := waitDeployment(t, p)
	selector, _, _ := unstructured.NestedStringMap(pm.Object, "spec", "selector", "matchLabels")
	for k, v := range selector {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the engine pods' labels %v", k, v, d.Spec.Template.Labels)
		}
	}
	if names, _, _ := unstructured.NestedStringSlice(pm.Object, "spec", "namespaceSelector", "matchNames"); !slices.Equal(names, []string{p.Namespace}) {
		t.Errorf("namespaceSelector.matchNames %v, want [%s]", names, p.Namespace)
	}

	// The credential: its own Secret, in the engines' clients file with
	// the metrics scope alone.
	secret := &corev1.Secret{}
	get(t, client.ObjectKey{Namespace: p.Namespace, Name: controllers.MetricsTokenSecretName(p)}, secret)
	token := string(secret.Data[controllers.MetricsTokenKey])
	if len(token) < 32 {
		t.Fatalf("metrics token Secret holds %d bytes, want a random token", len(token))
	}
	eventually(t, "metrics client in the clients file", func() error {
		clients, err := clientsFile(ctx, p)
		if err != nil {
			return err
		}
		c, ok := clients[controllers.MetricsClientName]
		if !ok {
			return fmt.Errorf("no %s in %v", controllers.MetricsClientName, clients)
		}
		if c.TokenSHA256 != auth.HashToken(token) || !slices.Equal(c.Scopes, []auth.Scope{auth.ScopeMetrics}) {
			return fmt.Errorf("metrics client %+v, want the Secret's token with scopes [metrics]", c)
		}
		return nil
	})

	// Rotation: delete the Secret; a new token replaces the old one in the
	// clients file.
	if err := k8s.Delete(ctx, secret); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a new metrics token", func() error {
		s := &corev1.Secret{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(secret), s); err != nil {
			return err
		}
		fresh := string(s.Data[controllers.MetricsTokenKey])
		if fresh == "" || fresh == token {
			return fmt.Errorf("token not reissued")
		}
		clients, err := clientsFile(ctx, p)
		if err != nil {
			return err
		}
		if got := clients[controllers.MetricsClientName].TokenSHA256; got != auth.HashToken(fresh) {
			return fmt.Errorf("clients file lists %s, want the new token's hash", got)
		}
		return nil
	})

	// The schema is the real one: it refuses what the Prometheus operator
	// would not understand.
	bad := controllers.EnginePodMonitor(p)
	bad.SetName("mistaken")
	eps, _, _ := unstructured.NestedSlice(bad.Object, "spec", "podMetricsEndpoints")
	eps[0].(map[string]any)["scheme"] = "gopher"
	_ = unstructured.SetNestedSlice(bad.Object, eps, "spec", "podMetricsEndpoints")
	if err := k8s.Create(ctx, bad, client.DryRunAll); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "scheme") {
		t.Fatalf("a PodMonitor with scheme gopher: %v; want Invalid naming scheme", err)
	}

	// A world the operator is not told to scrape gets neither.
	setupWorld(t, "unscraped", wellbeingv1alpha1.ContextSocial)
	other := newProgram("unscraped", "quiet", "unscraped")
	create(t, other)
	waitReconciled(t, other)
	if _, err := podMonitor(ctx, other); !apierrors.IsNotFound(err) {
		t.Errorf("PodMonitor of a program without PodMonitors: %v, want NotFound", err)
	}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: other.Namespace, Name: controllers.MetricsTokenSecretName(other)}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("metrics token Secret of a program without PodMonitors: %v, want NotFound", err)
	}
}

// scrapeConfig translates the PodMonitor into the Prometheus scrape job
// the Prometheus operator generates for it (pkg/prometheus/promcfg.go:
// job podMonitor/<namespace>/<name>/0, scheme, metrics_path, tls_config
// with the CA and server name, authorization with the Secret's
// credentials, the relabelings as relabel_configs), with the pods as
// static targets carrying the __meta_kubernetes_* labels Kubernetes
// service discovery would give them, so that the relabelings run as they
// would in a cluster. The ConfigMap and Secret it names are read from the
// API server and written to files, as the Prometheus operator does.
func scrapeConfig(t *testing.T, pm *unstructured.Unstructured, dir string, pods map[string]string) string {
	t.Helper()
	ctx := context.Background()
	ep := endpoint(t, pm)
	ns := pm.GetNamespace()
	cm := &corev1.ConfigMap{}
	get(t, client.ObjectKey{Namespace: ns, Name: str(t, ep, "tlsConfig", "ca", "configMap", "name")}, cm)
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, []byte(cm.Data[str(t, ep, "tlsConfig", "ca", "configMap", "key")]), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: str(t, ep, "authorization", "credentials", "name")}, secret); err != nil {
		t.Fatal(err)
	}
	credentials := filepath.Join(dir, "credentials")
	if err := os.WriteFile(credentials, secret.Data[str(t, ep, "authorization", "credentials", "key")], 0o600); err != nil {
		t.Fatal(err)
	}
	type relabel struct {
		SourceLabels []string `json:"source_labels"`
		TargetLabel  string   `json:"target_label"`
		Action       string   `json:"action"`
	}
	var relabels []relabel
	list, _, _ := unstructured.NestedSlice(ep, "relabelings")
	for _, r := range list {
		m := r.(map[string]any)
		src, _, _ := unstructured.NestedStringSlice(m, "sourceLabels")
		action, _, _ := unstructured.NestedString(m, "action")
		relabels = append(relabels, relabel{SourceLabels: src, TargetLabel: str(t, m, "targetLabel"), Action: action})
	}
	type static struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	var statics []static
	for name, address := range pods {
		pod := &corev1.Pod{}
		get(t, client.ObjectKey{Namespace: ns, Name: name}, pod)
		labels := map[string]string{"__meta_kubernetes_namespace": ns, "__meta_kubernetes_pod_name": name}
		for k, v := range pod.Labels {
			labels["__meta_kubernetes_pod_label_"+labelNameChars.ReplaceAllString(k, "_")] = v
		}
		statics = append(statics, static{Targets: []string{address}, Labels: labels})
	}
	job := map[string]any{
		"job_name":        fmt.Sprintf("podMonitor/%s/%s/0", ns, pm.GetName()),
		"scheme":          str(t, ep, "scheme"),
		"metrics_path":    str(t, ep, "path"),
		"tls_config":      map[string]string{"ca_file": caFile, "server_name": str(t, ep, "tlsConfig", "serverName")},
		"authorization":   map[string]string{"type": str(t, ep, "authorization", "type"), "credentials_file": credentials},
		"static_configs":  statics,
		"relabel_configs": relabels,
	}
	data, err := json.Marshal(job) // YAML is a superset of JSON
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// runPrometheus runs Debian's prometheus binary on loopback with the
// given scrape jobs, scraping every second.
func runPrometheus(t *testing.T, dir string, jobs ...string) string {
	t.Helper()
	binary, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus binary not found: install Debian's prometheus package (.ci/run does)")
	}
	port, err := proc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	config := "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
	for _, j := range jobs {
		config += "  - " + j + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	cmd := exec.Command(binary, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = logFile.Close()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus.yml:\n%s\nprometheus log:\n%s", config, log)
		}
	})
	address := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitUpTo(t, 30*time.Second, "prometheus ready", func() error {
		resp, err := http.Get(address + "/-/ready")
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	return address
}

type promSeries struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// promAPI GETs path from Prometheus's HTTP API and decodes data.
func promAPI(address, path string, params url.Values, data any) error {
	resp, err := http.Get(address + path + "?" + params.Encode())
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("%s: decode: %w", path, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("%s: %s", path, body.Error)
	}
	return json.Unmarshal(body.Data, data)
}

func instantQuery(address, query string) ([]promSeries, error) {
	var data struct {
		ResultType string       `json:"resultType"`
		Result     []promSeries `json:"result"`
	}
	if err := promAPI(address, "/api/v1/query", url.Values{"query": {query}}, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("result type %s, want vector", data.ResultType)
	}
	return data.Result, nil
}

// dashboardQueries are the expressions of every panel of the chart's
// Grafana dashboard, by panel title.
func dashboardQueries(t *testing.T) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "charts", "attune", "files", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string                  `json:"title"`
		Targets []struct{ Expr string } `json:"targets"`
		Panels  []json.RawMessage       `json:"panels"`
	}
	var dashboard struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dashboard); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	out := map[string][]string{}
	var walk func([]json.RawMessage)
	walk = func(list []json.RawMessage) {
		for _, r := range list {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("dashboard.json panel: %v", err)
			}
			for _, target := range p.Targets {
				if target.Expr == "" {
					t.Fatalf("panel %q has a target without expr", p.Title)
				}
				out[p.Title] = append(out[p.Title], target.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(dashboard.Panels)
	if len(out) == 0 {
		t.Fatal("dashboard.json has no queries")
	}
	return out
}

// labelNameChars are what Kubernetes service discovery replaces by "_"
// in a pod label's name (strutil.SanitizeLabelName).
var labelNameChars = regexp.MustCompile(`[^a-zA-Z0-9_]`)

var (
	promqlStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promqlGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlMatchers = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promqlIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	promqlKeywords = []string{"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "inf", "nan"}
)

// metricNames are the metric names a PromQL expression selects: its
// identifiers less strings, label lists, matchers, ranges, functions
// (an identifier followed by "(") and keywords.
func metricNames(expr string) []string {
	s := promqlStrings.ReplaceAllString(expr, " ")
	s = promqlGrouping.ReplaceAllString(s, " ")
	s = promqlMatchers.ReplaceAllString(s, " ")
	var names []string
	for _, loc := range promqlIdent.FindAllStringIndex(s, -1) {
		name := s[loc[0]:loc[1]]
		rest := strings.TrimLeft(s[loc[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") || slices.Contains(promqlKeywords, strings.ToLower(name)) {
			continue
		}
		if loc[0] > 0 && (s[loc[0]-1] >= '0' && s[loc[0]-1] <= '9' || s[loc[0]-1] == '.') {
			continue // an exponent or a unit inside a number
		}
		names = append(names, name)
	}
	return names
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`histogram_quantile(0.99, sum by (le, route) (rate(attune_x_bucket{route="/v1"}[5m])))`:         {"attune_x_bucket"},
		`max by (namespace, program) (attune_a) / on (program) group_left sum(attune_b offset 5m) * 60`: {"attune_a", "attune_b"},
		`sum(rate(attune_c[1h])) or vector(0)`:                                                          {"attune_c"},
		`up{job=~"podMonitor/.*"} == bool 1e3`:                                                          {"up"},
	} {
		if got := metricNames(expr); !slices.Equal(got, want) {
			t.Errorf("metricNames(%s) = %v, want %v", expr, got, want)
		}
	}
}

// TestDashboardQueriesAgainstRealPrometheus runs two engines of a program
// on a shared PostgreSQL store, scraped by Debian's Prometheus with the
// scrape job translated from the PodMonitor the operator rendered (HTTPS
// verified against the world's CA, the metrics-only token), and the
// operator's own registry; every panel of the chart's dashboard must then
// return data for the program, and name only metrics that a scrape of the
// engines or the operator exposes.
func TestDashboardQueriesAgainstRealPrometheus(t *testing.T) {
	if _, err := exec.LookPath("prometheus"); err != nil {
		t.Skip("prometheus binary not found: install Debian's prometheus package (.ci/run does)")
	}
	ctx := context.Background()
	ns := "scraped-dashboard"
	setupWorld(t, ns, wellbeingv1alpha1.ContextSocial)
	program := tunedProgram(ns, "watched")
	sharedStore(program, "watched-postgres", 2)
	f := startLoop(t, ns, program, 2)
	var pm *unstructured.Unstructured
	eventually(t, "PodMonitor", func() error {
		var err error
		pm, err = podMonitor(ctx, program)
		return err
	})
	pods := map[string]string{}
	for i, port := range f.ports {
		pods[fmt.Sprintf("%s-engine-%d", program.Name, i)] = fmt.Sprintf("127.0.0.1:%d", port)
	}
	// The operator's metrics, as its /metrics endpoint serves them (the
	// endpoint's authentication is tested with the manager).
	operator := httptest.NewServer(promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
	t.Cleanup(operator.Close)
	dir := t.TempDir()
	address := runPrometheus(t, dir, scrapeConfig(t, pm, dir, pods),
		fmt.Sprintf(`{"job_name": "attune-operator", "static_configs": [{"targets": [%q]}]}`, strings.TrimPrefix(operator.URL, "http://")))

	waitUpTo(t, 30*time.Second, "engines scraped with the PodMonitor's settings", func() error {
		var targets struct {
			ActiveTargets []struct {
				Labels    map[string]string `json:"labels"`
				Health    string            `json:"health"`
				LastError string            `json:"lastError"`
			} `json:"activeTargets"`
		}
		if err := promAPI(address, "/api/v1/targets", url.Values{"state": {"active"}}, &targets); err != nil {
			return err
		}
		up := 0
		for _, target := range targets.ActiveTargets {
			if target.Health != "up" {
				return fmt.Errorf("target %v: %s %s", target.Labels, target.Health, target.LastError)
			}
			up++
		}
		if up != len(pods)+1 {
			return fmt.Errorf("%d targets up, want %d", up, len(pods)+1)
		}
		return nil
	})

	f.simulate(40, 3)
	// A refused request, so that the rejections panel has something to
	// show (a counter appears with its first increment).
	refused, err := http.NewRequest(http.MethodGet, f.urls()[0]+"/v1/cohort", nil)
	if err != nil {
		t.Fatal(err)
	}
	refused.Header.Set("Authorization", "Bearer not-a-token")
	if resp, err := engineHTTP(t, program).Do(refused); err != nil {
		t.Fatal(err)
	} else {
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("a wrong token: %d, want 401", resp.StatusCode)
		}
	}
	waitUpTo(t, 60*time.Second, "loss observed", func() error {
		p := &wellbeingv1alpha1.MeditationProgram{}
		get(t, client.ObjectKeyFromObject(program), p)
		if p.Status.Loss == nil || p.Status.Loss.CohortSize != 40 {
			return fmt.Errorf("loss %+v, want a cohort of 40", p.Status.Loss)
		}
		return nil
	})

	// The relabelings give every engine series the namespace, world and
	// pod; program is the engine's own label, <namespace>/<name>.
	waitUpTo(t, 20*time.Second, "engine series labelled", func() error {
		series, err := instantQuery(address, `attune_engine_stored_users`)
		if err != nil {
			return err
		}
		if len(series) != len(pods) {
			return fmt.Errorf("%d series of attune_engine_stored_users, want one per engine: %v", len(series), series)
		}
		for _, s := range series {
			m := s.Metric
			if m["program"] != ns+"/"+program.Name || m["namespace"] != ns || m["world"] != ns || pods[m["pod"]] == "" || m["exported_program"] != "" {
				return fmt.Errorf("series labels %v, want program %s, namespace and world %s and an engine pod", m, program.Name, ns)
			}
		}
		return nil
	})

	queries := dashboardQueries(t)
	for title, exprs := range queries {
		for _, expr := range exprs {
			waitUpTo(t, 30*time.Second, fmt.Sprintf("panel %q: %s", title, expr), func() error {
				series, err := instantQuery(address, expr)
				if err != nil {
					return err
				}
				if len(series) == 0 {
					return fmt.Errorf("no data")
				}
				// A panel split by program shows this one (the engines' program
				// label is <namespace>/<name>, the operator's <name> beside
				// namespace).
				if _, byProgram := series[0].Metric["program"]; byProgram && !slices.ContainsFunc(series, func(s promSeries) bool {
					return s.Metric["program"] == ns+"/"+program.Name || s.Metric["program"] == program.Name && s.Metric["namespace"] == ns
				}) {
					return fmt.Errorf("no series for program %s: %v", program.Name, series)
				}
				return nil
			})
		}
	}

	// Shared store: each replica reports the whole cohort; the panel
	// shows it once.
	series, err := instantQuery(address, queries["Published cohort size"][0])
	if err != nil || len(series) != 1 || series[0].Value[1] != "40" {
		t.Errorf("Published cohort size: %v, %v; want one series of 40 (two replicas of one shared cohort)", series, err)
	}

	// No query names a metric that neither the engines nor the operator
	// expose.
	var names []string
	if err := promAPI(address, "/api/v1/label/__name__/values", nil, &names); err != nil {
		t.Fatal(err)
	}
	for title, exprs := range queries {
		for _, expr := range exprs {
			for _, name := range metricNames(expr) {
				if !slices.Contains(names, name) {
					t.Errorf("panel %q names %s, which no scrape exposes", title, name)
				}
			}
		}
	}
}
