package controllers

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/engine/auth"
)

// Client tokens (docs/access.md). Each client of spec.access.clients gets
// its own token in its own Secret, <program>-client-<name>, in the
// program's (the world's) namespace. Not in the client's namespace: the
// operator may read and write Secrets only in the namespaces of the worlds
// it owns (secret_watch.go, the world-secrets Role), and writing into a
// client's namespace would need Secret rights in arbitrary namespaces, the
// cluster-wide access it was built not to hold. A client gets its token
// through a Role in the world's namespace granting get on that one Secret
// (resourceNames), or a secret-sync tool.
//
// Rotation follows the pattern of a generation field (as a Deployment's
// pod-template generation, or cert-manager's Certificate revision) rather
// than an annotation: it is part of the spec, validated (it may only grow)
// and visible in status. The client's Secret itself records the token's
// generation and, during the grace period, the previous token's hash and
// expiry, so everything the engines are given can be rebuilt from it.
const (
	// ClientTokenKey is the key of the token in a client's Secret.
	ClientTokenKey = "token"
	// ClientsFileKey is the key of the clients file in the engines' Secret.
	ClientsFileKey = "clients.json"
	// UserTokenKeyKey is the key of the user-token signing key.
	UserTokenKeyKey = "key"

	clientTokenComponent   = "client-token"
	LabelClient            = "wellbeing.attune.io/client"
	TokenGenerationKey     = "wellbeing.attune.io/token-generation"
	PreviousTokenHashKey   = "wellbeing.attune.io/previous-token-sha256"
	PreviousTokenExpiryKey = "wellbeing.attune.io/previous-token-expires-at"

	clientsMountPath      = "/etc/attune/clients"
	userTokenKeyMountPath = "/etc/attune/user-token-key"
)

// ClientSecretName is the Secret of a client's token.
func ClientSecretName(p *wellbeingv1alpha1.MeditationProgram, client string) string {
	return p.Name + "-client-" + client
}

// ClientsFileSecretName is the Secret holding the engines' clients file
// (hashes and scopes only, never a token).
func ClientsFileSecretName(p *wellbeingv1alpha1.MeditationProgram) string {
	return p.Name + "-engine-clients"
}

// UserTokenKeySecretName is the Secret holding the program's user-token
// signing key.
func UserTokenKeySecretName(p *wellbeingv1alpha1.MeditationProgram) string {
	return p.Name + "-engine-user-token-key"
}

// rotationGrace is spec.access.rotationGracePeriod, or its default.
func rotationGrace(p *wellbeingv1alpha1.MeditationProgram) time.Duration {
	if g := p.Spec.Access.RotationGracePeriod; g != nil {
		return max(g.Duration, 0)
	}
	d, _ := time.ParseDuration(wellbeingv1alpha1.DefaultRotationGracePeriod)
	return d
}

// clientTokenSecret is a client's token Secret at generation.
func clientTokenSecret(p *wellbeingv1alpha1.MeditationProgram, name, token string, generation int64) *corev1.Secret {
	labels := engineLabels(p)
	labels[LabelComponent] = clientTokenComponent
	labels[LabelClient] = name
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: ClientSecretName(p, name), Namespace: p.Namespace, Labels: labels,
			Annotations: map[string]string{TokenGenerationKey: strconv.FormatInt(generation, 10)},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{ClientTokenKey: []byte(token)},
	}
}

// clientToken is what a client's Secret says about its token.
type clientToken struct {
	hash           string
	generation     int64
	previousHash   string
	previousExpiry time.Time
}

// readClientToken reads a client's Secret; ok is false when it holds no
// usable token (then it is issued anew).
func readClientToken(s *corev1.Secret) (clientToken, bool) {
	token := string(s.Data[ClientTokenKey])
	if token == "" {
		return clientToken{}, false
	}
	gen, _ := strconv.ParseInt(s.Annotations[TokenGenerationKey], 10, 64)
	t := clientToken{hash: auth.HashToken(token), generation: gen, previousHash: s.Annotations[PreviousTokenHashKey]}
	if at, err := time.Parse(time.RFC3339, s.Annotations[PreviousTokenExpiryKey]); err == nil && t.previousHash != "" {
		t.previousExpiry = at
	} else {
		t.previousHash = ""
	}
	return t, true
}

// rotateClientToken turns s into the Secret of a new token at generation;
// the token it held stays valid until now+grace (a zero grace: not at all).
// A token rotated again within the grace period replaces the previous one:
// only the token just replaced is kept.
func rotateClientToken(s *corev1.Secret, token string, generation int64, now time.Time, grace time.Duration) {
	old := string(s.Data[ClientTokenKey])
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Data = map[string][]byte{ClientTokenKey: []byte(token)}
	s.Annotations[TokenGenerationKey] = strconv.FormatInt(generation, 10)
	delete(s.Annotations, PreviousTokenHashKey)
	delete(s.Annotations, PreviousTokenExpiryKey)
	if old != "" && grace > 0 {
		s.Annotations[PreviousTokenHashKey] = auth.HashToken(old)
		// Rounded up to the second the annotation can hold: never shorter
		// than the grace period asked for.
		s.Annotations[PreviousTokenExpiryKey] = now.Add(grace + time.Second - 1).Truncate(time.Second).UTC().Format(time.RFC3339)
	}
}

// renderClientsFile is the engines' clients file: each client's name,
// token hash (and during a grace period its previous one, with the
// instant it expires) and scopes.
// Built-in clients (the PodMonitor's metrics client, the operator's
// tuning client) follow them.
func renderClientsFile(p *wellbeingv1alpha1.MeditationProgram, tokens map[string]clientToken, builtIn ...auth.Client) ([]byte, error) {
	file := auth.ClientsFile{Clients: []auth.Client{}}
	for _, c := range sortedClients(p) {
		t, ok := tokens[c.Name]
		if !ok {
			continue
		}
		entry := auth.Client{Name: c.Name, TokenSHA256: t.hash, PreviousTokenSHA256: t.previousHash}
		if t.previousHash != "" {
			// The engines end the grace period themselves at this instant,
			// not when the rewritten file reaches them (kubelet sync).
			entry.PreviousTokenExpiresAt = ptr.To(t.previousExpiry.UTC())
		}
		for _, s := range c.Scopes {
			entry.Scopes = append(entry.Scopes, auth.Scope(s))
		}
		file.Clients = append(file.Clients, entry)
	}
	file.Clients = append(file.Clients, builtIn...)
	data, err := json.MarshalIndent(file, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render clients file: %w", err)
	}
	// The engine parses it strictly; refuse here what it would refuse.
	if _, err := auth.ParseClients(data); err != nil {
		return nil, fmt.Errorf("spec.access.clients: %w", err)
	}
	return data, nil
}

func sortedClients(p *wellbeingv1alpha1.MeditationProgram) []wellbeingv1alpha1.AccessClient {
	out := slices.Clone(p.Spec.Access.Clients)
	slices.SortFunc(out, func(a, b wellbeingv1alpha1.AccessClient) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// clientsFileSecret holds the clients file the engines mount.
func clientsFileSecret(p *wellbeingv1alpha1.MeditationProgram, file []byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: ClientsFileSecretName(p), Namespace: p.Namespace, Labels: engineLabels(p)},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{ClientsFileKey: file},
	}
}

// userTokenKeySecret holds the program's user-token signing key.
func userTokenKeySecret(p *wellbeingv1alpha1.MeditationProgram, key []byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: UserTokenKeySecretName(p), Namespace: p.Namespace, Labels: engineLabels(p)},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{UserTokenKeyKey: key},
	}
}

// tokenGeneration is a client's tokenGeneration (1 when unset: a program
// built in Go that never went through the API server's defaulting).
func tokenGeneration(c wellbeingv1alpha1.AccessClient) int64 { return max(c.TokenGeneration, 1) }

// reconcileAccess issues, rotates and retires the clients' tokens, writes
// the engines' clients file and the user-token signing key, and lists the
// clients in status. The engines re-read both files without a restart,
// and neither is part of the pod template's hash.
func (r *MeditationProgramReconciler) reconcileAccess(ctx context.Context, a *childApplier, rc *programReconcile) error {
	p := rc.program
	if err := checkPodSelectors(p); err != nil {
		return err
	}
	// The reconcilers' client serves the operator's own Secrets from its
	// watch and reads any other from the API server (ownObjectsClient).
	reader := client.Reader(r.Client)
	now, grace := r.Clock.Now(), rotationGrace(p)
	tokens := map[string]clientToken{}
	var statuses []wellbeingv1alpha1.ClientStatus
	for _, c := range sortedClients(p) {
		t, err := r.reconcileClientToken(ctx, a, reader, p, c, now, grace)
		if err != nil {
			return err
		}
		tokens[c.Name] = t
		st := wellbeingv1alpha1.ClientStatus{Name: c.Name, SecretName: ClientSecretName(p, c.Name), TokenGeneration: t.generation}
		if t.previousHash != "" {
			st.PreviousTokenExpiresAt = &metav1.Time{Time: t.previousExpiry}
			rc.requeueAfter = minPositive(rc.requeueAfter, t.previousExpiry.Sub(now)+time.Second)
		}
		statuses = append(statuses, st)
	}
	if err := r.retireClientSecrets(ctx, a, reader, p); err != nil {
		return err
	}
	var builtIn []auth.Client
	if metrics, err := r.reconcileMetricsClient(ctx, a, reader, p); err != nil {
		return err
	} else if metrics != nil {
		builtIn = append(builtIn, *metrics)
	}
	// The operator's own client for the strength push (strength_push.go).
	tuner, err := r.reconcileTuningClient(ctx, a, reader, p)
	if err != nil {
		return err
	}
	builtIn = append(builtIn, *tuner)
	file, err := renderClientsFile(p, tokens, builtIn...)
	if err != nil {
		return err
	}
	if err := a.apply(ctx, p, clientsFileSecret(p, file)); err != nil {
		return err
	}
	// An existing key Secret the program does not control is refused
	// (createSecretIfMissing): a planted key would mint user tokens.
	if _, err := a.createSecretIfMissing(ctx, p, client.ObjectKey{Namespace: p.Namespace, Name: UserTokenKeySecretName(p)}, func() (*corev1.Secret, error) {
		key := make([]byte, auth.MinUserTokenKeyBytes)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("generate user-token key: %w", err)
		}
		return userTokenKeySecret(p, key), nil
	}); err != nil {
		return err
	}
	rc.status.Clients = statuses
	return nil
}

// reconcileClientToken makes client c's Secret hold a token of its
// generation, rotating it when the generation grew and dropping the
// previous token once its grace period is over.
func (r *MeditationProgramReconciler) reconcileClientToken(ctx context.Context, a *childApplier, reader client.Reader, p *wellbeingv1alpha1.MeditationProgram,
	c wellbeingv1alpha1.AccessClient, now time.Time, grace time.Duration) (clientToken, error) {
	key := client.ObjectKey{Namespace: p.Namespace, Name: ClientSecretName(p, c.Name)}
	want := tokenGeneration(c)
	secret := &corev1.Secret{}
	notOurs := fmt.Errorf("spec.access.clients[%s]: Secret %s exists and is not this program's; rename the client or remove the Secret", c.Name, key.Name)
	err := getGeneratedSecret(ctx, reader, key, secret)
	if apierrors.IsNotFound(err) {
		token, tokenErr := randomToken()
		if tokenErr != nil {
			return clientToken{}, tokenErr
		}
		created, createErr := a.createSecretIfMissing(ctx, p, key, func() (*corev1.Secret, error) {
			return clientTokenSecret(p, c.Name, token, want), nil
		})
		if errors.Is(createErr, errSecretNotControlled) {
			return clientToken{}, notOurs
		}
		if createErr != nil {
			return clientToken{}, createErr
		}
		if created {
			return clientToken{hash: auth.HashToken(token), generation: want}, nil
		}
		// Another writer stored it between our read and create (the
		// cache, or AlreadyExists): our token was never stored, so read
		// what is and go on as if we had found it.
		err = reader.Get(ctx, key, secret)
	}
	if err != nil {
		return clientToken{}, fmt.Errorf("get Secret %s: %w", key, err)
	}
	if ref := metav1.GetControllerOf(secret); ref == nil || ref.UID != p.UID {
		return clientToken{}, notOurs
	}
	current, ok := readClientToken(secret)
	changed := ""
	switch {
	case !ok || current.generation != want:
		token, err := randomToken()
		if err != nil {
			return clientToken{}, err
		}
		if !ok {
			secret.Data = nil // nothing usable to keep valid
		}
		rotateClientToken(secret, token, want, now, grace)
		changed = fmt.Sprintf("Rotated the token of client %s (generation %d)", c.Name, want)
	case current.previousHash != "" && !now.Before(current.previousExpiry):
		delete(secret.Annotations, PreviousTokenHashKey)
		delete(secret.Annotations, PreviousTokenExpiryKey)
		changed = fmt.Sprintf("Retired the previous token of client %s", c.Name)
	default:
		return current, nil
	}
	if err := r.Update(ctx, secret, client.FieldOwner(FieldOwner)); err != nil {
		return clientToken{}, fmt.Errorf("update Secret %s: %w", key.Name, err)
	}
	a.changes = append(a.changes, changed)
	t, _ := readClientToken(secret)
	return t, nil
}

// retireClientSecrets deletes the token Secrets of clients no longer
// listed: their tokens stop at once (a removed client gets no grace).
func (r *MeditationProgramReconciler) retireClientSecrets(ctx context.Context, a *childApplier, reader client.Reader, p *wellbeingv1alpha1.MeditationProgram) error {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	if err := reader.List(ctx, list, client.InNamespace(p.Namespace),
		client.MatchingLabels{LabelManagedBy: ManagedByValue, LabelProgram: p.Name, LabelComponent: clientTokenComponent}); err != nil {
		return fmt.Errorf("list client token Secrets: %w", err)
	}
	for i := range list.Items {
		s := &list.Items[i]
		name := s.Labels[LabelClient]
		if slices.ContainsFunc(p.Spec.Access.Clients, func(c wellbeingv1alpha1.AccessClient) bool { return c.Name == name }) {
			continue
		}
		if ref := metav1.GetControllerOf(s); ref == nil || ref.UID != p.UID {
			continue
		}
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace}}
		if err := r.Delete(ctx, secret, client.Preconditions{UID: &s.UID}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete Secret %s of removed client %s: %w", s.Name, name, err)
		}
		a.changes = append(a.changes, "Deleted Secret "+s.Name)
	}
	return nil
}

// withAccessVolumes mounts the clients file and the user-token signing key
// into the engine container: whole Secrets as directories (never subPath),
// so that the kubelet's updates reach the running engines. Both are
// mounted, and named in the configuration, with or without clients: adding
// a client or rotating a token then changes no pod template.
func withAccessVolumes(p *wellbeingv1alpha1.MeditationProgram, volumes []corev1.Volume, mounts []corev1.VolumeMount) ([]corev1.Volume, []corev1.VolumeMount) {
	volumes = append(volumes,
		corev1.Volume{Name: "clients", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: ClientsFileSecretName(p)}}},
		corev1.Volume{Name: "user-token-key", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: UserTokenKeySecretName(p)}}},
	)
	mounts = append(mounts,
		corev1.VolumeMount{Name: "clients", MountPath: clientsMountPath, ReadOnly: true},
		corev1.VolumeMount{Name: "user-token-key", MountPath: userTokenKeyMountPath, ReadOnly: true},
	)
	return volumes, mounts
}

// accessChildren are the access objects of a program with no clients, as
// a plain client would create them (EngineChildren, for the benchmarks).
func accessChildren(p *wellbeingv1alpha1.MeditationProgram, w *wellbeingv1alpha1.VirtualWorld) []client.Object {
	file, _ := json.Marshal(auth.ClientsFile{Clients: []auth.Client{}}) // a literal: cannot fail
	return []client.Object{
		clientsFileSecret(p, file),
		userTokenKeySecret(p, []byte("benchmark-user-token-signing-key")),
		engineNetworkPolicy(p, w, ""),
	}
}
