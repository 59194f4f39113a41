package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	"github.com/attune-io/attune/internal/devstack/proc"
	"github.com/attune-io/attune/internal/simulator"
)

// startPrometheus runs Debian's prometheus binary on loopback, scraping the
// given engines of p every second over HTTPS (trusting the world's CA
// bundle, for the program's Service name) with their read-only token.
func startPrometheus(t *testing.T, p *wellbeingv1alpha1.MeditationProgram, targets []int, tokenFile string) string {
	t.Helper()
	binary, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus binary not found: install Debian's prometheus package (.ci/run does) to run the Prometheus source test")
	}
	port, err := proc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, caBundle(t, p.Namespace), 0o600); err != nil {
		t.Fatal(err)
	}
	var list []string
	for _, p := range targets {
		list = append(list, fmt.Sprintf("'127.0.0.1:%d'", p))
	}
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: attune-engines
    scheme: https
    tls_config:
      ca_file: %s
      server_name: %s
    authorization:
      credentials_file: %s
    static_configs:
      - targets: [%s]
`, caFile, controllers.EngineServerName(p), tokenFile, strings.Join(list, ", "))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	cmd := exec.Command(binary, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); _ = logFile.Close() })
	address := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitUpTo(t, 30*time.Second, "prometheus ready", func() error {
		resp, err := http.Get(address + "/-/ready")
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	return address
}

func TestPrometheusSourceAgainstRealPrometheus(t *testing.T) {
	ctx := context.Background()
	setupWorld(t, "observatory", wellbeingv1alpha1.ContextSocial)
	program := tunedProgram("observatory", "scraped")
	program.Spec.Strength = wellbeingv1alpha1.StrengthBounds{Initial: 0.5, Min: 0.1, Max: 0.9}
	// Two replicas on a shared store: each exports the whole cohort, and
	// the default queries must not add them up.
	sharedStore(program, "scraped-postgres", 2)
	f := startLoop(t, "observatory", program, 2)
	address := startPrometheus(t, program, f.ports, filepath.Join(f.dirs[0], "token", "read-only-token"))

	f.simulate(40, 3)

	// The operator, switched to the Prometheus source, observes the loss.
	updateSpec(t, program, func(program *wellbeingv1alpha1.MeditationProgram) {
		program.Spec.Tuning.Source = wellbeingv1alpha1.LossSource{Type: wellbeingv1alpha1.LossSourcePrometheus, Prometheus: &wellbeingv1alpha1.PrometheusSource{Address: address}}
	})
	waitUpTo(t, 60*time.Second, "loss observed through Prometheus", func() error {
		p := &wellbeingv1alpha1.MeditationProgram{}
		get(t, client.ObjectKeyFromObject(program), p)
		c := condition(p, wellbeingv1alpha1.ConditionLossObserved)
		if !strings.Contains(c, "True/Observed") || !strings.Contains(c, "prometheus") {
			return fmt.Errorf("LossObserved %s", c)
		}
		if p.Status.Loss == nil || p.Status.Loss.CohortSize != 40 {
			return fmt.Errorf("loss %+v, want a cohort of 40", p.Status.Loss)
		}
		return nil
	})

	reader := &controllers.PrometheusLossReader{Access: loopbackPrometheus}
	engineReader := &controllers.EngineLossReader{Client: k8s}
	fromEngines, err := engineReader.Read(ctx, program, 11)
	if err != nil {
		t.Fatal(err)
	}
	waitUpTo(t, 10*time.Second, "Prometheus agrees with the engines", func() error {
		m, err := reader.Read(ctx, program, 11)
		if err != nil {
			return err
		}
		if math.Abs(m.Loss-fromEngines.Loss) > 1e-9 || m.CohortSize != fromEngines.CohortSize {
			return fmt.Errorf("prometheus %.6f/%d, engines %.6f/%d", m.Loss, m.CohortSize, fromEngines.Loss, fromEngines.CohortSize)
		}
		return nil
	})

	// Bad answers from the real server are errors with a reason.
	cases := map[string]struct {
		query, reason, message string
		minCohort              int
	}{
		"no series":        {`absent(up)`, wellbeingv1alpha1.ReasonMetricsUnavailable, "no series", 11},
		"two series":       {`vector(1) or label_replace(vector(2), "x", "y", "", "")`, wellbeingv1alpha1.ReasonMetricsUnavailable, "2 series", 11},
		"NaN":              {`vector(0) / 0`, wellbeingv1alpha1.ReasonMetricsUnavailable, "not a finite number", 11},
		"invalid PromQL":   {`sum(`, wellbeingv1alpha1.ReasonMetricsUnavailable, "query failed", 11},
		"cohort too small": {``, wellbeingv1alpha1.ReasonCohortTooSmall, "below the world's minimum of 100", 100},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := program.DeepCopy()
			p.Spec.Tuning.Source.Prometheus.Query = tc.query
			_, err := reader.Read(ctx, p, tc.minCohort)
			var me *controllers.MeasurementError
			if !errors.As(err, &me) || me.Reason != tc.reason || !strings.Contains(me.Message, tc.message) {
				t.Fatalf("err = %v, want reason %s mentioning %q", err, tc.reason, tc.message)
			}
		})
	}
	unreachable := program.DeepCopy()
	unreachable.Spec.Tuning.Source.Prometheus.Address = "http://127.0.0.1:1"
	if _, err := reader.Read(ctx, unreachable, 11); err == nil {
		t.Error("an unreachable Prometheus gave a measurement")
	}

	// The engine source on a shared store: any one engine has the whole
	// cohort, so one engine down loses nothing of it.
	f.stopEngine(1)
	one, err := engineReader.Read(ctx, program, 11)
	if err != nil || one.CohortSize != 40 || !strings.Contains(one.Sources, "shared store") {
		t.Fatalf("one of two engines down: %+v, %v; want all 40 users through the other", one, err)
	}
	wantCohortTooSmall(t, engineReader, program, 41)
}

// TestEngineReaderSumsReplicaCohorts: on the embedded store each engine
// reports only its own users (during a rollout an old and a new pod are
// both ready), so the engine source sums them, and a partial answer is
// valid only if the reachable cohort meets the minimum.
func TestEngineReaderSumsReplicaCohorts(t *testing.T) {
	ctx := context.Background()
	setupWorld(t, "rollout", wellbeingv1alpha1.ContextSocial)
	program := tunedProgram("rollout", "surging")
	program.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual
	f := startLoop(t, "rollout", program, 2) // one replica, two ready pods mid-rollout

	f.simulate(40, 3)
	engineReader := &controllers.EngineLossReader{Client: k8s}
	whole, err := engineReader.Read(ctx, program, 11)
	if err != nil || whole.CohortSize != 40 || !strings.Contains(whole.Sources, "2/2 engines answered") {
		t.Fatalf("both engines: %+v, %v; want their 20 + 20 users", whole, err)
	}
	f.stopEngine(1)
	partial, err := engineReader.Read(ctx, program, 11)
	if err != nil || partial.CohortSize != 20 || !strings.Contains(partial.Sources, "1/2 engines answered") {
		t.Fatalf("one of two engines down: %+v, %v; want the other's 20 users", partial, err)
	}
	wantCohortTooSmall(t, engineReader, program, 21)
}

// simulate lets a simulated cohort (nobody leaving) live through the
// fixture's engines for three ticks.
func (f *loopFixture) simulate(users int, seed uint64) {
	f.t.Helper()
	cfg := population(f.program, users, seed)
	cfg.ChurnPerHour = 0
	driver := &simulator.Driver{Population: simulator.New(cfg), Engines: f.urls(), Token: f.token, ClientOptions: engineTrust(f.t, f.program)}
	for range 3 {
		if _, err := driver.Tick(context.Background()); err != nil {
			f.t.Fatal(err)
		}
	}
}

// stopEngine stops engine i; its pod stays announced as Ready.
func (f *loopFixture) stopEngine(i int) {
	f.engines[i].Stop()
	f.engines[i] = nil
}

// wantCohortTooSmall fails unless the engine source refuses the program's
// cohort as below minCohort.
func wantCohortTooSmall(t *testing.T, reader *controllers.EngineLossReader, p *wellbeingv1alpha1.MeditationProgram, minCohort int) {
	t.Helper()
	_, err := reader.Read(context.Background(), p, minCohort)
	var me *controllers.MeasurementError
	if !errors.As(err, &me) || me.Reason != wellbeingv1alpha1.ReasonCohortTooSmall {
		t.Fatalf("minimum cohort %d: err = %v, want CohortTooSmall", minCohort, err)
	}
}
