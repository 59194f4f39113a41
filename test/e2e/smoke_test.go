//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
)

func world(name string, gpuLimit *int32) *wellbeingv1alpha1.VirtualWorld {
	return &wellbeingv1alpha1.VirtualWorld{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       wellbeingv1alpha1.VirtualWorldSpec{Namespace: name, Context: wellbeingv1alpha1.ContextSocial, GPUQuota: wellbeingv1alpha1.GPUQuota{Limit: gpuLimit}},
	}
}

// postgresSecret is the Secret every test world gets, pointing at the
// stack's PostgreSQL server.
const postgresSecret = "engine-postgres"

// program is a program with replicas engines; more than one share the
// PostgreSQL store, as the schema requires.
func program(ns, name string, replicas int32) *wellbeingv1alpha1.MeditationProgram {
	p := &wellbeingv1alpha1.MeditationProgram{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: wellbeingv1alpha1.MeditationProgramSpec{
			WorldRef:      wellbeingv1alpha1.WorldReference{Name: ns},
			Target:        wellbeingv1alpha1.StateVector{Attention: 0.8, Emotion: 0.7, Resilience: 0.7},
			Weights:       wellbeingv1alpha1.Weights{Attention: 1, Emotion: 1, Resilience: 1},
			Interventions: []wellbeingv1alpha1.Intervention{wellbeingv1alpha1.ResonanceBreathing, wellbeingv1alpha1.BodyScan},
			Strength:      wellbeingv1alpha1.StrengthBounds{Initial: 0.5, Min: 0.1, Max: 0.9},
			Tuning:        wellbeingv1alpha1.Tuning{Mode: wellbeingv1alpha1.TuningAuto, Interval: &metav1.Duration{Duration: 10 * time.Second}, MaxStep: 0.05},
			Engine: wellbeingv1alpha1.EngineSpec{Replicas: ptr.To(replicas), GPU: wellbeingv1alpha1.GPUSpec{
				Count: ptr.To[int32](1), Product: "NVIDIA-H100-80GB-HBM3",
			},
				// The GPU goes where the work is: on the text model's sidecar.
				Model: &wellbeingv1alpha1.ModelSidecar{Runtime: wellbeingv1alpha1.ModelRuntimeCustom, Image: "ghcr.io/attune-io/emotion-model:test", ModelName: "emotion"},
			},
		},
	}
	if replicas > 1 {
		p.Spec.Engine.Store = wellbeingv1alpha1.EngineStore{Type: wellbeingv1alpha1.StorePostgreSQL,
			Postgres: &wellbeingv1alpha1.PostgresStore{SecretRef: wellbeingv1alpha1.SecretReference{Name: postgresSecret}}}
	} else {
		// The local cluster has no StorageClass for the default claim.
		p.Spec.Engine.Store.Embedded = &wellbeingv1alpha1.EmbeddedStore{Ephemeral: true}
	}
	return p
}

func TestEnginesRunOnFakeGPUNodes(t *testing.T) {
	ctx := context.Background()
	newWorld(t, "smoke", nil)
	p := program("smoke", "calm", 2)
	if err := stack.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "engines available", func() error {
		got := &wellbeingv1alpha1.MeditationProgram{}
		if err := stack.Client.Get(ctx, client.ObjectKeyFromObject(p), got); err != nil {
			return err
		}
		if got.Status.ReadyReplicas != 2 || len(stack.Supervisor.Running()) < 2 {
			return fmt.Errorf("ready %d, processes %v", got.Status.ReadyReplicas, stack.Supervisor.Running())
		}
		return nil
	})
}
