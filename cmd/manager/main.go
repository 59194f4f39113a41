// Command manager runs the Attune operator: the VirtualWorld and
// MeditationProgram reconcilers.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	"github.com/attune-io/attune/internal/gomemlimit"
	"github.com/attune-io/attune/internal/version"
)

func main() {
	var (
		metricsAddr      string
		secureMetrics    bool
		probeAddr        string
		leaderElect      bool
		watchNamespaces  string
		operatorNS       string
		engineImage      string
		concurrency      int
		leaderElectionNS string
		secretsRole      string
		serviceAccount   string
		prometheusURLs   string
		clusterDomain    string
		podMonitors      bool
		monitoringNS     string
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8443", "Address the metrics endpoint binds to; 0 disables it.")
	flag.BoolVar(&secureMetrics, "metrics-secure", true, "Serve metrics over HTTPS to callers the API server authenticates and authorises for GET /metrics (the metrics-reader ClusterRole); false serves plain HTTP to anyone.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz probes bind to.")
	flag.BoolVar(&leaderElect, "leader-elect", true, "Elect a leader so only one replica reconciles at a time.")
	flag.StringVar(&leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader-election lease (default: the operator's namespace).")
	flag.StringVar(&watchNamespaces, "watch-namespaces", "", "Comma-separated namespaces to watch for programs; empty watches all.")
	flag.StringVar(&operatorNS, "operator-namespace", os.Getenv("POD_NAMESPACE"), "Namespace the operator runs in; admitted by each world's NetworkPolicy.")
	flag.StringVar(&engineImage, "engine-image", controllers.DefaultEngineImage, "Engine image for programs that name none.")
	flag.IntVar(&concurrency, "max-concurrent-reconciles", controllers.DefaultMaxConcurrentReconciles, "Programs reconciled in parallel.")
	flag.StringVar(&secretsRole, "world-secrets-cluster-role", "", "ClusterRole holding the Secret verbs the operator needs in each world's namespace; when set, the operator binds it there to its own ServiceAccount (--service-account). Empty: the operator's own RBAC must grant Secrets (namespaced mode, or a local run).")
	flag.StringVar(&serviceAccount, "service-account", os.Getenv("POD_SERVICE_ACCOUNT"), "The operator's ServiceAccount in --operator-namespace, bound to --world-secrets-cluster-role in each world namespace.")
	flag.StringVar(&prometheusURLs, "allowed-prometheus-urls", "", "Comma-separated URL prefixes outside the cluster that spec.tuning.source.prometheus.address may name; Services (*.svc, *.svc.<cluster-domain>) are always allowed. Default: none.")
	flag.StringVar(&clusterDomain, "cluster-domain", controllers.DefaultClusterDomain, "The cluster's DNS domain, for telling in-cluster Prometheus addresses apart.")
	opts := zap.Options{}
	flag.BoolVar(&podMonitors, "pod-monitors", false, "Render a PodMonitor (monitoring.coreos.com/v1) and a metrics-only token per program so that the Prometheus operator scrapes the engines; only where the PodMonitor CRD is installed.")
	flag.StringVar(&monitoringNS, "monitoring-namespaces", "", "Comma-separated namespaces (the Prometheus servers') admitted to every engine's API port by its NetworkPolicy, besides each world's spec.isolation.monitoringNamespaces.")
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))

	if err := run(options{metricsAddr, secureMetrics, probeAddr, leaderElect, leaderElectionNS, watchNamespaces, operatorNS, engineImage, concurrency,
		secretsRole, serviceAccount, prometheusURLs, clusterDomain, podMonitors, monitoringNS}); err != nil {
		ctrl.Log.Error(err, "manager stopped")
		os.Exit(1)
	}
}

type options struct {
	metricsAddr      string
	secureMetrics    bool
	probeAddr        string
	leaderElect      bool
	leaderElectionNS string
	watchNamespaces  string
	operatorNS       string
	engineImage      string
	concurrency      int
	secretsRole      string
	serviceAccount   string
	prometheusURLs   string
	clusterDomain    string
	podMonitors      bool
	monitoringNS     string
}

func run(o options) error {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return fmt.Errorf("register core types: %w", err)
	}
	if err := wellbeingv1alpha1.AddToScheme(scheme); err != nil {
		return fmt.Errorf("register wellbeing types: %w", err)
	}

	cacheOptions := controllers.CacheOptions()
	if o.watchNamespaces != "" {
		cacheOptions.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range strings.Split(o.watchNamespaces, ",") {
			cacheOptions.DefaultNamespaces[strings.TrimSpace(ns)] = cache.Config{}
		}
	}
	mgr, err := ctrl.NewManager(controllers.RESTConfig(ctrl.GetConfigOrDie()), ctrl.Options{
		Scheme:                  scheme,
		Cache:                   cacheOptions,
		Metrics:                 metricsServerOptions(o.metricsAddr, o.secureMetrics),
		HealthProbeBindAddress:  o.probeAddr,
		LeaderElection:          o.leaderElect,
		LeaderElectionID:        "attune-operator.wellbeing.attune.io",
		LeaderElectionNamespace: o.leaderElectionNS,
		// Leader election lets the old leader step down at once on a clean
		// shutdown, so a rollout does not wait for the lease to expire.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	prometheus, err := controllers.ParsePrometheusAccess(strings.Split(o.prometheusURLs, ","), o.clusterDomain)
	if err != nil {
		return fmt.Errorf("--allowed-prometheus-urls: %w", err)
	}
	var secretAccess *controllers.SecretAccess
	if o.secretsRole != "" {
		if o.serviceAccount == "" || o.operatorNS == "" {
			return fmt.Errorf("--world-secrets-cluster-role needs --service-account and --operator-namespace (POD_SERVICE_ACCOUNT, POD_NAMESPACE)")
		}
		secretAccess = &controllers.SecretAccess{ClusterRole: o.secretsRole, ServiceAccount: o.serviceAccount, Namespace: o.operatorNS}
	}
	monitoringNamespaces, err := controllers.ParseMonitoringNamespaces(o.monitoringNS)
	if err != nil {
		return fmt.Errorf("--monitoring-namespaces: %w", err)
	}
	if err := controllers.SetupWithManager(mgr, controllers.Options{
		OperatorNamespace:       o.operatorNS,
		EngineImage:             o.engineImage,
		MaxConcurrentReconciles: o.concurrency,
		Clock:                   clock.RealClock{},
		SecretAccess:            secretAccess,
		Prometheus:              prometheus,
		PodMonitors:             podMonitorsFor(o.podMonitors),
		MonitoringNamespaces:    monitoringNamespaces,
	}); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("add ready check: %w", err)
	}
	ctrl.Log.Info("starting manager", "version", version.Version, "watchNamespaces", o.watchNamespaces, "operatorNamespace", o.operatorNS)
	ctx := ctrl.SetupSignalHandler()
	gomemlimit.FromContainer(ctx, slog.New(logr.ToSlogHandler(ctrl.Log.WithName("gomemlimit"))))
	return mgr.Start(ctx)
}

// metricsServerOptions serves /metrics as kubebuilder v4 scaffolds it
// (cmd/main.go, config/rbac/metrics_auth_role.yaml): over HTTPS, each caller's
// bearer token checked by a TokenReview and its right to GET /metrics by a
// SubjectAccessReview, so the operator needs create on both and a scraper the
// metrics-reader ClusterRole. Without a certificate given, controller-runtime
// serves a self-signed one.
func metricsServerOptions(addr string, secure bool) metricsserver.Options {
	opts := metricsserver.Options{BindAddress: addr, SecureServing: secure}
	if secure {
		opts.FilterProvider = filters.WithAuthenticationAndAuthorization
		// HTTP/1.1 only, as kubebuilder does: HTTP/2 stream resets
		// (CVE-2023-44487, CVE-2023-39325) would reach an unauthenticated
		// handler before the filter runs.
		opts.TLSOpts = []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}
	}
	return opts
}

// podMonitorsFor is the reconcilers' PodMonitors option of --pod-monitors.
func podMonitorsFor(on bool) func(string) bool {
	if on {
		return controllers.AllNamespaces
	}
	return nil
}
