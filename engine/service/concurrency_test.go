package service_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/engine/telemetry"
)

// TestConsentRacingRejectedTelemetry: telemetry for a user without consent
// is rejected, and its request drops the cache entry it made; a consent
// given meanwhile must still be in force afterwards, never lost with that
// entry.
func TestConsentRacingRejectedTelemetry(t *testing.T) {
	db, err := store.OpenBolt(t.TempDir(), store.WithoutSync())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	svc, err := service.New(benchConfig(), service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Now: func() time.Time { return benchNow }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for u := range 300 {
		user := fmt.Sprintf("racer-%03d", u)
		sample := []telemetry.Sample{{User: user, Kind: telemetry.KindQuestionnaire, At: benchNow, BRS: []int{3, 3, 3, 3, 3, 3}}}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				_, err := svc.Ingest(ctx, sample)
				var consent *service.ConsentError
				if err != nil && !errors.As(err, &consent) {
					t.Error(err)
				}
			})
		}
		wg.Go(func() {
			if _, err := svc.SetConsent(ctx, user, telemetry.Scopes); err != nil {
				t.Error(err)
			}
		})
		wg.Wait()
		if _, err := svc.Ingest(ctx, sample); err != nil {
			t.Fatalf("%s: telemetry after consent was given: %v", user, err)
		}
	}
}
