//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	engineclient "github.com/attune-io/attune/engine/client"
	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/engine/telemetry"
	"github.com/attune-io/attune/internal/devstack/engineruntime"
)

// TestEmbeddedStoreSurvivesPodReplacement: a program on the embedded
// store with a volume (a PersistentVolume the test provides: the local
// cluster has no provisioner) has its engine pod deleted; the Deployment
// replaces it, the new pod mounts the same claim (the local cluster backs
// a claim with one directory that outlives its pods), and every user,
// their consent and ledger, samples and decisions are there. Then the
// documented backup and restore (docs/operations.md): a backup over the
// engine's TLS with the program token, a user erased and one enrolled
// after it, the program suspended, the file copied into the claim, the
// program resumed: the users of the backup are back, the late one is not,
// and the erased one is erased again (the claim's erasure journal).
func TestEmbeddedStoreSurvivesPodReplacement(t *testing.T) {
	ctx := context.Background()
	const ns, name, class = "durable", "keeper", "e2e-durable"
	newWorld(t, ns, nil)
	claimName := name + "-engine-data"
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-durable-keeper"},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:         corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: class,
			ClaimRef:         &corev1.ObjectReference{Namespace: ns, Name: claimName},
			// Never mounted: the local cluster's engines use the claim's
			// directory (engineruntime.ClaimDir).
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib/attune-e2e/" + claimName}},
		},
	}
	mustCreate(t, pv)
	t.Cleanup(func() { _ = stack.Client.Delete(context.Background(), pv) })

	p := program(ns, name, 1)
	p.Spec.Engine.Store.Embedded = &wellbeingv1alpha1.EmbeddedStore{Volume: &wellbeingv1alpha1.StoreVolume{Size: resource.MustParse("1Gi"), StorageClassName: ptr.To(class)}}
	mustCreate(t, p)

	pods := &corev1.PodList{}
	runningPod := func(not string) (*corev1.Pod, error) {
		if err := stack.Client.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels(controllers.EngineSelectorLabels(p))); err != nil {
			return nil, err
		}
		for i := range pods.Items {
			pod := &pods.Items[i]
			if string(pod.UID) != not && pod.DeletionTimestamp == nil && pod.Status.PodIP != "" && len(enginesIn(ns)) == 1 {
				for _, c := range pod.Status.Conditions {
					if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
						return pod, nil
					}
				}
			}
		}
		return nil, fmt.Errorf("no ready engine pod yet (%d pods, engines %v)", len(pods.Items), enginesIn(ns))
	}
	var first *corev1.Pod
	eventually(t, 90*time.Second, "the engine on its bound claim", func() (err error) {
		first, err = runningPod("")
		return err
	})
	token := &corev1.Secret{}
	if err := stack.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name + "-engine-token"}, token); err != nil {
		t.Fatal(err)
	}
	engine := func() *engineclient.Client {
		t.Helper()
		urls := enginesIn(ns)
		if len(urls) != 1 {
			t.Fatalf("engines %v, want one", urls)
		}
		c, err := engineclient.New(urls[0], append(engineTrust(t, p), engineclient.WithToken(string(token.Data[controllers.TokenKey])))...)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := engine()

	type want struct {
		samples  int64
		decision string
		scopes   int
	}
	expected := map[string]want{}
	now := time.Now().UTC().Truncate(time.Second)
	for i := range 15 {
		user := fmt.Sprintf("resident-%02d", i)
		scopes := []telemetry.Scope{telemetry.ScopeBehaviour, telemetry.ScopeQuestionnaire}
		if i%3 == 0 {
			scopes = append(scopes, telemetry.ScopeResearch)
		}
		if _, err := c.SetConsent(ctx, user, scopes...); err != nil {
			t.Fatal(err)
		}
		var samples []telemetry.Sample
		for k := range 1 + i%4 {
			mood := 1 + (i+k)%5
			samples = append(samples, telemetry.Sample{User: user, Kind: telemetry.KindQuestionnaire, At: now.Add(-time.Duration(k+1) * time.Minute), Mood: &mood})
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

	// The pod goes (a node drain, an eviction); the Deployment makes another.
	if err := stack.Client.Delete(ctx, first); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	var second *corev1.Pod
	eventually(t, 90*time.Second, "the replacement engine pod", func() (err error) {
		second, err = runningPod(string(first.UID))
		return err
	})
	if second.Name == first.Name {
		t.Fatalf("pod %s was not replaced", first.Name)
	}
	c = engine()
	// The replaced pod's engine may still hold the pod IP for a moment
	// after the new pod runs (kwok reuses IPs; the new engine waits for the
	// store's file lock): a refused connection is retried, wrong data is
	// not accepted however long it is retried.
	var checked int
	for user, w := range expected {
		eventually(t, 30*time.Second, user+" whole after the pod was replaced", func() error {
			st, err := c.State(ctx, user)
			if err != nil {
				return err
			}
			if st.Samples != w.samples || st.LastDecision == nil || st.LastDecision.ID != w.decision {
				return fmt.Errorf("%d samples, last decision %+v; want %d and %s", st.Samples, st.LastDecision, w.samples, w.decision)
			}
			x, err := c.Export(ctx, user)
			if err != nil {
				return fmt.Errorf("export: %w", err)
			}
			if len(x.Consent.Scopes) != w.scopes || len(x.ConsentLedger) != 1 || len(x.Decisions) != 1 || x.Decisions[0].ID != w.decision {
				return fmt.Errorf("export: consent %v, %d ledger entries, %d decisions", x.Consent.Scopes, len(x.ConsentLedger), len(x.Decisions))
			}
			return nil
		})
		checked++
	}
	// The data lives in the claim's directory, not the pods'.
	claimDir := engineruntime.ClaimDir(stack.Supervisor.StateDir, ns, claimName)
	if _, err := os.Stat(filepath.Join(claimDir, store.FileName)); err != nil {
		t.Errorf("the claim's directory holds no store: %v", err)
	}
	t.Logf("pod %s replaced by %s; %d of %d users whole afterwards", first.Name, second.Name, checked, len(expected))

	// docs/operations.md's backup and restore: a backup with the backup
	// token (Secret <program>-engine-backup-token, key "token", held by
	// the platform team; the program token world apps use is refused)
	// over the engine's TLS, then suspend, copy the file into the claim,
	// resume.
	backupToken := &corev1.Secret{}
	if err := stack.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name + "-engine-backup-token"}, backupToken); err != nil {
		t.Fatal(err)
	}
	// The supervisor lists an engine only while its process runs, and the
	// replacement's may have just been restarted by its pod's probes.
	var engineURL string
	eventually(t, 30*time.Second, "an engine running in "+ns, func() error {
		if engines := enginesIn(ns); len(engines) > 0 {
			engineURL = engines[0]
			return nil
		}
		return fmt.Errorf("no engine of namespace %s running", ns)
	})
	getBackup := func(bearer []byte) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, engineURL+"/v1/admin/backup", nil)
		req.Header.Set("Authorization", "Bearer "+string(bearer))
		resp, err := engineHTTP(t, p).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if resp := getBackup(token.Data[controllers.TokenKey]); resp.StatusCode != http.StatusForbidden {
		_ = resp.Body.Close()
		t.Errorf("a backup with the program token: %d, want 403", resp.StatusCode)
	} else {
		_ = resp.Body.Close()
	}
	resp := getBackup(backupToken.Data["token"])
	backup, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("backup: %d %v", resp.StatusCode, err)
	}
	sum := sha256.Sum256(backup)
	if got, want := resp.Header.Get("Repr-Digest"), "sha-256=:"+base64.StdEncoding.EncodeToString(sum[:])+":"; got != want {
		t.Errorf("Repr-Digest %q, the body's %q", got, want)
	}
	if bytes.Contains(backup, []byte("resident-")) || bytes.Contains(backup, []byte(`"scopes"`)) {
		t.Error("the backup holds a user ID or a consent in the clear")
	}
	erased := "resident-00"
	if err := c.Erase(ctx, erased); err != nil {
		t.Fatal(err)
	}
	late := "resident-late" // enrolled after the backup: not in it
	if _, err := c.SetConsent(ctx, late, telemetry.ScopeBehaviour); err != nil {
		t.Fatal(err)
	}
	setSuspend := func(suspend bool) {
		t.Helper()
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			got := getProgram(t, p)
			got.Spec.Suspend = suspend
			return stack.Client.Update(ctx, got)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	setSuspend(true)
	eventually(t, 60*time.Second, "the engines scaled to zero", func() error {
		if err := stack.Client.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels(controllers.EngineSelectorLabels(p))); err != nil {
			return err
		}
		if len(pods.Items) > 0 || len(enginesIn(ns)) > 0 {
			return fmt.Errorf("%d pods, engines %v", len(pods.Items), enginesIn(ns))
		}
		return nil
	})
	// The documented restore pod's `kubectl cp`, into the directory that
	// is the claim here (kwok runs no container that could mount it).
	if err := os.WriteFile(filepath.Join(claimDir, store.FileName), backup, 0o600); err != nil {
		t.Fatal(err)
	}
	setSuspend(false)
	eventually(t, 90*time.Second, "the restored engine", func() (err error) {
		_, err = runningPod(string(second.UID))
		return err
	})
	c = engine()
	for user, w := range expected {
		st, err := c.State(ctx, user)
		if user == erased {
			if !errors.Is(err, engineclient.ErrUnknownUser) {
				t.Errorf("%s, erased after the backup, after the restore: %v; want it erased again", user, err)
			}
			continue
		}
		if err != nil || st.Samples != w.samples || st.LastDecision == nil || st.LastDecision.ID != w.decision {
			t.Errorf("%s after the restore: %+v, %v", user, st, err)
		}
	}
	if _, err := c.State(ctx, late); !errors.Is(err, engineclient.ErrUnknownUser) {
		t.Errorf("%s, enrolled after the backup, after the restore: %v; want unknown", late, err)
	}
}
