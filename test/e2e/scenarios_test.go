//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/gonum/stat"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	"github.com/attune-io/attune/controllers/tuning"
	"github.com/attune-io/attune/internal/devstack/engineruntime"
	"github.com/attune-io/attune/internal/simulator"
	"github.com/attune-io/attune/internal/testutil"
)

// kubectl runs the source-built kubectl against the local cluster.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(os.Getenv("ATTUNE_K8S_BIN"), "kubectl"), append(args, "--kubeconfig", stack.Kubeconfig)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func mustCreate(t *testing.T, obj client.Object) {
	t.Helper()
	if err := stack.Client.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %s: %v", obj.GetName(), err)
	}
}

func getProgram(t *testing.T, p *wellbeingv1alpha1.MeditationProgram) *wellbeingv1alpha1.MeditationProgram {
	t.Helper()
	got := &wellbeingv1alpha1.MeditationProgram{}
	if err := stack.Client.Get(context.Background(), client.ObjectKeyFromObject(p), got); err != nil {
		t.Fatal(err)
	}
	return got
}

// newWorld creates a world and waits for its namespace; the world (and with
// it the namespace and everything in it) is deleted when the test ends.
func newWorld(t *testing.T, name string, gpuLimit *int32) {
	t.Helper()
	ctx := context.Background()
	w := world(name, gpuLimit)
	mustCreate(t, w)
	eventually(t, 30*time.Second, "namespace "+name, func() error {
		return stack.Client.Get(ctx, client.ObjectKey{Name: name}, &corev1.Namespace{})
	})
	// The shared store's connection, for programs with several engines.
	if err := stack.CreatePostgresSecret(ctx, name, postgresSecret); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteWorld(t, name) })
}

func deleteWorld(t *testing.T, name string) {
	ctx := context.Background()
	w := &wellbeingv1alpha1.VirtualWorld{}
	if err := stack.Client.Get(ctx, client.ObjectKey{Name: name}, w); err != nil {
		return
	}
	_ = stack.Client.Delete(ctx, w, client.PropagationPolicy("Foreground"))
	eventually(t, 90*time.Second, "namespace "+name+" removed", func() error {
		if err := stack.Client.Get(ctx, client.ObjectKey{Name: name}, &corev1.Namespace{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (err=%v)", err)
		}
		return nil
	})
}

func enginesIn(namespace string) []string {
	out := slices.Clone(stack.Supervisor.Running())
	pods := &corev1.PodList{}
	_ = stack.Client.List(context.Background(), pods, client.InNamespace(namespace))
	ips := map[string]bool{}
	for _, p := range pods.Items {
		ips[p.Status.PodIP] = true
	}
	var mine []string
	for _, u := range out {
		host := strings.TrimPrefix(u, "https://")
		host = host[:strings.LastIndex(host, ":")]
		if ips[host] {
			mine = append(mine, u)
		}
	}
	return mine
}

// TestDemoScenarioConverges is make demo's scenario with assertions: a
// simulated population lives through the engines' decisions in
// accelerated time (the program's time constants on its clock), first
// with the program Manual at 0.7, then Auto: the operator moves the
// strength to within 0.15 of the strength whose dose helps the population
// most (the mean of the last three in force), and the engines publish the
// interventions' effects in the program's status. The engines receive the
// ConfigMap's changes as late as from a kubelet (60–90 s against a minute's
// interval, scaled to the program's), and the operator's strength push
// brings each new strength in seconds (docs/tuning.md, "Propagation and
// the push").
func TestDemoScenarioConverges(t *testing.T) {
	ctx := context.Background()
	newWorld(t, "converge", nil)
	p := program("converge", "evening-calm", 2)
	scaled := float64(p.Spec.Tuning.Interval.Duration) / float64(tuning.DefaultInterval)
	k := engineruntime.KubeletPropagation
	stack.Supervisor.SetPropagation("converge", engineruntime.Propagation{Min: time.Duration(float64(k.Min) * scaled), Max: time.Duration(float64(k.Max) * scaled)})
	p.Spec.Strength.Initial = 0.7
	p.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual
	// The test's time budget: steps of 0.1 (make demo's 0.05 needs twice
	// the intervals; through these engines 0.05 took up to 170 s of the
	// 180 s below).
	p.Spec.Tuning.MaxStep = 0.1
	p.Spec.Interventions = []wellbeingv1alpha1.Intervention{wellbeingv1alpha1.ResonanceBreathing, wellbeingv1alpha1.FocusedAttention, wellbeingv1alpha1.MicroBreak}
	scale := simulator.TimeScale{Speedup: simulator.DefaultSpeedup}
	scale.EngineTiming().ApplyToProgram(&p.Spec)
	mustCreate(t, p)
	eventually(t, 60*time.Second, "two engines", func() error {
		if got := getProgram(t, p); got.Status.ReadyReplicas != 2 || len(enginesIn("converge")) != 2 {
			return fmt.Errorf("ready %d, processes %v", got.Status.ReadyReplicas, enginesIn("converge"))
		}
		return nil
	})
	token := &corev1.Secret{}
	if err := stack.Client.Get(ctx, client.ObjectKey{Namespace: "converge", Name: "evening-calm-engine-token"}, token); err != nil {
		t.Fatal(err)
	}
	cfg := simulator.DefaultConfig()
	cfg.Users, cfg.Seed = 120, 2
	people := simulator.New(cfg)
	var interventions []string
	for _, iv := range p.Spec.Interventions {
		interventions = append(interventions, string(iv))
	}
	reference := people.ReferenceStrength(interventions, p.Spec.Strength.Min, p.Spec.Strength.Max)
	driver := &simulator.Driver{Population: people, Engines: enginesIn("converge"), Token: string(token.Data[controllers.TokenKey]), Scale: scale, ClientOptions: engineTrust(t, p)}
	driveCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		driver.Run(driveCtx, 500*time.Millisecond, nil)
	}()
	defer func() { stop(); <-done }()
	time.Sleep(demoWarmUp)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		got := getProgram(t, p)
		got.Spec.Tuning.Mode = wellbeingv1alpha1.TuningAuto
		return stack.Client.Update(ctx, got)
	})
	if err != nil {
		t.Fatal(err)
	}

	// Convergence: the mean of the last three strengths in force (the
	// tuner dithers around its target) within 0.15 of the population's
	// reference, a strength 0.15 from it costing less than one
	// interval's noise through real engines (docs/tuning.md, "Through
	// real engines"); and the loop itself: credited measurements,
	// published effects. The budget leaves room for about 30 credited
	// measurements (test/tuningbench, TestLeavesTheUpperBoundUnderTheDailyRhythm);
	// it usually takes about a minute.
	eventually(t, 420*time.Second, fmt.Sprintf("measurements credited, effects published and strength within 0.15 of the population's reference %.3f", reference), func() error {
		got := getProgram(t, p)
		recent := testutil.RecentStrengths(got, 3)
		if len(got.Status.History) < 3 || len(got.Status.Effects) == 0 || math.Abs(stat.Mean(recent, nil)-reference) > 0.15 {
			return fmt.Errorf("recent strengths %.3f, %d credited measurements, %d effects published, true loss %.4f", recent, len(got.Status.History), len(got.Status.Effects), driver.Latest().TrueLoss)
		}
		t.Logf("converged: recent strengths %.3f (reference %.3f), %d credited measurements", recent, reference, len(got.Status.History))
		return nil
	})
}

// demoWarmUp is how long make demo's cohort lives at the initial strength
// before tuning is switched on: a fresh cohort has felt no dose yet, so its
// loss still rises in the first intervals whatever the strength.
const demoWarmUp = 15 * time.Second

// TestGPUShortageIsReported: a quota that refuses pods and nodes without
// enough GPUs both show up in EngineAvailable with the cluster's reason, and
// the world shows GPUs requested against its quota.
func TestGPUShortageIsReported(t *testing.T) {
	newWorld(t, "crowded", ptr.To[int32](2))
	overQuota := program("crowded", "too-many", 3)
	overQuota.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual
	mustCreate(t, overQuota)
	eventually(t, 60*time.Second, "QuotaExceeded", func() error {
		return engineUnavailable(getProgram(t, overQuota), wellbeingv1alpha1.ReasonQuotaExceeded, "exceeded quota")
	})
	eventually(t, 30*time.Second, "world quota status", func() error {
		w := &wellbeingv1alpha1.VirtualWorld{}
		if err := stack.Client.Get(context.Background(), client.ObjectKey{Name: "crowded"}, w); err != nil {
			return err
		}
		if w.Status.GPUsRequested != 3 || ptr.Deref(w.Status.GPUQuotaLimit, -1) != 2 || w.Status.GPUsInUse != 2 {
			return fmt.Errorf("requested %d, quota %v, in use %d", w.Status.GPUsRequested, w.Status.GPUQuotaLimit, w.Status.GPUsInUse)
		}
		return nil
	})
	deleteWorld(t, "crowded")

	newWorld(t, "greedy", nil)
	tooBig := program("greedy", "six-gpus", 6) // the GPU node has 4
	tooBig.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual
	mustCreate(t, tooBig)
	eventually(t, 60*time.Second, "Unschedulable", func() error {
		got := getProgram(t, tooBig)
		if err := engineUnavailable(got, wellbeingv1alpha1.ReasonUnschedulable, "Insufficient nvidia.com/gpu"); err != nil {
			return err
		}
		if got.Status.ReadyReplicas != 4 {
			return fmt.Errorf("ready %d, want the 4 that fit", got.Status.ReadyReplicas)
		}
		return nil
	})

	// An embedded store on a claim that cannot bind (this cluster has no
	// StorageClass and no volumes) keeps the engine pod from scheduling,
	// and the program says so with the scheduler's words.
	newWorld(t, "stranded", nil)
	unbound := program("stranded", "no-volume", 1)
	unbound.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual
	unbound.Spec.Engine.Store.Embedded = &wellbeingv1alpha1.EmbeddedStore{Volume: &wellbeingv1alpha1.StoreVolume{Size: resource.MustParse("1Gi")}}
	mustCreate(t, unbound)
	eventually(t, 60*time.Second, "Unschedulable for the claim", func() error {
		return engineUnavailable(getProgram(t, unbound), wellbeingv1alpha1.ReasonUnschedulable, "PersistentVolumeClaim")
	})
	// Deleting the program deletes its claim (garbage collection through
	// the owner reference), and with it the users' data.
	start := time.Now()
	if err := stack.Client.Delete(context.Background(), unbound); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the claim deleted with the program", func() error {
		err := stack.Client.Get(context.Background(), client.ObjectKey{Namespace: "stranded", Name: "no-volume-engine-data"}, &corev1.PersistentVolumeClaim{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (err=%v)", err)
		}
		return nil
	})
	t.Logf("claim gone %s after the program", time.Since(start).Round(time.Second))
}

// engineUnavailable checks the program's EngineAvailable condition gives
// reason and a message that says what.
func engineUnavailable(p *wellbeingv1alpha1.MeditationProgram, reason, says string) error {
	c := meta.FindStatusCondition(p.Status.Conditions, wellbeingv1alpha1.ConditionEngineAvailable)
	if c == nil || c.Reason != reason || !strings.Contains(c.Message, says) {
		return fmt.Errorf("EngineAvailable %+v, want reason %s saying %q", c, reason, says)
	}
	return nil
}

// TestScaleStrengthAndDeletion: scaling the program changes the running
// engine processes; a strength change reaches the running engines without
// restarting pods; deleting the program stops its engines.
func TestScaleStrengthAndDeletion(t *testing.T) {
	ctx := context.Background()
	newWorld(t, "ops", nil)
	p := program("ops", "adjustable", 1)
	p.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual
	mustCreate(t, p)
	eventually(t, 60*time.Second, "one engine process", func() error {
		if n := len(enginesIn("ops")); n != 1 {
			return fmt.Errorf("%d processes", n)
		}
		return nil
	})

	// One engine keeps its users in its own store: kubectl scale is refused
	// by the schema, with what to do instead.
	out, err := exec.Command(filepath.Join(os.Getenv("ATTUNE_K8S_BIN"), "kubectl"), "scale", "mp/adjustable", "--namespace", "ops", "--replicas=3",
		"--kubeconfig", stack.Kubeconfig).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Set spec.engine.store.type to PostgreSQL") {
		t.Fatalf("kubectl scale of an embedded-store program to 3: %v\n%s", err, out)
	}
	kubectl(t, "patch", "mp/adjustable", "--namespace", "ops", "--type=merge",
		"-p", `{"spec":{"engine":{"store":{"type":"PostgreSQL","embedded":null,"postgres":{"secretRef":{"name":"`+postgresSecret+`"}}}}}}`)
	kubectl(t, "scale", "mp/adjustable", "--namespace", "ops", "--replicas=3")
	eventually(t, 60*time.Second, "three engine processes", func() error {
		if n := len(enginesIn("ops")); n != 3 {
			return fmt.Errorf("%d processes", n)
		}
		return nil
	})

	// A strength change: ConfigMap → files → engines, same pods.
	pods := &corev1.PodList{}
	if err := stack.Client.List(ctx, pods, client.InNamespace("ops"), client.MatchingLabels(controllers.EngineSelectorLabels(p))); err != nil {
		t.Fatal(err)
	}
	before := map[types.UID]bool{}
	for _, pod := range pods.Items {
		before[pod.UID] = true
	}
	deployment := &appsv1.Deployment{}
	if err := stack.Client.Get(ctx, client.ObjectKey{Namespace: "ops", Name: "adjustable-engine"}, deployment); err != nil {
		t.Fatal(err)
	}
	generation := deployment.Generation
	got := getProgram(t, p)
	got.Spec.Strength.Initial = 0.3
	if err := stack.Client.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	token := &corev1.Secret{}
	_ = stack.Client.Get(ctx, client.ObjectKey{Namespace: "ops", Name: "adjustable-engine-token"}, token)
	eventually(t, 30*time.Second, "engines run with strength 0.3", func() error {
		for _, url := range enginesIn("ops") {
			req, _ := http.NewRequest(http.MethodGet, url+"/v1/cohort", nil)
			req.Header.Set("Authorization", "Bearer "+string(token.Data[controllers.ReadOnlyTokenKey]))
			resp, err := engineHTTP(t, p).Do(req)
			if err != nil {
				return err
			}
			var cohort struct {
				Strength float64 `json:"strength"`
			}
			err = json.NewDecoder(resp.Body).Decode(&cohort)
			_ = resp.Body.Close()
			if err != nil || cohort.Strength != 0.3 {
				return fmt.Errorf("%s: strength %v (%v)", url, cohort.Strength, err)
			}
		}
		return nil
	})
	if err := stack.Client.List(ctx, pods, client.InNamespace("ops"), client.MatchingLabels(controllers.EngineSelectorLabels(p))); err != nil {
		t.Fatal(err)
	}
	for _, pod := range pods.Items {
		if !before[pod.UID] {
			t.Errorf("pod %s is new: the strength change restarted engines", pod.Name)
		}
	}
	if err := stack.Client.Get(ctx, client.ObjectKey{Namespace: "ops", Name: "adjustable-engine"}, deployment); err != nil || deployment.Generation != generation {
		t.Errorf("deployment generation %d → %d: the pod template changed", generation, deployment.Generation)
	}

	// The printer columns and short names a platform engineer sees.
	columns := kubectl(t, "get", "vw,mp", "--all-namespaces", "-o", "wide")
	for _, column := range []string{"NAMESPACE", "CONTEXT", "PROGRAMS", "GPUS", "QUOTA", "WORLD", "STRENGTH", "LOSS", "READY", "MODE", "REPLICAS", "AVAILABLE"} {
		if !strings.Contains(columns, column) {
			t.Errorf("kubectl get vw,mp -o wide lacks the %s column:\n%s", column, columns)
		}
	}
	if out := kubectl(t, "get", "attune", "--namespace", "ops"); !strings.Contains(out, "adjustable") {
		t.Errorf("kubectl get attune (the category) does not list the program:\n%s", out)
	}

	// Deleting the program removes its engines and their processes.
	if err := stack.Client.Delete(ctx, got, client.PropagationPolicy("Foreground")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "engines gone", func() error {
		if n := len(enginesIn("ops")); n != 0 {
			return fmt.Errorf("%d processes", n)
		}
		if err := stack.Client.List(ctx, pods, client.InNamespace("ops"), client.MatchingLabels(controllers.EngineSelectorLabels(p))); err != nil || len(pods.Items) != 0 {
			return fmt.Errorf("%d pods (err=%v)", len(pods.Items), err)
		}
		return nil
	})
}
