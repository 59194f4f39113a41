package estimate

import (
	"math"
	"testing"
	"time"
)

// TestTextAffectUsesArousalAndConfidence: with a classifier's circumplex
// place, anger (NRC VAD: valence −0.67, arousal 0.70) is less calm than
// sadness of the same valence; a top-1-only answer (confidence 0.25)
// counts for less than a sharp one; without arousal the text path is the
// valence mapping it always was.
func TestTextAffectUsesArousalAndConfidence(t *testing.T) {
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	emotion := func(v, a float64, hasArousal bool, confidence float64) Dimension {
		m := NewModel()
		m.AddTextAffect(at, v, a, hasArousal, confidence)
		return m.Estimate(at, true, Timing{}).Emotion
	}
	angry, sad := emotion(-0.67, 0.70, true, 0.9), emotion(-0.67, -0.2, true, 0.9)
	if !(angry.Value < sad.Value) {
		t.Errorf("anger %.3f is not less calm than sadness %.3f at equal valence", angry.Value, sad.Value)
	}
	if want := (1-0.67)/2 - ArousalPenalty*0.70; math.Abs(angry.Value-want) > 1e-9 {
		t.Errorf("anger: %.4f, want (v+1)/2 − %.2f·a = %.4f", angry.Value, ArousalPenalty, want)
	}
	if want := (1 - 0.67) / 2; math.Abs(sad.Value-want) > 1e-9 {
		t.Errorf("low arousal must not raise calm: %.4f, want %.4f", sad.Value, want)
	}
	topOnly, sharp := emotion(0.8, 0.3, true, 0.25), emotion(0.8, 0.3, true, 1)
	if !(topOnly.Confidence < sharp.Confidence) {
		t.Errorf("top-1-only confidence %.3f not below a sharp distribution's %.3f", topOnly.Confidence, sharp.Confidence)
	}
	plain := NewModel()
	plain.AddTextEmotion(at, (0.5+1)/2)
	if got, want := emotion(0.5, 0.9, false, 0.1), plain.Estimate(at, true, Timing{}).Emotion; got.Value != want.Value || got.Confidence != want.Confidence {
		t.Errorf("without arousal: %+v, want the valence path %+v", got, want)
	}
}
