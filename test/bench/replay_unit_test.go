package bench

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
)

// oneProgram creates a world, its namespace and one program on cp.
func oneProgram(t *testing.T, cp *controlPlane) *wellbeingv1alpha1.MeditationProgram {
	t.Helper()
	mustCreate(t, cp.client, world("w", "w"))
	mustCreate(t, cp.client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "w"}})
	p := program("w", 0, "w")
	mustCreate(t, cp.client, p)
	return p
}

// TestReplayMakesTheRecordedWritesOnAnotherAPIServer records a client's
// writes on one real API server and replays them on a second holding the
// same world and program under other UIDs: the replay must make the same
// objects there, owned by that server's program, with the status writes
// in order, and refuse what the first server refused.
func TestReplayMakesTheRecordedWritesOnAnotherAPIServer(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("KUBEBUILDER_ASSETS not set: run `make test`")
	}
	ctx := context.Background()
	recordedCP := startControlPlane(t)
	defer recordedCP.stop(t)
	p := oneProgram(t, recordedCP)

	recorder := &writeRecorder{}
	cfg := rest.CopyConfig(recordedCP.cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { recorder.next = rt; return recorder })
	recorded, err := client.New(cfg, client.Options{Scheme: recordedCP.scheme})
	if err != nil {
		t.Fatal(err)
	}
	config := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "program-0000-engine-config", Namespace: "w"}, Data: map[string]string{"k": "v"}}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "program-0000-engine-token", Namespace: "w"}, Data: map[string][]byte{"token": []byte("t")}}
	for _, child := range []client.Object{config, secret} {
		if err := controllerutil.SetControllerReference(p, child, recordedCP.scheme); err != nil {
			t.Fatal(err)
		}
	}
	if err := applyTyped(ctx, recorded, recordedCP.scheme, config); err != nil {
		t.Fatal(err)
	}
	if err := recorded.Create(ctx, secret.DeepCopy()); err != nil {
		t.Fatal(err)
	}
	// A create the API server refuses: the replay's is refused too, and
	// that is no failure of the replay.
	if err := recorded.Create(ctx, secret.DeepCopy()); !apierrors.IsAlreadyExists(err) {
		t.Fatalf("second create: %v, want AlreadyExists", err)
	}
	// Two status writes: the second needs the resourceVersion the first
	// was answered with.
	for _, strength := range []float64{0.3, 0.4} {
		p.Status.Strength = ptr.To(strength)
		if err := recorded.Status().Update(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	writes := recorder.recording()
	if len(writes) != 5 {
		t.Fatalf("recorded %d writes, want 5", len(writes))
	}
	// Stopped: later writes pass unrecorded.
	if err := recorded.Delete(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if n := len(recorder.recording()); n != 5 {
		t.Fatalf("%d writes recorded after the recorder stopped, want 5", n)
	}
	recordedUIDs, _, err := replayTargets(ctx, recordedCP)
	if err != nil {
		t.Fatal(err)
	}

	floorCP := startControlPlane(t)
	defer floorCP.stop(t)
	floorProgram := oneProgram(t, floorCP)
	replay, counter, floorUIDs := replayOn(t, floorCP, writes, recordedUIDs)
	if floorUIDs["w/program-0000"] == recordedUIDs["w/program-0000"] {
		t.Fatal("both API servers gave the program one UID: the substitution would go untested")
	}
	if err := replay.run(ctx); err != nil {
		t.Fatal(err)
	}
	if n, refused := counter.writes.Load(), replay.refused.Load(); n != 5 || refused != 1 {
		t.Errorf("replayed %d writes, %d refused; want 5, 1", n, refused)
	}
	for _, child := range []client.Object{&corev1.ConfigMap{}, &corev1.Secret{}} {
		key := client.ObjectKeyFromObject(config)
		if _, ok := child.(*corev1.Secret); ok {
			key = client.ObjectKeyFromObject(secret)
		}
		if err := floorCP.client.Get(ctx, key, child); err != nil {
			t.Fatalf("the replay did not make %s: %v", key, err)
		}
		if owner := metav1.GetControllerOf(child); owner == nil || owner.UID != floorProgram.UID {
			t.Errorf("%s owned by %v, want the floor's program %s", key, owner, floorProgram.UID)
		}
	}
	got := &wellbeingv1alpha1.MeditationProgram{}
	if err := floorCP.client.Get(ctx, client.ObjectKeyFromObject(floorProgram), got); err != nil {
		t.Fatal(err)
	}
	if got.Status.Strength == nil || *got.Status.Strength != 0.4 {
		t.Errorf("status strength %v, want the second write's 0.4", got.Status.Strength)
	}

	// Replayed again, the Secret's create is refused where the operator's
	// succeeded: the floor would not have made the operator's writes.
	again, _, _ := replayOn(t, floorCP, writes, recordedUIDs)
	if err := again.run(ctx); err == nil || !strings.Contains(err.Error(), "where the operator's succeeded") {
		t.Fatalf("second replay: %v, want the refused create named", err)
	}
}

func TestReplayNeedsEveryRecordedUIDOnTheFloor(t *testing.T) {
	_, err := newWriteReplay(&rest.Config{Host: "http://127.0.0.1:1"}, runtime.NewScheme(), nil, map[string]string{"w/p": "a"}, map[string]string{}, nil,
		func(rt http.RoundTripper) http.RoundTripper { return rt })
	if err == nil || !strings.Contains(err.Error(), "w/p") {
		t.Fatalf("err %v, want the program without a counterpart named", err)
	}
}

func TestObjectPathDropsTheSubresource(t *testing.T) {
	const programPath = "/apis/wellbeing.attune.io/v1alpha1/namespaces/w/meditationprograms/p"
	for path, want := range map[string]string{
		programPath + "/status":             programPath,
		programPath:                         programPath,
		"/api/v1/namespaces/w/secrets":      "/api/v1/namespaces/w/secrets",
		"/apis/g/v1/virtualworlds/a/status": "/apis/g/v1/virtualworlds/a",
	} {
		if got := objectPath(path); got != want {
			t.Errorf("objectPath(%q) = %q, want %q", path, got, want)
		}
	}
}
