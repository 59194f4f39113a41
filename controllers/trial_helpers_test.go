package controllers_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	"github.com/attune-io/attune/engine/api"
	engineconfig "github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/effects"
	"github.com/attune-io/attune/engine/metrics"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
)

// trialClock is the engines' clock: the wall clock plus the time the
// trial has simulated, so that a trial of many outcome windows takes
// seconds and the engines' clock keeps running between its rounds. The
// engines' answers are therefore stamped ahead of the wall clock; the
// operator only refuses a measurement older than staleAfter.
type trialClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *trialClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *trialClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// trialEngine is a real engine in process: engine/service behind the
// engine/api handler on a loopback HTTP server, over a real store, with
// the configuration, tokens and pseudonymisation key the operator wrote
// for the program (the files a pod would mount, read from the objects).
type trialEngine struct {
	t       *testing.T
	program *wellbeingv1alpha1.MeditationProgram
	url     string
	port    int
	svc     *service.Service
	rw, ro  string
	config  string // the ConfigMap's config.json in force
	// http trusts the world's CA bundle for the program's Service name,
	// as the operator does.
	http *http.Client
}

// programEngineConfig waits for the program's engine ConfigMap and
// returns its configuration as the engine would parse it.
func programEngineConfig(t *testing.T, p *wellbeingv1alpha1.MeditationProgram) (*engineconfig.Config, string) {
	t.Helper()
	cm := &corev1.ConfigMap{}
	eventually(t, "engine config", func() error {
		return k8s.Get(context.Background(), client.ObjectKey{Namespace: p.Namespace, Name: p.Name + "-engine-config"}, cm)
	})
	raw := cm.Data[engineconfig.FileName]
	cfg, err := engineconfig.Parse([]byte(raw))
	if err != nil {
		t.Fatalf("the operator's engine config: %v", err)
	}
	return cfg, raw
}

// startTrialEngine starts one engine of p over db.
func startTrialEngine(t *testing.T, p *wellbeingv1alpha1.MeditationProgram, db store.Store, clock *trialClock) *trialEngine {
	t.Helper()
	t.Cleanup(func() { _ = db.Close() })
	cfg, raw := programEngineConfig(t, p)
	tokens, key := &corev1.Secret{}, &corev1.Secret{}
	eventually(t, "engine token and key", func() error {
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: p.Namespace, Name: p.Name + "-engine-token"}, tokens); err != nil {
			return err
		}
		return k8s.Get(context.Background(), client.ObjectKey{Namespace: p.Namespace, Name: controllers.PseudonymizationKeySecretName}, key)
	})
	e := &trialEngine{t: t, program: p, config: raw,
		rw: string(bytes.TrimSpace(tokens.Data[controllers.TokenKey])), ro: string(bytes.TrimSpace(tokens.Data[controllers.ReadOnlyTokenKey]))}
	logger := slog.New(slog.DiscardHandler)
	m := metrics.New(cfg.Program)
	svc, err := service.New(cfg, service.Options{Store: db, Key: key.Data[controllers.PseudonymizationKeySecretKey], Metrics: m, Now: clock.Now, Logger: logger, EffectsMinInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	m.RegisterCohort(svc)
	// HTTPS with the program's serving certificate, as a real engine.
	serving := &corev1.Secret{}
	eventually(t, "serving certificate", func() error {
		return k8s.Get(context.Background(), client.ObjectKey{Namespace: p.Namespace, Name: p.Name + "-engine-tls"}, serving)
	})
	cert, err := tls.X509KeyPair(serving.Data[corev1.TLSCertKey], serving.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(api.New(svc, m, api.Tokens{ReadWrite: e.rw, ReadOnly: e.ro}, logger))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caBundle(t, p.Namespace))
	e.http = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: controllers.EngineServerName(p), MinVersion: tls.VersionTLS12}}}
	t.Cleanup(e.http.CloseIdleConnections)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	e.url, e.svc = srv.URL, svc
	e.port, _ = strconv.Atoi(port)
	return e
}

// openBolt is the embedded store of one engine.
func openBolt(t *testing.T) store.Store {
	t.Helper()
	db, err := store.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// reload follows the ConfigMap, as a real engine watches its file (the
// operator rewrites the strength as it tunes).
func (e *trialEngine) reload() {
	e.t.Helper()
	cm := &corev1.ConfigMap{}
	get(e.t, client.ObjectKey{Namespace: e.program.Namespace, Name: e.program.Name + "-engine-config"}, cm)
	raw := cm.Data[engineconfig.FileName]
	if raw == e.config {
		return
	}
	cfg, err := engineconfig.Parse([]byte(raw))
	if err != nil {
		e.t.Fatalf("the operator's engine config: %v", err)
	}
	e.svc.SetConfig(cfg)
	e.config = raw
}

// call sends a request with the read-write token (ro: the read-only one)
// and decodes a 200 answer into out.
func (e *trialEngine) call(method, path string, readOnly bool, body, out any) {
	e.t.Helper()
	var reader io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.url+path, reader)
	if err != nil {
		e.t.Fatal(err)
	}
	token := e.rw
	if readOnly {
		token = e.ro
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("%s %s: %s %s", method, path, resp.Status, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			e.t.Fatalf("%s %s: %v (%s)", method, path, err, raw)
		}
	}
}

// cohort is the engine's GET /v1/cohort, read as the operator reads it.
func (e *trialEngine) cohort() contract.CohortSummary {
	e.t.Helper()
	var c contract.CohortSummary
	e.call("GET", "/v1/cohort", true, nil, &c)
	return c
}

// announce makes the engines the program's Ready engine pods.
func announce(t *testing.T, p *wellbeingv1alpha1.MeditationProgram, engines ...*trialEngine) {
	t.Helper()
	waitDeployment(t, p)
	f := &loopFixture{t: t, program: p}
	for i, e := range engines {
		f.ports = append(f.ports, e.port)
		f.announcePod(i)
	}
}

// Moods of the simulated trial (questionnaire 1–5, emotion (mood−1)/4;
// the program's emotion target is 0.7). Every decision point starts
// from a baseline mood; over the outcome window an untreated user, or
// one who did not complete the intervention, reports the baseline mood
// again, and one who completed it reports the intervention's mood.
const (
	baselineMood = 3 // emotion 0.5
	helpsMood    = 4 // emotion 0.75: nearer the target, the loss falls
	harmsMood    = 2 // emotion 0.25: further from it, the loss rises
	// completion is the share of delivered interventions users complete;
	// the outcome is intention-to-treat.
	completion = 0.85
)

// trialUser is one simulated user and the engines they reach, one per
// round (on the embedded store always the same one).
type trialUser struct {
	id      string
	engines []*trialEngine
}

// trial is a micro-randomised trial run through the engines' API: the
// engines decide, the simulated users answer with a mood whose true
// effect per intervention the test chooses (truth: the mood a completed
// intervention leads to).
type trial struct {
	t      *testing.T
	clock  *trialClock
	users  []trialUser
	truth  map[string]int
	rng    *rand.Rand
	rounds int
	// delivered counts the decisions by action.
	delivered map[string]int
}

func newTrial(t *testing.T, clock *trialClock, truth map[string]int) *trial {
	return &trial{t: t, clock: clock, truth: truth, rng: rand.New(rand.NewPCG(1, 2)), delivered: map[string]int{}}
}

// enrol adds n users who consent to behavioural telemetry through the
// first of engines and take turns over all of them.
func (tr *trial) enrol(prefix string, n int, engines ...*trialEngine) {
	tr.t.Helper()
	for i := range n {
		u := trialUser{id: fmt.Sprintf("%s-%02d", prefix, i), engines: engines}
		engines[0].call("POST", "/v1/users/"+u.id+"/consent", false, map[string]any{"scopes": []string{"behaviour", "questionnaire"}}, nil)
		tr.users = append(tr.users, u)
	}
}

func (tr *trial) engineOf(u trialUser, i int) *trialEngine {
	return u.engines[(i+tr.rounds)%len(u.engines)]
}

// send posts each engine's samples as one batch.
func (tr *trial) send(batches map[*trialEngine][]map[string]any) {
	tr.t.Helper()
	for e, samples := range batches {
		e.call("POST", "/v1/telemetry", false, samples, nil)
	}
}

func (tr *trial) mood(u trialUser, mood int) map[string]any {
	return map[string]any{"user": u.id, "kind": "questionnaire", "at": tr.clock.Now().Format(time.RFC3339Nano), "mood": mood}
}

// round is one decision point of every user: the baseline mood, a
// decision, and after the outcome window the mood that settles its
// outcome; the next decision point is one window later.
func (tr *trial) round() {
	tr.t.Helper()
	engines := map[*trialEngine]bool{}
	for _, u := range tr.users {
		for _, e := range u.engines {
			engines[e] = true
		}
	}
	for e := range engines {
		e.reload()
	}
	window := tr.users[0].engines[0].svc.Config().Dose.OutcomeWindowOrDefault()
	baseline := map[*trialEngine][]map[string]any{}
	for i, u := range tr.users {
		e := tr.engineOf(u, i)
		baseline[e] = append(baseline[e], tr.mood(u, baselineMood))
	}
	tr.send(baseline)
	decisions := make([]service.Decision, len(tr.users))
	for i, u := range tr.users {
		tr.engineOf(u, i).call("POST", "/v1/users/"+u.id+"/decisions", false, map[string]any{"context": []string{"between_tasks"}}, &decisions[i])
		tr.delivered[decisions[i].Action]++
	}
	tr.clock.Advance(window)
	outcomes := map[*trialEngine][]map[string]any{}
	for i, u := range tr.users {
		e, d, mood := tr.engineOf(u, i), decisions[i], baselineMood
		if d.Action != "none" {
			completed := tr.rng.Float64() < completion
			if completed {
				mood = tr.truth[d.Action]
			}
			outcomes[e] = append(outcomes[e], map[string]any{"user": u.id, "kind": "intervention", "at": tr.clock.Now().Format(time.RFC3339Nano),
				"intervention": d.Action, "completed": completed, "decision": d.ID})
		}
		outcomes[e] = append(outcomes[e], tr.mood(u, mood))
	}
	tr.send(outcomes)
	tr.clock.Advance(window)
	tr.rounds++
}

// runUntil runs rounds until done holds after one (checked after each
// round's outcomes, the only requests that change an engine's effects),
// at most max of them.
func (tr *trial) runUntil(what string, max int, done func() error) {
	tr.t.Helper()
	var err error
	for range max {
		tr.round()
		if err = done(); err == nil {
			tr.t.Logf("trial: %s after %d rounds of %d users (decisions %v)", what, tr.rounds, len(tr.users), tr.delivered)
			return
		}
	}
	tr.t.Fatalf("trial: %s not reached in %d rounds: %v (decisions %v)", what, tr.rounds, err, tr.delivered)
}

// effectOf is the published effect of an intervention in a cohort.
func effectOf(c contract.CohortSummary, intervention wellbeingv1alpha1.Intervention) (effects.Effect, bool) {
	for _, e := range c.Effects {
		if e.Intervention == string(intervention) {
			return e, true
		}
	}
	return effects.Effect{}, false
}

// wantSign is nil when the cohort publishes the intervention's effect
// with the sign given (helps: interval below zero; harms: above).
func wantSign(c contract.CohortSummary, intervention wellbeingv1alpha1.Intervention, sign effectSign) error {
	e, ok := effectOf(c, intervention)
	if !ok {
		return fmt.Errorf("%s not published (effects %+v)", intervention, c.Effects)
	}
	switch {
	case sign == signHelps && !effects.Helps(e), sign == signHarms && !effects.Harms(e),
		sign == signSpans && effects.ExcludesZero(e):
		return fmt.Errorf("%s effect %s, want it to %s", intervention, describe(e), sign)
	}
	return nil
}

type effectSign string

const (
	signHelps effectSign = "lie below zero"
	signHarms effectSign = "lie above zero"
	signSpans effectSign = "span zero"
)

func describe(e effects.Effect) string {
	return fmt.Sprintf("%s %+.4f [%+.4f, %+.4f] (se %.4f, %d users, %d both, %d decisions: %d treated, %d control)",
		e.Intervention, e.Estimate, e.Lower, e.Upper, e.StdErr, e.Users, e.UsersBoth, e.Decisions, e.Treated, e.Control)
}
