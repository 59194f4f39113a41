package controllers_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	"github.com/attune-io/attune/internal/testutil"
)

// operatorNamespace is the namespace the test operator claims to run in.
const operatorNamespace = "attune-system"

// loopbackPrometheus lets the operator query the tests' Prometheus servers,
// which listen on 127.0.0.1 (outside "the cluster" by default).
var loopbackPrometheus = controllers.PrometheusAccess{AllowedURLs: []*url.URL{{Scheme: "http", Host: "127.0.0.1"}}}

var (
	k8s client.Client // a direct (uncached) client, as a user's kubectl
	// restConfig reaches the suite's API server, for tests that run a
	// manager of their own.
	restConfig *rest.Config
	scheme     = runtime.NewScheme()
)

// TestMain starts a real kube-apiserver and etcd (envtest), installs the
// CRDs and runs the operator against it for every test in this package.
func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run `make test` (it builds etcd and kube-apiserver from source once)")
		return 1
	}
	logf.SetLogger(zap.New(zap.UseDevMode(true), zap.Level(zapLevel())))
	_ = clientgoscheme.AddToScheme(scheme)
	_ = wellbeingv1alpha1.AddToScheme(scheme)

	env := &envtest.Environment{
		// cert-manager's Certificate CRD, as released (test/crds/cert-manager),
		// so that the Certificates the operator renders meet its schema.
		CRDDirectoryPaths: []string{filepath.Join("..", "config", "crd", "bases"), filepath.Join("..", "test", "crds", "cert-manager"),
			// and the Prometheus operator's PodMonitor CRD
			// (test/crds/prometheus-operator), for monitoring_test.go.
			filepath.Join("..", "test", "crds", "prometheus-operator")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start envtest:", err)
		return 1
	}
	restConfig = cfg
	defer func() { _ = env.Stop() }()

	k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		return 1
	}
	mgr, err := ctrl.NewManager(controllers.RESTConfig(cfg), ctrl.Options{
		Scheme:  scheme,
		Cache:   controllers.CacheOptions(),
		Metrics: metricsserver.Options{BindAddress: "0"},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		return 1
	}
	if err := controllers.SetupWithManager(mgr, controllers.Options{OperatorNamespace: operatorNamespace, Clock: operatorClock, EngineImage: "example.test/engine:v1", Prometheus: loopbackPrometheus,
		PodMonitors: scrapedNamespace}); err != nil {
		fmt.Fprintln(os.Stderr, "setup:", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	return m.Run()
}

func zapLevel() zapcore.Level {
	if os.Getenv("ATTUNE_TEST_VERBOSE") != "" {
		return -1
	}
	return 2 // errors only; tests print what they need
}

// eventually polls check until it returns nil or 20 s pass.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, 100*time.Millisecond, what, check)
}

// consistently fails if check ever returns an error during d.
func consistently(t *testing.T, what string, d time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if err := check(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func newWorld(name, namespace string, context wellbeingv1alpha1.WorldContext) *wellbeingv1alpha1.VirtualWorld {
	return &wellbeingv1alpha1.VirtualWorld{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       wellbeingv1alpha1.VirtualWorldSpec{Namespace: namespace, Context: context},
	}
}

func newProgram(namespace, name, world string) *wellbeingv1alpha1.MeditationProgram {
	return &wellbeingv1alpha1.MeditationProgram{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: wellbeingv1alpha1.MeditationProgramSpec{
			WorldRef:      wellbeingv1alpha1.WorldReference{Name: world},
			Target:        wellbeingv1alpha1.StateVector{Attention: 0.8, Emotion: 0.7, Resilience: 0.75},
			Weights:       wellbeingv1alpha1.Weights{Attention: 1, Emotion: 1, Resilience: 1},
			Interventions: []wellbeingv1alpha1.Intervention{wellbeingv1alpha1.FocusedAttention, wellbeingv1alpha1.ResonanceBreathing},
			Strength:      wellbeingv1alpha1.StrengthBounds{Initial: 0.5, Min: 0.1, Max: 0.9},
			Engine:        wellbeingv1alpha1.EngineSpec{Replicas: ptr.To[int32](1)},
		},
	}
}

// sharedStore runs replicas of the program's engines on a PostgreSQL
// store whose connection is in the named Secret.
func sharedStore(p *wellbeingv1alpha1.MeditationProgram, secret string, replicas int32) {
	p.Spec.Engine.Replicas = ptr.To(replicas)
	p.Spec.Engine.Store = wellbeingv1alpha1.EngineStore{Type: wellbeingv1alpha1.StorePostgreSQL,
		Postgres: &wellbeingv1alpha1.PostgresStore{SecretRef: wellbeingv1alpha1.SecretReference{Name: secret}}}
}

// createWorld creates a world and waits until its namespace exists.
func createWorld(t *testing.T, w *wellbeingv1alpha1.VirtualWorld) *wellbeingv1alpha1.VirtualWorld {
	t.Helper()
	ctx := context.Background()
	if err := k8s.Create(ctx, w); err != nil {
		t.Fatalf("create world: %v", err)
	}
	eventually(t, "world namespace", func() error {
		return k8s.Get(ctx, client.ObjectKey{Name: w.Spec.Namespace}, &corev1.Namespace{})
	})
	return w
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

func get(t *testing.T, key client.ObjectKey, obj client.Object) {
	t.Helper()
	if err := k8s.Get(context.Background(), key, obj); err != nil {
		t.Fatalf("get %T %s: %v", obj, key, err)
	}
}

// conditionIs returns nil when obj's condition has the status and reason.
func conditionIs(conds []metav1.Condition, condType string, status metav1.ConditionStatus, reason string) error {
	c := meta.FindStatusCondition(conds, condType)
	if c == nil {
		return fmt.Errorf("condition %s not set", condType)
	}
	if c.Status != status || (reason != "" && c.Reason != reason) {
		return fmt.Errorf("condition %s is %s/%s (%s), want %s/%s", condType, c.Status, c.Reason, c.Message, status, reason)
	}
	return nil
}

// updateSpec reads obj, applies mutate and updates it, again from a fresh
// read when the operator's status write got there first (a conflict).
func updateSpec[T client.Object](t *testing.T, obj T, mutate func(T)) {
	t.Helper()
	if err := tryUpdateSpec(obj, mutate); err != nil {
		t.Fatal(err)
	}
}

// tryUpdateSpec is updateSpec returning the API server's answer, for
// tests that expect an update to be refused.
func tryUpdateSpec[T client.Object](obj T, mutate func(T)) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		mutate(obj)
		return k8s.Update(context.Background(), obj)
	})
}

// statusWriters lists the field managers of obj's status subresource, so
// a test can check that the operator writes status under its own name
// (what `kubectl get --show-managed-fields` shows a platform team).
func statusWriters(obj metav1.Object) []string {
	var managers []string
	for _, entry := range obj.GetManagedFields() {
		if entry.Subresource == "status" {
			managers = append(managers, entry.Manager)
		}
	}
	return managers
}
