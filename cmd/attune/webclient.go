package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/attune-io/attune/internal/simulator"
)

// serveWebClient serves the reference web client (web/dist, built by
// `make web`) on a loopback port until ctx ends, with /v1/ passed through
// to the engine, so the page and the API share one origin and the engine
// needs no CORS. It returns the address to open: the launch fragment names
// the user and carries the token, and the browser never sends a fragment
// to a server.
func serveWebClient(ctx context.Context, dist, engineURL, token, user string) (string, error) {
	if _, err := os.Stat(filepath.Join(dist, "index.html")); err != nil {
		return "", fmt.Errorf("the web client is not built (make web): %w", err)
	}
	engine, err := url.Parse(engineURL)
	if err != nil {
		return "", fmt.Errorf("engine URL: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", httputil.NewSingleHostReverseProxy(engine))
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
// URLs; the user is on the one the simulator spreads them to.
func printWebClient(ctx context.Context, say func(string, ...any), repoRoot string, engines []string, token string) {
	if len(engines) == 0 {
		return
	}
	user := simulator.UserID(demoWebClientUser)
	link, err := serveWebClient(ctx, filepath.Join(repoRoot, "web", "dist"), engines[demoWebClientUser%len(engines)], token, user)
	if err != nil {
		say("reference web client not served: %v", err)
		return
	}
	say("a person's view: open %s\n  (the reference web client as %s; the link carries the engine's token, so keep it to yourself)", link, user)
}
