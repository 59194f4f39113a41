package controllers_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	"github.com/attune-io/attune/engine/auth"
	"github.com/attune-io/attune/internal/devstack/engineruntime"
	"github.com/attune-io/attune/internal/devstack/proc"
)

// offsetClock is the operator's clock in this suite: the wall clock plus
// what a test advanced it by (a grace period passes without waiting for
// it). Tests that advance it undo the offset when they end.
type offsetClock struct {
	mu     sync.Mutex
	offset time.Duration
}

var operatorClock = &offsetClock{}

func (c *offsetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *offsetClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

func (c *offsetClock) advance(t *testing.T, d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
	t.Cleanup(func() {
		c.mu.Lock()
		c.offset -= d
		c.mu.Unlock()
	})
}

func accessClient(name string, generation int64, scopes ...wellbeingv1alpha1.ClientScope) wellbeingv1alpha1.AccessClient {
	return wellbeingv1alpha1.AccessClient{Name: name, Namespaces: []string{"games"}, Scopes: scopes, TokenGeneration: generation}
}

// clientsFile reads the engines' clients file as the engine parses it.
func clientsFile(ctx context.Context, p *wellbeingv1alpha1.MeditationProgram) (map[string]auth.Client, error) {
	s := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: controllers.ClientsFileSecretName(p)}, s); err != nil {
		return nil, err
	}
	clients, err := auth.ParseClients(s.Data[controllers.ClientsFileKey])
	if err != nil {
		return nil, err
	}
	out := map[string]auth.Client{}
	for _, c := range clients {
		out[c.Name] = c
	}
	return out, nil
}

func clientToken(ctx context.Context, p *wellbeingv1alpha1.MeditationProgram, name string) (string, error) {
	s := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: controllers.ClientSecretName(p, name)}, s); err != nil {
		return "", err
	}
	if len(s.Data[controllers.ClientTokenKey]) == 0 {
		return "", fmt.Errorf("Secret %s holds no token", s.Name)
	}
	return string(s.Data[controllers.ClientTokenKey]), nil
}

// nudge makes the operator reconcile the program now (an annotation
// change passes its predicate), as its requeue at the grace period's end
// would on the wall clock.
func nudge(t *testing.T, p *wellbeingv1alpha1.MeditationProgram) {
	t.Helper()
	updateSpec(t, p, func(p *wellbeingv1alpha1.MeditationProgram) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations["test.attune.io/nudge"] = time.Now().String()
	})
}

func TestClientTokensAreIssuedRotatedAndRetired(t *testing.T) {
	ctx := context.Background()
	createWorld(t, newWorld("access", "access", wellbeingv1alpha1.ContextSocial))
	p := newProgram("access", "calm", "access")
	p.Spec.Access.Clients = []wellbeingv1alpha1.AccessClient{
		accessClient("game-server", 1, wellbeingv1alpha1.ScopeIngest, wellbeingv1alpha1.ScopeDecide),
		accessClient("dpo", 1, wellbeingv1alpha1.ScopeErase, wellbeingv1alpha1.ScopeExport),
	}
	// Under an hour in all: certificates the operator issues while its
	// clock runs ahead start an hour before its now, and must still be
	// valid by the wall clock the engines' peers check them against.
	p.Spec.Access.RotationGracePeriod = &metav1.Duration{Duration: 20 * time.Minute}
	create(t, p)

	tokens := map[string]string{}
	eventually(t, "a token per client, and their hashes in the clients file", func() error {
		file, err := clientsFile(ctx, p)
		if err != nil {
			return err
		}
		for _, name := range []string{"game-server", "dpo"} {
			tok, err := clientToken(ctx, p, name)
			if err != nil {
				return err
			}
			if file[name].TokenSHA256 != auth.HashToken(tok) || file[name].PreviousTokenSHA256 != "" {
				return fmt.Errorf("clients file entry %s = %+v, want the hash of its Secret's token", name, file[name])
			}
			tokens[name] = tok
		}
		return nil
	})
	if tokens["game-server"] == tokens["dpo"] {
		t.Fatal("two clients got the same token")
	}
	file, _ := clientsFile(ctx, p)
	if !slices.Equal(file["dpo"].Scopes, []auth.Scope{auth.ScopeErase, auth.ScopeExport}) {
		t.Fatalf("dpo's scopes in the clients file: %v", file["dpo"].Scopes)
	}
	raw := &corev1.Secret{}
	get(t, client.ObjectKey{Namespace: p.Namespace, Name: controllers.ClientsFileSecretName(p)}, raw)
	for _, tok := range tokens {
		if bytes.Contains(raw.Data[controllers.ClientsFileKey], []byte(tok)) {
			t.Fatal("the clients file holds a raw token")
		}
	}
	key := &corev1.Secret{}
	get(t, client.ObjectKey{Namespace: p.Namespace, Name: controllers.UserTokenKeySecretName(p)}, key)
	if len(key.Data[controllers.UserTokenKeyKey]) != auth.MinUserTokenKeyBytes {
		t.Fatalf("user-token key has %d bytes", len(key.Data[controllers.UserTokenKeyKey]))
	}
	eventually(t, "status lists the clients", func() error {
		get(t, client.ObjectKeyFromObject(p), p)
		want := []wellbeingv1alpha1.ClientStatus{
			{Name: "dpo", SecretName: "calm-client-dpo", TokenGeneration: 1},
			{Name: "game-server", SecretName: "calm-client-game-server", TokenGeneration: 1},
		}
		if !equality.Semantic.DeepEqual(p.Status.Clients, want) {
			return fmt.Errorf("status.clients = %+v", p.Status.Clients)
		}
		return nil
	})
	deployment := &appsv1.Deployment{}
	eventually(t, "the engine Deployment", func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: "calm-engine"}, deployment)
	})
	template := deployment.Spec.Template.DeepCopy()

	// Rotate game-server: a new token, the old one kept for the grace.
	updateSpec(t, p, func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Access.Clients[0].TokenGeneration = 2 })
	rotatedAt := operatorClock.Now()
	var rotated string
	eventually(t, "the rotated token and the previous hash in the clients file", func() error {
		tok, err := clientToken(ctx, p, "game-server")
		if err != nil {
			return err
		}
		file, err := clientsFile(ctx, p)
		if err != nil {
			return err
		}
		if tok == tokens["game-server"] || file["game-server"].TokenSHA256 != auth.HashToken(tok) ||
			file["game-server"].PreviousTokenSHA256 != auth.HashToken(tokens["game-server"]) {
			return fmt.Errorf("clients file entry %+v after rotation", file["game-server"])
		}
		if file["dpo"].TokenSHA256 != auth.HashToken(tokens["dpo"]) {
			return fmt.Errorf("dpo's token changed with game-server's rotation")
		}
		rotated = tok
		return nil
	})
	eventually(t, "status shows the generation and when the previous token expires", func() error {
		get(t, client.ObjectKeyFromObject(p), p)
		i := slices.IndexFunc(p.Status.Clients, func(c wellbeingv1alpha1.ClientStatus) bool { return c.Name == "game-server" })
		if i < 0 || p.Status.Clients[i].TokenGeneration != 2 || p.Status.Clients[i].PreviousTokenExpiresAt == nil {
			return fmt.Errorf("status.clients = %+v", p.Status.Clients)
		}
		if exp := p.Status.Clients[i].PreviousTokenExpiresAt.Time; exp.Before(rotatedAt.Add(20*time.Minute-2*time.Second)) || exp.After(rotatedAt.Add(20*time.Minute+5*time.Second)) {
			return fmt.Errorf("previous token expires %v, want about %v", exp, rotatedAt.Add(20*time.Minute))
		}
		return nil
	})
	get(t, client.ObjectKeyFromObject(deployment), deployment)
	if !equality.Semantic.DeepEqual(deployment.Spec.Template, *template) {
		t.Fatal("the rotation changed the engine pod template (it would restart the engines)")
	}

	// Before the grace period ends the previous hash stays.
	operatorClock.advance(t, 10*time.Minute)
	nudge(t, p)
	consistently(t, "the previous hash is kept within the grace period", 2*time.Second, func() error {
		file, err := clientsFile(ctx, p)
		if err != nil {
			return err
		}
		if file["game-server"].PreviousTokenSHA256 == "" {
			return fmt.Errorf("dropped before the grace period ended")
		}
		return nil
	})
	// After it, it is dropped.
	operatorClock.advance(t, 11*time.Minute)
	nudge(t, p)
	eventually(t, "the previous hash dropped after the grace period", func() error {
		file, err := clientsFile(ctx, p)
		if err != nil {
			return err
		}
		if file["game-server"].PreviousTokenSHA256 != "" || file["game-server"].TokenSHA256 != auth.HashToken(rotated) {
			return fmt.Errorf("clients file entry %+v", file["game-server"])
		}
		get(t, client.ObjectKeyFromObject(p), p)
		for _, c := range p.Status.Clients {
			if c.PreviousTokenExpiresAt != nil {
				return fmt.Errorf("status still names an expiry: %+v", c)
			}
		}
		return nil
	})

	// A deleted token Secret is issued again (the per-namespace Secret
	// watch), with a new token that replaces the old one at once.
	if err := k8s.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: controllers.ClientSecretName(p, "game-server")}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deleted token Secret issued again", func() error {
		tok, err := clientToken(ctx, p, "game-server")
		if err != nil {
			return err
		}
		file, err := clientsFile(ctx, p)
		if err != nil {
			return err
		}
		if tok == rotated || file["game-server"].TokenSHA256 != auth.HashToken(tok) || file["game-server"].PreviousTokenSHA256 != "" {
			return fmt.Errorf("clients file entry %+v for the reissued token", file["game-server"])
		}
		return nil
	})

	// Removing a client deletes its Secret and its entry.
	updateSpec(t, p, func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Access.Clients = p.Spec.Access.Clients[:1] })
	eventually(t, "the removed client's Secret and entry are gone", func() error {
		err := k8s.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: controllers.ClientSecretName(p, "dpo")}, &corev1.Secret{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("dpo's Secret: %v", err)
		}
		file, err := clientsFile(ctx, p)
		if err != nil {
			return err
		}
		// The operator's built-in tuning client stays (strength_push.go).
		delete(file, controllers.TuningClientName)
		if _, ok := file["dpo"]; ok || len(file) != 1 {
			return fmt.Errorf("clients file %+v", file)
		}
		return nil
	})
	get(t, client.ObjectKeyFromObject(deployment), deployment)
	if !equality.Semantic.DeepEqual(deployment.Spec.Template, *template) {
		t.Fatal("removing a client changed the engine pod template")
	}

	// The program's NetworkPolicy, as applied (envtest enforces none).
	np := &networkingv1.NetworkPolicy{}
	eventually(t, "the engines' NetworkPolicy", func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: "calm-engine"}, np); err != nil {
			return err
		}
		if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) != 2 ||
			!slices.Equal(np.Spec.Ingress[0].From[0].NamespaceSelector.MatchExpressions[0].Values, []string{"games"}) ||
			!slices.Equal(np.Spec.Ingress[0].From[1].NamespaceSelector.MatchExpressions[0].Values, []string{operatorNamespace}) {
			return fmt.Errorf("ingress %+v: want games and the operator's namespace", np.Spec.Ingress)
		}
		return nil
	})
	world := &networkingv1.NetworkPolicy{}
	get(t, client.ObjectKey{Namespace: "access", Name: controllers.NetworkPolicyName}, world)
	if len(world.Spec.PodSelector.MatchExpressions) != 1 || world.Spec.PodSelector.MatchExpressions[0].Operator != metav1.LabelSelectorOpNotIn {
		t.Fatalf("the world's policy selects %+v: want every pod but the engines", world.Spec.PodSelector)
	}
}

func TestAccessValidation(t *testing.T) {
	ctx := context.Background()
	base := func(mutate func(*wellbeingv1alpha1.MeditationProgram)) *wellbeingv1alpha1.MeditationProgram {
		p := newProgram("default", "access-invalid", "nowhere")
		p.Spec.Access.Clients = []wellbeingv1alpha1.AccessClient{accessClient("game-server", 1, wellbeingv1alpha1.ScopeIngest)}
		mutate(p)
		return p
	}
	cases := []struct {
		name, want string
		mutate     func(*wellbeingv1alpha1.MeditationProgram)
	}{
		{"duplicate names", "spec.access.clients", func(p *wellbeingv1alpha1.MeditationProgram) {
			p.Spec.Access.Clients = append(p.Spec.Access.Clients, accessClient("game-server", 1, wellbeingv1alpha1.ScopeDecide))
		}},
		{"unknown scope", "spec.access.clients[0].scopes[0]", func(p *wellbeingv1alpha1.MeditationProgram) {
			p.Spec.Access.Clients[0].Scopes = []wellbeingv1alpha1.ClientScope{"admin"}
		}},
		{"no scope", "spec.access.clients[0].scopes", func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Access.Clients[0].Scopes = nil }},
		{"no namespace", "spec.access.clients[0].namespaces", func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Access.Clients[0].Namespaces = nil }},
		{"reserved name", "spec.access.clients[0].name", func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Access.Clients[0].Name = "read-write" }},
		{"name not a DNS label", "spec.access.clients[0].name", func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Access.Clients[0].Name = "Game_Server" }},
		{"pod selector not labels", "spec.access.clients[0].podSelector.app", func(p *wellbeingv1alpha1.MeditationProgram) {
			p.Spec.Access.Clients[0].PodSelector = map[string]wellbeingv1alpha1.LabelValue{"app": "a b"}
		}},
		{"grace too long", "spec.access.rotationGracePeriod", func(p *wellbeingv1alpha1.MeditationProgram) {
			p.Spec.Access.RotationGracePeriod = &metav1.Duration{Duration: 200 * time.Hour}
		}},
		{"postgres peer with both", "spec.access.postgresPeer", func(p *wellbeingv1alpha1.MeditationProgram) {
			p.Spec.Access.PostgresPeer = &wellbeingv1alpha1.NetworkPeer{Namespace: "db", CIDR: "10.0.0.0/8"}
		}},
		{"postgres peer bad cidr", "spec.access.postgresPeer.cidr", func(p *wellbeingv1alpha1.MeditationProgram) {
			p.Spec.Access.PostgresPeer = &wellbeingv1alpha1.NetworkPeer{CIDR: "10.0.0.300/8"}
		}},
	}
	for _, c := range cases {
		err := k8s.Create(ctx, base(c.mutate))
		if err == nil {
			_ = k8s.Delete(ctx, base(c.mutate))
			t.Errorf("%s: accepted", c.name)
			continue
		}
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want Invalid naming %s", c.name, err, c.want)
		}
	}

	// Every scope the engine knows is accepted; tokenGeneration only grows.
	p := base(func(p *wellbeingv1alpha1.MeditationProgram) {
		p.Spec.Access.Clients[0].Scopes = wellbeingv1alpha1.AllClientScopes
	})
	create(t, p)
	defer func() { _ = k8s.Delete(ctx, p) }()
	setGeneration := func(g int64) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
				return err
			}
			p.Spec.Access.Clients[0].TokenGeneration = g
			return k8s.Update(ctx, p)
		})
	}
	if err := setGeneration(5); err != nil {
		t.Fatalf("bumping tokenGeneration: %v", err)
	}
	if err := setGeneration(4); err == nil || !strings.Contains(err.Error(), "tokenGeneration may only grow") {
		t.Fatalf("lowering tokenGeneration: %v; want refused", err)
	}
}

// engineHTTP is a client for a real engine that trusts the world's CA.
func engineHTTP(t *testing.T, p *wellbeingv1alpha1.MeditationProgram) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caBundle(t, p.Namespace)) {
		t.Fatal("the CA bundle holds no certificate")
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: controllers.EngineServerName(p), MinVersion: tls.VersionTLS12},
	}}
}

type answer struct {
	status int
	body   string
}

func call(t *testing.T, c *http.Client, method, url, token, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b)}
}

// TestClientTokensThroughARealEngine runs a real engine (cmd/engine) on the
// files of the rendered pod, kept in sync with the Secrets as a kubelet
// would, and calls it with the clients' tokens.
func TestClientTokensThroughARealEngine(t *testing.T) {
	ctx := context.Background()
	createWorld(t, newWorld("access-engine", "access-engine", wellbeingv1alpha1.ContextSocial))
	p := newProgram("access-engine", "calm", "access-engine")
	p.Spec.Access.Clients = []wellbeingv1alpha1.AccessClient{
		accessClient("game-server", 1, wellbeingv1alpha1.ScopeIngest, wellbeingv1alpha1.ScopeDecide),
		accessClient("dashboard", 1, wellbeingv1alpha1.ScopeReadState),
	}
	p.Spec.Access.RotationGracePeriod = &metav1.Duration{Duration: 10 * time.Minute}
	create(t, p)
	var game, dashboard string
	eventually(t, "the clients' tokens and the engine's files", func() error {
		var err error
		if game, err = clientToken(ctx, p, "game-server"); err != nil {
			return err
		}
		if dashboard, err = clientToken(ctx, p, "dashboard"); err != nil {
			return err
		}
		if _, err := clientsFile(ctx, p); err != nil {
			return err
		}
		for _, name := range []string{"calm-engine-config", "calm-engine-token", "calm-engine-tls", controllers.UserTokenKeySecretName(p), controllers.BackupTokenSecretName(p)} {
			var obj client.Object = &corev1.Secret{}
			if name == "calm-engine-config" {
				obj = &corev1.ConfigMap{}
			}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: name}, obj); err != nil {
				return err
			}
		}
		return nil
	})
	port, err := proc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	engine, err := engineruntime.Start(ctx, k8s, buildEngine(t), t.TempDir(), "127.0.0.1", port, engineruntime.Source{
		Namespace: p.Namespace, ConfigMap: "calm-engine-config", TokenSecret: "calm-engine-token",
		KeySecret: controllers.PseudonymizationKeySecretName, KeySecretKey: controllers.PseudonymizationKeySecretKey,
		TLSSecret: "calm-engine-tls", ClientsSecret: controllers.ClientsFileSecretName(p), UserTokenKeySecret: controllers.UserTokenKeySecretName(p),
		BackupTokenSecret: controllers.BackupTokenSecretName(p),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Stop()
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	c := engineHTTP(t, p)

	// In scope: the dashboard reads state (404: no such user yet, past
	// the token check); out of scope: 403 naming the scope.
	if a := call(t, c, "GET", base+"/v1/users/u-1/state", dashboard, ""); a.status == http.StatusUnauthorized || a.status == http.StatusForbidden {
		t.Fatalf("read-state with the dashboard's token: %d %s", a.status, a.body)
	}
	if a := call(t, c, "POST", base+"/v1/users/u-1/tokens", dashboard, `{"ttlSeconds":60}`); a.status != http.StatusForbidden || !strings.Contains(a.body, `\"ingest\"`) && !strings.Contains(a.body, `\"decide\"`) {
		t.Fatalf("minting with the dashboard's token: %d %s; want 403 naming ingest or decide", a.status, a.body)
	}
	if a := call(t, c, "GET", base+"/v1/users/u-1/state", game, ""); a.status != http.StatusForbidden || !strings.Contains(a.body, `\"read-state\"`) {
		t.Fatalf("read-state with the game server's token: %d %s; want 403 naming read-state", a.status, a.body)
	}
	if a := call(t, c, "DELETE", base+"/v1/users/u-1", game, ""); a.status != http.StatusForbidden || !strings.Contains(a.body, `\"erase\"`) {
		t.Fatalf("erase with the game server's token: %d %s; want 403 naming erase", a.status, a.body)
	}

	// The backup route takes the backup token, not a client's nor the
	// read-write token world apps use.
	backupSecret, readWrite := &corev1.Secret{}, &corev1.Secret{}
	get(t, client.ObjectKey{Namespace: p.Namespace, Name: controllers.BackupTokenSecretName(p)}, backupSecret)
	get(t, client.ObjectKey{Namespace: p.Namespace, Name: "calm-engine-token"}, readWrite)
	if a := call(t, c, "GET", base+"/v1/admin/backup", string(backupSecret.Data[controllers.BackupTokenKey]), ""); a.status == http.StatusUnauthorized || a.status == http.StatusForbidden {
		t.Fatalf("backup with the backup token: %d %s", a.status, a.body)
	}
	for name, tok := range map[string]string{"read-write": string(readWrite.Data[controllers.TokenKey]), "game server": game} {
		if a := call(t, c, "GET", base+"/v1/admin/backup", tok, ""); a.status != http.StatusForbidden {
			t.Fatalf("backup with the %s token: %d; want 403", name, a.status)
		}
	}

	// The game server mints a user token (the program's signing key);
	// the token reads its own user's state only.
	minted := call(t, c, "POST", base+"/v1/users/u-1/tokens", game, `{"ttlSeconds":60}`)
	if minted.status != http.StatusOK {
		t.Fatalf("minting with the game server's token: %d %s", minted.status, minted.body)
	}
	var userToken struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(minted.body), &userToken); err != nil || userToken.Token == "" {
		t.Fatalf("mint answer %s: %v", minted.body, err)
	}
	if a := call(t, c, "GET", base+"/v1/users/u-1/state", userToken.Token, ""); a.status == http.StatusUnauthorized || a.status == http.StatusForbidden {
		t.Fatalf("the user token on its own user: %d %s", a.status, a.body)
	}
	if a := call(t, c, "GET", base+"/v1/users/u-2/state", userToken.Token, ""); a.status != http.StatusForbidden {
		t.Fatalf("the user token on another user: %d %s; want 403", a.status, a.body)
	}

	// Rotation: both tokens work during the grace period, the old one is
	// refused after it.
	updateSpec(t, p, func(p *wellbeingv1alpha1.MeditationProgram) { p.Spec.Access.Clients[1].TokenGeneration = 2 })
	var rotated string
	eventually(t, "the engine accepts the rotated token", func() error {
		tok, err := clientToken(ctx, p, "dashboard")
		if err != nil || tok == dashboard {
			return fmt.Errorf("not rotated yet (%v)", err)
		}
		if a := call(t, c, "GET", base+"/v1/users/u-1/state", tok, ""); a.status == http.StatusUnauthorized {
			return fmt.Errorf("new token refused: %d %s", a.status, a.body)
		}
		rotated = tok
		return nil
	})
	if a := call(t, c, "GET", base+"/v1/users/u-1/state", dashboard, ""); a.status == http.StatusUnauthorized {
		t.Fatalf("the previous token was refused within the grace period: %d %s", a.status, a.body)
	}
	operatorClock.advance(t, 10*time.Minute+2*time.Second)
	nudge(t, p)
	eventually(t, "the engine refuses the rotated-out token", func() error {
		if a := call(t, c, "GET", base+"/v1/users/u-1/state", dashboard, ""); a.status != http.StatusUnauthorized {
			return fmt.Errorf("previous token after the grace period: %d %s", a.status, a.body)
		}
		return nil
	})
	if a := call(t, c, "GET", base+"/v1/users/u-1/state", rotated, ""); a.status == http.StatusUnauthorized || a.status == http.StatusForbidden {
		t.Fatalf("the current token after the grace period: %d %s", a.status, a.body)
	}
}
