package service_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/engine/telemetry"
)

// TestConsentRacingRejectedTelemetry: telemetry for a user without consent
// is rejected, and its request drops the cache entry it made; a consent
// given meanwhile must still be in force afterwards, never lost with that
// entry.
func TestConsentRacingRejectedTelemetry(t *testing.T) {
	svc, _ := newService(t, openBolt(store.WithoutSync()))
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
