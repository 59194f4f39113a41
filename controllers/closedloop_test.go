package controllers_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gonum.org/v1/gonum/stat"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	"github.com/attune-io/attune/controllers/tuning"
	engineconfig "github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/internal/devstack/engineruntime"
	"github.com/attune-io/attune/internal/devstack/proc"
	"github.com/attune-io/attune/internal/simulator"
	"github.com/attune-io/attune/internal/testutil"
	"github.com/attune-io/attune/test/postgres"
)

var (
	engineBinaryOnce sync.Once
	engineBinary     string
	engineBinaryErr  error
)

// buildEngine compiles cmd/engine once per test run.
func buildEngine(t *testing.T) string {
	t.Helper()
	engineBinaryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "attune-engine-bin")
		if err != nil {
			engineBinaryErr = err
			return
		}
		engineBinary = filepath.Join(dir, "engine")
		engineBinaryErr = engineruntime.BuildEngine(engineBinary)
	})
	if engineBinaryErr != nil {
		t.Fatal(engineBinaryErr)
	}
	return engineBinary
}

// loopFixture is a program whose engines run as real processes on loopback
// and are announced to the operator as Ready pods (envtest has no kubelet).
type loopFixture struct {
	t       *testing.T
	program *wellbeingv1alpha1.MeditationProgram
	engines []*engineruntime.Process
	dirs    []string
	ports   []int
	token   string
	// propagation delays the engines' view of ConfigMap and Secret changes.
	propagation engineruntime.Propagation
	// noPush starts the engines without the clients file, so that the
	// operator's strength push (its tuning client) is refused and the
	// strength reaches them only through the ConfigMap's files.
	noPush bool
}

func startLoop(t *testing.T, world string, program *wellbeingv1alpha1.MeditationProgram, replicas int) *loopFixture {
	t.Helper()
	return startLoopWith(t, world, program, replicas, engineruntime.Propagation{})
}

// startLoopWith is startLoop with the engines' ConfigMap and Secret
// changes reaching their files as late as propagation says, per pod.
func startLoopWith(t *testing.T, world string, program *wellbeingv1alpha1.MeditationProgram, replicas int, propagation engineruntime.Propagation) *loopFixture {
	t.Helper()
	ctx := context.Background()
	buildEngine(t)
	if store := program.Spec.Engine.Store; store.Type == wellbeingv1alpha1.StorePostgreSQL {
		// The database the platform team would provide, and its Secret.
		server := postgres.Start(t)
		create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: store.Postgres.SecretRef.Name, Namespace: world},
			Data: map[string][]byte{engineconfig.PostgresConnectionStringKey: []byte(server.ConnString)}})
	}
	create(t, program)
	cmName, tokenName := program.Name+"-engine-config", program.Name+"-engine-token"
	eventually(t, "engine config and token", func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: world, Name: cmName}, &corev1.ConfigMap{}); err != nil {
			return err
		}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: world, Name: program.Name + "-engine-tls"}, &corev1.Secret{}); err != nil {
			return err
		}
		return k8s.Get(ctx, client.ObjectKey{Namespace: world, Name: tokenName}, &corev1.Secret{})
	})
	f := &loopFixture{t: t, program: program, propagation: propagation}
	secret := &corev1.Secret{}
	get(t, client.ObjectKey{Namespace: world, Name: tokenName}, secret)
	f.token = string(secret.Data[controllers.TokenKey])
	f.noPush = os.Getenv("ATTUNE_CLOSED_LOOP_NO_PUSH") != ""
	for i := range replicas {
		port, err := proc.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		f.ports = append(f.ports, port)
		f.dirs = append(f.dirs, t.TempDir())
		f.startEngine(i)
		f.announcePod(i)
	}
	t.Cleanup(f.stopEngines)
	return f
}

func (f *loopFixture) source() engineruntime.Source {
	clients := controllers.ClientsFileSecretName(f.program)
	if f.noPush {
		clients = ""
	}
	return engineruntime.Source{
		Namespace: f.program.Namespace, ConfigMap: f.program.Name + "-engine-config", TokenSecret: f.program.Name + "-engine-token",
		KeySecret: controllers.PseudonymizationKeySecretName, KeySecretKey: controllers.PseudonymizationKeySecretKey,
		StoreSecret: storeSecretName(f.program), TLSSecret: f.program.Name + "-engine-tls",
		// As the Deployment mounts them (withAccessVolumes): the PodMonitor's
		// metrics token is in the clients file (monitoring_test.go).
		ClientsSecret: clients, UserTokenKeySecret: controllers.UserTokenKeySecretName(f.program),
	}
}

func storeSecretName(p *wellbeingv1alpha1.MeditationProgram) string {
	if p.Spec.Engine.Store.Postgres == nil {
		return ""
	}
	return p.Spec.Engine.Store.Postgres.SecretRef.Name
}

func (f *loopFixture) startEngine(i int) {
	f.t.Helper()
	pod := fmt.Sprintf("%s/%s-engine-%d", f.program.Namespace, f.program.Name, i)
	p, err := engineruntime.Start(context.Background(), k8s, buildEngine(f.t), f.dirs[i], "127.0.0.1", f.ports[i], f.source(),
		engineruntime.WithDelay(f.propagation.DelayFor(pod)))
	if err != nil {
		f.t.Fatal(err)
	}
	if i < len(f.engines) {
		f.engines[i] = p
	} else {
		f.engines = append(f.engines, p)
	}
}

func (f *loopFixture) stopEngines() {
	for i, e := range f.engines {
		if e != nil {
			e.Stop()
			f.engines[i] = nil
		}
	}
}

func (f *loopFixture) urls() []string {
	var out []string
	for _, p := range f.ports {
		out = append(out, fmt.Sprintf("https://127.0.0.1:%d", p))
	}
	return out
}

// announcePod creates a Ready engine pod whose IP and port lead to engine i,
// the way a kubelet would report it.
func (f *loopFixture) announcePod(i int) {
	f.t.Helper()
	ctx := context.Background()
	// The pod is what the Deployment's template makes, except that each
	// engine process has its own loopback port.
	deployment := &appsv1.Deployment{}
	get(f.t, client.ObjectKey{Namespace: f.program.Namespace, Name: f.program.Name + "-engine"}, deployment)
	template := deployment.Spec.Template.DeepCopy()
	template.Spec.Containers[0].Ports[0].ContainerPort = int32(f.ports[i])
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-engine-%d", f.program.Name, i), Namespace: f.program.Namespace, Labels: template.Labels},
		Spec:       template.Spec,
	}
	create(f.t, pod)
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: "127.0.0.1",
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
	}
	if err := k8s.Status().Update(ctx, pod); err != nil {
		f.t.Fatal(err)
	}
}

// drive lets the simulated population live through the engines until
// stop is called.
func drive(t *testing.T, d *simulator.Driver, every time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Run(ctx, every, func(_ simulator.TickReport, err error) {
			if err != nil && !strings.Contains(err.Error(), "connection refused") {
				t.Logf("simulator tick: %v", err)
			}
		})
	}()
	return func() { cancel(); <-done }
}

// tunedProgram is tuned every 10s from 0.9, with its engines' time
// constants on the simulated population's accelerated clock.
func tunedProgram(namespace, name string) *wellbeingv1alpha1.MeditationProgram {
	p := newProgram(namespace, name, namespace)
	p.Spec.Strength = wellbeingv1alpha1.StrengthBounds{Initial: 0.9, Min: 0.1, Max: 0.9}
	p.Spec.Tuning = wellbeingv1alpha1.Tuning{Mode: wellbeingv1alpha1.TuningAuto, Interval: &metav1.Duration{Duration: 10 * time.Second}, MaxStep: 0.05}
	simulator.TimeScale{Speedup: simulator.DefaultSpeedup}.EngineTiming().ApplyToProgram(&p.Spec)
	return p
}

// population is a simulated cohort that wants what the program targets.
func population(p *wellbeingv1alpha1.MeditationProgram, users int, seed uint64) simulator.Config {
	cfg := simulator.DefaultConfig()
	cfg.Users, cfg.Seed = users, seed
	cfg.Target = simulator.Vec{p.Spec.Target.Attention, p.Spec.Target.Emotion, p.Spec.Target.Resilience}
	cfg.Weights = simulator.Vec{p.Spec.Weights.Attention, p.Spec.Weights.Emotion, p.Spec.Weights.Resilience}
	return cfg
}

// TestClosedLoopTunesTowardTheOptimum runs real engine processes and a
// simulated population that lives through their decisions, starting the
// program at the upper bound 0.9, where the sessions' dose burdens most
// people. The program is Manual until the cohort has lived at 0.9 for a
// while (a fresh cohort has felt no dose yet, so its loss still rises),
// then Auto: the operator must move the strength, in steps of at most
// maxStep, to within convergenceTolerance of the population's reference
// strength (the ground truth the simulator knows), hold it with
// LossObserved=False when the engines stop, and resume when they return.
//
// Time budget: maxStep is 0.1 (the CRD allows up to 0.5), so that the
// optimum is four steps from the bound rather than ten and the test stays
// near two minutes; and the population's day starts at 09:00, so that
// the tuning runs in the waking day (at night nobody sends telemetry and
// the operator only holds). The engines receive the ConfigMap's changes
// with a kubelet's propagation delay, scaled to the test's interval, and
// the operator's strength push brings each new strength in seconds
// (docs/tuning.md, "Propagation and the push"). For the measurement there:
// ATTUNE_CLOSED_LOOP_NO_PUSH=1 refuses the push (the engines run without
// the clients file), under which the loop had not converged within its
// 240 s, two thirds of the measurements being held StrengthPending;
// ATTUNE_CLOSED_LOOP_NO_PROPAGATION=1 lands every change within a second.
func TestClosedLoopTunesTowardTheOptimum(t *testing.T) {
	if testing.Short() {
		t.Skip("closed loop takes about two minutes")
	}
	setupWorld(t, "loop", wellbeingv1alpha1.ContextSocial)
	program := tunedProgram("loop", "tuned")
	program.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual
	program.Spec.Tuning.MaxStep = 0.1
	propagation := scaledKubeletPropagation(program)
	if os.Getenv("ATTUNE_CLOSED_LOOP_NO_PROPAGATION") != "" {
		propagation = engineruntime.Propagation{}
	}
	f := startLoopWith(t, "loop", program, 1, propagation)

	cohort := population(program, 120, 7)
	cohort.StartHour = 9
	// The reference: the strength whose dose helps this cohort most per
	// session, from an identical copy of it (the driver's own is not safe
	// to read while it runs).
	reference := simulator.New(cohort).ReferenceStrength(programInterventions(program), program.Spec.Strength.Min, program.Spec.Strength.Max)
	driver := &simulator.Driver{Population: simulator.New(cohort), Engines: f.urls(), Token: f.token, ClientOptions: engineTrust(t, program)}
	stopDriver := drive(t, driver, 500*time.Millisecond)
	// A closure: the driver is replaced after the outage, and the deferred
	// call must stop the one running then.
	defer func() { stopDriver() }()
	time.Sleep(20 * time.Second) // 2h40m simulated at 0.9
	updateSpec(t, program, func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Tuning.Mode = wellbeingv1alpha1.TuningAuto })
	auto := time.Now()

	// Tuning: the mean of the last three strengths in force (the tuner
	// dithers around its target by half a maxStep) within
	// convergenceTolerance of the reference, after at least three credited
	// measurements.
	var last *wellbeingv1alpha1.MeditationProgram
	measured := map[time.Time]string{} // each measurement's LossObserved reason
	waitUpTo(t, convergenceBudget(propagation), fmt.Sprintf("strength within %.2f of the population's reference %.3f", convergenceTolerance, reference), func() error {
		p := &wellbeingv1alpha1.MeditationProgram{}
		get(t, client.ObjectKeyFromObject(program), p)
		last = p
		if p.Status.LastTuneTime != nil {
			if c := apimeta.FindStatusCondition(p.Status.Conditions, wellbeingv1alpha1.ConditionLossObserved); c != nil {
				if _, seen := measured[p.Status.LastTuneTime.Time]; !seen && c.Reason == wellbeingv1alpha1.ReasonStrengthPending {
					t.Logf("measurement at %s held: %s", p.Status.LastTuneTime.Format(time.TimeOnly), c.Message)
				}
				measured[p.Status.LastTuneTime.Time] = c.Reason
			}
		}
		recent := testutil.RecentStrengths(p, 3)
		if len(p.Status.History) < 3 || math.Abs(stat.Mean(recent, nil)-reference) > convergenceTolerance {
			return fmt.Errorf("history %d, recent strengths %.3f, LossObserved %v", len(p.Status.History), recent, condition(p, wellbeingv1alpha1.ConditionLossObserved))
		}
		return nil
	})
	reasons := map[string]int{}
	for _, r := range measured {
		reasons[r]++
	}
	var path []string
	for _, h := range last.Status.History {
		path = append(path, fmt.Sprintf("%.3f:%.4f", h.Strength, h.Loss))
	}
	t.Logf("converged to within %.2f of the reference %.3f in %s (%d measurements: %v; propagation %v, push %v); credited strength:loss %v, now %.3f",
		convergenceTolerance, reference, time.Since(auto).Round(time.Second), len(measured), reasons, propagation, !f.noPush, path, ptr.Deref(last.Status.Strength, -1))
	strengths := []float64{}
	for _, h := range last.Status.History {
		strengths = append(strengths, h.Strength)
	}
	strengths = append(strengths, *last.Status.Strength)
	maxStep := program.Spec.Tuning.MaxStep
	for i := 1; i < len(strengths); i++ {
		if math.Abs(strengths[i]-strengths[i-1]) > maxStep+1e-9 {
			t.Errorf("step %d: %.3f → %.3f exceeds maxStep %.2f (history %v)", i, strengths[i-1], strengths[i], maxStep, strengths)
		}
	}
	if err := conditionIs(last.Status.Conditions, wellbeingv1alpha1.ConditionLossObserved, metav1.ConditionTrue, wellbeingv1alpha1.ReasonObserved); err != nil {
		t.Error(err)
	}
	if last.Status.Loss == nil || last.Status.Loss.CohortSize < 11 {
		t.Errorf("status.loss = %+v, want a published cohort", last.Status.Loss)
	}

	// Outage: the engines stop; the next measurement fails and holds.
	stopDriver()
	f.stopEngines()
	var held float64
	waitUpTo(t, 40*time.Second, "LossObserved=False while engines are down", func() error {
		p := &wellbeingv1alpha1.MeditationProgram{}
		get(t, client.ObjectKeyFromObject(program), p)
		held = ptr.Deref(p.Status.Strength, -1)
		return conditionIs(p.Status.Conditions, wellbeingv1alpha1.ConditionLossObserved, metav1.ConditionFalse, wellbeingv1alpha1.ReasonMetricsUnavailable)
	})
	historyAtOutage := 0
	p := &wellbeingv1alpha1.MeditationProgram{}
	get(t, client.ObjectKeyFromObject(program), p)
	historyAtOutage = len(p.Status.History)
	time.Sleep(11 * time.Second) // one more interval without engines
	get(t, client.ObjectKeyFromObject(program), p)
	if ptr.Deref(p.Status.Strength, -1) != held || p.Status.ConsecutiveErrors < 1 {
		t.Errorf("during the outage the strength moved %.3f → %.3f (errors %d)", held, ptr.Deref(p.Status.Strength, -1), p.Status.ConsecutiveErrors)
	}

	// The engines return (with their data): tuning resumes.
	for i := range f.dirs {
		f.startEngine(i)
	}
	stopDriver = drive(t, driver, 500*time.Millisecond)
	waitUpTo(t, 60*time.Second, "tuning resumes", func() error {
		get(t, client.ObjectKeyFromObject(program), p)
		if len(p.Status.History) <= historyAtOutage && historyAtOutage < tuning.HistoryLimit {
			return fmt.Errorf("history still %d", len(p.Status.History))
		}
		return conditionIs(p.Status.Conditions, wellbeingv1alpha1.ConditionLossObserved, metav1.ConditionTrue, wellbeingv1alpha1.ReasonObserved)
	})
	if p.Status.ConsecutiveErrors != 0 {
		t.Errorf("consecutiveErrors = %d after recovery", p.Status.ConsecutiveErrors)
	}
}

// TestClosedLoopOnSharedStore: three engine replicas on one PostgreSQL
// database, the simulated cohort spread over them. Each replica reports
// the whole store's cohort, so the operator must read it once: its
// observed cohort size equals the number of simulated users, not three
// times it, and tuning proceeds on it.
func TestClosedLoopOnSharedStore(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three engines and a PostgreSQL server for about 40 s")
	}
	setupWorld(t, "commons", wellbeingv1alpha1.ContextSocial)
	program := tunedProgram("commons", "together")
	sharedStore(program, "together-postgres", 3)
	// As on a real node: the files late, the strength pushed.
	f := startLoopWith(t, "commons", program, 3, scaledKubeletPropagation(program))

	// Nobody leaves, so that the cohort is exactly the population.
	cfg := population(program, 45, 11)
	cfg.ChurnPerHour = 0
	people := simulator.New(cfg)
	driver := &simulator.Driver{Population: people, Engines: f.urls(), Token: f.token, ClientOptions: engineTrust(t, program)}
	stopDriver := drive(t, driver, 500*time.Millisecond)
	defer stopDriver()

	waitUpTo(t, 90*time.Second, "two tuning steps on the shared cohort", func() error {
		p := &wellbeingv1alpha1.MeditationProgram{}
		get(t, client.ObjectKeyFromObject(program), p)
		if p.Status.Loss == nil || len(p.Status.History) < 2 {
			return fmt.Errorf("loss %+v, history %d, LossObserved %s", p.Status.Loss, len(p.Status.History), condition(p, wellbeingv1alpha1.ConditionLossObserved))
		}
		if p.Status.Loss.CohortSize != int32(len(people.Agents)) {
			return fmt.Errorf("observed cohort %d, want the %d simulated users (once each)", p.Status.Loss.CohortSize, len(people.Agents))
		}
		if c := condition(p, wellbeingv1alpha1.ConditionLossObserved); !strings.Contains(c, "shared store") {
			return fmt.Errorf("LossObserved %s, want it read from the shared store", c)
		}
		return nil
	})
}

// convergenceTolerance is how close to the population's reference the
// closed loop must bring the strength. Measured through real engines
// (docs/tuning.md, "Through real engines"): the cohort loss the engines
// publish is flat from 0.3 to 0.5 (0.0697 and 0.0678, the difference
// 0.0019 ± 0.0026 interval by interval) and rises beyond (0.0787 at 0.7,
// 0.0961 at 0.9), one interval's measurement being off by 0.001–0.002
// plus a level that moves with the time of day by up to 0.0017 an
// interval. A strength 0.15 from the reference 0.45 costs less than one
// interval's noise, so no tuner can tell it from the optimum in a few
// intervals.
const convergenceTolerance = 0.15

// convergenceBudget is the time the closed loop gets to converge: room
// for 30 credited measurements, within which the tuner converged from
// the bound in 400 of 400 simulated runs of this test's loss curve and
// daily rhythm (test/tuningbench, TestLeavesTheUpperBoundUnderTheDailyRhythm;
// 98.5% within 20). 300 s (30 intervals) when changes land at once;
// 420 s under a propagation delay, where about one measurement in four
// is held StrengthPending or at night. It usually takes 40–70 s.
func convergenceBudget(p engineruntime.Propagation) time.Duration {
	if p.Max > 0 {
		return 420 * time.Second
	}
	return 300 * time.Second
}

// scaledKubeletPropagation is a kubelet's propagation delay (60–90 s
// against the default interval of a minute) on the program's interval
// (none for a program without one: it is not tuned).
func scaledKubeletPropagation(p *wellbeingv1alpha1.MeditationProgram) engineruntime.Propagation {
	if p.Spec.Tuning.Interval == nil {
		return engineruntime.Propagation{}
	}
	scale := float64(p.Spec.Tuning.Interval.Duration) / float64(tuning.DefaultInterval)
	k := engineruntime.KubeletPropagation
	return engineruntime.Propagation{Min: time.Duration(float64(k.Min) * scale), Max: time.Duration(float64(k.Max) * scale)}
}

func programInterventions(p *wellbeingv1alpha1.MeditationProgram) []string {
	var out []string
	for _, i := range p.Spec.Interventions {
		out = append(out, string(i))
	}
	return out
}

func condition(p *wellbeingv1alpha1.MeditationProgram, condType string) string {
	for _, c := range p.Status.Conditions {
		if c.Type == condType {
			return fmt.Sprintf("%s/%s: %s", c.Status, c.Reason, c.Message)
		}
	}
	return "unset"
}

func waitUpTo(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	testutil.Eventually(t, timeout, 250*time.Millisecond, what, check)
}
