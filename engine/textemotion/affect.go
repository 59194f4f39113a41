package textemotion

import (
	"math"
	"strings"

	"github.com/attune-io/attune/engine/config"
)

// Emotion is what a scorer reads from one text.
type Emotion struct {
	// Valence in [-1, 1] (−1 most negative).
	Valence float64
	// Arousal in [-1, 1]; meaningful only when HasArousal (a classifier
	// answered: VADER and the Custom runtime give valence only).
	Arousal    float64
	HasArousal bool
	// Confidence in [0, 1] of the valence, from the class distribution.
	Confidence float64
	// Label is the top class, when a classifier answered.
	Label string
}

// Lexicon values behind the default label map.
//
// Source: NRC Valence, Arousal, and Dominance (VAD) Lexicon v1 (Saif M.
// Mohammad, "Obtaining Reliable Human Ratings of Valence, Arousal, and
// Dominance for 20,000 English Words", ACL 2018;
// http://saifmohammad.com/WebPages/nrc-vad.html). Terms of use (NRC): the
// lexicon may be used freely for non-commercial research and educational
// purposes; cite the paper; commercial use needs a licence from the
// National Research Council Canada. Only the entries below (ten numbers
// per word pair) are embedded; deployments that cannot accept those terms
// override every label through model.labelMap.
//
// The lexicon's entries, on its [0, 1] scale (valence, arousal):
//
//	anger    0.167 0.865    disgust 0.052 0.775    fear    0.073 0.840
//	joy      0.980 0.824    neutral 0.469 0.184    sadness 0.052 0.288
//	surprise 0.875 0.875
//
// rescaled to [-1, 1] as 2x − 1. For the sentiment labels "negative" and
// "positive" the lexicon's own rows for those words were not available to
// verify here, so they are derived from the emotion entries above:
// negative = the mean of anger, disgust, fear and sadness (0.086, 0.692);
// positive = joy (0.980, 0.824). "neutral" is the lexicon's entry.
var lexiconVA = map[string][2]float64{
	"anger":    {0.167, 0.865},
	"disgust":  {0.052, 0.775},
	"fear":     {0.073, 0.840},
	"joy":      {0.980, 0.824},
	"neutral":  {0.469, 0.184},
	"sadness":  {0.052, 0.288},
	"surprise": {0.875, 0.875},
	"negative": {(0.167 + 0.052 + 0.073 + 0.052) / 4, (0.865 + 0.775 + 0.840 + 0.288) / 4},
	"positive": {0.980, 0.824},
}

// DefaultAffects is the default label → affect map: the lexicon values
// above rescaled to [-1, 1]. Its keys are config.DefaultAffectLabels.
func DefaultAffects() map[string]config.Affect {
	out := make(map[string]config.Affect, len(lexiconVA))
	for label, va := range lexiconVA {
		out[label] = config.Affect{Valence: 2*va[0] - 1, Arousal: 2*va[1] - 1}
	}
	return out
}

// affectMap merges an override into the defaults; keys are lower case.
func affectMap(override map[string]config.Affect) map[string]config.Affect {
	m := DefaultAffects()
	for k, v := range override {
		m[strings.ToLower(k)] = v
	}
	return m
}

// Confidence of answers that carry the top class only (a class index, or a
// single hg_jsonlist label): the rest of the distribution is unknown, so a
// class index counts for TopOnlyConfidence and a labelled score s for
// TopOnlyConfidence·2·s at most (s = 1 gives 0.5, still below what a sharp
// full distribution earns).
const TopOnlyConfidence = 0.25

// softmax turns logits into probabilities (max-shifted for stability).
func softmax(logits []float64) []float64 {
	m := math.Inf(-1)
	for _, v := range logits {
		m = max(m, v)
	}
	out := make([]float64, len(logits))
	var sum float64
	for i, v := range logits {
		out[i] = math.Exp(v - m)
		sum += out[i]
	}
	for i := range out {
		out[i] /= sum
	}
	return out
}

// isDistribution reports whether scores are probabilities summing to 1,
// within the rounding of servers that print four decimals (KServe).
func isDistribution(p []float64) bool {
	var sum float64
	for _, v := range p {
		if math.IsNaN(v) || v < 0 || v > 1 {
			return false
		}
		sum += v
	}
	return math.Abs(sum-1) <= 0.01
}

// normalizedConfidence is 1 − H(p)/ln K: 1 for a one-hot distribution, 0
// for a uniform one.
func normalizedConfidence(p []float64) float64 {
	if len(p) < 2 {
		return 0
	}
	var h float64
	for _, v := range p {
		if v > 0 {
			h -= v * math.Log(v)
		}
	}
	return clamp(1-h/math.Log(float64(len(p))), 0, 1)
}

func clamp(v, lo, hi float64) float64 { return math.Min(math.Max(v, lo), hi) }

// fromDistribution is the probability-weighted mean affect of the classes.
func fromDistribution(p []float64, affects []config.Affect, labels []string) Emotion {
	var e Emotion
	top := 0
	for i, v := range p {
		e.Valence += v * affects[i].Valence
		e.Arousal += v * affects[i].Arousal
		if v > p[top] {
			top = i
		}
	}
	e.Valence, e.Arousal = clamp(e.Valence, -1, 1), clamp(e.Arousal, -1, 1)
	e.HasArousal = true
	e.Confidence = normalizedConfidence(p)
	e.Label = labels[top]
	return e
}

// fromTopLabel is the affect of the top class alone.
func fromTopLabel(a config.Affect, label string, confidence float64) Emotion {
	return Emotion{Valence: a.Valence, Arousal: a.Arousal, HasArousal: true, Confidence: clamp(confidence, 0, 1), Label: label}
}
