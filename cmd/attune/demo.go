package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image/color"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	"github.com/attune-io/attune/internal/devstack/localcluster"
	"github.com/attune-io/attune/internal/devstack/postgres"
	"github.com/attune-io/attune/internal/simulator"
)

// demoPoint is one row of the trace.
type demoPoint struct {
	Time         time.Time `json:"time"`
	Strength     float64   `json:"strength"`
	ObservedLoss *float64  `json:"observedLoss,omitempty"`
	CohortSize   int32     `json:"cohortSize,omitempty"`
	TrueLoss     float64   `json:"trueLoss"`
	ReadyEngines int32     `json:"readyEngines"`
	Action       string    `json:"action"`
}

type demoTrace struct {
	// ReferenceStrength is the strength whose dose helps the simulated
	// population most per session (simulator.ReferenceStrength).
	ReferenceStrength float64          `json:"referenceStrength"`
	Population        simulator.Config `json:"population"`
	Speedup           float64          `json:"speedup"`
	Points            []demoPoint      `json:"points"`
}

func demo(args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	duration := fs.Duration("duration", 65*time.Second, "How long the operator tunes (wall clock), after the warm-up.")
	warmUp := fs.Duration("warm-up", 15*time.Second, "How long the cohort lives at the initial strength, the program Manual, before tuning is switched on.")
	users := fs.Int("users", 120, "Simulated cohort size.")
	speedup := fs.Float64("speedup", simulator.DefaultSpeedup, "Simulated seconds per wall-clock second; the engines' time constants follow.")
	keep := fs.Bool("keep", false, "Keep the cluster running afterwards (Ctrl-C stops it) and print its kubeconfig.")
	stateDir := fs.String("state-dir", ".attune/demo", "Directory for every file of the demo (cluster state, logs, chart, trace).")
	k8sBin := fs.String("k8s-bin", "", "Directory with the source-built Kubernetes binaries (hack/k8s-binaries.sh dir).")
	engineBinary := fs.String("engine-binary", "", "Engine binary (built when empty).")
	initial := fs.Float64("initial-strength", 0.7, "The program's initial strength.")
	seed := fs.Uint64("seed", 2, "Simulator seed.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *k8sBin == "" {
		return fmt.Errorf("--k8s-bin is required (make demo passes it)")
	}
	// The engines' configuration names its files by absolute path.
	absState, err := filepath.Abs(*stateDir)
	if err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}
	*stateDir = absState
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	_ = os.RemoveAll(*stateDir)
	if err := os.MkdirAll(*stateDir, 0o700); err != nil {
		return err
	}
	root, _ := os.Getwd()
	start := time.Now()
	say := func(format string, a ...any) {
		fmt.Printf("[demo %s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
	}

	// Two engines need the shared store; without PostgreSQL installed the
	// demo runs one engine on the embedded store.
	shared := postgres.Installed()
	engines := int32(1)
	if shared {
		engines = 2
	} else {
		say("PostgreSQL is not installed (apt-get install postgresql): running one engine on the embedded store")
	}
	say("starting the local cluster (etcd, kube-apiserver, controller manager, scheduler, kwok with fake GPU nodes)")
	stack, err := localcluster.StartStack(ctx, localcluster.StackOptions{
		Options:      localcluster.Options{StateDir: *stateDir, BinDir: *k8sBin, GPUNodes: 1, GPUsPerNode: 4, CPUNodes: 1, Log: os.Stdout},
		RepoRoot:     root,
		EngineBinary: *engineBinary,
		Postgres:     shared,
	})
	if err != nil {
		return err
	}
	defer stack.Stop()

	popCfg := simulator.DefaultConfig()
	popCfg.Users, popCfg.Seed = *users, *seed
	people := simulator.New(popCfg)
	scale := simulator.TimeScale{Speedup: *speedup}
	interventions := []wellbeingv1alpha1.Intervention{wellbeingv1alpha1.ResonanceBreathing, wellbeingv1alpha1.FocusedAttention, wellbeingv1alpha1.MicroBreak}
	var interventionNames []string
	for _, iv := range interventions {
		interventionNames = append(interventionNames, string(iv))
	}
	reference := people.ReferenceStrength(interventionNames, 0.1, 0.9)

	world := &wellbeingv1alpha1.VirtualWorld{
		ObjectMeta: metav1.ObjectMeta{Name: "harbor-social"},
		Spec: wellbeingv1alpha1.VirtualWorldSpec{Namespace: "harbor-social", DisplayName: "Harbor (social hub)", Context: wellbeingv1alpha1.ContextSocial,
			GPUQuota: wellbeingv1alpha1.GPUQuota{Limit: ptr.To[int32](4)}},
	}
	program := &wellbeingv1alpha1.MeditationProgram{
		ObjectMeta: metav1.ObjectMeta{Name: "evening-calm", Namespace: "harbor-social"},
		Spec: wellbeingv1alpha1.MeditationProgramSpec{
			WorldRef:      wellbeingv1alpha1.WorldReference{Name: "harbor-social"},
			Target:        wellbeingv1alpha1.StateVector{Attention: popCfg.Target[0], Emotion: popCfg.Target[1], Resilience: popCfg.Target[2]},
			Weights:       wellbeingv1alpha1.Weights{Attention: popCfg.Weights[0], Emotion: popCfg.Weights[1], Resilience: popCfg.Weights[2]},
			Interventions: interventions,
			Strength:      wellbeingv1alpha1.StrengthBounds{Initial: *initial, Min: 0.1, Max: 0.9},
			// Manual until the cohort has felt the initial dose (-warm-up).
			Tuning: wellbeingv1alpha1.Tuning{Mode: wellbeingv1alpha1.TuningManual, Interval: &metav1.Duration{Duration: 10 * time.Second}, MaxStep: 0.05},
			Engine: wellbeingv1alpha1.EngineSpec{Replicas: ptr.To(engines), GPU: wellbeingv1alpha1.GPUSpec{
				Count: ptr.To[int32](1), Product: "NVIDIA-H100-80GB-HBM3",
			},
				// The GPU goes where the work is: on the text model's sidecar.
				Model: &wellbeingv1alpha1.ModelSidecar{Runtime: wellbeingv1alpha1.ModelRuntimeCustom, Image: "ghcr.io/attune-io/emotion-model:test", ModelName: "emotion"},
			},
		},
	}
	// The engines run on the population's clock: spec.dose and
	// spec.estimation hold its accelerated time constants.
	timing := scale.EngineTiming()
	timing.ApplyToProgram(&program.Spec)
	if shared {
		program.Spec.Engine.Store = wellbeingv1alpha1.EngineStore{Type: wellbeingv1alpha1.StorePostgreSQL,
			Postgres: &wellbeingv1alpha1.PostgresStore{SecretRef: wellbeingv1alpha1.SecretReference{Name: "evening-calm-postgres"}}}
	} else {
		// The local cluster has no StorageClass for the default claim.
		program.Spec.Engine.Store.Embedded = &wellbeingv1alpha1.EmbeddedStore{Ephemeral: true}
	}
	c := stack.Client
	if err := c.Create(ctx, world); err != nil {
		return fmt.Errorf("create world: %w", err)
	}
	if err := localcluster.WaitFor(ctx, 30*time.Second, "world namespace", func() error {
		return c.Get(ctx, client.ObjectKey{Name: "harbor-social"}, &corev1.Namespace{})
	}); err != nil {
		return fmt.Errorf("world namespace: %w", err)
	}
	if shared {
		if err := stack.CreatePostgresSecret(ctx, "harbor-social", "evening-calm-postgres"); err != nil {
			return fmt.Errorf("create the PostgreSQL Secret: %w", err)
		}
		say("created Secret evening-calm-postgres: the shared store's connection, mounted into the engines as a file")
	}
	if err := c.Create(ctx, program); err != nil {
		return fmt.Errorf("create program: %w", err)
	}
	say("applied VirtualWorld harbor-social and MeditationProgram evening-calm (%d engine(s), each with a text-model sidecar holding 1 nvidia.com/gpu, store %s; Manual for the warm-up, then tuned every 10s)", engines, map[bool]string{true: "PostgreSQL", false: "Embedded"}[shared])
	if err := localcluster.WaitFor(ctx, 90*time.Second, "engines ready", func() error {
		p := &wellbeingv1alpha1.MeditationProgram{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(program), p); err != nil {
			return err
		}
		if p.Status.ReadyReplicas != engines || len(stack.Supervisor.Running()) != int(engines) {
			return fmt.Errorf("%d ready, %d engine processes", p.Status.ReadyReplicas, len(stack.Supervisor.Running()))
		}
		return nil
	}); err != nil {
		return fmt.Errorf("engines did not become ready: %w", err)
	}
	pods := &corev1.PodList{}
	_ = c.List(ctx, pods, client.InNamespace("harbor-social"), client.MatchingLabels(controllers.EngineSelectorLabels(program)))
	for _, pod := range pods.Items {
		say("engine pod %s on node %s, IP %s", pod.Name, pod.Spec.NodeName, pod.Status.PodIP)
	}
	token := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "harbor-social", Name: "evening-calm-engine-token"}, token); err != nil {
		return err
	}
	// The engines serve HTTPS with certificates of the world's CA; the
	// simulated world server trusts the bundle the operator publishes.
	trust, err := controllers.EngineTrust(ctx, c, program)
	if err != nil {
		return err
	}
	driver := &simulator.Driver{Population: people, Engines: stack.Supervisor.Running(), Token: string(token.Data[controllers.TokenKey]), Scale: scale, ClientOptions: trust}
	say("driving %d simulated people against %v in %.0f× accelerated time (a wall-clock second is %s of theirs; engines: cooldown %s, outcome window %s, evidence decay %s); the strength whose dose helps them most is %.3f",
		popCfg.Users, driver.Engines, scale.Speedup, scale.Simulated(time.Second), timing.Cooldown, timing.OutcomeWindow, timing.StateDecay, reference)

	webTrust, err := webClientTLS(ctx, c, program)
	if err != nil {
		return err
	}
	printWebClient(ctx, say, root, driver.Engines, driver.Token, webTrust) // webclient.go: a person's view

	driveCtx, stopDriving := context.WithCancel(ctx)
	driving := make(chan struct{})
	go func() {
		defer close(driving)
		driver.Run(driveCtx, 500*time.Millisecond, func(_ simulator.TickReport, err error) {
			if err != nil {
				say("simulator: %v", err)
			}
		})
	}()

	select {
	case <-ctx.Done():
	case <-time.After(*warmUp):
	}
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p := &wellbeingv1alpha1.MeditationProgram{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(program), p); err != nil {
			return err
		}
		p.Spec.Tuning.Mode = wellbeingv1alpha1.TuningAuto
		return c.Update(ctx, p)
	}); err != nil {
		stopDriving()
		<-driving
		return fmt.Errorf("switch tuning on: %w", err)
	}
	say("the cohort lived %s at strength %.2f (%s simulated); tuning is on (spec.tuning.mode Auto)", *warmUp, *initial, driver.Latest().Elapsed.Round(time.Minute))

	trace := demoTrace{ReferenceStrength: reference, Population: popCfg, Speedup: scale.Speedup}
	fmt.Printf("\n%-9s %-6s %-9s %-11s %-7s %-6s %-10s %s\n", "time", "hour", "strength", "cohort loss", "cohort", "ready", "true loss", "tuner")
	var lastTune time.Time
	deadline := time.Now().Add(*duration)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(500 * time.Millisecond)
		p := &wellbeingv1alpha1.MeditationProgram{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(program), p); err != nil || p.Status.LastTuneTime == nil || !p.Status.LastTuneTime.After(lastTune) {
			continue
		}
		lastTune = p.Status.LastTuneTime.Time
		latest := driver.Latest()
		point := demoPoint{Time: lastTune, Strength: ptr.Deref(p.Status.Strength, 0), TrueLoss: latest.TrueLoss, ReadyEngines: p.Status.ReadyReplicas, Action: tunerAction(p)}
		lossText, cohortText := "—", "—"
		if observed := meta.FindStatusCondition(p.Status.Conditions, wellbeingv1alpha1.ConditionLossObserved); observed != nil && observed.Status == metav1.ConditionTrue && p.Status.Loss != nil {
			point.ObservedLoss, point.CohortSize = &p.Status.Loss.Value, p.Status.Loss.CohortSize
			lossText, cohortText = fmt.Sprintf("%.5f", p.Status.Loss.Value), fmt.Sprint(p.Status.Loss.CohortSize)
		}
		trace.Points = append(trace.Points, point)
		fmt.Printf("%-9s %-6s %-9.3f %-11s %-7s %-6d %-10.5f %s\n", lastTune.Format("15:04:05"), clockHour(latest.Hour), point.Strength, lossText, cohortText, point.ReadyEngines, point.TrueLoss, point.Action)
		// The state estimates are compared with the truth once an interval.
		if err := driver.SampleEstimates(ctx); err != nil && ctx.Err() == nil {
			say("reading the estimates: %v", err)
		}
	}

	final := trace.Points
	if len(final) == 0 {
		stopDriving()
		<-driving
		return fmt.Errorf("no tuning interval completed")
	}
	summary, err := driver.Summary(ctx, interventionNames)
	stopDriving()
	<-driving
	if err != nil {
		say("summary: %v", err)
	}
	strengths := []float64{*initial}
	losses := []float64{final[0].TrueLoss}
	for _, pt := range final {
		strengths = append(strengths, pt.Strength)
		losses = append(losses, pt.TrueLoss)
	}
	summary.Tuning = []simulator.Convergence{simulator.ConvergenceOf("demo", strengths, losses, reference)}
	summary.Reference = fmt.Sprintf("the strength whose dose helps the population most per session, %.3f", reference)
	last := final[len(final)-1]
	fmt.Printf("\nsummary: strength %.3f → %.3f (reference %.3f), true cohort loss %.5f → %.5f, %d tuning intervals in %s (%s simulated)\n\n",
		*initial, last.Strength, reference, final[0].TrueLoss, last.TrueLoss, len(final), time.Since(start).Round(time.Second), driver.Latest().Elapsed.Round(time.Minute))
	if err := summary.Write(os.Stdout); err != nil {
		return err
	}
	fmt.Println()
	tracePath := filepath.Join(*stateDir, "demo-trace.json")
	data, err := json.MarshalIndent(trace, "", "  ")
	if err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	if err := os.WriteFile(tracePath, data, 0o600); err != nil {
		return err
	}
	chartPath := filepath.Join(*stateDir, "demo-chart.png")
	if err := writeChart(chartPath, trace); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	say("wrote %s and %s", chartPath, tracePath)
	if *keep {
		abs, _ := filepath.Abs(stack.Kubeconfig)
		kubectl := "kubectl"
		if _, err := os.Stat(filepath.Join(*k8sBin, "kubectl")); err == nil {
			kubectl = filepath.Join(*k8sBin, "kubectl") // the source-built one
		}
		say("cluster kept running. Try:\n  export KUBECONFIG=%s\n  %s get vw,mp -A -o wide\nCtrl-C stops everything.", abs, kubectl)
		<-ctx.Done()
	}
	return nil
}

// clockHour writes an hour of the simulated day as hh:mm.
func clockHour(h float64) string {
	minutes := int(h*60) % (24 * 60)
	return fmt.Sprintf("%02d:%02d", minutes/60, minutes%60)
}

// tunerAction says what the tuner did, from the program's conditions.
func tunerAction(p *wellbeingv1alpha1.MeditationProgram) string {
	if c := meta.FindStatusCondition(p.Status.Conditions, wellbeingv1alpha1.ConditionLossObserved); c != nil && c.Status != metav1.ConditionTrue {
		return "held: " + c.Message
	}
	if c := meta.FindStatusCondition(p.Status.Conditions, wellbeingv1alpha1.ConditionConverged); c != nil {
		if c.Status == metav1.ConditionTrue {
			return "converged: " + c.Message
		}
		return c.Message
	}
	return ""
}

func writeChart(path string, trace demoTrace) error {
	pl := plot.New()
	pl.Title.Text = "Attune demo: strength and cohort loss per tuning interval"
	pl.X.Label.Text = "seconds"
	pl.Y.Label.Text = "strength / loss×10"
	t0 := trace.Points[0].Time
	var strength, trueLoss, observed plotter.XYs
	for _, p := range trace.Points {
		x := p.Time.Sub(t0).Seconds()
		strength = append(strength, plotter.XY{X: x, Y: p.Strength})
		trueLoss = append(trueLoss, plotter.XY{X: x, Y: 10 * p.TrueLoss})
		if p.ObservedLoss != nil {
			observed = append(observed, plotter.XY{X: x, Y: 10 * *p.ObservedLoss})
		}
	}
	add := func(name string, xys plotter.XYs, c color.Color) error {
		if len(xys) == 0 {
			return nil
		}
		line, err := plotter.NewLine(xys)
		if err != nil {
			return err
		}
		line.Color = c
		pl.Add(line)
		pl.Legend.Add(name, line)
		return nil
	}
	reference := plotter.XYs{{X: 0, Y: trace.ReferenceStrength}, {X: strength[len(strength)-1].X, Y: trace.ReferenceStrength}}
	for _, s := range []struct {
		name string
		xys  plotter.XYs
		c    color.Color
	}{
		{"strength", strength, color.RGBA{B: 200, A: 255}},
		{"reference strength", reference, color.RGBA{B: 200, G: 200, A: 255}},
		{"true loss ×10", trueLoss, color.RGBA{R: 200, A: 255}},
		{"engine-observed loss ×10", observed, color.RGBA{R: 200, G: 120, A: 255}},
	} {
		if err := add(s.name, s.xys, s.c); err != nil {
			return err
		}
	}
	pl.Legend.Top = true
	return pl.Save(8*vg.Inch, 4*vg.Inch, path)
}
