package contract_test

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/attune-io/attune/engine/api"
	"github.com/attune-io/attune/engine/contract"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/telemetry"
)

// goTool finds the go command that runs this test.
func goTool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command to list dependencies with: %v", err)
	}
	return path
}

// TestNoStorageDrivers: the wire types and the client link no storage
// driver, so the operator and world clients can use them without bbolt
// or pgx (and whatever those pull in).
func TestNoStorageDrivers(t *testing.T) {
	for _, pkg := range []string{
		"github.com/attune-io/attune/engine/contract",
		"github.com/attune-io/attune/engine/client",
	} {
		out, err := exec.Command(goTool(t), "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 2 {
			t.Fatalf("go list -deps %s listed %q", pkg, out)
		}
		for _, dep := range deps {
			for _, banned := range []string{
				"go.etcd.io/bbolt",
				"github.com/jackc/pgx",
				"github.com/attune-io/attune/engine/store",
				"github.com/attune-io/attune/engine/service",
				"github.com/attune-io/attune/engine/api",
			} {
				if dep == banned || strings.HasPrefix(dep, banned+"/") {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}

// TestLimitsMatchTheAPI: the limits the contract states are those the
// API enforces.
func TestLimitsMatchTheAPI(t *testing.T) {
	if contract.MaxBodyBytes != api.MaxBodyBytes {
		t.Errorf("MaxBodyBytes %d, the API's %d", contract.MaxBodyBytes, api.MaxBodyBytes)
	}
	if contract.MaxIdempotencyKeyBytes != api.MaxIdempotencyKeyBytes {
		t.Errorf("MaxIdempotencyKeyBytes %d, the API's %d", contract.MaxIdempotencyKeyBytes, api.MaxIdempotencyKeyBytes)
	}
	if contract.MaxBatchSamples != telemetry.MaxBatchSamples {
		t.Errorf("MaxBatchSamples %d, telemetry's %d", contract.MaxBatchSamples, telemetry.MaxBatchSamples)
	}
}

// The service's types are the contract's: a value of one is a value of the
// other, without conversion.
var (
	_ contract.Decision         = service.Decision{}
	_ contract.Outcome          = service.Outcome{}
	_ contract.DecisionRequest  = service.DecisionRequest{}
	_ contract.ExportedDecision = service.ExportedDecision{}
	_ contract.Consent          = service.Consent{}
	_ contract.IngestResult     = service.IngestResult{}
	_ contract.UserState        = service.UserState{}
	_ contract.CohortSummary    = service.CohortSummary{}
	_ contract.Means            = service.Means{}
)

// TestDocumentedDecisionDecodes: the answer documented in
// docs/engine-api.md decodes strictly into Decision and encodes back to
// the same fields.
func TestDocumentedDecisionDecodes(t *testing.T) {
	const doc = `{"id":"187c9a3e5f1b2c00-9f3a21c4","at":"2026-12-01T09:00:00Z","available":true,"context":["between_tasks"],
 "action":"ResonanceBreathing","probability":0.63,
 "candidate":"ResonanceBreathing","treatmentProbability":0.63,
 "dose":{"strength":0.5,"durationSeconds":300,"intensity":0.5},
 "instructions":"Breathe slowly at about six breaths a minute: in for five seconds, out for five.",
 "policyVersion":"3fa2c81d09be","lossAtDecision":0.041,"outcomeDue":"2026-12-01T09:10:00Z"}`
	dec := json.NewDecoder(strings.NewReader(doc))
	dec.DisallowUnknownFields()
	var d contract.Decision
	if err := dec.Decode(&d); err != nil {
		t.Fatal(err)
	}
	if !d.Randomised() || !d.Treated() || d.Dose == nil || d.LossAtDecision == nil || *d.LossAtDecision != 0.041 {
		t.Errorf("decoded %+v", d)
	}
	again, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var a, b map[string]any
	if err := json.Unmarshal([]byte(doc), &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(again, &b); err != nil {
		t.Fatal(err)
	}
	aj, _ := json.Marshal(a)
	bj, _ := json.Marshal(b)
	if !bytes.Equal(aj, bj) {
		t.Errorf("round trip changed the fields:\n%s\n%s", aj, bj)
	}

	none := contract.Decision{Action: "none", Probability: 1, Reason: "cooldown"}
	if none.Randomised() || none.Treated() {
		t.Errorf("an unrandomised none decision: randomised %v treated %v", none.Randomised(), none.Treated())
	}
	c := contract.Consent{Scopes: []telemetry.Scope{telemetry.ScopeBehaviour, telemetry.ScopeResearch}}
	if !c.Allows(telemetry.ScopeResearch) || c.Allows(telemetry.ScopePhysiology) {
		t.Errorf("consent %v: allows research %v, physiology %v", c.Scopes, c.Allows(telemetry.ScopeResearch), c.Allows(telemetry.ScopePhysiology))
	}
}
