package main

import (
	"context"
	"log"
	"log/slog"
	"regexp"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// peerAddress matches the client address net/http puts in its messages
// ("http: TLS handshake error from 203.0.113.7:51234: ...", "http: panic
// serving [2001:db8::1]:443: ...").
var peerAddress = regexp.MustCompile(`\b(from|serving) (\[[0-9A-Fa-f:.%a-z]+\]|[0-9.]+|[0-9A-Fa-f:]+):[0-9]+`)

// serverErrorLog is the http.Server's ErrorLog: net/http's messages go to
// the engine's log with no client address in them. Once user apps talk
// to the engine directly, a peer's address is an end user's IP address
// (personal data), and failed handshakes (scanners, clients that do not
// trust the certificate) can come by the thousand: those are logged at
// debug as "TLS handshake refused", without the peer, and counted in
// handshakes; other messages stay at warn, the address replaced.
func serverErrorLog(logger *slog.Logger, handshakes prometheus.Counter) *log.Logger {
	return log.New(errorLogWriter{logger: logger, handshakes: handshakes}, "", 0)
}

type errorLogWriter struct {
	logger     *slog.Logger
	handshakes prometheus.Counter
}

func (w errorLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSuffix(string(p), "\n")
	if strings.Contains(msg, "TLS handshake error") {
		w.handshakes.Inc()
		// The error text after the address is dropped too: it can
		// quote what the peer sent.
		w.logger.Debug("TLS handshake refused")
		return len(p), nil
	}
	w.logger.LogAttrs(context.Background(), slog.LevelWarn, peerAddress.ReplaceAllString(msg, "$1 a client"))
	return len(p), nil
}
