// Package engineruntime runs real engine processes for engine pods where no
// kubelet runs containers (envtest, the local kwok cluster). Like a kubelet
// it materialises the pod's ConfigMap and Secrets as files, keeps them in
// sync when the objects change (atomic rename, so the engine sees a whole
// file; within a second, or as late as a kubelet: Propagation), and stops
// the process when asked.
package engineruntime

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	engineconfig "github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/internal/devstack/proc"
)

// Source names the objects an engine pod mounts.
type Source struct {
	Namespace    string
	ConfigMap    string // holds engineconfig.FileName
	TokenSecret  string // keys "token", "read-only-token"
	KeySecret    string
	KeySecretKey string
	// StoreSecret holds the PostgreSQL connection (empty for the embedded
	// store).
	StoreSecret string
	// KEKSecret is the world's keyring, every key a file (empty: the
	// engine runs without encryption at rest).
	KEKSecret string
	// TLSSecret is the serving certificate (tls.crt, tls.key): the engine
	// serves HTTPS with it (empty: plain HTTP, for harnesses that test
	// the engine without the operator's certificates).
	TLSSecret string
	// ClientsSecret holds the clients file (clients.json) and
	// UserTokenKeySecret the user-token signing key (key); empty: the
	// engine runs without them, whatever its configuration names.
	ClientsSecret, UserTokenKeySecret string
	// BackupTokenSecret holds the backup-only token (token); empty: the
	// engine runs without it, whatever its configuration names.
	BackupTokenSecret string
	// DataClaim is the PersistentVolumeClaim the pod's data volume mounts
	// (empty: an emptyDir), and DataDir the directory that stands for it
	// (empty: the pod's own, gone with the pod). A claim's directory is
	// shared by every pod that mounts the claim, as the volume is, so a
	// replaced pod finds the store its predecessor left.
	DataClaim string
	DataDir   string
	// ModelHost replaces the host of the configured model URL: the pod's
	// model sidecar listens on the pod's address, and pods share this
	// machine's 127.0.0.1 (empty: the URL as rendered).
	ModelHost string
}

// Process is one running engine.
type Process struct {
	Dir  string
	Host string
	Port int
	// TLS: the engine serves HTTPS (its configuration names a certificate).
	TLS bool
	// Model is the pod's model sidecar (nil without one); it stops with
	// the engine.
	Model *ModelServer
	cmd   *exec.Cmd
	stop  context.CancelFunc
	done  chan struct{}
}

// URL is the engine's base URL.
func (p *Process) URL() string {
	scheme := "http://"
	if p.TLS {
		scheme = "https://"
	}
	return scheme + net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
}

// BuildEngine compiles cmd/engine to path (the go command resolves the
// package from any directory inside this module).
func BuildEngine(path string) error {
	out, err := exec.Command("go", "build", "-o", path, "github.com/attune-io/attune/cmd/engine").CombinedOutput()
	if err != nil {
		return fmt.Errorf("build engine: %w\n%s", err, out)
	}
	return nil
}

// Propagation is how long a change of the objects a pod mounts takes to
// reach the pod's files. A kubelet rewrites a pod's ConfigMap and Secret
// volumes at its periodic sync of the pod (every minute, jittered), from
// objects its cache may hold a while longer, so a change lands up to
// about a minute and a half later, and on each pod at its own time. The
// zero Propagation lands every change within a second.
type Propagation struct {
	// Min and Max bound the pods' delays. Each pod's delay is drawn
	// between them once, from its name, so replicas lag differently and
	// every run lags alike.
	Min, Max time.Duration
}

// KubeletPropagation is a kubelet's: 60 to 90 seconds.
var KubeletPropagation = Propagation{Min: 60 * time.Second, Max: 90 * time.Second}

// DelayFor is the delay of the pod with this name (namespace/name).
func (p Propagation) DelayFor(pod string) time.Duration {
	if p.Max <= p.Min {
		return max(p.Min, 0)
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(pod))
	u := float64(h.Sum64()) / float64(math.MaxUint64)
	return p.Min + time.Duration(u*float64(p.Max-p.Min))
}

// StartOption adjusts Start.
type StartOption func(*startOptions)

type startOptions struct {
	delay time.Duration
}

// WithDelay makes a change of the mounted objects reach the files delay
// after it is first seen (the files are still checked every second), as
// on a kubelet (Propagation.DelayFor). Changes land in the order they were
// made; a later one never overtakes an earlier one.
func WithDelay(delay time.Duration) StartOption {
	return func(o *startOptions) { o.delay = max(delay, 0) }
}

// Start materialises the files under dir, starts binary on host:port (a
// loopback address: Linux routes all of 127.0.0.0/8 to lo) and keeps the
// files in sync until Stop: every second, or with WithDelay as late as a
// kubelet would. The engine's log goes to dir/engine.log.
func Start(ctx context.Context, c client.Reader, binary, dir, host string, port int, src Source, opts ...StartOption) (*Process, error) {
	var o startOptions
	for _, opt := range opts {
		opt(&o)
	}
	for _, sub := range []string{"config", "token", "key", "data", "tls"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, err
		}
	}
	listen := net.JoinHostPort(host, strconv.Itoa(port))
	files, err := podFiles(ctx, c, dir, listen, src)
	if err != nil {
		return nil, err
	}
	if err := writeFiles(files); err != nil {
		return nil, err
	}
	p, err := Launch(binary, dir, host, port)
	if err != nil {
		return nil, err
	}
	syncCtx, cancel := context.WithCancel(context.Background())
	p.stop = cancel
	go syncFiles(syncCtx, o.delay, files, func() (map[string][]byte, error) { return podFiles(syncCtx, c, dir, listen, src) })
	return p, nil
}

// syncFiles reads the pod's files from the objects every second and
// writes each new version delay after it was first seen. written is what
// the files hold now.
func syncFiles(ctx context.Context, delay time.Duration, written map[string][]byte, read func() (map[string][]byte, error)) {
	type version struct {
		due   time.Time
		files map[string][]byte
	}
	var queue []version // seen, not yet written; oldest first
	seen := written
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		var now time.Time
		select {
		case <-ctx.Done():
			return
		case now = <-t.C:
		}
		if files, err := read(); err == nil && !maps.EqualFunc(files, seen, bytes.Equal) { // an error is retried next tick
			queue = append(queue, version{due: now.Add(delay), files: files})
			seen = files
		}
		due := -1
		for i := range queue {
			if !queue[i].due.After(now) {
				due = i
			}
		}
		if due >= 0 && writeFiles(queue[due].files) == nil { // a failed write is retried next tick
			queue = queue[due+1:]
		}
	}
}

// Launch starts binary with the configuration already in
// dir/config/config.json (its listenAddress must be host:port) and waits
// until it is ready. The engine's log goes to dir/engine.log.
func Launch(binary, dir, host string, port int) (*Process, error) {
	logFile, err := os.OpenFile(filepath.Join(dir, "engine.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	configFile := filepath.Join(dir, "config", engineconfig.FileName)
	raw, err := os.ReadFile(configFile)
	if err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("read engine configuration: %w", err)
	}
	cfg, err := engineconfig.Parse(raw)
	if err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("engine configuration: %w", err)
	}
	cmd := exec.Command(binary, "--config", configFile, "--reload-interval", "500ms")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test or CLI
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start engine: %w", err)
	}
	p := &Process{Dir: dir, Host: host, Port: port, TLS: cfg.TLS != nil, cmd: cmd, stop: func() {}, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		_ = cmd.Wait()
		_ = logFile.Close()
	}()
	if err := waitReady(p, 15*time.Second); err != nil {
		p.Stop()
		log, _ := os.ReadFile(filepath.Join(dir, "engine.log"))
		return nil, fmt.Errorf("%w; engine log:\n%s", err, log)
	}
	return p, nil
}

func waitReady(p *Process, timeout time.Duration) error {
	// A kubelet's readiness probe does not verify the certificate
	// either: it asks only whether the engine serves.
	probe := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}}} //nolint:gosec // a probe, as a kubelet's
	defer probe.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("engine exited during start-up")
		default:
		}
		if resp, err := probe.Get(p.URL() + "/readyz"); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("engine not ready on %s after %s", p.URL(), timeout)
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Kill ends the engine with SIGKILL, as a node failure or the OOM killer
// would: no shutdown, no flush.
func (p *Process) Kill() {
	p.stop()
	_ = p.cmd.Process.Kill()
	<-p.done
	p.stopModel()
}

// Stop terminates the engine (SIGTERM, then SIGKILL after 5 s) and stops
// syncing its files. The data directory stays, as a pod's volume would
// across a container restart.
func (p *Process) Stop() {
	p.stop()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	proc.AwaitExit(p.cmd.Process, p.done, 5*time.Second)
	p.stopModel()
}

func (p *Process) stopModel() {
	if p.Model != nil {
		p.Model.Stop()
	}
}

// podFiles are the files the pod mounts, by path: the ConfigMap's
// configuration (with file paths pointed into dir) and the Secrets'
// contents.
func podFiles(ctx context.Context, c client.Reader, dir, listen string, src Source) (map[string][]byte, error) {
	cm := &corev1.ConfigMap{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: src.Namespace, Name: src.ConfigMap}, cm); err != nil {
		return nil, fmt.Errorf("get config map: %w", err)
	}
	cfg, err := engineconfig.Parse([]byte(cm.Data[engineconfig.FileName]))
	if err != nil {
		return nil, fmt.Errorf("config map %s: %w", src.ConfigMap, err)
	}
	cfg.TokenFile = filepath.Join(dir, "token", "token")
	cfg.ReadOnlyTokenFile = filepath.Join(dir, "token", "read-only-token")
	cfg.PseudonymizationKeyFile = filepath.Join(dir, "key", "key")
	cfg.DataDir = filepath.Join(dir, "data")
	if src.DataDir != "" {
		if err := os.MkdirAll(src.DataDir, 0o700); err != nil {
			return nil, err
		}
		cfg.DataDir = src.DataDir
	}
	cfg.ListenAddress = listen
	if cfg.Model != nil && src.ModelHost != "" {
		u, err := url.Parse(cfg.Model.URL)
		if err != nil {
			return nil, fmt.Errorf("config map %s: model url: %w", src.ConfigMap, err)
		}
		u.Host = net.JoinHostPort(src.ModelHost, u.Port())
		cfg.Model.URL = u.String()
	}
	storeFiles := map[string][]byte{}
	cfg.KeyEncryptionKeyDir = ""
	if src.KEKSecret != "" {
		secret := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: src.Namespace, Name: src.KEKSecret}, secret); err != nil {
			return nil, fmt.Errorf("get key-encryption-key secret: %w", err)
		}
		cfg.KeyEncryptionKeyDir = filepath.Join(dir, "kek")
		if err := os.MkdirAll(cfg.KeyEncryptionKeyDir, 0o700); err != nil {
			return nil, err
		}
		for k, v := range secret.Data {
			storeFiles[filepath.Join(cfg.KeyEncryptionKeyDir, k)] = v
		}
	}
	if cfg.Store.IsShared() && src.StoreSecret != "" {
		secret := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: src.Namespace, Name: src.StoreSecret}, secret); err != nil {
			return nil, fmt.Errorf("get store secret: %w", err)
		}
		cfg.Store.Postgres.SecretDir = filepath.Join(dir, "postgres")
		if err := os.MkdirAll(cfg.Store.Postgres.SecretDir, 0o700); err != nil {
			return nil, err
		}
		for k, v := range secret.Data {
			storeFiles[filepath.Join(cfg.Store.Postgres.SecretDir, k)] = v
		}
	}
	cfg.TLS = nil
	if src.TLSSecret != "" {
		secret := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: src.Namespace, Name: src.TLSSecret}, secret); err != nil {
			return nil, fmt.Errorf("get serving certificate secret: %w", err)
		}
		cfg.TLS = &engineconfig.TLS{CertFile: filepath.Join(dir, "tls", corev1.TLSCertKey), KeyFile: filepath.Join(dir, "tls", corev1.TLSPrivateKeyKey)}
		storeFiles[cfg.TLS.CertFile] = secret.Data[corev1.TLSCertKey]
		storeFiles[cfg.TLS.KeyFile] = secret.Data[corev1.TLSPrivateKeyKey]
	}
	accessFiles, err := accessFiles(ctx, c, dir, src, cfg)
	if err != nil {
		return nil, err
	}
	maps.Copy(storeFiles, accessFiles)
	rendered, err := cfg.Render()
	if err != nil {
		return nil, err
	}
	token := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: src.Namespace, Name: src.TokenSecret}, token); err != nil {
		return nil, fmt.Errorf("get token secret: %w", err)
	}
	key := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: src.Namespace, Name: src.KeySecret}, key); err != nil {
		return nil, fmt.Errorf("get key secret: %w", err)
	}
	files := map[string][]byte{
		filepath.Join(dir, "config", engineconfig.FileName): rendered,
		filepath.Join(dir, "token", "token"):                token.Data[contract.TokenKey],
		filepath.Join(dir, "token", "read-only-token"):      token.Data[contract.ReadOnlyTokenKey],
		filepath.Join(dir, "key", "key"):                    key.Data[src.KeySecretKey],
	}
	maps.Copy(files, storeFiles)
	return files, nil
}

// writeFiles writes the files by atomic rename (the engine never reads a
// part of one), rewriting only those that changed.
func writeFiles(files map[string][]byte) error {
	for path, content := range files {
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, content) {
			continue
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, content, 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	return nil
}

// accessFiles materialises the clients file, the user-token signing key
// and the backup token the pod mounts, pointing cfg at them (or, without their Secrets, turning
// them off).
func accessFiles(ctx context.Context, c client.Reader, dir string, src Source, cfg *engineconfig.Config) (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, f := range []struct {
		secret, key, sub string
		field            *string
	}{
		{src.ClientsSecret, "clients.json", "clients", &cfg.ClientTokensFile},
		{src.UserTokenKeySecret, "key", "user-token-key", &cfg.UserTokenKeyFile},
		{src.BackupTokenSecret, "token", "backup-token", &cfg.BackupTokenFile},
	} {
		if *f.field == "" || f.secret == "" {
			*f.field = ""
			continue
		}
		secret := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: src.Namespace, Name: f.secret}, secret); err != nil {
			return nil, fmt.Errorf("get %s secret: %w", f.sub, err)
		}
		if err := os.MkdirAll(filepath.Join(dir, f.sub), 0o700); err != nil {
			return nil, err
		}
		*f.field = filepath.Join(dir, f.sub, f.key)
		files[*f.field] = secret.Data[f.key]
	}
	return files, nil
}
