package client_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/api"
	"github.com/attune-io/attune/engine/auth"
	"github.com/attune-io/attune/engine/client"
	"github.com/attune-io/attune/engine/telemetry"
)

// TestUserTokenSource: a client built on a UserTokenSource acts as its
// user against a real engine, and only as that user.
func TestUserTokenSource(t *testing.T) {
	e := startEngine(t, engineConfig("Social", 2))
	users, err := auth.NewUserTokens([]byte("user-token-key-0123456789abcdef-0123"), "plaza/calm")
	if err != nil {
		t.Fatal(err)
	}
	e.api.SetTokens(api.Tokens{ReadWrite: rwToken, ReadOnly: roToken, Users: users})
	ctx := context.Background()
	world, err := client.New(e.url, client.WithToken(rwToken))
	if err != nil {
		t.Fatal(err)
	}
	minted, err := world.MintUserToken(ctx, "alice", 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(minted.ExpiresAt); d > 2*time.Minute || d < time.Minute {
		t.Fatalf("expires in %v, want 2m", d)
	}
	source := client.UserToken(world, "alice", 0)
	alice, err := client.New(e.url, client.WithTokenSource(source))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SetConsent(ctx, "alice", telemetry.ScopeText); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Ingest(ctx, []telemetry.Sample{{User: "alice", Kind: telemetry.KindText, At: time.Now(), Text: "calm"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.State(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	first, _ := source.Token(ctx)
	if again, _ := source.Token(ctx); again != first {
		t.Fatal("the source minted a new token while the current one is fresh")
	}
	var apiErr *client.APIError
	if _, err := alice.State(ctx, "bob"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden || apiErr.Field != "id" {
		t.Fatalf("alice's token reading bob: %v, want 403 naming id", err)
	}
	if err := alice.Erase(ctx, "alice"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden {
		t.Fatalf("alice's token erasing: %v, want 403", err)
	}
}
