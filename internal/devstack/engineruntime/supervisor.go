package engineruntime

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	engineconfig "github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/contract"
)

// Supervisor plays the kubelet's container runtime for engine pods on a
// kwok cluster: for every engine pod that kwok reports Running it starts a
// real engine process on the pod's IP and container port, with the pod's
// mounted ConfigMap and Secrets materialised as files and kept in sync, and
// it stops the process when the pod goes away.
type Supervisor struct {
	Client   client.Reader
	Binary   string
	StateDir string // per-pod directories and logs go here
	Log      io.Writer
	// Selector picks engine pods (default app.kubernetes.io/name=attune-engine).
	Selector client.MatchingLabels
	// Propagation delays the changes of the objects a pod mounts on their
	// way to its files, each pod by its own delay (default: none, within
	// a second; KubeletPropagation as on a real node).
	Propagation Propagation

	mu    sync.Mutex
	procs map[types.UID]*Process
	// byNamespace overrides Propagation for the pods of a namespace
	// (SetPropagation).
	byNamespace map[string]Propagation
}

// SetPropagation gives the engine pods of namespace that start from now
// on the propagation delay p instead of Propagation (a test that runs one
// world as on a real node while the others sync within a second).
func (s *Supervisor) SetPropagation(namespace string, p Propagation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byNamespace == nil {
		s.byNamespace = map[string]Propagation{}
	}
	s.byNamespace[namespace] = p
}

// propagationFor is the propagation delay of namespace's pods.
func (s *Supervisor) propagationFor(namespace string) Propagation {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.byNamespace[namespace]; ok {
		return p
	}
	return s.Propagation
}

// Run reconciles processes with pods every interval until ctx ends, then
// stops every process it started.
func (s *Supervisor) Run(ctx context.Context, interval time.Duration) {
	defer s.StopAll()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.Sync(ctx); err != nil && ctx.Err() == nil && s.Log != nil {
			fmt.Fprintf(s.Log, "[engines] %v\n", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sync starts processes for new Running engine pods and stops those whose
// pods are gone, not running, or being deleted.
func (s *Supervisor) Sync(ctx context.Context) error {
	selector := s.Selector
	if selector == nil {
		selector = client.MatchingLabels{"app.kubernetes.io/name": "attune-engine"}
	}
	pods := &corev1.PodList{}
	if err := s.Client.List(ctx, pods, selector); err != nil {
		return fmt.Errorf("list engine pods: %w", err)
	}
	s.mu.Lock()
	if s.procs == nil {
		s.procs = map[types.UID]*Process{}
	}
	s.mu.Unlock()
	wanted := map[types.UID]bool{}
	var errs []error
	for i := range pods.Items {
		pod := &pods.Items[i]
		if pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP == "" || !pod.DeletionTimestamp.IsZero() {
			continue
		}
		wanted[pod.UID] = true
		s.mu.Lock()
		p := s.procs[pod.UID]
		s.mu.Unlock()
		if p != nil && !p.Exited() {
			continue
		}
		if p != nil {
			p.stopModel() // the engine exited: restart the pod's containers together
		}
		src, port, err := sourceOf(pod)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		model, err := s.startModel(ctx, pod, src)
		if err != nil {
			errs = append(errs, fmt.Errorf("start model sidecar for pod %s/%s: %w", pod.Namespace, pod.Name, err))
			continue
		}
		if model != nil {
			src.ModelHost = pod.Status.PodIP
		}
		if src.DataClaim != "" {
			src.DataDir = ClaimDir(s.StateDir, pod.Namespace, src.DataClaim)
		}
		dir := filepath.Join(s.StateDir, pod.Namespace, pod.Name)
		p, err = Start(ctx, s.Client, s.Binary, dir, pod.Status.PodIP, port, src, WithDelay(s.propagationFor(pod.Namespace).DelayFor(pod.Namespace+"/"+pod.Name)))
		if err != nil {
			if model != nil {
				model.Stop()
			}
			errs = append(errs, fmt.Errorf("start engine for pod %s/%s: %w", pod.Namespace, pod.Name, err))
			continue
		}
		p.Model = model
		if model != nil && s.Log != nil {
			fmt.Fprintf(s.Log, "[engines] started model sidecar (%s) for pod %s/%s on %s\n", model.Runtime, pod.Namespace, pod.Name, model.URL)
		}
		if s.Log != nil {
			fmt.Fprintf(s.Log, "[engines] started engine for pod %s/%s on %s\n", pod.Namespace, pod.Name, p.URL())
		}
		s.mu.Lock()
		s.procs[pod.UID] = p
		s.mu.Unlock()
	}
	s.mu.Lock()
	for uid, p := range s.procs {
		if !wanted[uid] {
			p.Stop()
			delete(s.procs, uid)
			if s.Log != nil {
				fmt.Fprintf(s.Log, "[engines] stopped engine on %s (pod gone)\n", p.URL())
			}
		}
	}
	s.mu.Unlock()
	if len(errs) > 0 {
		return fmt.Errorf("%v", errs)
	}
	return nil
}

// startModel starts the pod's model sidecar, if it declares one, as the
// stock server of its runtime would run from the rendered container
// (modelServerOf); the classes come from the engine configuration.
func (s *Supervisor) startModel(ctx context.Context, pod *corev1.Pod, src Source) (*ModelServer, error) {
	if !slices.ContainsFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == ModelContainerName }) {
		return nil, nil
	}
	cm := &corev1.ConfigMap{}
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: src.Namespace, Name: src.ConfigMap}, cm); err != nil {
		return nil, fmt.Errorf("get config map: %w", err)
	}
	cfg, err := engineconfig.Parse([]byte(cm.Data[engineconfig.FileName]))
	if err != nil {
		return nil, fmt.Errorf("config map %s: %w", src.ConfigMap, err)
	}
	var labels []string
	if cfg.Model != nil {
		labels = cfg.Model.Labels
	}
	spec, _, err := modelServerOf(pod, labels)
	if err != nil {
		return nil, err
	}
	return startModelServer(spec, pod.Status.PodIP)
}

// Running returns the URLs of the running engine processes.
func (s *Supervisor) Running() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, p := range s.procs {
		if !p.Exited() {
			out = append(out, p.URL())
		}
	}
	return out
}

// ModelServer returns the model sidecar of the engine at url (nil when
// that engine's pod declares none).
func (s *Supervisor) ModelServer(url string) *ModelServer {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.procs {
		if p.URL() == url && !p.Exited() {
			return p.Model
		}
	}
	return nil
}

// StopAll stops every process.
func (s *Supervisor) StopAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for uid, p := range s.procs {
		p.Stop()
		delete(s.procs, uid)
	}
}

// ClaimDir is the directory that stands for a PersistentVolumeClaim under
// stateDir.
func ClaimDir(stateDir, namespace, claim string) string {
	return filepath.Join(stateDir, namespace, "claims", claim)
}

// sourceOf reads which ConfigMap and Secrets the pod mounts and its port.
func sourceOf(pod *corev1.Pod) (Source, int, error) {
	src := Source{Namespace: pod.Namespace}
	for _, v := range pod.Spec.Volumes {
		switch {
		case v.Name == "config" && v.ConfigMap != nil:
			src.ConfigMap = v.ConfigMap.Name
		case v.Name == "token" && v.Secret != nil:
			src.TokenSecret = v.Secret.SecretName
		case v.Name == "pseudonymization-key" && v.Secret != nil:
			src.KeySecret = v.Secret.SecretName
			src.KeySecretKey = contract.PseudonymizationKeyKey
			if len(v.Secret.Items) > 0 {
				src.KeySecretKey = v.Secret.Items[0].Key
			}
		case v.Name == "postgres" && v.Secret != nil:
			src.StoreSecret = v.Secret.SecretName
		case v.Name == "key-encryption-key" && v.Secret != nil:
			src.KEKSecret = v.Secret.SecretName
		case v.Name == "clients" && v.Secret != nil:
			src.ClientsSecret = v.Secret.SecretName
		case v.Name == "user-token-key" && v.Secret != nil:
			src.UserTokenKeySecret = v.Secret.SecretName
		case v.Name == "backup-token" && v.Secret != nil:
			src.BackupTokenSecret = v.Secret.SecretName
		case v.Name == "tls" && v.Secret != nil:
			src.TLSSecret = v.Secret.SecretName
		case v.Name == "data" && v.PersistentVolumeClaim != nil:
			src.DataClaim = v.PersistentVolumeClaim.ClaimName
		}
	}
	port := 0
	for _, c := range pod.Spec.Containers {
		if c.Name == "engine" {
			for _, p := range c.Ports {
				if p.Name == "http" {
					port = int(p.ContainerPort)
				}
			}
		}
	}
	if src.ConfigMap == "" || src.TokenSecret == "" || src.KeySecret == "" || port == 0 {
		return src, 0, fmt.Errorf("pod %s/%s does not look like an engine pod (config, token, key volumes and http port)", pod.Namespace, pod.Name)
	}
	return src, port, nil
}
