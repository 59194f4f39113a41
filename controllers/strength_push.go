package controllers

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/engine/auth"
	engineclient "github.com/attune-io/attune/engine/client"
	"github.com/attune-io/attune/engine/contract"
)

// The strength push (docs/tuning.md, "Propagation and the push"). A
// ConfigMap change reaches a pod's files only after the kubelet's sync
// period and cache TTL, about 60–90 s, as long as a tuning interval: most
// measurements would find some replica still on the previous strength
// and be held (StrengthPending). So after writing the ConfigMap the
// operator also pushes the same tuned values to every ready engine
// (PUT /v1/admin/strength, over HTTPS to the pod IP, verified against the
// world's CA bundle as the cohort reads are). The engines keep a push in
// memory only; the ConfigMap stays the durable source and reaches them
// regardless, so a failed push is logged and counted, never an error of
// the reconcile.
//
// The push authenticates as a built-in client of the clients file,
// TuningClientName, holding auth.ScopeTune alone; its token lives in its
// own Secret, TuningTokenSecretName, that only the operator reads: not
// the world apps' token Secret, and neither the read-only token the
// operator reads the cohorts with nor the metrics or backup tokens.
const (
	// TuningClientName names the built-in tuning client in the clients
	// file: longer than the 40 characters spec.access.clients[].name
	// allows, so no user client can take it.
	TuningClientName = "attune-operator-strength-tuner-push-client"
	// TuningTokenKey is the key of the token in the tuning token Secret.
	TuningTokenKey        = "token"
	tuningTokenComponent  = "tuning-token"
	defaultPushTimeout    = 3 * time.Second
	pushResultOK          = "ok"
	pushResultFailed      = "failed"
	pushResultUnavailable = "unavailable"
)

// strengthPushes counts pushes to engines by result: ok, failed (that
// engine), unavailable (no push was possible: token, CA bundle or pods
// unreadable).
var strengthPushes = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "attune_strength_pushes_total", Help: "Pushes of the tuned strength to engines by result (ok, failed, unavailable); the ConfigMap reaches them regardless.",
}, []string{"result"})

func init() { metrics.Registry.MustRegister(strengthPushes) }

// TuningTokenSecretName is the Secret of the program's tuning token.
func TuningTokenSecretName(p *wellbeingv1alpha1.MeditationProgram) string {
	return engineName(p) + "-tuning-token"
}

func tuningTokenSecret(p *wellbeingv1alpha1.MeditationProgram, token string) *corev1.Secret {
	return builtInTokenSecret(p, TuningTokenSecretName(p), tuningTokenComponent, TuningTokenKey, token)
}

// reconcileTuningClient issues the tuning token once and returns the
// built-in client that lists it in the clients file.
func (r *MeditationProgramReconciler) reconcileTuningClient(ctx context.Context, a *childApplier, reader client.Reader, p *wellbeingv1alpha1.MeditationProgram) (*auth.Client, error) {
	key := client.ObjectKey{Namespace: p.Namespace, Name: TuningTokenSecretName(p)}
	if _, err := a.createSecretIfMissing(ctx, p, key, func() (*corev1.Secret, error) {
		token, err := randomToken()
		return tuningTokenSecret(p, token), err
	}); err != nil {
		return nil, err
	}
	token, err := readTuningToken(ctx, reader, p)
	if err != nil {
		return nil, err
	}
	return &auth.Client{Name: TuningClientName, TokenSHA256: auth.HashToken(token), Scopes: auth.TuneScopes}, nil
}

// readTuningToken reads the tuning token from its Secret, refusing one
// the program does not control (a planted Secret would name the token).
func readTuningToken(ctx context.Context, reader client.Reader, p *wellbeingv1alpha1.MeditationProgram) (string, error) {
	key := client.ObjectKey{Namespace: p.Namespace, Name: TuningTokenSecretName(p)}
	secret := &corev1.Secret{}
	if err := reader.Get(ctx, key, secret); err != nil {
		return "", fmt.Errorf("get Secret %s: %w", key.Name, err)
	}
	if ref := metav1.GetControllerOf(secret); ref == nil || ref.UID != p.UID {
		return "", fmt.Errorf("the Secret %s exists and is not this program's; remove it so that the tuning token can be issued", key.Name)
	}
	token := strings.TrimSpace(string(secret.Data[TuningTokenKey]))
	if token == "" {
		return "", fmt.Errorf("the Secret %s holds no %s; delete it to have a tuning token issued anew", key.Name, TuningTokenKey)
	}
	return token, nil
}

// reconcileStrengthPush pushes the strength just rendered into the
// ConfigMap to every ready engine, when the tuner moved it or a replica
// was found still running another (rc.pushStrength). It never fails the
// reconcile: the ConfigMap gets there anyway.
func (r *MeditationProgramReconciler) reconcileStrengthPush(ctx context.Context, _ *childApplier, rc *programReconcile) error {
	if !rc.pushStrength {
		return nil
	}
	p := rc.program
	logger := log.FromContext(ctx)
	st := contract.Strength{Value: rc.strength, Min: p.Spec.Strength.Min, Max: p.Spec.Strength.Max}
	pushed, failed, err := r.pushStrength(ctx, p, st)
	if err != nil {
		strengthPushes.WithLabelValues(pushResultUnavailable).Inc()
		logger.Info("strength not pushed; the engines get it with the ConfigMap", "strength", st.Value, "reason", err.Error())
		return nil
	}
	strengthPushes.WithLabelValues(pushResultOK).Add(float64(pushed))
	strengthPushes.WithLabelValues(pushResultFailed).Add(float64(len(failed)))
	if len(failed) > 0 {
		logger.Info("strength push failed for some engines; they get it with the ConfigMap", "strength", st.Value, "pushed", pushed, "failed", strings.Join(failed, "; "))
	}
	return nil
}

// pushStrength sends st to every ready engine pod of p at once: how many
// took it, and why each other one did not.
func (r *MeditationProgramReconciler) pushStrength(ctx context.Context, p *wellbeingv1alpha1.MeditationProgram, st contract.Strength) (int, []string, error) {
	pods := &corev1.PodList{}
	if err := r.List(ctx, pods, client.InNamespace(p.Namespace), client.MatchingLabels(EngineSelectorLabels(p))); err != nil {
		return 0, nil, fmt.Errorf("list engine pods: %w", err)
	}
	type target struct{ name, addr string }
	var targets []target
	for i := range pods.Items {
		if addr, ok := engineAddress(&pods.Items[i]); ok {
			targets = append(targets, target{pods.Items[i].Name, addr})
		}
	}
	if len(targets) == 0 {
		return 0, nil, nil // nothing to push to (a new program): no token read
	}
	// The reconcilers' client serves the operator's own Secrets from its
	// watch (ownObjectsClient).
	token, err := readTuningToken(ctx, r.Client, p)
	if err != nil {
		return 0, nil, err
	}
	bundle, err := worldBundle(ctx, r.Client, p)
	if err != nil {
		return 0, nil, err
	}
	// The cohort reads' client, and so their kept-alive connections.
	engines := &EngineLossReader{Client: r.Client, HTTP: r.HTTPClient}
	hc, trust, err := engines.engineHTTP(EngineServerName(p), bundle)
	if err != nil {
		return 0, nil, fmt.Errorf("the world's CA bundle: %w", err)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	pushed, failed := 0, []string{}
	for _, t := range targets {
		wg.Go(func() {
			err := pushTo(ctx, t.addr, token, hc, trust, st)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = append(failed, t.name+": "+err.Error())
				return
			}
			pushed++
		})
	}
	wg.Wait()
	return pushed, failed, nil
}

// pushTo pushes st to one engine, once: a failed push is not retried (the
// ConfigMap follows, and the next interval pushes again to a lagging one).
func pushTo(ctx context.Context, addr, token string, hc *http.Client, trust []engineclient.Option, st contract.Strength) error {
	ctx, cancel := context.WithTimeout(ctx, defaultPushTimeout)
	defer cancel()
	opts := append([]engineclient.Option{engineclient.WithHTTPClient(hc), engineclient.WithToken(token), engineclient.WithRetry(engineclient.NoRetry)}, trust...)
	c, err := engineclient.New("https://"+addr, opts...)
	if err != nil {
		return err
	}
	_, err = c.PushStrength(ctx, st)
	return err
}
