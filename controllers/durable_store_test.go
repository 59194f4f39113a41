package controllers_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	engineclient "github.com/attune-io/attune/engine/client"
	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/telemetry"
	"github.com/attune-io/attune/internal/devstack/engineruntime"
	"github.com/attune-io/attune/internal/devstack/proc"
)

// TestDefaultStoreSurvivesAReplacedPod: a program that says nothing about
// its store gets the Embedded store on a claim (1Gi, the default class),
// a Deployment that recreates, and the world's keyring mounted whole. Its
// engine, replaced by a new pod on the same claim (a new process with a
// new pod directory, as engineruntime runs a rollout), still has every
// user, their consent and consent ledger, and their decisions; and the
// store's file, written under the operator's key-encryption key, holds
// none of the users' pseudonyms.
func TestDefaultStoreSurvivesAReplacedPod(t *testing.T) {
	ctx := context.Background()
	setupWorld(t, "haven", wellbeingv1alpha1.ContextHealth)
	p := newProgram("haven", "keeper", "haven")
	create(t, p)

	claim := &corev1.PersistentVolumeClaim{}
	eventually(t, "the default data claim", func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: "haven", Name: "keeper-engine-data"}, claim)
	})
	if got := claim.Spec.Resources.Requests[corev1.ResourceStorage]; got.Cmp(resource.MustParse(wellbeingv1alpha1.DefaultStoreVolumeSize)) != 0 || claim.Spec.StorageClassName != nil {
		t.Errorf("default claim: %s on class %v, want %s on the default class", got.String(), claim.Spec.StorageClassName, wellbeingv1alpha1.DefaultStoreVolumeSize)
	}
	d := waitDeployment(t, p)
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("strategy = %+v, want Recreate", d.Spec.Strategy)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range d.Spec.Template.Spec.Volumes {
		volumes[v.Name] = v
	}
	if v := volumes["data"]; v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != claim.Name {
		t.Errorf("data volume = %+v, want the claim", v.VolumeSource)
	}
	if v := volumes["key-encryption-key"]; v.Secret == nil || v.Secret.SecretName != controllers.KeyEncryptionKeySecretName || len(v.Secret.Items) != 0 {
		t.Errorf("keyring volume = %+v, want the whole generated Secret", v.VolumeSource)
	}
	keyring := &corev1.Secret{}
	eventually(t, "the world's keyring", func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: "haven", Name: controllers.KeyEncryptionKeySecretName}, keyring)
	})
	if string(keyring.Data[contract.KeyringPrimaryKey]) != controllers.FirstKEKID || len(keyring.Data[controllers.FirstKEKID]) != 32 {
		t.Errorf("keyring keys %v, want primary %s and a 32-byte %s", keysOf(keyring.Data), controllers.FirstKEKID, controllers.FirstKEKID)
	}

	// The pods: each has its own directory; the claim's directory is the
	// volume they share, as the supervisor mounts it.
	state := t.TempDir()
	src := engineruntime.Source{
		Namespace: "haven", ConfigMap: "keeper-engine-config", TokenSecret: "keeper-engine-token",
		KeySecret: controllers.PseudonymizationKeySecretName, KeySecretKey: controllers.PseudonymizationKeySecretKey,
		KEKSecret: controllers.KeyEncryptionKeySecretName, DataClaim: claim.Name, TLSSecret: "keeper-engine-tls",
		DataDir: engineruntime.ClaimDir(state, "haven", claim.Name),
	}
	token := &corev1.Secret{}
	eventually(t, "engine token", func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: "haven", Name: "keeper-engine-token"}, token)
	})
	startPod := func(name string) (*engineruntime.Process, *engineclient.Client) {
		t.Helper()
		port, err := proc.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		e, err := engineruntime.Start(ctx, k8s, buildEngine(t), filepath.Join(state, "haven", name), "127.0.0.1", port, src)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Stop)
		c, err := engineclient.New(e.URL(), append(engineTrust(t, p), engineclient.WithToken(string(token.Data[controllers.TokenKey])))...)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "engine "+name+" ready", func() error { _, err := c.Cohort(ctx); return err })
		return e, c
	}

	first, c := startPod("keeper-engine-1")
	const users = 12
	type want struct {
		samples  int64
		decision string
		scopes   int
	}
	expected := map[string]want{}
	now := time.Now().UTC()
	for i := range users {
		user := fmt.Sprintf("resident-%02d", i)
		scopes := []telemetry.Scope{telemetry.ScopeBehaviour, telemetry.ScopeQuestionnaire}
		if i%3 == 0 {
			scopes = append(scopes, telemetry.ScopeResearch)
		}
		if _, err := c.SetConsent(ctx, user, scopes...); err != nil {
			t.Fatal(err)
		}
		mood := 1 + i%5
		samples := []telemetry.Sample{{User: user, Kind: telemetry.KindQuestionnaire, At: now, Mood: &mood, BRS: []int{4, 2, 4, 2, 3, 2}}}
		for k := range i % 4 {
			m := 1 + k
			samples = append(samples, telemetry.Sample{User: user, Kind: telemetry.KindQuestionnaire, At: now.Add(-time.Duration(k+1) * time.Minute), Mood: &m})
		}
		if _, err := c.Ingest(ctx, samples); err != nil {
			t.Fatal(err)
		}
		d, _, err := c.Decide(ctx, user, contract.DecisionRequest{}, "")
		if err != nil {
			t.Fatal(err)
		}
		expected[user] = want{samples: int64(len(samples)), decision: d.ID, scopes: len(scopes)}
	}
	exportBefore, err := c.Export(ctx, "resident-00")
	if err != nil {
		t.Fatal(err)
	}
	first.Stop() // the pod is replaced: its directory goes, the claim stays
	if err := os.RemoveAll(filepath.Join(state, "haven", "keeper-engine-1")); err != nil {
		t.Fatal(err)
	}

	_, c = startPod("keeper-engine-2")
	for user, w := range expected {
		st, err := c.State(ctx, user)
		if err != nil {
			t.Errorf("%s after the pod was replaced: %v", user, err)
			continue
		}
		if st.Samples != w.samples || st.LastDecision == nil || st.LastDecision.ID != w.decision {
			t.Errorf("%s after the pod was replaced: %d samples, last decision %+v; want %d and %s", user, st.Samples, st.LastDecision, w.samples, w.decision)
		}
		x, err := c.Export(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		if len(x.Consent.Scopes) != w.scopes || len(x.ConsentLedger) != 1 || len(x.Decisions) != 1 || x.Decisions[0].ID != w.decision {
			t.Errorf("%s's export after the pod was replaced: consent %v, ledger %d entries, decisions %d", user, x.Consent.Scopes, len(x.ConsentLedger), len(x.Decisions))
		}
	}
	// Encrypted under the operator's KEK: the file holds no pseudonym.
	file, err := os.ReadFile(filepath.Join(src.DataDir, "engine.db"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(file, []byte(exportBefore.Pseudonym)) || bytes.Contains(file, []byte(`"scopes"`)) {
		t.Error("the store's file holds a pseudonym or a consent in the clear")
	}
}

func keysOf(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
