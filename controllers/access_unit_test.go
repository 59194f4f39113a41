package controllers

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/engine/auth"
)

// Builder tests for access.go and network_policy.go: pure functions of the
// program, no API server.

func accessTestProgram(clients ...wellbeingv1alpha1.AccessClient) *wellbeingv1alpha1.MeditationProgram {
	p := modelTestProgram(nil)
	p.Spec.Access.Clients = clients
	return p
}

var (
	gameServer = wellbeingv1alpha1.AccessClient{Name: "game-server", Namespaces: []string{"games"}, PodSelector: map[string]wellbeingv1alpha1.LabelValue{"app": "server"},
		Scopes: []wellbeingv1alpha1.ClientScope{wellbeingv1alpha1.ScopeIngest, wellbeingv1alpha1.ScopeDecide}, TokenGeneration: 1}
	dpo = wellbeingv1alpha1.AccessClient{Name: "dpo", Namespaces: []string{"privacy", "audit"},
		Scopes: []wellbeingv1alpha1.ClientScope{wellbeingv1alpha1.ScopeErase, wellbeingv1alpha1.ScopeExport}, TokenGeneration: 1}
)

func TestClientScopesAreTheEnginesScopes(t *testing.T) {
	var got []auth.Scope
	for _, s := range wellbeingv1alpha1.AllClientScopes {
		got = append(got, auth.Scope(s))
	}
	if !slices.Equal(got, auth.AllScopes) {
		t.Fatalf("the CRD's scopes %v are not engine/auth's %v", got, auth.AllScopes)
	}
}

func TestClientsFileHoldsHashesAndScopesOnly(t *testing.T) {
	p := accessTestProgram(gameServer, dpo)
	expiry := time.Now().Add(time.Hour).Truncate(time.Second).UTC()
	tokens := map[string]clientToken{
		"game-server": {hash: auth.HashToken("tok-game"), generation: 1},
		"dpo":         {hash: auth.HashToken("tok-dpo-2"), generation: 2, previousHash: auth.HashToken("tok-dpo-1"), previousExpiry: expiry},
	}
	data, err := renderClientsFile(p, tokens)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "tok-") {
		t.Fatalf("the clients file holds a raw token:\n%s", data)
	}
	clients, err := auth.ParseClients(data)
	if err != nil {
		t.Fatalf("the engine refuses the clients file: %v\n%s", err, data)
	}
	want := []auth.Client{
		{Name: "dpo", TokenSHA256: auth.HashToken("tok-dpo-2"), PreviousTokenSHA256: auth.HashToken("tok-dpo-1"), Scopes: []auth.Scope{auth.ScopeErase, auth.ScopeExport}},
		{Name: "game-server", TokenSHA256: auth.HashToken("tok-game"), Scopes: []auth.Scope{auth.ScopeIngest, auth.ScopeDecide}},
	}
	// The previous token's expiry, compared on its own (Semantic.DeepEqual
	// cannot look into a time.Time).
	if at := clients[0].PreviousTokenExpiresAt; at == nil || !at.Equal(expiry) || clients[1].PreviousTokenExpiresAt != nil {
		t.Fatalf("previousTokenExpiresAt = %v / %v, want %v for dpo only", at, clients[1].PreviousTokenExpiresAt, expiry)
	}
	compared := slices.Clone(clients)
	compared[0].PreviousTokenExpiresAt = nil
	if !equality.Semantic.DeepEqual(compared, want) {
		t.Fatalf("clients file = %+v, want %+v", clients, want)
	}
	// The engine authenticates the tokens, and only them, with the scopes.
	engine := auth.Tokens{Clients: clients}
	for token, name := range map[string]string{"tok-game": "game-server", "tok-dpo-2": "dpo", "tok-dpo-1": "dpo"} {
		if pr, ok := engine.Authenticate(token); !ok || pr.Name != name {
			t.Errorf("token %s: got %+v, %v; want client %s", token, pr, ok, name)
		}
	}
	if _, ok := engine.Authenticate("tok-other"); ok {
		t.Error("an unknown token was accepted")
	}
	// The engine itself ends the grace period at the expiry the file
	// states, whether or not the operator has rewritten the file yet.
	ended := auth.Tokens{Clients: clients, Now: func() time.Time { return expiry }}
	if _, ok := ended.Authenticate("tok-dpo-1"); ok {
		t.Error("the previous token was accepted after its expiry")
	}
	if _, ok := ended.Authenticate("tok-dpo-2"); !ok {
		t.Error("the current token was refused after the previous one's expiry")
	}

	empty, err := renderClientsFile(accessTestProgram(), nil)
	if err != nil || !strings.Contains(string(empty), `"clients": []`) {
		t.Fatalf("no clients: %s, %v; want an empty list the engine reads", empty, err)
	}
}

func TestRotationKeepsThePreviousHashForTheGracePeriod(t *testing.T) {
	p := accessTestProgram(gameServer)
	s := clientTokenSecret(p, "game-server", "first", 1)
	now := time.Date(2026, 12, 1, 10, 0, 0, 500, time.UTC)
	rotateClientToken(s, "second", 2, now, time.Hour)
	got, ok := readClientToken(s)
	if !ok || got.hash != auth.HashToken("second") || got.generation != 2 || got.previousHash != auth.HashToken("first") {
		t.Fatalf("after rotation: %+v, %v", got, ok)
	}
	if want := now.Add(time.Hour).Truncate(time.Second).Add(time.Second); !got.previousExpiry.Equal(want) {
		t.Fatalf("previous expires %v, want %v (rounded up, never early)", got.previousExpiry, want)
	}
	if string(s.Data[ClientTokenKey]) != "second" || len(s.Data) != 1 {
		t.Fatalf("Secret data %v: want the new token alone", s.Data)
	}
	// Rotating again within the grace keeps only the token just replaced.
	rotateClientToken(s, "third", 3, now, time.Hour)
	if got, _ := readClientToken(s); got.previousHash != auth.HashToken("second") {
		t.Fatalf("second rotation kept %s, want the hash of the token it replaced", got.previousHash)
	}
	// A zero grace keeps nothing.
	rotateClientToken(s, "fourth", 4, now, 0)
	if got, _ := readClientToken(s); got.previousHash != "" || !got.previousExpiry.IsZero() {
		t.Fatalf("zero grace kept %+v", got)
	}
	if s.Labels[LabelComponent] != clientTokenComponent || s.Labels[LabelClient] != "game-server" || s.Labels[LabelManagedBy] != ManagedByValue {
		t.Fatalf("labels %v", s.Labels)
	}
}

func TestClientsDoNotChangeThePodTemplate(t *testing.T) {
	render := func(p *wellbeingv1alpha1.MeditationProgram) corev1.PodTemplateSpec {
		cm, hash, err := engineConfigMap(p, modelTestWorld(), 0.5)
		if err != nil || cm == nil {
			t.Fatal(err)
		}
		return engineDeployment(p, modelTestWorld(), "example.test/engine:v1", hash).Spec.Template
	}
	base := render(accessTestProgram())
	rotated := gameServer
	rotated.TokenGeneration = 7
	for name, p := range map[string]*wellbeingv1alpha1.MeditationProgram{
		"a client":        accessTestProgram(gameServer),
		"two clients":     accessTestProgram(gameServer, dpo),
		"a rotated token": accessTestProgram(rotated),
	} {
		if got := render(p); !equality.Semantic.DeepEqual(got, base) {
			t.Errorf("%s changed the pod template", name)
		}
	}
	mounts := map[string]string{}
	for _, m := range base.Spec.Containers[0].VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	if mounts["clients"] != clientsMountPath || mounts["user-token-key"] != userTokenKeyMountPath {
		t.Fatalf("engine mounts %v", mounts)
	}
	for _, v := range base.Spec.Volumes {
		if (v.Name == "clients" || v.Name == "user-token-key") && (v.Secret == nil || len(v.Secret.Items) > 0) {
			t.Fatalf("volume %s must mount a whole Secret (updates reach it): %+v", v.Name, v.VolumeSource)
		}
	}
	cfg := renderEngineConfig(accessTestProgram(), modelTestWorld(), 0.5)
	if cfg.ClientTokensFile != clientsMountPath+"/"+ClientsFileKey || cfg.UserTokenKeyFile != userTokenKeyMountPath+"/"+UserTokenKeyKey {
		t.Fatalf("config names %q and %q", cfg.ClientTokensFile, cfg.UserTokenKeyFile)
	}
}

// peersOf flattens a rule's peers to "namespaces|pod labels" strings.
func peersOf(peers []networkingv1.NetworkPolicyPeer) []string {
	var out []string
	for _, p := range peers {
		s := ""
		if p.NamespaceSelector != nil {
			for _, e := range p.NamespaceSelector.MatchExpressions {
				s += e.Key + " " + string(e.Operator) + " " + strings.Join(e.Values, ",")
			}
		}
		if p.PodSelector != nil {
			s += "|" + metav1.FormatLabelSelector(p.PodSelector)
		}
		if p.IPBlock != nil {
			s += "cidr " + p.IPBlock.CIDR
		}
		out = append(out, s)
	}
	return out
}

func portsOf(ports []networkingv1.NetworkPolicyPort) []string {
	var out []string
	for _, p := range ports {
		out = append(out, string(ptr.Deref(p.Protocol, corev1.ProtocolTCP))+"/"+p.Port.String())
	}
	return out
}

func TestEngineNetworkPolicyAdmitsExactlyTheClients(t *testing.T) {
	w := modelTestWorld()
	w.Spec.Isolation.MonitoringNamespaces = []string{"monitoring"}
	np := engineNetworkPolicy(accessTestProgram(gameServer, dpo), w, "attune-system")

	if !equality.Semantic.DeepEqual(np.Spec.PodSelector.MatchLabels, EngineSelectorLabels(accessTestProgram())) {
		t.Fatalf("selects %v, want the program's engine pods", np.Spec.PodSelector)
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}) {
		t.Fatalf("policy types %v", np.Spec.PolicyTypes)
	}
	if len(np.Spec.Ingress) != 1 {
		t.Fatalf("ingress rules %+v", np.Spec.Ingress)
	}
	rule := np.Spec.Ingress[0]
	if got := portsOf(rule.Ports); !slices.Equal(got, []string{"TCP/8080"}) {
		t.Fatalf("ingress ports %v: want the API port only (never the model's)", got)
	}
	want := []string{
		"kubernetes.io/metadata.name In audit,privacy",
		"kubernetes.io/metadata.name In games|app=server",
		"kubernetes.io/metadata.name In attune-system",
		"kubernetes.io/metadata.name In monitoring",
	}
	if got := peersOf(rule.From); !slices.Equal(got, want) {
		t.Fatalf("ingress from\n%v\nwant\n%v", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The world's own namespace is not admitted once clients are named.
	for _, peer := range peersOf(rule.From) {
		if strings.Contains(peer, "In plaza") {
			t.Fatalf("the world's namespace is admitted: %s", peer)
		}
	}

	// Egress: DNS only, for an embedded store and a model on no network.
	if len(np.Spec.Egress) != 1 || !slices.Equal(peersOf(np.Spec.Egress[0].To), []string{"kubernetes.io/metadata.name In kube-system|k8s-app=kube-dns"}) ||
		!slices.Equal(portsOf(np.Spec.Egress[0].Ports), []string{"UDP/53", "TCP/53"}) {
		t.Fatalf("egress %+v: want DNS alone", np.Spec.Egress)
	}
}

func TestEngineNetworkPolicyWithoutClientsAdmitsTheWorldNamespace(t *testing.T) {
	np := engineNetworkPolicy(accessTestProgram(), modelTestWorld(), "")
	if got := peersOf(np.Spec.Ingress[0].From); !slices.Equal(got, []string{"kubernetes.io/metadata.name In plaza"}) {
		t.Fatalf("ingress from %v: want the world's namespace alone", got)
	}
}

func TestEngineNetworkPolicyEgress(t *testing.T) {
	w := modelTestWorld()
	store := func(p *wellbeingv1alpha1.MeditationProgram) *wellbeingv1alpha1.MeditationProgram {
		p.Spec.Engine.Store = wellbeingv1alpha1.EngineStore{Type: wellbeingv1alpha1.StorePostgreSQL,
			Postgres: &wellbeingv1alpha1.PostgresStore{SecretRef: wellbeingv1alpha1.SecretReference{Name: "pg"}}}
		return p
	}
	cases := []struct {
		name string
		p    *wellbeingv1alpha1.MeditationProgram
		want []string // egress rules after DNS: "peers => ports"
	}{
		{"postgres, no peer", store(accessTestProgram()), []string{" => TCP/5432"}},
		{"postgres in a namespace", func() *wellbeingv1alpha1.MeditationProgram {
			p := store(accessTestProgram())
			p.Spec.Access.PostgresPeer = &wellbeingv1alpha1.NetworkPeer{Namespace: "databases", PodSelector: map[string]wellbeingv1alpha1.LabelValue{"cnpg.io/cluster": "main"}, Port: 5433}
			return p
		}(), []string{"kubernetes.io/metadata.name In databases|cnpg.io/cluster=main => TCP/5433"}},
		{"postgres by address", func() *wellbeingv1alpha1.MeditationProgram {
			p := store(accessTestProgram())
			p.Spec.Access.PostgresPeer = &wellbeingv1alpha1.NetworkPeer{CIDR: "10.0.8.0/24"}
			return p
		}(), []string{"cidr 10.0.8.0/24 => TCP/5432"}},
		{"a shared model endpoint", modelTestProgram(&wellbeingv1alpha1.ModelSidecar{Endpoint: "http://emotion.models.svc.cluster.local:8081", ModelName: "m"}), []string{" => TCP/8081"}},
		{"a sidecar downloading its model", modelTestProgram(&wellbeingv1alpha1.ModelSidecar{Runtime: wellbeingv1alpha1.ModelRuntimeMLServerHuggingFace, ModelName: "m",
			Storage: &wellbeingv1alpha1.ModelStorage{URI: "hf://org/model"}}), []string{" => TCP/443"}},
		{"a sidecar with its model on a claim", modelTestProgram(&wellbeingv1alpha1.ModelSidecar{Runtime: wellbeingv1alpha1.ModelRuntimeMLServerHuggingFace, ModelName: "m",
			Storage: &wellbeingv1alpha1.ModelStorage{PersistentVolumeClaim: &wellbeingv1alpha1.ModelClaim{ClaimName: "models"}}}), nil},
	}
	for _, c := range cases {
		np := engineNetworkPolicy(c.p, w, "")
		var got []string
		for _, r := range np.Spec.Egress[1:] {
			got = append(got, strings.Join(peersOf(r.To), ";")+" => "+strings.Join(portsOf(r.Ports), ","))
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: egress after DNS %q, want %q", c.name, got, c.want)
		}
		for _, r := range np.Spec.Ingress {
			for _, port := range r.Ports {
				if port.Port.Type == intstr.Int && port.Port.IntVal != engineHTTPPort {
					t.Errorf("%s: ingress admits port %s", c.name, port.Port.String())
				}
			}
		}
	}
}

func TestWorldBaselineLeavesEnginePodsToTheirProgram(t *testing.T) {
	sel, err := metav1.LabelSelectorAsSelector(ptr.To(worldBaselinePodSelector()))
	if err != nil {
		t.Fatal(err)
	}
	if sel.Matches(labels.Set(engineLabels(accessTestProgram()))) {
		t.Fatal("the world's policy selects engine pods")
	}
	if !sel.Matches(labels.Set{"app": "game-server"}) || !sel.Matches(labels.Set{}) {
		t.Fatal("the world's policy does not select the world's other pods")
	}
}

// The world's deny-all selects exactly the engine pods and admits nothing:
// with policies adding up, an engine pod gets only what its program's
// policy admits, and before that policy exists, nothing.
func TestWorldDenyAllIsolatesEnginePods(t *testing.T) {
	w := &wellbeingv1alpha1.VirtualWorld{ObjectMeta: metav1.ObjectMeta{Name: "w"}, Spec: wellbeingv1alpha1.VirtualWorldSpec{Namespace: "w-ns"}}
	np := engineDenyAllPolicy(w)
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(engineLabels(accessTestProgram()))) {
		t.Fatal("the deny-all does not select engine pods")
	}
	if sel.Matches(labels.Set{"app": "game-server"}) || sel.Matches(labels.Set{}) {
		t.Fatal("the deny-all selects the world's other pods")
	}
	if len(np.Spec.Ingress) != 0 || len(np.Spec.Egress) != 0 {
		t.Fatalf("the deny-all admits %+v / %+v", np.Spec.Ingress, np.Spec.Egress)
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}) {
		t.Fatalf("policy types %v: want Ingress and Egress", np.Spec.PolicyTypes)
	}
	if np.Namespace != "w-ns" {
		t.Fatalf("namespace %q", np.Namespace)
	}
}

func TestPodSelectorKeysAreChecked(t *testing.T) {
	p := accessTestProgram(gameServer)
	if err := checkPodSelectors(p); err != nil {
		t.Fatalf("a valid selector: %v", err)
	}
	bad := gameServer
	bad.PodSelector = map[string]wellbeingv1alpha1.LabelValue{"not a key": "x"}
	p = accessTestProgram(gameServer, bad)
	if err := checkPodSelectors(p); err == nil || !strings.Contains(err.Error(), "spec.access.clients[1].podSelector") {
		t.Fatalf("a bad key: %v; want an error naming the field", err)
	}
	p = accessTestProgram()
	p.Spec.Access.PostgresPeer = &wellbeingv1alpha1.NetworkPeer{Namespace: "db", PodSelector: map[string]wellbeingv1alpha1.LabelValue{"/x": "y"}}
	if err := checkPodSelectors(p); err == nil || !strings.Contains(err.Error(), "spec.access.postgresPeer.podSelector") {
		t.Fatalf("a bad key: %v; want an error naming the field", err)
	}
}
