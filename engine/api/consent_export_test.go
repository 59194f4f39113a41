package api_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/estimate"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/engine/telemetry"
)

// TestConsentLedgerAndExport: every grant and withdrawal lands in the
// user's consent ledger with its time, scopes, the privacy notice's
// version and the client; data under a consent for an older notice is
// refused once the program requires re-consent; the export returns
// everything stored about the user (state, evidence, decisions, ledger)
// and nothing after erasure; on both stores.
func TestConsentLedgerAndExport(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		cfg := testConfig("Social", 2)
		cfg.Consent = config.ConsentPolicy{PolicyVersion: "2026-11", RequireReconsent: true}
		e := startEngineOn(t, cfg, open(t))
		consent := func(method string, body map[string]any) response {
			return e.do(method, "/v1/users/u1/consent", rwToken, "application/json", body)
		}
		expect(t, consent("POST", map[string]any{"scopes": []string{"physiology"}}), 400, "policyVersion", "2026-11")
		expect(t, consent("POST", map[string]any{"scopes": []string{"physiology"}, "policyVersion": "has space"}), 400, "policyVersion", "printable")
		r := consent("POST", map[string]any{"scopes": []string{"physiology", "questionnaire", "behaviour", "research"}, "policyVersion": "2026-11"})
		expect(t, r, 200, "", "")
		if r.body["policyVersion"] != "2026-11" {
			t.Errorf("consent answer %s, want the policy version", r.raw)
		}
		// 5 samples accepted in all, by the user's consent as it stands.
		expect(t, e.telemetry(
			map[string]any{"user": "u1", "kind": "questionnaire", "at": e.ts(0), "brs": []int{4, 2, 4, 2, 3, 2}, "mood": 4},
			map[string]any{"user": "u1", "kind": "heart_rate", "at": e.ts(0), "bpm": 66},
			map[string]any{"user": "u1", "kind": "rr", "at": e.ts(0), "rr_ms": rrSeries(30)},
		), 200, "", "")
		d := e.do("POST", "/v1/users/u1/decisions", rwToken, "application/json", map[string]any{})
		expect(t, d, 200, "", "")
		expect(t, consent("DELETE", map[string]any{"scopes": []string{"physiology"}}), 200, "", "")
		expect(t, e.telemetry(map[string]any{"user": "u1", "kind": "heart_rate", "at": e.ts(0), "bpm": 70}), 403, "samples[0].kind", "physiology")

		// The program publishes a new privacy notice and asks again.
		next := *cfg
		next.Consent.PolicyVersion = "2026-12"
		e.svc.SetConfig(&next)
		expect(t, e.telemetry(map[string]any{"user": "u1", "kind": "questionnaire", "at": e.ts(0), "mood": 3}), 403, "samples[0].user", "current privacy notice")
		expect(t, consent("POST", map[string]any{"scopes": []string{"questionnaire", "behaviour"}, "policyVersion": "2026-12"}), 200, "", "")
		expect(t, e.telemetry(
			map[string]any{"user": "u1", "kind": "questionnaire", "at": e.ts(0), "mood": 3},
			map[string]any{"user": "u1", "kind": "behaviour", "at": e.ts(0), "events": []map[string]any{{"type": "focus", "at": e.ts(-time.Second)}}},
		), 200, "", "")

		expect(t, e.do("GET", "/v1/users/u1/export", roToken, "", nil), 403, "Authorization", "")
		r = e.do("GET", "/v1/users/u1/export", rwToken, "", nil)
		expect(t, r, 200, "", "")
		var x contract.UserExport
		if err := json.Unmarshal([]byte(r.raw), &x); err != nil {
			t.Fatal(err)
		}
		if x.Format != contract.UserExportFormat || x.Program != "plaza/calm" || x.Pseudonym != e.svc.Pseudonym("u1") {
			t.Errorf("export header: format %q program %q pseudonym %q", x.Format, x.Program, x.Pseudonym)
		}
		if x.Samples != 5 || x.State.Samples != 5 {
			t.Errorf("export samples %d (state %d), want the 5 accepted", x.Samples, x.State.Samples)
		}
		if got := strings.Join(scopeNames(x.Consent.Scopes), ","); got != "behaviour,questionnaire" || x.Consent.PolicyVersion != "2026-12" {
			t.Errorf("export consent %+v", x.Consent)
		}
		type entry struct{ action, scopes, inForce, version, source string }
		var ledger []entry
		for _, ev := range x.ConsentLedger {
			ledger = append(ledger, entry{ev.Action, strings.Join(scopeNames(ev.Scopes), ","), strings.Join(scopeNames(ev.InForce), ","), ev.PolicyVersion, ev.Source})
			if ev.At.IsZero() {
				t.Errorf("ledger entry without a time: %+v", ev)
			}
		}
		want := []entry{
			{"grant", "behaviour,physiology,questionnaire,research", "behaviour,physiology,questionnaire,research", "2026-11", "read-write"},
			{"withdraw", "physiology", "behaviour,questionnaire,research", "", "read-write"},
			{"grant", "behaviour,questionnaire", "behaviour,questionnaire", "2026-12", "read-write"},
		}
		if len(ledger) != len(want) {
			t.Fatalf("ledger %+v, want %+v", ledger, want)
		}
		for i := range want {
			if ledger[i] != want[i] {
				t.Errorf("ledger[%d] = %+v, want %+v", i, ledger[i], want[i])
			}
		}
		if len(x.Decisions) != 1 || x.Decisions[0].ID != d.body["id"] {
			t.Errorf("export decisions %+v, want the one taken (%v)", x.Decisions, d.body["id"])
		}
		var model estimate.Model
		if err := json.Unmarshal(x.Evidence, &model); err != nil || len(model.RR) == 0 || model.ResilienceBRS.Samples != 1 {
			t.Errorf("export evidence: %d RR intervals, BRS %+v, %v; want the stored RR window and the one BRS", len(model.RR), model.ResilienceBRS, err)
		}
		st := e.do("GET", "/v1/users/u1/state", rwToken, "", nil)
		if st.body["resilience"].(map[string]any)["value"] != float64(x.State.Resilience.Value) {
			t.Errorf("export state %+v differs from GET state %s", x.State.Resilience, st.raw)
		}
		if len(x.Policy) == 0 || x.Policy[0] != '{' {
			t.Errorf("export policy %s", x.Policy)
		}

		// Erasure takes the ledger with everything else.
		expect(t, e.do("DELETE", "/v1/users/u1", rwToken, "", nil), 204, "", "")
		expect(t, e.do("GET", "/v1/users/u1/export", rwToken, "", nil), 404, "id", "")
		expect(t, e.do("GET", "/v1/users/nobody/export", rwToken, "", nil), 404, "id", "")
	})
}

func scopeNames(scopes []telemetry.Scope) []string {
	out := make([]string, len(scopes))
	for i, s := range scopes {
		out[i] = string(s)
	}
	return out
}

// TestQuestionnaireScopeMigration: a user who consented to behaviour
// before questionnaires had a scope of their own keeps sending
// questionnaires under that consent (it covered them when given), until
// their consent next changes; a new consent must name questionnaire.
func TestQuestionnaireScopeMigration(t *testing.T) {
	eachBackend(t, func(t *testing.T, open func(t *testing.T) store.Store) {
		db := open(t)
		cfg := testConfig("Social", 2)
		// The record an engine of the previous version stored.
		planter, err := service.New(cfg, service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef")})
		if err != nil {
			t.Fatal(err)
		}
		at := time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)
		old, err := json.Marshal(service.Record{Consent: service.Consent{Scopes: []telemetry.Scope{telemetry.ScopeBehaviour}, At: at}, LastSeen: at, Model: estimate.NewModel()})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(old), `"cs"`) {
			t.Fatalf("the planted record names a consent scheme: %s", old)
		}
		if err := db.Commit(context.Background(), store.Change{Users: map[string]store.Write{planter.Pseudonym("veteran"): {Value: old}}}); err != nil {
			t.Fatal(err)
		}
		e := startEngineOn(t, cfg, db)
		questionnaire := func(user string) map[string]any {
			return map[string]any{"user": user, "kind": "questionnaire", "at": e.ts(0), "mood": 4}
		}
		expect(t, e.telemetry(questionnaire("veteran")), 200, "", "")
		e.consent("newcomer", "behaviour")
		expect(t, e.telemetry(questionnaire("newcomer")), 403, "samples[0].kind", "questionnaire")
		// The veteran's next consent change makes it explicit.
		expect(t, e.do("DELETE", "/v1/users/veteran/consent", rwToken, "application/json", map[string]any{"scopes": []string{"questionnaire"}}), 200, "", "")
		expect(t, e.telemetry(questionnaire("veteran")), 403, "samples[0].kind", "questionnaire")
		e.consent("veteran", "behaviour", "questionnaire")
		expect(t, e.telemetry(questionnaire("veteran")), 200, "", "")
	})
}
