package localcluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	engineconfig "github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/internal/devstack/engineruntime"
	"github.com/attune-io/attune/internal/devstack/postgres"
)

// Stack is the whole system on one machine: the local cluster, Attune's
// CRDs, the operator (in this process) and the engine supervisor.
type Stack struct {
	*Cluster
	Client     client.Client
	Scheme     *runtime.Scheme
	Supervisor *engineruntime.Supervisor
	// OperatorLog is the in-process operator's log file.
	OperatorLog string
	// Postgres is the shared-store database (nil unless asked for).
	Postgres     *postgres.Server
	cancel       context.CancelFunc
	stopOperator context.CancelFunc
	operatorDone chan struct{}
	done         []chan struct{}
}

// StackOptions configure a stack.
type StackOptions struct {
	Options
	// RepoRoot locates config/crd/bases.
	RepoRoot string
	// EngineBinary is the engine to run for engine pods; built into the
	// state directory when empty.
	EngineBinary string
	// Postgres also runs a PostgreSQL server, the shared store that
	// programs with several engines need (see CreatePostgresSecret).
	Postgres bool
}

// NewScheme knows the core types, CRDs and Attune's types.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = apiextensionsv1.AddToScheme(s)
	_ = wellbeingv1alpha1.AddToScheme(s)
	return s
}

// StartStack starts the cluster, installs the CRDs, and runs the operator
// and the engine supervisor until Stop.
func StartStack(ctx context.Context, o StackOptions) (s *Stack, err error) {
	cluster, err := Start(ctx, o.Options)
	if err != nil {
		return nil, err
	}
	s = &Stack{Cluster: cluster, Scheme: NewScheme()}
	started := s // an early return sets s to nil: stop what was started
	defer func() {
		if err != nil {
			started.Stop()
		}
	}()
	if s.Client, err = client.New(cluster.Config, client.Options{Scheme: s.Scheme}); err != nil {
		return nil, err
	}
	if err := s.installCRDs(ctx, filepath.Join(o.RepoRoot, "config", "crd", "bases")); err != nil {
		return nil, err
	}
	binary := o.EngineBinary
	if binary == "" {
		binary = filepath.Join(o.StateDir, "bin", "engine")
		s.logf("building the engine binary")
		if err := engineruntime.BuildEngine(binary); err != nil {
			return nil, err
		}
	}
	if o.Postgres {
		if s.Postgres, err = postgres.Launch(); err != nil {
			return nil, fmt.Errorf("postgres: %w", err)
		}
		s.logf("PostgreSQL running (%s)", s.Postgres.Dir)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.OperatorLog = filepath.Join(o.StateDir, "logs", "operator.log")
	operatorLog, err := os.OpenFile(s.OperatorLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	logger := zap.New(zap.WriteTo(operatorLog))
	ctrl.SetLogger(logger)
	klog.SetLogger(logger) // client-go's own messages (leader election, events) too

	mgr, err := ctrl.NewManager(controllers.RESTConfig(cluster.Config), ctrl.Options{
		Scheme: s.Scheme, Cache: controllers.CacheOptions(),
		Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
	})
	if err != nil {
		return nil, fmt.Errorf("operator manager: %w", err)
	}
	if err := controllers.SetupWithManager(mgr, controllers.Options{OperatorNamespace: "attune-system", EngineImage: "ghcr.io/attune-io/attune-engine:dev"}); err != nil {
		return nil, err
	}
	mgrCtx, stopOperator := context.WithCancel(runCtx)
	s.stopOperator = stopOperator
	s.operatorDone = make(chan struct{})
	go func() {
		defer close(s.operatorDone)
		if err := mgr.Start(mgrCtx); err != nil {
			s.logf("operator stopped: %v", err)
		}
	}()
	s.done = append(s.done, s.operatorDone)
	s.logf("operator running")

	logFile, err := os.OpenFile(filepath.Join(o.StateDir, "logs", "engines.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	s.Supervisor = &engineruntime.Supervisor{Client: s.Client, Binary: binary, StateDir: filepath.Join(o.StateDir, "engines"), Log: logFile}
	supDone := make(chan struct{})
	go func() {
		defer close(supDone)
		defer func() { _ = logFile.Close() }()
		s.Supervisor.Run(runCtx, 500*time.Millisecond)
	}()
	s.done = append(s.done, supDone)
	s.logf("engine supervisor running (logs in %s)", filepath.Join(o.StateDir, "logs"))
	return s, nil
}

func (s *Stack) installCRDs(ctx context.Context, dir string) error {
	paths, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(paths) == 0 {
		return fmt.Errorf("no CRDs in %s", dir)
	}
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.Unmarshal(data, crd); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err := s.Client.Create(ctx, crd); err != nil {
			return fmt.Errorf("install %s: %w", crd.Name, err)
		}
		if err := WaitFor(ctx, 30*time.Second, "CRD "+crd.Name+" established", func() error {
			got := &apiextensionsv1.CustomResourceDefinition{}
			if err := s.Client.Get(ctx, client.ObjectKey{Name: crd.Name}, got); err != nil {
				return err
			}
			for _, c := range got.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					return nil
				}
			}
			return fmt.Errorf("not established")
		}); err != nil {
			return err
		}
	}
	s.logf("installed %d CRDs", len(paths))
	return nil
}

// StopOperator stops the in-process operator (the supervisor keeps
// running), e.g. to let another manager take over.
func (s *Stack) StopOperator() {
	if s.stopOperator != nil {
		s.stopOperator()
		<-s.operatorDone
	}
}

// Stop stops the supervisor and its engines, the operator, then the cluster.
func (s *Stack) Stop() {
	if s.cancel != nil {
		s.cancel()
	}
	for _, d := range s.done {
		<-d
	}
	if s.Cluster != nil {
		s.Cluster.Stop()
	}
	if s.Postgres != nil {
		s.Postgres.Stop()
	}
}

// CreatePostgresSecret creates, in namespace, the Secret a program's
// spec.engine.store.postgres.secretRef names, pointing at the stack's
// PostgreSQL server, as a platform team would for its database.
func (s *Stack) CreatePostgresSecret(ctx context.Context, namespace, name string) error {
	if s.Postgres == nil {
		return fmt.Errorf("the stack runs no PostgreSQL server (StackOptions.Postgres)")
	}
	return s.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Data:       map[string][]byte{engineconfig.PostgresConnectionStringKey: []byte(s.Postgres.ConnString)},
	})
}
