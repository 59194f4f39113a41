// Package estimate turns raw evidence (RR intervals, heart rate, text
// sentiment, SART trials, behaviour events, questionnaires) into the state
// s = (attention, emotion, resilience) in [0,1], each with a confidence.
// Every formula is documented in docs/engine-model.md. No Kubernetes imports.
package estimate

import (
	"errors"
	"math"
	"slices"

	"gonum.org/v1/gonum/stat"
)

// RR artifact limits (ms) and the Malik rule's relative tolerance.
const (
	MinRR          = 300.0
	MaxRR          = 2000.0
	MalikTolerance = 0.20
	// MinHRVWindowMS is the shortest RR series (sum of accepted intervals)
	// from which HRV is reported.
	MinHRVWindowMS = 60_000.0
)

// ErrInsufficientData means there is not enough evidence to estimate; the
// caller reports that rather than guessing.
var ErrInsufficientData = errors.New("insufficient data")

// CleanRR drops physiologically impossible intervals (outside 300–2000 ms)
// and, by the Malik rule, any beat differing by more than 20% from the
// previous accepted beat. The first beat is held to the median of the
// plausible intervals instead: a series that begins with an ectopic beat
// would otherwise keep it as the reference and reject every normal beat
// after it. It returns the accepted series and the count dropped.
func CleanRR(rr []float64) (accepted []float64, dropped int) {
	accepted = make([]float64, 0, len(rr))
	plausible := make([]float64, 0, len(rr))
	for _, v := range rr {
		if v >= MinRR && v <= MaxRR {
			plausible = append(plausible, v)
		}
	}
	reference := math.NaN()
	if len(plausible) > 0 {
		slices.Sort(plausible)
		reference = plausible[len(plausible)/2]
	}
	for _, v := range rr {
		if v < MinRR || v > MaxRR || math.IsNaN(v) {
			dropped++
			continue
		}
		if n := len(accepted); n > 0 {
			reference = accepted[n-1]
		}
		if math.Abs(v-reference) > MalikTolerance*reference {
			dropped++
			continue
		}
		accepted = append(accepted, v)
	}
	return accepted, dropped
}

// HRV holds time-domain heart-rate-variability measures of one window.
type HRV struct {
	RMSSD    float64 // ms: root mean square of successive differences
	SDNN     float64 // ms: sample standard deviation (ddof 1) of intervals
	PNN50    float64 // fraction in [0,1] of successive differences > 50 ms
	Beats    int     // accepted intervals
	Dropped  int     // intervals removed by artifact correction
	WindowMS float64 // sum of accepted intervals
}

// ComputeHRV cleans a raw RR series and computes RMSSD, SDNN and pNN50. It
// returns ErrInsufficientData when the accepted beats span less than 60 s.
func ComputeHRV(raw []float64) (HRV, error) {
	rr, dropped := CleanRR(raw)
	h := HRV{Beats: len(rr), Dropped: dropped}
	for _, v := range rr {
		h.WindowMS += v
	}
	if h.WindowMS < MinHRVWindowMS || len(rr) < 3 {
		return h, ErrInsufficientData
	}
	var sumSq float64
	var over50 int
	for i := 1; i < len(rr); i++ {
		d := rr[i] - rr[i-1]
		sumSq += d * d
		if math.Abs(d) > 50 {
			over50++
		}
	}
	diffs := float64(len(rr) - 1)
	h.RMSSD = math.Sqrt(sumSq / diffs)
	h.SDNN = stat.StdDev(rr, nil) // gonum: unbiased, ddof 1
	h.PNN50 = float64(over50) / diffs
	return h, nil
}
