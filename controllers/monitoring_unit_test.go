package controllers

import (
	"slices"
	"strings"
	"testing"

	"github.com/attune-io/attune/engine/auth"
)

// The operator's monitoring namespaces join the world's on the engines'
// ingress rule, once each.
func TestAdmitMonitoringNamespaces(t *testing.T) {
	w := modelTestWorld()
	w.Spec.Isolation.MonitoringNamespaces = []string{"monitoring"}
	np := engineNetworkPolicy(accessTestProgram(), w, "attune-system")
	before := len(np.Spec.Ingress[0].From)
	admitMonitoringNamespaces(np, w, []string{"monitoring", "observability"})
	from := np.Spec.Ingress[0].From
	if len(from) != before+1 {
		t.Fatalf("%d peers, want %d (one for the namespaces the world does not name)", len(from), before+1)
	}
	added := from[len(from)-1].NamespaceSelector.MatchExpressions[0].Values
	if !slices.Equal(added, []string{"observability"}) || from[len(from)-1].PodSelector != nil {
		t.Fatalf("added peer %+v, want the whole observability namespace", from[len(from)-1])
	}
	if ports := np.Spec.Ingress[0].Ports; len(ports) != 1 || ports[0].Port.IntValue() != engineHTTPPort {
		t.Fatalf("ingress ports %+v, want the API port alone", ports)
	}

	np = engineNetworkPolicy(accessTestProgram(), w, "attune-system")
	admitMonitoringNamespaces(np, w, []string{"monitoring"})
	if len(np.Spec.Ingress[0].From) != before {
		t.Fatal("a namespace the world already admits was added again")
	}
}

func TestParseMonitoringNamespaces(t *testing.T) {
	got, err := ParseMonitoringNamespaces(" monitoring,observability,,monitoring ")
	if err != nil || !slices.Equal(got, []string{"monitoring", "observability"}) {
		t.Fatalf("ParseMonitoringNamespaces = %v, %v", got, err)
	}
	if got, err := ParseMonitoringNamespaces(""); err != nil || got != nil {
		t.Fatalf("empty: %v, %v", got, err)
	}
	if _, err := ParseMonitoringNamespaces("monitoring,Kube_Prometheus"); err == nil || !strings.Contains(err.Error(), `"Kube_Prometheus"`) {
		t.Fatalf("an invalid name: %v, want an error naming it", err)
	}
}

// The built-in metrics client cannot collide with a user's client (names
// are at most 40 characters there) and the engine accepts it.
func TestMetricsClientInTheClientsFile(t *testing.T) {
	if n := len(MetricsClientName); n <= 40 || n > 63 {
		t.Fatalf("MetricsClientName has %d characters, want 41 to 63", n)
	}
	metrics := auth.Client{Name: MetricsClientName, TokenSHA256: auth.HashToken("t"), Scopes: []auth.Scope{auth.ScopeMetrics}}
	data, err := renderClientsFile(accessTestProgram(gameServer), map[string]clientToken{gameServer.Name: {hash: auth.HashToken("g"), generation: 1}}, metrics)
	if err != nil {
		t.Fatal(err)
	}
	clients, err := auth.ParseClients(data)
	if err != nil || len(clients) != 2 || clients[1].Name != MetricsClientName || !slices.Equal(clients[1].Scopes, []auth.Scope{auth.ScopeMetrics}) {
		t.Fatalf("clients file %s: %+v, %v", data, clients, err)
	}
}
