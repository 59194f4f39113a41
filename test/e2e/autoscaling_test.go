//go:build e2e

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
)

// The metrics.k8s.io/v1beta1 wire format, as metrics-server serves it
// (k8s.io/metrics/pkg/apis/metrics/v1beta1 PodMetrics), and the
// custom.metrics.k8s.io/v1beta2 one, as prometheus-adapter serves it
// (k8s.io/metrics/pkg/apis/custom_metrics/v1beta2 MetricValue); that module
// is not a dependency, so their JSON is replicated here.
type podMetrics struct {
	Metadata   metav1.ObjectMeta  `json:"metadata"`
	Timestamp  metav1.Time        `json:"timestamp"`
	Window     metav1.Duration    `json:"window"`
	Containers []containerMetrics `json:"containers"`
}

type containerMetrics struct {
	Name  string              `json:"name"`
	Usage corev1.ResourceList `json:"usage"`
}

type customMetricValue struct {
	DescribedObject corev1.ObjectReference `json:"describedObject"`
	Metric          struct {
		Name string `json:"name"`
	} `json:"metric"`
	Timestamp     metav1.Time       `json:"timestamp"`
	WindowSeconds *int64            `json:"windowSeconds,omitempty"`
	Value         resource.Quantity `json:"value"`
}

const (
	resourceMetricsGV = "metrics.k8s.io/v1beta1"
	customMetricsGV   = "custom.metrics.k8s.io/v1beta2"
)

// metricsAPI serves the resource metrics API (metrics.k8s.io) and the
// custom metrics API (custom.metrics.k8s.io) over HTTPS on loopback,
// registered with the API server's aggregator, standing in for
// metrics-server and a Prometheus adapter: each engine container uses the
// CPU the test sets, and each engine pod ingests the samples per second
// the test sets.
type metricsAPI struct {
	engineMilliCPU atomic.Int64
	ingestMilli    atomic.Int64
	// podListsServed and ingestListsServed count the metric lists for the
	// program's pods that came through the aggregator (its front-proxy
	// client certificate).
	podListsServed, ingestListsServed atomic.Int64
}

func (m *metricsAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if len(r.TLS.PeerCertificates) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != "front-proxy-client" {
		http.Error(w, "only the aggregator may call", http.StatusForbidden)
		return
	}
	write := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	group := func(gv string) map[string]any {
		name, version, _ := strings.Cut(gv, "/")
		v := map[string]string{"groupVersion": gv, "version": version}
		return map[string]any{"name": name, "versions": []any{v}, "preferredVersion": v}
	}
	// /apis/<group>/<version>/namespaces/<namespace>/pods[/*/<metric>]
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case r.URL.Path == "/apis":
		write(map[string]any{"kind": "APIGroupList", "apiVersion": "v1", "groups": []any{group(resourceMetricsGV), group(customMetricsGV)}})
	case r.URL.Path == "/apis/"+resourceMetricsGV:
		write(map[string]any{"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": resourceMetricsGV, "resources": []any{
			map[string]any{"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": []string{"get", "list"}},
			map[string]any{"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": []string{"get", "list"}}}})
	case r.URL.Path == "/apis/"+customMetricsGV:
		write(map[string]any{"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": customMetricsGV, "resources": []any{
			map[string]any{"name": "pods/attune_engine_samples_ingested_per_second", "singularName": "", "namespaced": true, "kind": "MetricValueList", "verbs": []string{"get"}}}})
	case len(parts) == 6 && parts[1]+"/"+parts[2] == resourceMetricsGV && parts[3] == "namespaces" && parts[5] == "pods":
		pods, ok := runningPods(w, r, parts[4])
		if !ok {
			return
		}
		items := []podMetrics{}
		for _, pod := range pods {
			pm := podMetrics{Metadata: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, Labels: pod.Labels},
				Timestamp: metav1.Now(), Window: metav1.Duration{Duration: time.Second}}
			for _, c := range pod.Spec.Containers {
				cpu := int64(1)
				if c.Name == "engine" {
					cpu = m.engineMilliCPU.Load()
				}
				pm.Containers = append(pm.Containers, containerMetrics{Name: c.Name, Usage: corev1.ResourceList{
					corev1.ResourceCPU: *resource.NewMilliQuantity(cpu, resource.DecimalSI), corev1.ResourceMemory: resource.MustParse("64Mi")}})
			}
			items = append(items, pm)
		}
		if len(items) > 0 {
			m.podListsServed.Add(1)
		}
		write(map[string]any{"kind": "PodMetricsList", "apiVersion": resourceMetricsGV, "metadata": map[string]any{}, "items": items})
	case len(parts) == 8 && parts[1]+"/"+parts[2] == customMetricsGV && parts[3] == "namespaces" && parts[5] == "pods" && parts[6] == "*":
		if parts[7] != "attune_engine_samples_ingested_per_second" {
			http.Error(w, fmt.Sprintf("no metric %q", parts[7]), http.StatusNotFound)
			return
		}
		pods, ok := runningPods(w, r, parts[4])
		if !ok {
			return
		}
		items := []customMetricValue{}
		for _, pod := range pods {
			v := customMetricValue{DescribedObject: corev1.ObjectReference{Kind: "Pod", APIVersion: "/v1", Namespace: pod.Namespace, Name: pod.Name},
				Timestamp: metav1.Now(), WindowSeconds: ptr.To[int64](60), Value: *resource.NewMilliQuantity(m.ingestMilli.Load(), resource.DecimalSI)}
			v.Metric.Name = parts[7]
			items = append(items, v)
		}
		if len(items) > 0 {
			m.ingestListsServed.Add(1)
		}
		write(map[string]any{"kind": "MetricValueList", "apiVersion": customMetricsGV, "metadata": map[string]any{}, "items": items})
	default:
		http.NotFound(w, r)
	}
}

// runningPods are the namespace's Running pods that the request's
// labelSelector selects.
func runningPods(w http.ResponseWriter, r *http.Request, namespace string) ([]corev1.Pod, bool) {
	selector, err := labels.Parse(r.URL.Query().Get("labelSelector"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return nil, false
	}
	pods := &corev1.PodList{}
	if err := stack.Client.List(r.Context(), pods, client.InNamespace(namespace), client.MatchingLabelsSelector{Selector: selector}); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return nil, false
	}
	var running []corev1.Pod
	for _, pod := range pods.Items {
		if pod.Status.Phase == corev1.PodRunning {
			running = append(running, pod)
		}
	}
	return running, true
}

// startMetricsAPI serves the metrics API on loopback and registers it: an
// APIService for v1beta1.metrics.k8s.io whose Service is an ExternalName
// for localhost (the aggregator resolves an ExternalName to its host, and
// the local cluster has no pod network to route a ClusterIP), verified
// with the serving certificate's CA bundle, and only accepting the
// aggregator's front-proxy client certificate. Everything is removed when
// the test ends, before the server stops, so that discovery never sees a
// dead API.
func startMetricsAPI(t *testing.T) *metricsAPI {
	t.Helper()
	ctx := context.Background()
	// A namespace per test: the last one may still be terminating.
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	namespace, service := fmt.Sprintf("e2e-metrics-%x", suffix), "metrics-api"
	serverName := service + "." + namespace + ".svc" // what the aggregator verifies
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: serverName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{serverName, "localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	// The cluster's CA signed the aggregator's front-proxy client certificate.
	clusterCA, err := os.ReadFile(filepath.Join(filepath.Dir(stack.Kubeconfig), "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	clientCAs := x509.NewCertPool()
	clientCAs.AppendCertsFromPEM(clusterCA)
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api := &metricsAPI{}
	server := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second, TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: clientCAs, MinVersion: tls.VersionTLS12,
	}}
	go func() { _ = server.ServeTLS(listener, "", "") }()
	port := listener.Addr().(*net.TCPAddr).Port

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	mustCreate(t, ns)
	mustCreate(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: service, Namespace: namespace},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "localhost",
			Ports: []corev1.ServicePort{{Name: "https", Port: int32(port)}}}})
	caBundle := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	var apiServices []*unstructured.Unstructured
	for _, gv := range []string{resourceMetricsGV, customMetricsGV} {
		group, version, _ := strings.Cut(gv, "/")
		apiService := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
			"metadata": map[string]any{"name": version + "." + group},
			"spec": map[string]any{"group": group, "version": version, "groupPriorityMinimum": int64(100), "versionPriority": int64(100),
				"service":  map[string]any{"name": service, "namespace": namespace, "port": int64(port)},
				"caBundle": caBundle},
		}}
		mustCreate(t, apiService)
		apiServices = append(apiServices, apiService)
	}
	t.Cleanup(func() {
		for _, a := range apiServices {
			_ = stack.Client.Delete(ctx, a)
		}
		_ = stack.Client.Delete(ctx, ns)
		_ = server.Close()
	})
	for _, a := range apiServices {
		eventually(t, 60*time.Second, a.GetName()+" available", func() error {
			got := &unstructured.Unstructured{}
			got.SetAPIVersion("apiregistration.k8s.io/v1")
			got.SetKind("APIService")
			if err := stack.Client.Get(ctx, client.ObjectKey{Name: a.GetName()}, got); err != nil {
				return err
			}
			conditions, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, c := range conditions {
				c := c.(map[string]any)
				if c["type"] == "Available" {
					if c["status"] == "True" {
						return nil
					}
					return fmt.Errorf("Available %v: %v", c["status"], c["message"])
				}
			}
			return fmt.Errorf("no Available condition yet")
		})
	}
	return api
}

// replicasColumn reads the REPLICAS column of `kubectl get mp -o wide`,
// by the header's offsets: empty columns (no loss yet) shift fields.
func replicasColumn(t *testing.T, namespace, name string) (int, error) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(kubectl(t, "get", "mp", name, "--namespace", namespace, "-o", "wide"), "\n"), "\n")
	if len(lines) != 2 {
		return 0, fmt.Errorf("kubectl get mp printed %q", lines)
	}
	at := strings.Index(lines[0], "REPLICAS")
	if at < 0 || at >= len(lines[1]) {
		return 0, fmt.Errorf("no REPLICAS column in %q", lines)
	}
	fields := strings.Fields(lines[1][at:])
	if len(fields) == 0 {
		return 0, fmt.Errorf("REPLICAS column empty in %q", lines)
	}
	return strconv.Atoi(fields[0])
}

// TestAutoscalingFollowsServedCPU: the kube-controller-manager's HPA
// controller reads the engine containers' CPU from a metrics API the test
// serves and scales the program through its scale subresource, up to
// maxReplicas under load and back down to minReplicas when idle; the
// operator follows with engine pods, and `kubectl get mp` shows the count.
func TestAutoscalingFollowsServedCPU(t *testing.T) {
	ctx := context.Background()
	metrics := startMetricsAPI(t)
	metrics.engineMilliCPU.Store(10) // idle: 10% of the engine's 100m request
	newWorld(t, "elastic", nil)
	p := program("elastic", "breathing", 2) // the PostgreSQL store
	p.Spec.Engine.Replicas = nil
	p.Spec.Engine.Model, p.Spec.Engine.GPU = nil, wellbeingv1alpha1.GPUSpec{}
	p.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual
	const minReplicas, maxReplicas = 1, 4
	p.Spec.Engine.Autoscaling = &wellbeingv1alpha1.EngineAutoscaling{MinReplicas: ptr.To[int32](minReplicas), MaxReplicas: maxReplicas}
	mustCreate(t, p)

	hpa := &autoscalingv2.HorizontalPodAutoscaler{}
	eventually(t, 30*time.Second, "autoscaler rendered", func() error {
		return stack.Client.Get(ctx, client.ObjectKeyFromObject(p), hpa)
	})
	// Track every replica count the program takes, to check the bounds.
	var seenMin, seenMax atomic.Int32
	seenMin.Store(1000)
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() {
		for watchCtx.Err() == nil {
			got := &wellbeingv1alpha1.MeditationProgram{}
			if err := stack.Client.Get(watchCtx, client.ObjectKeyFromObject(p), got); err == nil {
				n := ptr.Deref(got.Spec.Engine.Replicas, 1)
				if n < seenMin.Load() {
					seenMin.Store(n)
				}
				if n > seenMax.Load() {
					seenMax.Store(n)
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	waitReplicas(t, p, minReplicas)

	metrics.engineMilliCPU.Store(180) // 180% of the request, target 70%
	waitReplicas(t, p, maxReplicas)
	metrics.engineMilliCPU.Store(10)
	waitReplicas(t, p, minReplicas)
	stopWatch()

	if metrics.podListsServed.Load() == 0 {
		t.Error("the autoscaler never read the served metrics")
	}
	if lo, hi := seenMin.Load(), seenMax.Load(); lo < minReplicas || hi > maxReplicas {
		t.Errorf("spec.engine.replicas ranged %d..%d, outside %d..%d", lo, hi, minReplicas, maxReplicas)
	}
	t.Logf("spec.engine.replicas ranged %d..%d; %d pod-metrics lists served", seenMin.Load(), seenMax.Load(), metrics.podListsServed.Load())
}

// waitReplicas waits for want engine processes and `kubectl get mp -o
// wide` showing want replicas.
func waitReplicas(t *testing.T, p *wellbeingv1alpha1.MeditationProgram, want int) {
	t.Helper()
	start := time.Now()
	eventually(t, 60*time.Second, fmt.Sprintf("%d engines and kubectl get mp showing %d", want, want), func() error {
		if n, err := replicasColumn(t, p.Namespace, p.Name); err != nil || n != want {
			return fmt.Errorf("kubectl get mp: REPLICAS %d (%v)", n, err)
		}
		if n := len(enginesIn(p.Namespace)); n != want {
			return fmt.Errorf("%d engine processes", n)
		}
		return nil
	})
	t.Logf("%d replicas after %s", want, time.Since(start).Round(100*time.Millisecond))
}

// TestAutoscalingStaysWithinTheGPUQuota: a program whose engine pods take
// one GPU each (on their model sidecar) asks for up to 4 under load, but its
// world's quota holds 2 GPUs: the operator gives the autoscaler
// maxReplicas 2 and says why in status.autoscaling, and the program stays
// at 2 engines.
func TestAutoscalingStaysWithinTheGPUQuota(t *testing.T) {
	ctx := context.Background()
	metrics := startMetricsAPI(t)
	metrics.engineMilliCPU.Store(180)
	newWorld(t, "elastic-gpu", ptr.To[int32](2))
	p := program("elastic-gpu", "focus", 2) // one GPU per pod, the PostgreSQL store
	p.Spec.Engine.Replicas = nil
	p.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual
	p.Spec.Engine.Autoscaling = &wellbeingv1alpha1.EngineAutoscaling{MinReplicas: ptr.To[int32](1), MaxReplicas: 4}
	mustCreate(t, p)

	eventually(t, 30*time.Second, "autoscaler bounded by the quota", func() error {
		hpa := &autoscalingv2.HorizontalPodAutoscaler{}
		if err := stack.Client.Get(ctx, client.ObjectKeyFromObject(p), hpa); err != nil {
			return err
		}
		if hpa.Spec.MaxReplicas != 2 {
			return fmt.Errorf("maxReplicas %d, want 2", hpa.Spec.MaxReplicas)
		}
		got := getProgram(t, p)
		if a := got.Status.Autoscaling; a == nil || a.MaxReplicas != 2 || !strings.Contains(a.Message, "GPU quota of 2") {
			return fmt.Errorf("status.autoscaling = %+v", a)
		}
		return nil
	})
	waitReplicas(t, p, 2)
	// Under the same load the autoscaler would go on to 4 (1.8 / 0.7 per
	// engine): it stays at the quota's 2 over several of its 2 s syncs.
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		if n := ptr.Deref(getProgram(t, p).Spec.Engine.Replicas, 0); n != 2 {
			t.Fatalf("spec.engine.replicas = %d, want the quota's 2", n)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if metrics.podListsServed.Load() == 0 {
		t.Error("the autoscaler never read the served metrics")
	}
	got := getProgram(t, p)
	if c := meta.FindStatusCondition(got.Status.Conditions, wellbeingv1alpha1.ConditionEngineAvailable); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("EngineAvailable = %+v, want True with 2 engines within the quota", c)
	}
	t.Logf("status.autoscaling: %s", got.Status.Autoscaling.Message)
}

// TestAutoscalingFollowsServedIngestRate: with spec.engine.autoscaling.
// metrics.ingestRate the autoscaler also reads the engines' ingest rate, a
// Pods metric of the custom metrics API (default name
// attune_engine_samples_ingested_per_second, as the documented adapter rule
// names it): with idle CPUs, 250 samples/s per engine against a target of
// 100 scales the program up to maxReplicas, and 10 back down to 1.
func TestAutoscalingFollowsServedIngestRate(t *testing.T) {
	metrics := startMetricsAPI(t)
	metrics.engineMilliCPU.Store(10)
	metrics.ingestMilli.Store(10_000) // 10 samples/s
	newWorld(t, "elastic-ingest", nil)
	p := program("elastic-ingest", "streams", 2)
	p.Spec.Engine.Replicas = nil
	p.Spec.Engine.Model, p.Spec.Engine.GPU = nil, wellbeingv1alpha1.GPUSpec{}
	p.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual
	p.Spec.Engine.Autoscaling = &wellbeingv1alpha1.EngineAutoscaling{MinReplicas: ptr.To[int32](1), MaxReplicas: 3,
		Metrics: wellbeingv1alpha1.AutoscalingMetrics{IngestRate: &wellbeingv1alpha1.IngestRateMetric{AverageValue: resource.MustParse("100")}}}
	mustCreate(t, p)
	waitReplicas(t, p, 1)
	metrics.ingestMilli.Store(250_000)
	waitReplicas(t, p, 3)
	metrics.ingestMilli.Store(10_000)
	waitReplicas(t, p, 1)
	if metrics.ingestListsServed.Load() == 0 {
		t.Error("the autoscaler never read the served ingest rate")
	}
}
