package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	"github.com/attune-io/attune/engine/auth"
	engineclient "github.com/attune-io/attune/engine/client"
	"github.com/attune-io/attune/internal/simulator"
)

// serveWebClient serves the reference web client (web/dist, built by
// `make web`) on a loopback port until ctx ends, with /v1/ passed through
// to the engine, so the page and the API share one origin and the engine
// needs no CORS. It returns the address to open: the launch fragment names
// the user and carries the token, and the browser never sends a fragment
// to a server.
// trust verifies an HTTPS engine (nil: plain HTTP, or the system's roots).
func serveWebClient(ctx context.Context, dist, engineURL, token, user string, trust *tls.Config) (string, error) {
	if _, err := os.Stat(filepath.Join(dist, "index.html")); err != nil {
		return "", fmt.Errorf("the web client is not built (make web): %w", err)
	}
	engine, err := url.Parse(engineURL)
	if err != nil {
		return "", fmt.Errorf("engine URL: %w", err)
	}
	mux := http.NewServeMux()
	proxy := httputil.NewSingleHostReverseProxy(engine)
	if trust != nil {
		proxy.Transport = &http.Transport{TLSClientConfig: trust.Clone(), ForceAttemptHTTP2: true}
	}
	mux.Handle("/v1/", proxy)
	mux.Handle("/", http.FileServerFS(os.DirFS(dist)))
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("listen for the web client: %w", err)
	}
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := server.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "web client:", err)
		}
	}()
	context.AfterFunc(ctx, func() { _ = server.Close() })
	fragment := url.Values{"user": {user}, "token": {token}}
	return fmt.Sprintf("http://%s/#%s", listener.Addr(), fragment.Encode()), nil
}

// demoWebClientUser is the simulated person whose view the demo prints.
const demoWebClientUser = 0

// printWebClient serves the web client for one simulated user and says
// where to open it, or why it is not served. engines are the engines'
// URLs; the user is on the one the simulator spreads them to. token is
// the world server's (a client token with ingest or decide): it mints a
// user token for that one person (POST /v1/users/{id}/tokens), and only
// the user token reaches the browser, as a world server would hand it to
// its user's app. trust verifies HTTPS engines (webClientTLS).
func printWebClient(ctx context.Context, say func(string, ...any), repoRoot string, engines []string, token string, trust *tls.Config) {
	if len(engines) == 0 {
		return
	}
	user := simulator.UserID(demoWebClientUser)
	engineURL := engines[demoWebClientUser%len(engines)]
	opts := []engineclient.Option{engineclient.WithToken(token)}
	if trust != nil {
		opts = append(opts, engineclient.WithTLSConfig(trust))
	}
	world, err := engineclient.New(engineURL, opts...)
	if err != nil {
		say("reference web client not served: %v", err)
		return
	}
	minted, err := world.MintUserToken(ctx, user, auth.MaxUserTokenTTL)
	if err != nil {
		say("reference web client not served: mint a user token: %v", err)
		return
	}
	link, err := serveWebClient(ctx, filepath.Join(repoRoot, "web", "dist"), engineURL, minted.Token, user, trust)
	if err != nil {
		say("reference web client not served: %v", err)
		return
	}
	say("a person's view: open %s\n  (the reference web client as %s, with a token for that user alone, valid until %s)", link, user, minted.ExpiresAt.Format(time.RFC3339))
}

// webClientTLS verifies a program's engines as the operator does: the
// world's CA bundle (the ConfigMap the operator publishes) and the name
// on the program's certificate, whatever address the engine is reached at.
func webClientTLS(ctx context.Context, c client.Reader, p *wellbeingv1alpha1.MeditationProgram) (*tls.Config, error) {
	cm := &corev1.ConfigMap{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: controllers.CABundleConfigMapName}, cm); err != nil {
		return nil, fmt.Errorf("read the world's CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cm.Data[controllers.CABundleKey])) {
		return nil, fmt.Errorf("the world's CA bundle (ConfigMap %s, key %s) holds no certificate", controllers.CABundleConfigMapName, controllers.CABundleKey)
	}
	return &tls.Config{RootCAs: pool, ServerName: controllers.EngineServerName(p), MinVersion: tls.VersionTLS12}, nil
}
