package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	"github.com/attune-io/attune/engine/auth"
	engineclient "github.com/attune-io/attune/engine/client"
	engineconfig "github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/internal/devstack/engineruntime"
)

// TestStrengthPushLandsBeforeTheConfigMap: two engines receive the
// ConfigMap's changes a minute late, as from a slow kubelet. A new
// strength must run on the engine that accepts the operator's push
// within seconds, while its file still holds the old one; the engine
// without the tuning client in its clients file (the push refused) runs
// the old strength until its file changes. The push token is the tuning
// client's alone: in its own Secret, listed with the tune scope only, and
// not in the token Secret world apps read.
func TestStrengthPushLandsBeforeTheConfigMap(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two engines")
	}
	ctx := context.Background()
	setupWorld(t, "pushed", wellbeingv1alpha1.ContextSocial)
	program := tunedProgram("pushed", "pushed")
	program.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual // the test sets the strength
	program.Spec.Strength = wellbeingv1alpha1.StrengthBounds{Initial: 0.5, Min: 0.1, Max: 0.9}
	f := startLoopWith(t, "pushed", program, 2, engineruntime.Propagation{Min: time.Minute, Max: time.Minute})
	// Engine 1 restarts without the clients file: the push is refused there.
	f.engines[1].Stop()
	src := f.source()
	src.ClientsSecret = ""
	refusing, err := engineruntime.Start(ctx, k8s, buildEngine(t), f.dirs[1], "127.0.0.1", f.ports[1], src, engineruntime.WithDelay(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	f.engines[1] = refusing

	// Least privilege: the tuning token in its own Secret, tune alone.
	tuning := &corev1.Secret{}
	get(t, client.ObjectKey{Namespace: program.Namespace, Name: controllers.TuningTokenSecretName(program)}, tuning)
	tuningToken := string(tuning.Data[controllers.TuningTokenKey])
	worldTokens := &corev1.Secret{}
	get(t, client.ObjectKey{Namespace: program.Namespace, Name: program.Name + "-engine-token"}, worldTokens)
	for key, value := range worldTokens.Data {
		if string(value) == tuningToken {
			t.Errorf("the world apps' token Secret holds the tuning token under %q", key)
		}
	}
	clientsFile := &corev1.Secret{}
	get(t, client.ObjectKey{Namespace: program.Namespace, Name: controllers.ClientsFileSecretName(program)}, clientsFile)
	var file auth.ClientsFile
	if err := json.Unmarshal(clientsFile.Data[controllers.ClientsFileKey], &file); err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(file.Clients, func(c auth.Client) bool { return c.Name == controllers.TuningClientName })
	if i < 0 || !slices.Equal(file.Clients[i].Scopes, []auth.Scope{auth.ScopeTune}) || file.Clients[i].TokenSHA256 != auth.HashToken(tuningToken) {
		t.Fatalf("clients file %+v: want %s with the tuning token's hash and the tune scope alone", file.Clients, controllers.TuningClientName)
	}

	strengths := func() ([]float64, error) {
		var out []float64
		for _, url := range f.urls() {
			c, err := engineclient.New(url, append(engineTrust(t, program), engineclient.WithToken(f.token))...)
			if err != nil {
				return nil, err
			}
			cohort, err := c.Cohort(ctx)
			if err != nil {
				return nil, err
			}
			out = append(out, cohort.Strength)
		}
		return out, nil
	}
	eventually(t, "both engines at 0.5", func() error {
		s, err := strengths()
		if err != nil || !slices.Equal(s, []float64{0.5, 0.5}) {
			return fmt.Errorf("strengths %v, %v", s, err)
		}
		return nil
	})
	updateSpec(t, program, func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Strength.Initial = 0.7 })
	changed := time.Now()
	waitUpTo(t, 20*time.Second, "the pushed strength on the engine that accepts the push", func() error {
		s, err := strengths()
		if err != nil || !slices.Equal(s, []float64{0.7, 0.5}) {
			return fmt.Errorf("strengths %v, %v; want 0.7 pushed, 0.5 on the engine that refuses the push", s, err)
		}
		return nil
	})
	t.Logf("the push landed %s after the change", time.Since(changed).Round(100*time.Millisecond))
	// Both files still hold the old strength: the push, not the file, did it.
	for i, dir := range f.dirs {
		data, err := os.ReadFile(filepath.Join(dir, "config", engineconfig.FileName))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := engineconfig.Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Strength.Value != 0.5 {
			t.Errorf("engine %d's file holds %v already: the check says nothing about the push", i, cfg.Strength.Value)
		}
	}
}
