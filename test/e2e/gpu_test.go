//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	engineclient "github.com/attune-io/attune/engine/client"
	"github.com/attune-io/attune/engine/telemetry"
)

// TestGPUsWhereTheWorkIs: on a world whose GPU quota the model sidecars
// fill exactly, a VADER program without a model still runs (it requests no
// GPU), a spec change of the GPU program rolls out without a spare GPU
// (no surge beyond the quota), every engine pod that declares a model runs
// the rendered sidecar (the engine runtime reads its command line as the
// stock server would and serves internal/oiptest's replica there), the
// engine's chat texts reach that sidecar, and kubectl -o wide names the
// text model in use.
func TestGPUsWhereTheWorkIs(t *testing.T) {
	ctx := context.Background()
	newWorld(t, "gpus", ptr.To[int32](2))
	withModel := program("gpus", "with-model", 2) // one GPU on each pod's sidecar: the quota exactly
	withModel.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual
	mustCreate(t, withModel)
	vader := program("gpus", "vader", 1)
	vader.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual
	vader.Spec.Engine.Model = nil
	mustCreate(t, vader)

	ready := func(p *wellbeingv1alpha1.MeditationProgram, want int32) func() error {
		return func() error {
			got := getProgram(t, p)
			if got.Status.ReadyReplicas != want || len(enginesOf(p)) != int(want) {
				return fmt.Errorf("%s: ready %d, engine processes %d, want %d; EngineAvailable %+v", p.Name, got.Status.ReadyReplicas, len(enginesOf(p)), want,
					meta.FindStatusCondition(got.Status.Conditions, wellbeingv1alpha1.ConditionEngineAvailable))
			}
			return nil
		}
	}
	eventually(t, 90*time.Second, "both programs ready on a full quota", func() error {
		if err := ready(withModel, 2)(); err != nil {
			return err
		}
		return ready(vader, 1)()
	})
	for name, want := range map[string]int64{"with-model": 1, "vader": 0} {
		d := &appsv1.Deployment{}
		if err := stack.Client.Get(ctx, client.ObjectKey{Namespace: "gpus", Name: name + "-engine"}, d); err != nil {
			t.Fatal(err)
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			gpus := c.Resources.Limits.Name("nvidia.com/gpu", "").Value()
			if (c.Name == "model" && gpus != want) || (c.Name != "model" && gpus != 0) {
				t.Errorf("%s: container %s requests %d GPUs (want %d on the model sidecar, none elsewhere)", name, c.Name, gpus, want)
			}
		}
	}

	// Chat text reaches the model sidecar, in one request per batch.
	token := &corev1.Secret{}
	if err := stack.Client.Get(ctx, client.ObjectKey{Namespace: "gpus", Name: "with-model-engine-token"}, token); err != nil {
		t.Fatal(err)
	}
	url := enginesOf(withModel)[0]
	sidecar := stack.Supervisor.ModelServer(url)
	if sidecar == nil {
		t.Fatalf("the engine at %s runs without its model sidecar", url)
	}
	if stack.Supervisor.ModelServer(enginesOf(vader)[0]) != nil {
		t.Error("the VADER program's engine runs a model sidecar")
	}
	engine, err := engineclient.New(url, append(engineTrust(t, withModel), engineclient.WithToken(string(token.Data[controllers.TokenKey])))...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := engine.SetConsent(ctx, "e2e-gpu-user", telemetry.ScopeText); err != nil {
		t.Fatal(err)
	}
	before := sidecar.Server.Requests()
	now := time.Now()
	texts := []string{"I feel calm and happy today", "this queue is awful"}
	batch := make([]telemetry.Sample, len(texts))
	for i, text := range texts {
		batch[i] = telemetry.Sample{User: "e2e-gpu-user", Kind: telemetry.KindText, At: now, Text: text, Source: "chat"}
	}
	if _, err := engine.Ingest(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if got := sidecar.Server.Requests() - before; got != 1 {
		t.Errorf("%d inference requests for one batch of %d texts, want 1", got, len(texts))
	}
	if got := strings.Join(sidecar.Server.Texts(), "|"); !strings.Contains(got, texts[0]) || !strings.Contains(got, texts[1]) {
		t.Errorf("the sidecar received %q, want both texts", got)
	}

	// kubectl shows which model each program uses.
	wide := kubectl(t, "get", "mp", "--namespace", "gpus", "-o", "wide")
	for _, want := range []string{"TEXT MODEL", "Custom emotion (GPU)", "VADER (CPU)"} {
		if !strings.Contains(wide, want) {
			t.Errorf("kubectl get mp -o wide lacks %q:\n%s", want, wide)
		}
	}

	// A pod-template change rolls out with the quota full: one pod at a
	// time goes before its replacement comes (maxSurge 0).
	got := getProgram(t, withModel)
	got.Spec.Engine.Model.Env = append(got.Spec.Engine.Model.Env, corev1.EnvVar{Name: "ROLLOUT", Value: "2"})
	if err := stack.Client.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	eventually(t, 120*time.Second, "the rollout completes on a full quota", func() error {
		d := &appsv1.Deployment{}
		if err := stack.Client.Get(ctx, client.ObjectKey{Namespace: "gpus", Name: "with-model-engine"}, d); err != nil {
			return err
		}
		if d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas != 2 || d.Status.Replicas != 2 || d.Status.AvailableReplicas != 2 {
			return fmt.Errorf("generation %d observed %d: updated %d, replicas %d, available %d",
				d.Generation, d.Status.ObservedGeneration, d.Status.UpdatedReplicas, d.Status.Replicas, d.Status.AvailableReplicas)
		}
		pods := &corev1.PodList{}
		if err := stack.Client.List(ctx, pods, client.InNamespace("gpus"), client.MatchingLabels(controllers.EngineSelectorLabels(withModel))); err != nil {
			return err
		}
		for _, pod := range pods.Items {
			if !hasEnv(pod.Spec.Containers, "ROLLOUT") {
				return fmt.Errorf("pod %s still runs the old template", pod.Name)
			}
		}
		return nil
	})
	eventually(t, 60*time.Second, "the new pods run their sidecars", func() error {
		urls := enginesOf(withModel)
		if len(urls) != 2 {
			return fmt.Errorf("%d engine processes", len(urls))
		}
		for _, u := range urls {
			if stack.Supervisor.ModelServer(u) == nil {
				return fmt.Errorf("%s without a model sidecar", u)
			}
		}
		return nil
	})
}

// enginesOf are the URLs of the running engine processes of p's pods.
func enginesOf(p *wellbeingv1alpha1.MeditationProgram) []string {
	pods := &corev1.PodList{}
	_ = stack.Client.List(context.Background(), pods, client.InNamespace(p.Namespace), client.MatchingLabels(controllers.EngineSelectorLabels(p)))
	ips := map[string]bool{}
	for _, pod := range pods.Items {
		if pod.DeletionTimestamp.IsZero() {
			ips[pod.Status.PodIP] = true
		}
	}
	var out []string
	for _, u := range stack.Supervisor.Running() {
		host := strings.TrimPrefix(u, "https://")
		if ips[host[:strings.LastIndex(host, ":")]] {
			out = append(out, u)
		}
	}
	return out
}

func hasEnv(containers []corev1.Container, name string) bool {
	for _, c := range containers {
		for _, e := range c.Env {
			if e.Name == name {
				return true
			}
		}
	}
	return false
}
