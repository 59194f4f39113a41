// Command engine runs one MeditationProgram's wellbeing engine: the HTTP API
// that ingests telemetry, estimates state, recommends interventions and
// publishes the k-anonymous cohort loss.
package main

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/attune-io/attune/engine/api"
	"github.com/attune-io/attune/engine/auth"
	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/metrics"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/engine/textemotion"
	"github.com/attune-io/attune/engine/tlsfiles"
	"github.com/attune-io/attune/internal/gomemlimit"
	"github.com/attune-io/attune/internal/version"
)

func main() {
	configPath := flag.String("config", "/etc/attune/config/"+config.FileName, "Path of the engine configuration file.")
	listen := flag.String("listen", "", "Override the configuration's listenAddress (e.g. for a local runtime).")
	reloadEvery := flag.Duration("reload-interval", 2*time.Second, "How often the configuration file is checked for changes.")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	gomemlimit.FromContainer(ctx, log)
	err := run(ctx, *configPath, *listen, *reloadEvery, log)
	stop()
	if err != nil {
		log.Error("engine stopped", "error", err)
		fmt.Fprintln(os.Stderr, "engine:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, configPath, listenOverride string, reloadEvery time.Duration, log *slog.Logger) error {
	raw, err := os.ReadFile(configPath)
	if err != nil {
		return fmt.Errorf("read configuration: %w", err)
	}
	cfg, err := config.Parse(raw)
	if err != nil {
		return fmt.Errorf("invalid configuration %s: %w", configPath, err)
	}
	if listenOverride != "" {
		cfg.ListenAddress = listenOverride
	}
	// The key is raw bytes (the operator generates 32 random ones): no trimming.
	key, err := os.ReadFile(cfg.PseudonymizationKeyFile)
	if err != nil {
		return fmt.Errorf("pseudonymizationKeyFile: %w", err)
	}
	tokens, err := readTokens(cfg)
	if err != nil {
		return err
	}
	db, sealed, err := openStore(ctx, cfg, key, log)
	if err != nil {
		return err
	}
	defer func() { _ = db.Close() }()

	m := metrics.New(cfg.Program)
	var serving *tlsfiles.Pair
	if cfg.TLS != nil {
		if serving, err = tlsfiles.Load(cfg.TLS.CertFile, cfg.TLS.KeyFile); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		m.RegisterTLS()
		m.TLSCertificateExpiry.Set(float64(serving.Leaf().NotAfter.Unix()))
	} else {
		log.Warn("tls is not set: serving plain HTTP; tokens and health data travel unencrypted")
	}
	svc, err := service.New(cfg, service.Options{Store: db, Key: key, Scorer: scorer(cfg, m), Metrics: m, Logger: log})
	if err != nil {
		return err
	}
	// Deferred after db.Close, so it runs first: a refresh in flight
	// stops and is waited for before the store closes under it.
	defer svc.Close()
	m.RegisterCohort(svc)
	server := api.New(svc, m, tokens, log, backupOptions(db)...)

	go config.Watch(ctx, configPath, reloadEvery, raw, func(next *config.Config, _ []byte) {
		if listenOverride != "" {
			next.ListenAddress = listenOverride
		}
		if next.ListenAddress != cfg.ListenAddress || next.DataDir != cfg.DataDir || !reflect.DeepEqual(next.Store, cfg.Store) {
			log.Warn("listenAddress, dataDir and store changes take effect at the next restart")
		}
		if !reflect.DeepEqual(next.TLS, cfg.TLS) {
			log.Warn("tls changes (turning it on or off, other file paths) take effect at the next restart; the files in force are still re-read when they change")
		}
		if t, err := readTokens(next); err == nil {
			server.SetTokens(t)
		} else {
			log.Error("token files unreadable; keeping the current tokens", "error", err)
		}
		svc.SetConfig(next)
		m.ConfigReloads.Inc()
		log.Info("configuration reloaded", "strength", next.Strength.Value)
	}, func(err error) {
		m.ConfigReloadFails.Inc()
		log.Error("configuration change rejected; keeping the last good configuration", "error", err)
	})
	go reloadTokens(ctx, server, svc.Config, reloadEvery, log)
	sweepEvery := min(max(cfg.Privacy.Retention.Duration/24, time.Second), time.Hour)
	go svc.RunSweeper(ctx, sweepEvery)
	if serving != nil {
		go serving.Watch(ctx, reloadEvery, func(leaf *x509.Certificate) {
			m.TLSReloads.Inc()
			m.TLSCertificateExpiry.Set(float64(leaf.NotAfter.Unix()))
			log.Info("serving certificate reloaded", "serial", leaf.SerialNumber.Text(16), "notAfter", leaf.NotAfter)
		}, func(err error) {
			m.TLSReloadFails.Inc()
			log.Error("serving certificate change refused; keeping the current certificate", "error", err)
		})
	}
	if sealed != nil {
		go maintainEncryption(ctx, sealed, cfg.KeyEncryptionKeyDir, reloadEvery, sweepEvery, log)
	}

	listener, err := net.Listen("tcp", cfg.ListenAddress)
	if err != nil {
		return fmt.Errorf("listenAddress: %w", err)
	}
	httpServer := &http.Server{Handler: server, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		// net/http's own messages in the engine's structured log, without
		// the peers' addresses (errorlog.go).
		ErrorLog: serverErrorLog(log, m.TLSHandshakeErrors)}
	errCh := make(chan error, 1)
	if serving != nil {
		// ServeTLS with no file names takes the certificate from
		// TLSConfig.GetCertificate (and adds HTTP/2 to NextProtos).
		httpServer.TLSConfig = serving.ServerConfig()
		go func() { errCh <- httpServer.ServeTLS(listener, "", "") }()
	} else {
		go func() { errCh <- httpServer.Serve(listener) }()
	}
	log.Info("engine serving", "version", version.Version, "address", listener.Addr().String(), "tls", serving != nil,
		"program", cfg.Program, "context", cfg.Context, "store", db.Scope())
	select {
	case err := <-errCh:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := httpServer.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// openStore opens the configured store: bbolt in dataDir, or PostgreSQL
// through the mounted Secret (migrating the schema); encrypted (sealed is
// not nil) when the configuration names a keyring. secret is the
// pseudonymisation key, from which row keys are derived.
func openStore(ctx context.Context, cfg *config.Config, secret []byte, log *slog.Logger) (db store.Store, sealed *store.Sealed, err error) {
	var backend store.Backend
	if !cfg.Store.IsShared() {
		b, err := store.OpenBolt(cfg.DataDir)
		if err != nil {
			return nil, nil, fmt.Errorf("dataDir: %w", err)
		}
		if b.Reapplied > 0 {
			log.Warn("erasures re-applied from the erasure journal: the store predates them (a restored backup)", "users", b.Reapplied)
		}
		backend = b
	} else {
		conn, err := store.ConnStringFromDir(cfg.Store.Postgres.SecretDir)
		if err != nil {
			return nil, nil, err
		}
		connectCtx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		b, err := store.OpenPostgres(connectCtx, conn, cfg.Program)
		if err != nil {
			return nil, nil, fmt.Errorf("store.postgres: %w", err)
		}
		backend = b
	}
	if cfg.KeyEncryptionKeyDir == "" {
		encrypted, err := store.Encrypted(ctx, backend)
		if err == nil && encrypted {
			err = errors.New("keyEncryptionKeyDir: the store holds encrypted users; configure the world's key-encryption keys")
		}
		if err != nil {
			_ = backend.Close()
			return nil, nil, err
		}
		log.Warn("keyEncryptionKeyDir is not set: user data is stored unencrypted")
		return backend, nil, nil
	}
	keys, err := store.LoadKeyring(cfg.KeyEncryptionKeyDir)
	if err == nil {
		sealed, err = store.NewSealed(ctx, backend, keys, secret)
	}
	if err != nil {
		_ = backend.Close()
		return nil, nil, fmt.Errorf("keyEncryptionKeyDir: %w", err)
	}
	return sealed, sealed, nil
}

// maintainEncryption follows the keyring's files: a changed keyring (a
// rotation step) is put in force and the data keys are re-wrapped under
// its primary KEK. Every sweep interval it re-wraps what is left (keys
// other replicas created under the old primary) and encrypts plaintext
// rows that an older replica wrote during a rolling upgrade.
func maintainEncryption(ctx context.Context, sealed *store.Sealed, dir string, reloadEvery, sweepEvery time.Duration, log *slog.Logger) {
	current, _ := keyringDigest(dir)
	reload := time.NewTicker(reloadEvery)
	defer reload.Stop()
	sweep := time.NewTicker(sweepEvery)
	defer sweep.Stop()
	rewrap := func() {
		n, left, err := sealed.Rewrap(ctx)
		switch {
		case err != nil:
			log.Error("re-wrapping data keys failed", "error", err)
		case n > 0 || left > 0:
			log.Info("data keys re-wrapped under the primary key-encryption key", "rewrapped", n, "remaining", left)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-reload.C:
			digest, err := keyringDigest(dir)
			if err != nil || digest == current {
				continue
			}
			keys, err := store.LoadKeyring(dir)
			if err != nil {
				log.Error("keyring change rejected; keeping the current keys", "error", err)
				continue
			}
			current = digest
			sealed.SetKeys(keys)
			log.Info("keyring reloaded", "primary", keys.Primary(), "keys", keys.IDs())
			rewrap()
		case <-sweep.C:
			rewrap()
			if users, decisions, err := sealed.MigratePlaintext(ctx); err != nil {
				log.Error("encrypting plaintext rows failed", "error", err)
			} else if users+decisions > 0 {
				log.Info("plaintext rows encrypted", "users", users, "decisions", decisions)
			}
		}
	}
}

// keyringDigest hashes the keyring directory's files, to notice a change.
func keyringDigest(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		fmt.Fprintf(h, "%s:%d:", e.Name(), len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// scorer is VADER, or the configured model server with VADER as the
// fallback behind a circuit breaker: after 5 consecutive failed batches
// the server is left alone for 5s (doubling to 1m while it keeps failing),
// then probed with one batch.
func scorer(cfg *config.Config, m *metrics.Metrics) textemotion.Scorer {
	vader := textemotion.NewVader()
	if cfg.Model == nil {
		return vader
	}
	breaker := &textemotion.Breaker{Now: time.Now, OnChange: func(state string) {
		if state == textemotion.BreakerClosed {
			m.TextModelCircuitOpen.Set(0)
		} else {
			m.TextModelCircuitOpen.Set(1)
		}
	}}
	return &textemotion.Fallback{
		Primary:    textemotion.NewKServe(*cfg.Model, &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second}}),
		Secondary:  vader,
		Breaker:    breaker,
		OnFallback: func(reason string) { m.TextFallbacks.WithLabelValues(reason).Inc() },
		Observe: func(texts int, elapsed time.Duration, err error) {
			result := "ok"
			if err != nil {
				result = textemotion.Reason(err)
			}
			m.TextModelDuration.WithLabelValues(result).Observe(elapsed.Seconds())
			m.TextModelBatchTexts.Observe(float64(texts))
		},
	}
}

func readSecretFile(path, field string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s: %s is empty", field, path)
	}
	return v, nil
}

func readTokens(cfg *config.Config) (api.Tokens, error) {
	rw, err := readSecretFile(cfg.TokenFile, "tokenFile")
	if err != nil {
		return api.Tokens{}, err
	}
	ro, err := readSecretFile(cfg.ReadOnlyTokenFile, "readOnlyTokenFile")
	if err != nil {
		return api.Tokens{}, err
	}
	tokens := api.Tokens{ReadWrite: rw, ReadOnly: ro}
	if cfg.BackupTokenFile != "" {
		if tokens.Backup, err = readSecretFile(cfg.BackupTokenFile, "backupTokenFile"); err != nil {
			return api.Tokens{}, err
		}
	}
	if cfg.ClientTokensFile != "" {
		data, err := os.ReadFile(cfg.ClientTokensFile)
		if err != nil {
			return api.Tokens{}, fmt.Errorf("clientTokensFile: %w", err)
		}
		if tokens.Clients, err = auth.ParseClients(data); err != nil {
			return api.Tokens{}, fmt.Errorf("clientTokensFile %s: %w", cfg.ClientTokensFile, err)
		}
	}
	if cfg.UserTokenKeyFile != "" {
		// Raw bytes, like the pseudonymization key: no trimming.
		key, err := os.ReadFile(cfg.UserTokenKeyFile)
		if err != nil {
			return api.Tokens{}, fmt.Errorf("userTokenKeyFile: %w", err)
		}
		if tokens.Users, err = auth.NewUserTokens(key, cfg.Program); err != nil {
			return api.Tokens{}, err
		}
	}
	return tokens, nil
}

// reloadTokens re-reads the token files every interval, so a rotated
// Secret (or a new client) takes effect without a restart or a
// configuration change; an unreadable set keeps the current one.
func reloadTokens(ctx context.Context, server *api.Server, current func() *config.Config, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	lastErr := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		tokens, err := readTokens(current())
		if err != nil {
			if err.Error() != lastErr {
				log.Error("token files unreadable; keeping the current tokens", "error", err)
			}
			lastErr = err.Error()
			continue
		}
		lastErr = ""
		server.SetTokens(tokens)
	}
}
