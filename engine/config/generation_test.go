package config

import "testing"

// TestGenerationFollowsTheTunedValues: the generation changes with the
// strength and its bounds and nothing else, and survives the trip through
// the file (the operator hashes the value it renders, the engine the value
// it parses).
func TestGenerationFollowsTheTunedValues(t *testing.T) {
	a, err := Parse([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	base := a.Strength.Generation()
	if len(base) != 12 {
		t.Errorf("generation %q, want 12 hex digits", base)
	}
	for name, s := range map[string]Strength{
		"value": {Value: 0.55, Min: 0.1, Max: 0.9},
		"min":   {Value: 0.5, Min: 0.2, Max: 0.9},
		"max":   {Value: 0.5, Min: 0.1, Max: 0.8},
	} {
		if s.Generation() == base {
			t.Errorf("a change of strength.%s kept the generation", name)
		}
	}
	other := *a
	other.Target.Emotion = 0.2
	other.Interventions = []string{"BodyScan"}
	if other.Strength.Generation() != base {
		t.Error("a change outside the strength changed the generation")
	}

	// A strength with no short decimal form, rendered and parsed back.
	a.Strength.Value = 0.1 + 0.2
	raw, err := a.Render()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if back.Strength.Generation() != a.Strength.Generation() {
		t.Errorf("generation %s after the file, %s before", back.Strength.Generation(), a.Strength.Generation())
	}
}
