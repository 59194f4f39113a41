package controllers_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	engineclient "github.com/attune-io/attune/engine/client"
	engineconfig "github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/telemetry"
	"github.com/attune-io/attune/internal/devstack/engineruntime"
)

// fileStrengths records when an engine's mounted configuration file
// changed strength: the ground truth of what the engine runs (it reloads
// within half a second of the file).
type fileStrengths struct {
	mu      sync.Mutex
	changes []strengthChange
}

type strengthChange struct {
	at       time.Time
	strength float64
}

// watchFile polls the engine's config.json until the test ends.
func watchFile(t *testing.T, dir string) *fileStrengths {
	w := &fileStrengths{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if raw, err := os.ReadFile(filepath.Join(dir, "config", engineconfig.FileName)); err == nil {
				if cfg, err := engineconfig.Parse(raw); err == nil {
					w.mu.Lock()
					if n := len(w.changes); n == 0 || w.changes[n-1].strength != cfg.Strength.Value {
						w.changes = append(w.changes, strengthChange{at: time.Now(), strength: cfg.Strength.Value})
					}
					w.mu.Unlock()
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return w
}

// landed is when the file last took strength (false: it never did).
func (w *fileStrengths) landed(strength float64) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := len(w.changes) - 1; i >= 0; i-- {
		if w.changes[i].strength == strength {
			return w.changes[i].at, true
		}
	}
	return time.Time{}, false
}

// enrol gives each of the fixture's engines perEngine users with consent
// and a questionnaire (mood and BRS), through the engine client: a
// published cohort whose estimates last the test (evidence decays over
// 30 minutes).
func enrol(t *testing.T, f *loopFixture, perEngine int) {
	t.Helper()
	ctx := context.Background()
	for i, url := range f.urls() {
		c, err := engineclient.New(url, append(engineTrust(t, f.program), engineclient.WithToken(f.token))...)
		if err != nil {
			t.Fatal(err)
		}
		var samples []telemetry.Sample
		for u := range perEngine {
			user := fmt.Sprintf("user-%d-%02d", i, u)
			if _, err := c.SetConsent(ctx, user, telemetry.Scopes...); err != nil {
				t.Fatal(err)
			}
			mood := 2 + u%3
			samples = append(samples, telemetry.Sample{User: user, Kind: telemetry.KindQuestionnaire, At: time.Now(), Mood: &mood, BRS: []int{3, 4, 3, 4, 3, 4}})
		}
		if _, err := c.Ingest(ctx, samples); err != nil {
			t.Fatal(err)
		}
	}
}

// keepFeeding sends every enrolled user a new mood answer every second
// until the test ends: a published aggregate changes only when at least
// k users' contributions did (engine/service/publication.go), so without
// new samples the cohort's observedAt would stay before any strength
// change and no loss could be credited to it.
func keepFeeding(t *testing.T, f *loopFixture, perEngine int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for round := 0; ; round++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for i, url := range f.urls() {
				c, err := engineclient.New(url, append(engineTrust(t, f.program), engineclient.WithToken(f.token))...)
				if err != nil {
					continue
				}
				var samples []telemetry.Sample
				for u := range perEngine {
					mood := 2 + (u+round)%3
					samples = append(samples, telemetry.Sample{User: fmt.Sprintf("user-%d-%02d", i, u), Kind: telemetry.KindQuestionnaire, At: time.Now(), Mood: &mood})
				}
				_, _ = c.Ingest(ctx, samples) // an engine restarting misses a round
			}
		}
	}()
}

// TestStrengthPendingUntilEveryReplicaSettled: two engine pods (an
// embedded store mid-rollout: each counts its own users) receive the
// program's ConfigMap changes late, as from a kubelet, one 2 s and the
// other 12 s after they are made; the interval is 10 s and the settle
// time 8 s. After each move the operator must hold with StrengthPending
// while the slow pod still runs the old strength, and credit the next
// loss to the new strength only once both pods' files have held it for
// the settle time (the ground truth: the files, watched by the test).
// Then the slow pod stops receiving changes altogether, and three
// intervals after the next move LossObserved names it, and only it.
func TestStrengthPendingUntilEveryReplicaSettled(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two engines for about two minutes")
	}
	ctx := context.Background()
	setupWorld(t, "attribution", wellbeingv1alpha1.ContextSocial)
	program := tunedProgram("attribution", "credited")
	const settle = 8 * time.Second
	program.Spec.Tuning.Settle = &metav1.Duration{Duration: settle}
	f := startLoop(t, "attribution", program, 2)
	// The files are the ground truth here: no push (the restarted engines
	// run without the clients file, so the operator's push is refused).
	f.noPush = true
	enrol(t, f, 20)

	// The pods' containers restart under a kubelet-like propagation delay.
	delays := []time.Duration{2 * time.Second, 12 * time.Second}
	restart := func(i int, delay time.Duration) {
		t.Helper()
		if f.engines[i] != nil {
			f.engines[i].Stop()
		}
		p, err := engineruntime.Start(ctx, k8s, buildEngine(t), f.dirs[i], "127.0.0.1", f.ports[i], f.source(), engineruntime.WithDelay(delay))
		if err != nil {
			t.Fatal(err)
		}
		f.engines[i] = p
	}
	for i, d := range delays {
		restart(i, d)
	}
	keepFeeding(t, f, 20)
	slow := watchFile(t, f.dirs[1])
	slowPod := program.Name + "-engine-1"

	type observation struct {
		history  int
		strength float64
		reason   string
		message  string
	}
	observe := func() (observation, *wellbeingv1alpha1.MeditationProgram) {
		p := &wellbeingv1alpha1.MeditationProgram{}
		get(t, client.ObjectKeyFromObject(program), p)
		o := observation{history: len(p.Status.History), strength: ptr.Deref(p.Status.Strength, -1)}
		if c := meta.FindStatusCondition(p.Status.Conditions, wellbeingv1alpha1.ConditionLossObserved); c != nil {
			o.reason, o.message = c.Reason, c.Message
		}
		return o, p
	}

	// A first credited measurement moves the strength (the tuner probes).
	var moved observation
	waitUpTo(t, 60*time.Second, "a first credited measurement", func() error {
		o, _ := observe()
		if o.history < 1 || o.strength == 0.9 {
			return fmt.Errorf("history %d, strength %.3f, LossObserved %s: %s", o.history, o.strength, o.reason, o.message)
		}
		moved = o
		return nil
	})
	t.Logf("credited, strength now %.3f (history %d)", moved.strength, moved.history)

	// The next measurement finds the slow pod on the old strength: held,
	// nothing credited, the strength unchanged.
	waitUpTo(t, 30*time.Second, "StrengthPending while the slow pod lags", func() error {
		o, _ := observe()
		if o.history != moved.history || o.strength != moved.strength {
			return fmt.Errorf("credited before the slow pod ran %.3f: history %d → %d, strength %.3f", moved.strength, moved.history, o.history, o.strength)
		}
		if o.reason != wellbeingv1alpha1.ReasonStrengthPending || !strings.Contains(o.message, "1 of 2 engines do not run it yet") {
			return fmt.Errorf("LossObserved %s: %s", o.reason, o.message)
		}
		return nil
	})

	// Credited once both pods have held the strength for the settle time.
	var credited *wellbeingv1alpha1.MeditationProgram
	waitUpTo(t, 45*time.Second, "the loss credited to the new strength", func() error {
		o, p := observe()
		if o.history <= moved.history {
			return fmt.Errorf("history %d, LossObserved %s: %s", o.history, o.reason, o.message)
		}
		credited = p
		return nil
	})
	record := credited.Status.History[moved.history]
	landed, ok := slow.landed(moved.strength)
	if !ok {
		t.Fatalf("credited to %.3f, which the slow pod's file never held", record.Strength)
	}
	// History times are kept to the second: allow it.
	if ranFor := record.Time.Add(time.Second).Sub(landed); record.Strength != moved.strength || ranFor < settle {
		t.Errorf("credited to %.3f at %s; the slow pod's file took %.3f at %s, %s before (settle %s)",
			record.Strength, record.Time.Format(time.RFC3339), moved.strength, landed.Format(time.RFC3339Nano), ranFor, settle)
	}
	// The decision on that measurement moved the strength (the tuner
	// still probes): it has been in force since then.
	if since := credited.Status.StrengthSince; ptr.Deref(credited.Status.Strength, -1) == record.Strength || since == nil || !since.Equal(&record.Time) {
		t.Errorf("strength %.3f since %v, want a move at the credited measurement %s", ptr.Deref(credited.Status.Strength, -1), since, record.Time.Format(time.RFC3339))
	}

	// The slow pod stops receiving changes: three intervals after the
	// next move it is named, the other pod is not. The move is forced (a
	// lower maximum clamps the strength at once), since the tuner may
	// rightly hold where it is.
	restart(1, time.Hour)
	held, _ := observe()
	updateSpec(t, program, func(p *wellbeingv1alpha1.MeditationProgram) {
		p.Spec.Strength.Max = held.strength - 0.1
		p.Spec.Strength.Initial = min(p.Spec.Strength.Initial, p.Spec.Strength.Max)
	})
	waitUpTo(t, 90*time.Second, "the lagging pod named", func() error {
		o, _ := observe()
		if o.reason != wellbeingv1alpha1.ReasonStrengthPending || !strings.Contains(o.message, slowPod+" (strength ") {
			return fmt.Errorf("LossObserved %s: %s", o.reason, o.message)
		}
		if strings.Contains(o.message, program.Name+"-engine-0") {
			return fmt.Errorf("the up-to-date pod is named too: %s", o.message)
		}
		t.Logf("LossObserved %s: %s", o.reason, o.message)
		return nil
	})
}

// TestPrometheusReaderReportsWhatEnginesRan: through a real Prometheus
// scraping two real engines, the Prometheus source reports each engine's
// strength (attune_engine_strength), run for the settle time once the
// gauge has not moved over the settle window and for no time while it
// has; a strength change shows first as unsettled, then as settled.
func TestPrometheusReaderReportsWhatEnginesRan(t *testing.T) {
	ctx := context.Background()
	setupWorld(t, "gauges", wellbeingv1alpha1.ContextSocial)
	program := tunedProgram("gauges", "gauged")
	program.Spec.Tuning.Mode = wellbeingv1alpha1.TuningManual // the test sets the strength
	program.Spec.Strength = wellbeingv1alpha1.StrengthBounds{Initial: 0.6, Min: 0.1, Max: 0.9}
	const settle = 3 * time.Second
	program.Spec.Tuning.Settle = &metav1.Duration{Duration: settle}
	f := startLoop(t, "gauges", program, 2)
	enrol(t, f, 20)
	address := startPrometheus(t, program, f.ports, filepath.Join(f.dirs[0], "token", "read-only-token"))
	get(t, client.ObjectKeyFromObject(program), program)
	p := program.DeepCopy()
	p.Spec.Tuning.Source = wellbeingv1alpha1.LossSource{Type: wellbeingv1alpha1.LossSourcePrometheus, Prometheus: &wellbeingv1alpha1.PrometheusSource{Address: address}}
	reader := &controllers.PrometheusLossReader{Access: loopbackPrometheus}

	// ranFor reads the replicas and says how each ran want (nil: not
	// every engine exports want).
	ranFor := func(want float64) ([]time.Duration, error) {
		m, err := reader.Read(ctx, p, 11)
		if err != nil {
			return nil, err
		}
		if len(m.Replicas) != 2 {
			return nil, fmt.Errorf("replicas %+v, want the 2 engines", m.Replicas)
		}
		var out []time.Duration
		for _, r := range m.Replicas {
			if r.Strength != want || r.Generation != "" || !strings.HasPrefix(r.Name, "127.0.0.1:") {
				return nil, fmt.Errorf("replica %+v, want %s at strength %.2f with no generation", r, "127.0.0.1:<port>", want)
			}
			out = append(out, r.RunningFor)
		}
		return out, nil
	}
	steadyAt := func(want float64) {
		t.Helper()
		waitUpTo(t, 30*time.Second, fmt.Sprintf("both engines settled at %.2f", want), func() error {
			d, err := ranFor(want)
			if err == nil && (d[0] != settle || d[1] != settle) {
				err = fmt.Errorf("ran for %v, want the settle time %s", d, settle)
			}
			return err
		})
	}
	steadyAt(0.6)

	updateSpec(t, program, func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Strength.Initial = 0.4 })
	waitUpTo(t, 20*time.Second, "the new strength seen before it has settled", func() error {
		d, err := ranFor(0.4)
		if err == nil && d[0] != 0 && d[1] != 0 {
			err = fmt.Errorf("ran for %v, want an engine not yet settled", d)
		}
		return err
	})
	steadyAt(0.4)
}
