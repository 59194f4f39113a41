// Package engineruntime runs real engine processes for engine pods where no
// kubelet runs containers (envtest, the local kwok cluster). Like a kubelet
// it materialises the pod's ConfigMap and Secrets as files, keeps them in
// sync when the objects change (atomic rename, so the engine sees a whole
// file), and stops the process when asked.
package engineruntime

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	engineconfig "github.com/attune-io/attune/engine/config"
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
}

// Process is one running engine.
type Process struct {
	Dir  string
	Host string
	Port int
	cmd  *exec.Cmd
	stop context.CancelFunc
	done chan struct{}
}

// URL is the engine's base URL.
func (p *Process) URL() string { return "http://" + net.JoinHostPort(p.Host, strconv.Itoa(p.Port)) }

// BuildEngine compiles cmd/engine to path (the go command resolves the
// package from any directory inside this module).
func BuildEngine(path string) error {
	out, err := exec.Command("go", "build", "-o", path, "github.com/attune-io/attune/cmd/engine").CombinedOutput()
	if err != nil {
		return fmt.Errorf("build engine: %w\n%s", err, out)
	}
	return nil
}

// Start materialises the files under dir, starts binary on host:port (a
// loopback address: Linux routes all of 127.0.0.0/8 to lo) and keeps the files in sync every second until Stop. The engine's log
// goes to dir/engine.log.
func Start(ctx context.Context, c client.Reader, binary, dir, host string, port int, src Source) (*Process, error) {
	for _, sub := range []string{"config", "token", "key", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, err
		}
	}
	listen := net.JoinHostPort(host, strconv.Itoa(port))
	if err := materialise(ctx, c, dir, listen, src); err != nil {
		return nil, err
	}
	p, err := Launch(binary, dir, host, port)
	if err != nil {
		return nil, err
	}
	syncCtx, cancel := context.WithCancel(context.Background())
	p.stop = cancel
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-syncCtx.Done():
				return
			case <-t.C:
				_ = materialise(syncCtx, c, dir, listen, src) // retried next tick
			}
		}
	}()
	return p, nil
}

// Launch starts binary with the configuration already in
// dir/config/config.json (its listenAddress must be host:port) and waits
// until it is ready. The engine's log goes to dir/engine.log.
func Launch(binary, dir, host string, port int) (*Process, error) {
	logFile, err := os.OpenFile(filepath.Join(dir, "engine.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, "--config", filepath.Join(dir, "config", engineconfig.FileName), "--reload-interval", "500ms")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test or CLI
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start engine: %w", err)
	}
	p := &Process{Dir: dir, Host: host, Port: port, cmd: cmd, stop: func() {}, done: make(chan struct{})}
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
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("engine exited during start-up")
		default:
		}
		if resp, err := http.Get(p.URL() + "/readyz"); err == nil {
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
}

// Stop terminates the engine (SIGTERM, then SIGKILL after 5 s) and stops
// syncing its files. The data directory stays, as a pod's volume would
// across a container restart.
func (p *Process) Stop() {
	p.stop()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	proc.AwaitExit(p.cmd.Process, p.done, 5*time.Second)
}

// materialise writes the ConfigMap's configuration (with file paths pointed
// into dir) and the Secrets' contents, rewriting only files that changed.
func materialise(ctx context.Context, c client.Reader, dir, listen string, src Source) error {
	cm := &corev1.ConfigMap{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: src.Namespace, Name: src.ConfigMap}, cm); err != nil {
		return fmt.Errorf("get config map: %w", err)
	}
	cfg, err := engineconfig.Parse([]byte(cm.Data[engineconfig.FileName]))
	if err != nil {
		return fmt.Errorf("config map %s: %w", src.ConfigMap, err)
	}
	cfg.TokenFile = filepath.Join(dir, "token", "token")
	cfg.ReadOnlyTokenFile = filepath.Join(dir, "token", "read-only-token")
	cfg.PseudonymizationKeyFile = filepath.Join(dir, "key", "key")
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.ListenAddress = listen
	storeFiles := map[string][]byte{}
	if cfg.Store.IsShared() && src.StoreSecret != "" {
		secret := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: src.Namespace, Name: src.StoreSecret}, secret); err != nil {
			return fmt.Errorf("get store secret: %w", err)
		}
		cfg.Store.Postgres.SecretDir = filepath.Join(dir, "postgres")
		if err := os.MkdirAll(cfg.Store.Postgres.SecretDir, 0o700); err != nil {
			return err
		}
		for k, v := range secret.Data {
			storeFiles[filepath.Join(cfg.Store.Postgres.SecretDir, k)] = v
		}
	}
	rendered, err := cfg.Render()
	if err != nil {
		return err
	}
	token := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: src.Namespace, Name: src.TokenSecret}, token); err != nil {
		return fmt.Errorf("get token secret: %w", err)
	}
	key := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: src.Namespace, Name: src.KeySecret}, key); err != nil {
		return fmt.Errorf("get key secret: %w", err)
	}
	files := map[string][]byte{
		filepath.Join(dir, "config", engineconfig.FileName): rendered,
		filepath.Join(dir, "token", "token"):                token.Data["token"],
		filepath.Join(dir, "token", "read-only-token"):      token.Data["read-only-token"],
		filepath.Join(dir, "key", "key"):                    key.Data[src.KeySecretKey],
	}
	maps.Copy(files, storeFiles)
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
