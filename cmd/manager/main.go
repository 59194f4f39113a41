// Command manager runs the Attune operator: the VirtualWorld and
// MeditationProgram reconcilers.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	"github.com/attune-io/attune/internal/version"
)

func main() {
	var (
		metricsAddr      string
		probeAddr        string
		leaderElect      bool
		watchNamespaces  string
		operatorNS       string
		engineImage      string
		concurrency      int
		leaderElectionNS string
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address the metrics endpoint binds to; 0 disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz probes bind to.")
	flag.BoolVar(&leaderElect, "leader-elect", true, "Elect a leader so only one replica reconciles at a time.")
	flag.StringVar(&leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader-election lease (default: the operator's namespace).")
	flag.StringVar(&watchNamespaces, "watch-namespaces", "", "Comma-separated namespaces to watch for programs; empty watches all.")
	flag.StringVar(&operatorNS, "operator-namespace", os.Getenv("POD_NAMESPACE"), "Namespace the operator runs in; admitted by each world's NetworkPolicy.")
	flag.StringVar(&engineImage, "engine-image", controllers.DefaultEngineImage, "Engine image for programs that name none.")
	flag.IntVar(&concurrency, "max-concurrent-reconciles", 4, "Programs reconciled in parallel.")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))

	if err := run(options{metricsAddr, probeAddr, leaderElect, leaderElectionNS, watchNamespaces, operatorNS, engineImage, concurrency}); err != nil {
		ctrl.Log.Error(err, "manager stopped")
		os.Exit(1)
	}
}

type options struct {
	metricsAddr, probeAddr string
	leaderElect            bool
	leaderElectionNS       string
	watchNamespaces        string
	operatorNS             string
	engineImage            string
	concurrency            int
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
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                  scheme,
		Cache:                   cacheOptions,
		Metrics:                 metricsserver.Options{BindAddress: o.metricsAddr},
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
	if err := controllers.SetupWithManager(mgr, controllers.Options{
		OperatorNamespace:       o.operatorNS,
		EngineImage:             o.engineImage,
		MaxConcurrentReconciles: o.concurrency,
		Clock:                   clock.RealClock{},
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
	return mgr.Start(ctrl.SetupSignalHandler())
}
