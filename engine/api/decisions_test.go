package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
)

// decide asks for a decision; key is the Idempotency-Key ("" for none).
func (e *engine) decide(user, key string, body any) (response, http.Header) {
	e.t.Helper()
	headers := http.Header{}
	if key != "" {
		headers.Set("Idempotency-Key", key)
	}
	return e.doWith(http.MethodPost, "/v1/users/"+user+"/decisions", rwToken, headers, body)
}

// snapshot is every byte the store holds for the program: users, the
// population prior and the decision log.
func (e *engine) snapshot() string {
	e.t.Helper()
	ctx := context.Background()
	var b strings.Builder
	if err := e.store.EachUser(ctx, func(k string, it store.Item) error {
		fmt.Fprintf(&b, "user %s v%d %s\n", k, it.Version, it.Value)
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	if err := e.store.EachDecision(ctx, "", func(k store.DecisionKey, it store.Item) error {
		fmt.Fprintf(&b, "decision %s/%s v%d %s\n", k.User, k.ID, it.Version, it.Value)
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	pop, err := e.store.Meta(ctx, "population")
	if err != nil {
		e.t.Fatal(err)
	}
	fmt.Fprintf(&b, "population v%d %s\n", pop.Version, pop.Value)
	return b.String()
}

func (e *engine) decisions() []map[string]any {
	e.t.Helper()
	var out []map[string]any
	if err := e.store.EachDecision(context.Background(), "", func(_ store.DecisionKey, it store.Item) error {
		logged, err := service.DecodeDecision(it.Value)
		if err != nil {
			return err
		}
		raw, _ := json.Marshal(logged)
		var d map[string]any
		if err := json.Unmarshal(raw, &d); err != nil {
			return err
		}
		out = append(out, d)
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// mood sends a mood questionnaire (1–5), which moves the emotion estimate.
func (e *engine) mood(user string, mood int) {
	e.t.Helper()
	expect(e.t, e.telemetry(map[string]any{"user": user, "kind": "questionnaire", "at": e.ts(0), "mood": mood}), 200, "", "")
}

func TestDecisionRetryIsIdempotent(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		e := startEngineOn(t, testConfig("Social", 2), open(t))
		e.consent("gina", "behaviour", "questionnaire")
		e.mood("gina", 2)
		body := map[string]any{"available": true, "context": []string{"between_tasks"}}
		first, _ := e.decide("gina", "retry-1", body)
		expect(t, first, 200, "", "")
		for _, field := range []string{"id", "action", "probability", "treatmentProbability", "instructions", "policyVersion"} {
			if _, ok := first.body[field]; !ok {
				t.Errorf("decision lacks %q: %s", field, first.raw)
			}
		}
		before := e.snapshot()
		for range 3 {
			again, h := e.decide("gina", "retry-1", body)
			expect(t, again, 200, "", "")
			if again.raw != first.raw || h.Get("Idempotent-Replayed") != "true" {
				t.Fatalf("retry answered %s (replayed %q), want %s", again.raw, h.Get("Idempotent-Replayed"), first.raw)
			}
		}
		if after := e.snapshot(); after != before {
			t.Errorf("a retry wrote to the store:\nbefore %s\nafter  %s", before, after)
		}
		// The same key for another request is refused; a new key decides anew.
		r, _ := e.decide("gina", "retry-1", map[string]any{"available": false})
		expect(t, r, 422, "Idempotency-Key", "different request")
		second, _ := e.decide("gina", "retry-2", body)
		expect(t, second, 200, "", "")
		if second.body["id"] == first.body["id"] {
			t.Error("a new key returned the old decision")
		}
		if n := len(e.decisions()); n != 2 {
			t.Errorf("%d decisions logged, want 2", n)
		}
		r, _ = e.decide("nobody", "", nil)
		expect(t, r, 404, "id", "unknown user")
		r, _ = e.decide("gina", "", map[string]any{"context": []string{"in_session", "at_the_dentist"}})
		expect(t, r, 400, "context[1]", "unknown context tag")
		r, _ = e.decide("gina", "bad key", nil)
		expect(t, r, 400, "Idempotency-Key", "printable")
	})
}

func TestStateReadIsReadOnly(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		e := startEngineOn(t, testConfig("Social", 2), open(t))
		e.consent("hana", "behaviour", "questionnaire")
		e.mood("hana", 3)
		d, _ := e.decide("hana", "", nil)
		expect(t, d, 200, "", "")
		before := e.snapshot()
		var first string
		for i := range 100 {
			r := e.do("GET", "/v1/users/hana/state", rwToken, "", nil)
			expect(t, r, 200, "", "")
			if i == 0 {
				first = r.raw
				last := r.body["lastDecision"].(map[string]any)
				if last["id"] != d.body["id"] {
					t.Errorf("lastDecision %v, want %v", last["id"], d.body["id"])
				}
			} else if r.raw != first {
				t.Fatalf("GET %d answered differently:\n%s\n%s", i, r.raw, first)
			}
		}
		if after := e.snapshot(); after != before {
			t.Errorf("100 GETs changed the store:\nbefore %s\nafter  %s", before, after)
		}
	})
}

func TestCooldownAndDailyCap(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		cfg := testConfig("Social", 2)
		cfg.Strength.Value = 0.9 // treat often, so the limits bind
		cfg.Dose = config.Dose{MaxPerDay: 2, Cooldown: &config.Duration{Duration: 2 * time.Hour}}
		e := startEngineOn(t, cfg, open(t))
		e.consent("ivan", "behaviour", "questionnaire")
		var treated []time.Time
		reasons := map[string]int{}
		for step := range 6 * 24 { // every 10 minutes for a day
			if step%7 == 3 {
				r, _ := e.decide("ivan", "", map[string]any{"available": false})
				expect(t, r, 200, "", "")
				if r.body["action"] != "none" || r.body["reason"] != "unavailable" || r.body["probability"] != 1.0 || r.body["treatmentProbability"] != 0.0 {
					t.Fatalf("unavailable decision: %s", r.raw)
				}
			} else {
				r, _ := e.decide("ivan", "", nil)
				expect(t, r, 200, "", "")
				now := e.clock.Now()
				reason, _ := r.body["reason"].(string)
				reasons[reason]++
				if r.body["action"] != "none" {
					if len(treated) > 0 && now.Sub(treated[len(treated)-1]) < 2*time.Hour {
						t.Fatalf("treated at %v within the cooldown of %v", now, treated[len(treated)-1])
					}
					treated = append(treated, now)
					if r.body["dose"] == nil {
						t.Fatalf("an intervention without a dose: %s", r.raw)
					}
				}
				if reason != "" && (r.body["action"] != "none" || r.body["probability"] != 1.0 || r.body["treatmentProbability"] != 0.0) {
					t.Fatalf("a decision with reason %q was randomised: %s", reason, r.raw)
				}
			}
			e.clock.Advance(10 * time.Minute)
		}
		if len(treated) != 2 {
			t.Errorf("treated %d times in a day with a cap of 2", len(treated))
		}
		if reasons["cooldown"] == 0 || reasons["daily_cap"] == 0 {
			t.Errorf("reasons %v: want both cooldown and daily_cap logged", reasons)
		}
		// Every decision is in the log with its reason.
		logged := map[string]int{}
		for _, d := range e.decisions() {
			reason, _ := d["reason"].(string)
			logged[reason]++
		}
		if logged["cooldown"] != reasons["cooldown"] || logged["daily_cap"] != reasons["daily_cap"] || logged["unavailable"] == 0 {
			t.Errorf("logged reasons %v, answered %v", logged, reasons)
		}
	})
}

func TestOutcomeIsSettledAndLinked(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		cfg := testConfig("Social", 2)
		cfg.Strength.Value = 0.9
		cfg.Dose = config.Dose{Cooldown: &config.Duration{}, OutcomeWindow: config.Duration{Duration: 5 * time.Minute}}
		e := startEngineOn(t, cfg, open(t))
		e.consent("jo", "behaviour", "questionnaire")
		e.mood("jo", 1)
		// Ask until the engine delivers an intervention (p ≥ 0.1 each time).
		var d response
		for range 200 {
			d, _ = e.decide("jo", "", nil)
			expect(t, d, 200, "", "")
			if d.body["action"] != "none" {
				break
			}
		}
		action, _ := d.body["action"].(string)
		if action == "none" {
			t.Fatal("no intervention in 200 decisions")
		}
		id := d.body["id"].(string)
		// The answer to it links to the decision.
		done := true
		expect(t, e.telemetry(map[string]any{"user": "jo", "kind": "intervention", "at": e.ts(0), "intervention": action, "completed": done, "rating": 4, "decision": id}), 200, "", "")
		other := "BodyScan"
		if action == other {
			other = "MicroBreak"
		}
		expect(t, e.telemetry(map[string]any{"user": "jo", "kind": "intervention", "at": e.ts(0), "intervention": other, "completed": done, "decision": id}), 400, "samples[0].intervention", "delivered")
		expect(t, e.telemetry(map[string]any{"user": "jo", "kind": "intervention", "at": e.ts(0), "intervention": action, "completed": done, "decision": "0000000000000000-00000000"}), 400, "samples[0].decision", "no decision")
		// After the window the next sample settles the outcome from the estimate.
		e.clock.Advance(6 * time.Minute)
		e.mood("jo", 5)
		var settled map[string]any
		for _, logged := range e.decisions() {
			if logged["id"] == id {
				settled = logged
			}
		}
		outcome, _ := settled["outcome"].(map[string]any)
		if outcome == nil || settled["completed"] != true || settled["rating"] != 4.0 {
			t.Fatalf("logged decision after its window: %v", settled)
		}
		if change := outcome["change"].(float64); change >= 0 {
			t.Errorf("mood 1 → 5 changed the loss by %v, want it to fall", change)
		}
		if want := outcome["loss"].(float64) - settled["lossAtDecision"].(float64); outcome["change"].(float64) != want {
			t.Errorf("change %v, want loss − lossAtDecision = %v", outcome["change"], want)
		}
	})
}

func TestErasureRemovesDecisions(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		e := startEngineOn(t, testConfig("Social", 2), open(t))
		for _, u := range []string{"kim", "lee"} {
			e.consent(u, "behaviour", "questionnaire")
			e.mood(u, 2)
			for range 3 {
				r, _ := e.decide(u, "", nil)
				expect(t, r, 200, "", "")
			}
		}
		expect(t, e.do("DELETE", "/v1/users/kim", rwToken, "", nil), 204, "", "")
		if n := len(e.decisions()); n != 3 {
			t.Errorf("%d decisions remain after erasing kim, want lee's 3", n)
		}
		if snap := e.snapshot(); strings.Contains(snap, e.svc.Pseudonym("kim")) {
			t.Error("kim's pseudonym is still in the store")
		}
	})
}

func TestDecisionExportNeedsResearchConsent(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		e := startEngineOn(t, testConfig("Social", 2), open(t))
		e.consent("mia", "behaviour", "questionnaire", "research")
		e.consent("ned", "behaviour", "questionnaire")
		for _, u := range []string{"mia", "ned"} {
			e.mood(u, 2)
			expect(t, mustDecide(e, u), 200, "", "")
		}
		e.clock.Advance(time.Hour)
		expect(t, mustDecide(e, "mia"), 200, "", "")
		lines := e.export("")
		if len(lines) != 2 {
			t.Fatalf("exported %d decisions, want mia's 2 (ned has no research consent)", len(lines))
		}
		for _, l := range lines {
			if l["user"] != e.svc.Pseudonym("mia") {
				t.Errorf("exported user %v, want mia's pseudonym", l["user"])
			}
		}
		if got := e.export("?since=" + e.ts(-time.Minute)); len(got) != 1 {
			t.Errorf("since the last hour: %d decisions, want 1", len(got))
		}
		// Withdrawing the scope stops the export.
		expect(t, e.do("DELETE", "/v1/users/mia/consent", rwToken, "", map[string]any{"scopes": []string{"research"}}), 200, "", "")
		if got := e.export(""); len(got) != 0 {
			t.Errorf("exported %d decisions after mia withdrew research consent", len(got))
		}
		expect(t, e.do("GET", "/v1/decisions?since=yesterday", rwToken, "", nil), 400, "since", "RFC 3339")
		expect(t, e.do("GET", "/v1/decisions", roToken, "", nil), 403, "Authorization", "")
	})
}

func mustDecide(e *engine, user string) response {
	r, _ := e.decide(user, "", nil)
	return r
}

func (e *engine) export(query string) []map[string]any {
	e.t.Helper()
	r, h := e.doWith(http.MethodGet, "/v1/decisions"+query, rwToken, nil, nil)
	if r.status != http.StatusOK || h.Get("Content-Type") != "application/x-ndjson" {
		e.t.Fatalf("export: %d %s", r.status, h.Get("Content-Type"))
	}
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(r.raw), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			e.t.Fatalf("export line %q: %v", line, err)
		}
		if user := fmt.Sprint(m["user"]); user == "mia" || user == "ned" {
			e.t.Fatalf("a raw user ID in the export: %s", line)
		}
		out = append(out, m)
	}
	return out
}

// TestEffectsArePublishedAboveTheFloor runs a small trial through the API:
// a delivered ResonanceBreathing raises the user's next mood, none leaves
// it. The effect appears in /v1/cohort and /metrics only once at least
// minCohortSize users have both treated and control outcomes, and then it
// says the intervention lowers the loss.
func TestEffectsArePublishedAboveTheFloor(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		cfg := testConfig("Social", 11)
		cfg.Interventions = []string{"ResonanceBreathing"}
		cfg.Dose = config.Dose{Cooldown: &config.Duration{}, MaxPerDay: 96}
		e := startEngineOn(t, cfg, open(t))
		users := make([]string, 14)
		for i := range users {
			users[i] = fmt.Sprintf("trial-%02d", i)
			e.consent(users[i], "behaviour", "questionnaire")
		}
		published := false
		for round := range 30 {
			treated := map[string]bool{}
			for _, u := range users {
				e.mood(u, 2)
				r := mustDecide(e, u)
				expect(t, r, 200, "", "")
				treated[u] = r.body["action"] != "none"
			}
			e.clock.Advance(10 * time.Minute)
			for _, u := range users {
				if treated[u] {
					e.mood(u, 5)
				} else {
					e.mood(u, 2)
				}
			}
			all, err := e.svc.Effects(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			cohort := e.do("GET", "/v1/cohort", roToken, "", nil)
			metrics := e.do("GET", "/metrics", roToken, "", nil).raw
			shown := cohort.body["effects"] != nil
			inMetrics := strings.Contains(metrics, `attune_engine_intervention_effect{bound="estimate",intervention="ResonanceBreathing"`)
			both := 0
			if len(all) == 1 {
				both = all[0].UsersBoth
			}
			if shown != (both >= 11) || inMetrics != shown {
				t.Fatalf("round %d: %d users with both arms; published in cohort %v, in metrics %v", round, both, shown, inMetrics)
			}
			if shown {
				published = true
				eff := cohort.body["effects"].([]any)[0].(map[string]any)
				if eff["upper"].(float64) >= 0 || eff["estimate"].(float64) >= 0 {
					t.Errorf("round %d: effect %v, want an interval below zero (it lowers the loss)", round, eff)
				}
				if round >= 20 {
					break
				}
			}
			e.clock.Advance(10 * time.Minute)
		}
		if !published {
			t.Fatal("the effect was never published")
		}
	})
}

// TestSweptOpenDecisionDoesNotBlockTheUser: the retention sweep deletes a
// decision whose outcome was still open (its user was seen later, so the
// user stays); the user's next requests close it without a write and
// succeed, rather than conflicting with the deleted row forever.
func TestSweptOpenDecisionDoesNotBlockTheUser(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		e := startEngineOn(t, testConfig("Social", 2), open(t)) // retention 24h, window 10m
		e.consent("olga", "behaviour", "questionnaire")
		e.mood("olga", 2)
		expect(t, mustDecide(e, "olga"), 200, "", "")
		e.clock.Advance(5 * time.Minute)
		e.mood("olga", 3) // seen again: the user outlives the decision
		e.clock.Advance(24*time.Hour - 2*time.Minute)
		if _, err := e.svc.Sweep(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := len(e.decisions()); n != 0 {
			t.Fatalf("%d decisions after the sweep, want the expired one gone", n)
		}
		e.clock.Advance(time.Minute)
		e.mood("olga", 3)
		expect(t, mustDecide(e, "olga"), 200, "", "")
		if n := len(e.decisions()); n != 1 {
			t.Errorf("%d decisions logged, want the new one", n)
		}
	})
}
