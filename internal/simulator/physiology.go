package simulator

import (
	"math"
	"math/rand/v2"
)

// heart generates a person's RR intervals by integral pulse frequency
// modulation (IPFM): a beat occurs each time the integral of the
// instantaneous heart rate 1/T(t) reaches one, where the interval
// function T(t) is the mean interval modulated by respiratory sinus
// arrhythmia (RSA, at the breathing rate) and a 0.1 Hz (Mayer wave)
// component. Stress — here low emotional calm — raises the heart rate,
// speeds breathing and withdraws vagal tone, so RMSSD falls: ln RMSSD
// moves by −1.6 and the heart rate by +25 bpm over the whole range of
// stress. Each person has their own resting rate and RMSSD. The sensor
// adds timing jitter, and a small share of beats are ectopic (a premature
// beat followed by a compensatory pause) or missed by detection (two
// intervals merged), as in real recordings.
type heart struct {
	restHR      float64 // bpm at stress stressRef
	lnRMSSD0    float64 // ln ms at stress stressRef
	integral    float64 // IPFM integral since the last beat, in [0, 1)
	sinceBeat   float64 // seconds since the last beat
	t           float64 // seconds of recording so far (phases)
	respPhase   float64
	mayerPhase  float64
	ectopicRate float64 // per beat
	missedRate  float64 // per beat
}

const (
	stressRef   = 0.55  // stress of a typical person (emotion 0.45)
	jitterMS    = 3.0   // sensor timing jitter, SD
	mayerDepth  = 0.015 // relative depth of the 0.1 Hz component
	ipfmStepSec = 0.05
)

func newHeart(r *rand.Rand) heart {
	return heart{
		restHR:      70 + 6*r.NormFloat64(),
		lnRMSSD0:    3.6 + 0.2*r.NormFloat64(),
		respPhase:   2 * math.Pi * r.Float64(),
		mayerPhase:  2 * math.Pi * r.Float64(),
		ectopicRate: 0.001 + 0.006*r.Float64(),
		missedRate:  0.001 + 0.004*r.Float64(),
	}
}

// physiology is the heart rate (bpm), target RMSSD (ms) and breathing
// rate (Hz) at an emotional calm.
func (h *heart) physiology(emotion float64) (bpm, rmssd, breathHz float64) {
	stress := clamp(1-emotion, 0, 1)
	bpm = clamp(h.restHR+25*(stress-stressRef), 40, 160)
	rmssd = math.Exp(h.lnRMSSD0 - 1.6*(stress-stressRef))
	breathHz = 0.2 + 0.1*stress
	return bpm, rmssd, breathHz
}

// beats records span seconds of heartbeat at the given emotional calm and
// returns the RR intervals in ms, as a sensor reports them (rounded to
// the millisecond, with its artifacts).
func (h *heart) beats(r *rand.Rand, span, emotion float64) []float64 {
	bpm, rmssd, breathHz := h.physiology(emotion)
	meanRR := 60 / bpm // seconds
	// The RSA depth that gives the target RMSSD: a sinusoid of relative
	// depth a sampled once a beat has successive differences of RMS
	// √2·sin(π f RR)·a·RR; the Mayer component and the jitter add theirs.
	rsaGain := math.Sqrt2 * math.Sin(math.Pi*breathHz*meanRR) * meanRR * 1000
	mayer := math.Sqrt2 * math.Sin(math.Pi*0.1*meanRR) * meanRR * 1000 * mayerDepth
	rsaDepth := math.Sqrt(math.Max(0, rmssd*rmssd-2*jitterMS*jitterMS-mayer*mayer)) / rsaGain
	interval := func(t float64) float64 {
		return meanRR * (1 + rsaDepth*math.Sin(2*math.Pi*breathHz*t+h.respPhase) + mayerDepth*math.Sin(2*math.Pi*0.1*t+h.mayerPhase))
	}
	var rr []float64
	for elapsed := 0.0; elapsed < span; elapsed += ipfmStepSec {
		rate := 1 / interval(h.t)
		next := h.integral + rate*ipfmStepSec
		if next >= 1 {
			// The beat falls inside the step: interpolate its time.
			frac := (1 - h.integral) / (rate * ipfmStepSec)
			beatAt := h.sinceBeat + frac*ipfmStepSec
			rr = append(rr, beatAt*1000+jitterMS*r.NormFloat64())
			h.sinceBeat = (1 - frac) * ipfmStepSec
			h.integral = next - 1
		} else {
			h.integral = next
			h.sinceBeat += ipfmStepSec
		}
		h.t += ipfmStepSec
	}
	return h.artifacts(r, rr)
}

// artifacts adds ectopic and missed beats and rounds to the sensor's
// millisecond.
func (h *heart) artifacts(r *rand.Rand, rr []float64) []float64 {
	out := make([]float64, 0, len(rr))
	for i := 0; i < len(rr); i++ {
		v := rr[i]
		switch u := r.Float64(); {
		case u < h.ectopicRate && i+1 < len(rr):
			// A premature beat 35% early; the pause after it compensates.
			out = append(out, math.Round(0.65*v), math.Round(rr[i+1]+0.35*v))
			i++
			continue
		case u < h.ectopicRate+h.missedRate && i+1 < len(rr):
			// Detection missed a beat: two intervals read as one.
			v += rr[i+1]
			i++
		}
		out = append(out, math.Round(v))
	}
	return out
}
