// Package localcluster runs a real Kubernetes control plane on loopback from
// source-built binaries — etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler — with kwok simulating nodes, fake GPU nodes among them. No
// Docker, no downloads. Every file lives in the state directory and every
// process it starts is stopped by Stop (and dies with its parent).
package localcluster

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/attune-io/attune/internal/devstack/proc"
)

// kwokStages are kwok's node "fast" and "heartbeat-with-lease" stages and
// its pod "fast" stages (from sigs.k8s.io/kwok v0.8.0 kustomize/stage).
//
//go:embed kwok-stages.yaml
var kwokStages []byte

// Options configure a cluster.
type Options struct {
	// StateDir holds every file of the cluster (created if missing).
	StateDir string
	// BinDir holds etcd, kube-apiserver, kube-controller-manager,
	// kube-scheduler and kwok (hack/k8s-binaries.sh cluster).
	BinDir      string
	GPUNodes    int    // default 1
	GPUsPerNode int    // default 4
	GPUProduct  string // default NVIDIA-H100-80GB-HBM3
	CPUNodes    int    // default 1
	// Log receives progress lines (nil: discarded).
	Log io.Writer
}

// Cluster is a running local cluster.
type Cluster struct {
	Kubeconfig string
	Config     *rest.Config
	opts       Options
	mu         sync.Mutex
	procs      []*process
}

type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

func (o *Options) defaults() {
	if o.GPUNodes == 0 {
		o.GPUNodes = 1
	}
	if o.GPUsPerNode == 0 {
		o.GPUsPerNode = 4
	}
	if o.GPUProduct == "" {
		o.GPUProduct = "NVIDIA-H100-80GB-HBM3"
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
}

func (c *Cluster) logf(format string, args ...any) {
	fmt.Fprintf(c.opts.Log, "[cluster %s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// Start brings the cluster up and waits until its nodes are Ready. On any
// error it stops what it started.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	opts.defaults()
	c = &Cluster{opts: opts}
	started := c // an error return sets c to nil: stop what was started
	defer func() {
		if err != nil {
			started.Stop()
		}
	}()
	for _, bin := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"} {
		if _, err := os.Stat(filepath.Join(opts.BinDir, bin)); err != nil {
			return nil, fmt.Errorf("%s missing in %s: run `make cluster-binaries` (hack/k8s-binaries.sh cluster)", bin, opts.BinDir)
		}
	}
	dir, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, err
	}
	for _, sub := range []string{"pki", "etcd", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, err
		}
	}
	certs, err := generatePKI(filepath.Join(dir, "pki"))
	if err != nil {
		return nil, fmt.Errorf("generate certificates: %w", err)
	}
	tokenBytes := make([]byte, 16)
	_, _ = rand.Read(tokenBytes)
	token := hex.EncodeToString(tokenBytes)
	tokens := filepath.Join(dir, "pki", "tokens.csv")
	if err := os.WriteFile(tokens, []byte(token+",admin,admin,system:masters\n"), 0o600); err != nil {
		return nil, err
	}
	ports := make([]int, 4)
	for i := range ports {
		if ports[i], err = proc.FreePort(); err != nil {
			return nil, err
		}
	}
	etcdPort, peerPort, apiPort, kwokPort := ports[0], ports[1], ports[2], ports[3]

	c.logf("starting etcd on 127.0.0.1:%d", etcdPort)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	if err := c.run("etcd", "--data-dir", filepath.Join(dir, "etcd"), "--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peerPort), "--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peerPort),
		"--initial-cluster", fmt.Sprintf("default=http://127.0.0.1:%d", peerPort), "--unsafe-no-fsync"); err != nil {
		return nil, err
	}
	c.logf("starting kube-apiserver on https://127.0.0.1:%d", apiPort)
	if err := c.run("kube-apiserver", "--etcd-servers", etcdURL, "--secure-port", strconv.Itoa(apiPort), "--bind-address", "127.0.0.1",
		"--tls-cert-file", certs.serverCert, "--tls-private-key-file", certs.serverKey, "--token-auth-file", tokens,
		"--authorization-mode", "RBAC", "--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", certs.saPub, "--service-account-signing-key-file", certs.saKey,
		"--service-cluster-ip-range", "10.96.0.0/16", "--allow-privileged", "--cert-dir", filepath.Join(dir, "pki"),
		// The aggregation layer, for metrics APIs (metrics.k8s.io,
		// custom.metrics.k8s.io) that tests serve on loopback: the
		// aggregator authenticates to them with the front-proxy client
		// certificate and passes the user in these headers
		// (https://kubernetes.io/docs/tasks/extend-kubernetes/configure-aggregation-layer/).
		"--requestheader-client-ca-file", certs.caCert, "--requestheader-allowed-names", frontProxyClientName,
		"--requestheader-username-headers", "X-Remote-User", "--requestheader-group-headers", "X-Remote-Group",
		"--requestheader-extra-headers-prefix", "X-Remote-Extra-",
		"--proxy-client-cert-file", certs.proxyClientCert, "--proxy-client-key-file", certs.proxyClientKey); err != nil {
		return nil, err
	}
	c.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, fmt.Sprintf("https://127.0.0.1:%d", apiPort), certs.caCert, token); err != nil {
		return nil, err
	}
	if c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
		return nil, err
	}
	c.Config.QPS, c.Config.Burst = 200, 400
	clientset, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	if err := WaitFor(ctx, 180*time.Second, "kube-apiserver ready", func() error {
		if exited := c.exited("etcd"); exited != nil {
			return stopWaiting{c.withLog(exited, "etcd")} // the API server's log follows
		}
		if exited := c.exited("kube-apiserver"); exited != nil {
			return stopWaiting{exited}
		}
		return clientset.RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
	}); err != nil {
		return nil, c.withLog(err, "kube-apiserver")
	}
	k := []string{"--kubeconfig", c.Kubeconfig, "--authentication-kubeconfig", c.Kubeconfig, "--authorization-kubeconfig", c.Kubeconfig}
	c.logf("starting kube-controller-manager and kube-scheduler")
	if err := c.run("kube-controller-manager", append(k, "--service-account-private-key-file", certs.saKey, "--root-ca-file", certs.caCert,
		"--controllers", "*,-nodeipam", "--secure-port", "0", "--leader-elect=false",
		// The HorizontalPodAutoscaler in seconds rather than minutes: sync
		// every 2 s (default 15 s), scale down after 5 s of lower
		// recommendations (default 5 min).
		"--horizontal-pod-autoscaler-sync-period", "2s", "--horizontal-pod-autoscaler-downscale-stabilization", "5s")...); err != nil {
		return nil, err
	}
	if err := c.run("kube-scheduler", append(k, "--secure-port", "0", "--leader-elect=false")...); err != nil {
		return nil, err
	}
	stages := filepath.Join(dir, "kwok-stages.yaml")
	if err := os.WriteFile(stages, kwokStages, 0o600); err != nil {
		return nil, err
	}
	c.logf("starting kwok (fake nodes, pod IPs in 127.1.0.0/16)")
	if err := c.run("kwok", "--kubeconfig", c.Kubeconfig, "--manage-all-nodes", "--cidr", "127.1.0.0/16", "--node-ip", "127.0.0.1",
		"--config", stages, "--node-lease-duration-seconds", "40", "--server-address", fmt.Sprintf("127.0.0.1:%d", kwokPort)); err != nil {
		return nil, err
	}
	if err := c.createNodes(ctx, clientset); err != nil {
		return nil, err
	}
	// Pods need their namespace's default ServiceAccount, which the
	// controller manager creates; wait for it so the first pod is not refused.
	// This wait and the API server's are generous (3 minutes, for a loaded
	// machine) and end at once, with the process's log, when the process
	// they wait on has exited.
	if err := WaitFor(ctx, 180*time.Second, "default service account", func() error {
		if exited := c.exited("kube-controller-manager"); exited != nil {
			return stopWaiting{exited}
		}
		_, err := clientset.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	}); err != nil {
		return nil, c.withLog(err, "kube-controller-manager")
	}
	c.logf("cluster ready; kubeconfig %s", c.Kubeconfig)
	return c, nil
}

func (c *Cluster) createNodes(ctx context.Context, clientset *kubernetes.Clientset) error {
	node := func(name string, gpus int, product string) *corev1.Node {
		capacity := corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("32"), corev1.ResourceMemory: resource.MustParse("256Gi"), corev1.ResourcePods: resource.MustParse("110"),
		}
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name: name, Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
			Labels: map[string]string{"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"},
		}}
		if gpus > 0 {
			capacity["nvidia.com/gpu"] = *resource.NewQuantity(int64(gpus), resource.DecimalSI)
			n.Labels["nvidia.com/gpu.product"] = product
			n.Labels["nvidia.com/gpu.present"] = "true"
			n.Spec.Taints = []corev1.Taint{{Key: "nvidia.com/gpu", Value: "present", Effect: corev1.TaintEffectNoSchedule}}
		}
		n.Status = corev1.NodeStatus{Capacity: capacity, Allocatable: capacity.DeepCopy()}
		return n
	}
	var names []string
	for i := range c.opts.GPUNodes {
		n := node(fmt.Sprintf("gpu-node-%d", i), c.opts.GPUsPerNode, c.opts.GPUProduct)
		if _, err := clientset.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create node: %w", err)
		}
		names = append(names, n.Name)
	}
	for i := range c.opts.CPUNodes {
		n := node(fmt.Sprintf("cpu-node-%d", i), 0, "")
		if _, err := clientset.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create node: %w", err)
		}
		names = append(names, n.Name)
	}
	c.logf("created %d GPU node(s) with %d× %s and %d CPU node(s)", c.opts.GPUNodes, c.opts.GPUsPerNode, c.opts.GPUProduct, c.opts.CPUNodes)
	return WaitFor(ctx, 60*time.Second, "nodes Ready", func() error {
		for _, name := range names {
			n, err := clientset.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			ready := false
			for _, cond := range n.Status.Conditions {
				ready = ready || (cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue)
			}
			if !ready {
				return fmt.Errorf("node %s not Ready", name)
			}
		}
		return nil
	})
}

// run starts a binary from BinDir with its log under logs/.
func (c *Cluster) run(name string, args ...string) error {
	logFile, err := os.Create(filepath.Join(c.opts.StateDir, "logs", name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(c.opts.BinDir, name), args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Dir = c.opts.StateDir
	// Die with the parent even if it is killed (no orphans on test failure).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{}), log: logFile}
	go func() { _ = cmd.Wait(); close(p.done) }()
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return nil
}

func (c *Cluster) withLog(err error, name string) error {
	b, _ := os.ReadFile(filepath.Join(c.opts.StateDir, "logs", name+".log"))
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return fmt.Errorf("%w\n--- last lines of %s.log ---\n%s", err, name, b)
}

// Stop terminates every process in reverse start order (SIGTERM, then
// SIGKILL after 10 s). It is safe to call more than once.
func (c *Cluster) Stop() {
	c.mu.Lock()
	procs := c.procs
	c.procs = nil
	c.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		_ = p.log.Close()
	}
}

// exited reports an error if the named process has ended, nil while it runs.
func (c *Cluster) exited(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		if p.name != name {
			continue
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %v", name, p.cmd.ProcessState)
		default:
			return nil
		}
	}
	return nil
}

// Running lists the processes still alive (tests assert none remain).
func (c *Cluster) Running() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, p := range c.procs {
		select {
		case <-p.done:
		default:
			out = append(out, p.name)
		}
	}
	return out
}

func writeKubeconfig(path, server, caFile, token string) error {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["attune-local"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["attune-local"] = &clientcmdapi.Context{Cluster: "attune-local", AuthInfo: "admin"}
	cfg.CurrentContext = "attune-local"
	return clientcmd.WriteToFile(*cfg, path)
}

// stopWaiting, returned by a WaitFor check, ends the wait at once: what it
// waits for can no longer happen (its maker has exited).
type stopWaiting struct{ err error }

func (s stopWaiting) Error() string { return s.err.Error() }

// WaitFor polls check every 200 ms until it returns nil, ctx ends, the
// timeout passes or check returns a stopWaiting.
func WaitFor(ctx context.Context, timeout time.Duration, what string, check func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if last = check(); last == nil {
			return nil
		}
		var stop stopWaiting
		if errors.As(last, &stop) {
			return fmt.Errorf("%s: %w", what, stop.err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return errors.Join(fmt.Errorf("%s: not within %s", what, timeout), last)
}
