package controllers

import (
	"slices"
	"testing"

	"github.com/attune-io/attune/engine/auth"
)

// The built-in tuning client cannot collide with a user's client (names
// are at most 40 characters there), the engine accepts it with the tune
// scope alone, and a user's client cannot be given that scope through the
// API (its enum lists the world scopes only).
func TestTuningClientInTheClientsFile(t *testing.T) {
	if n := len(TuningClientName); n <= 40 || n > 63 {
		t.Fatalf("TuningClientName has %d characters, want 41 to 63", n)
	}
	tuner := auth.Client{Name: TuningClientName, TokenSHA256: auth.HashToken("t"), Scopes: auth.TuneScopes}
	data, err := renderClientsFile(accessTestProgram(gameServer), map[string]clientToken{gameServer.Name: {hash: auth.HashToken("g"), generation: 1}}, tuner)
	if err != nil {
		t.Fatal(err)
	}
	clients, err := auth.ParseClients(data)
	if err != nil || len(clients) != 2 || clients[1].Name != TuningClientName || !slices.Equal(clients[1].Scopes, []auth.Scope{auth.ScopeTune}) {
		t.Fatalf("clients file %s: %+v, %v", data, clients, err)
	}
	if slices.Contains(auth.AllScopes, auth.ScopeTune) || slices.Contains(auth.ReadWriteScopes, auth.ScopeTune) || slices.Contains(auth.ReadOnlyScopes, auth.ScopeTune) {
		t.Error("the tune scope is among the scopes world clients or the legacy tokens hold")
	}
	if p := accessTestProgram(gameServer); TuningTokenSecretName(p) == engineTokenName(p) || TuningTokenSecretName(p) == BackupTokenSecretName(p) || TuningTokenSecretName(p) == MetricsTokenSecretName(p) {
		t.Errorf("the tuning token's Secret %s is another token's", TuningTokenSecretName(p))
	}
}
