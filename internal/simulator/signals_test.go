package simulator

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jonreiter/govader"
	"gonum.org/v1/gonum/stat"

	"github.com/attune-io/attune/engine/estimate"
	"github.com/attune-io/attune/engine/telemetry"
)

// These tests hold the generated telemetry to its physiology and
// psychometrics, scored by the engine's own estimators (engine/estimate)
// so that the formats are the ones the engine accepts.

func rng(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 7)) }

// TestHeartFollowsStress: the IPFM heart's RMSSD, measured as the engine
// measures it after artifact correction, is the target of its
// physiology; it rises and the heart rate falls as emotional calm rises;
// and the artifacts are a realistic share (about 0.2–1.5% of beats).
func TestHeartFollowsStress(t *testing.T) {
	r := rng(1)
	h := newHeart(r)
	h.ectopicRate, h.missedRate = 0.004, 0.003
	prevRMSSD, prevBPM := 0.0, math.Inf(1)
	for _, emotion := range []float64{0.2, 0.45, 0.7, 0.9} {
		var rmssd, bpm []float64
		dropped, beats := 0, 0
		for range 20 {
			rr := h.beats(r, 150, emotion)
			hrv, err := estimate.ComputeHRV(rr)
			if err != nil {
				t.Fatalf("emotion %.2f: %v (%d beats)", emotion, err, len(rr))
			}
			rmssd = append(rmssd, hrv.RMSSD)
			bpm = append(bpm, 60000*float64(hrv.Beats)/hrv.WindowMS)
			dropped += hrv.Dropped
			beats += hrv.Beats + hrv.Dropped
		}
		wantBPM, wantRMSSD, _ := h.physiology(emotion)
		got := stat.Mean(rmssd, nil)
		if math.Abs(got-wantRMSSD) > 0.15*wantRMSSD {
			t.Errorf("emotion %.2f: RMSSD %.1f ms, want %.1f ± 15%%", emotion, got, wantRMSSD)
		}
		if gotBPM := stat.Mean(bpm, nil); math.Abs(gotBPM-wantBPM) > 2 {
			t.Errorf("emotion %.2f: heart rate %.1f bpm, want %.1f", emotion, gotBPM, wantBPM)
		}
		if got <= prevRMSSD || stat.Mean(bpm, nil) >= prevBPM {
			t.Errorf("emotion %.2f: RMSSD %.1f, %.1f bpm; want RMSSD up and rate down from %.1f, %.1f", emotion, got, stat.Mean(bpm, nil), prevRMSSD, prevBPM)
		}
		prevRMSSD, prevBPM = got, stat.Mean(bpm, nil)
		if share := float64(dropped) / float64(beats); share < 0.002 || share > 0.03 {
			t.Errorf("emotion %.2f: %.2f%% of beats dropped by artifact correction, want a realistic 0.2–3%%", emotion, 100*share)
		}
	}
}

// TestSARTFollowsAttention: the engine's SART score of a block window
// rises with attention, through commission errors and reaction-time
// variability.
func TestSARTFollowsAttention(t *testing.T) {
	r := rng(2)
	prev := estimate.SARTScore{Attention: -1, CommissionRate: 2, RTCV: 2}
	for _, attention := range []float64{0.2, 0.45, 0.7, 0.9} {
		var trials []estimate.SARTTrial
		for _, tr := range sartTrials(r, 2000, attention) {
			trials = append(trials, estimate.SARTTrial{Digit: tr.Digit, Responded: tr.Responded, RTms: tr.RTms})
		}
		s, err := estimate.ScoreSART(trials)
		if err != nil {
			t.Fatal(err)
		}
		if s.Attention <= prev.Attention || s.CommissionRate >= prev.CommissionRate || s.RTCV >= prev.RTCV {
			t.Errorf("attention %.2f: %+v, want attention up and commissions and RT variability down from %+v", attention, s, prev)
		}
		if math.Abs(s.Attention-attention) > 0.15 {
			t.Errorf("attention %.2f scores %.3f: want it within 0.15", attention, s.Attention)
		}
		prev = s
	}
}

// TestPhraseBankValenceRises: VADER's mean compound per level of the bank
// rises with the level and spans most of [−1, 1], so chat valence follows
// emotion; every level has several phrases.
func TestPhraseBankValenceRises(t *testing.T) {
	analyzer := govader.NewSentimentIntensityAnalyzer()
	prev := -2.0
	for level, phrases := range phraseBank {
		if len(phrases) < 4 {
			t.Errorf("level %d has %d phrases, want at least 4", level, len(phrases))
		}
		var sum float64
		for _, p := range phrases {
			sum += analyzer.PolarityScores(p).Compound
		}
		mean := sum / float64(len(phrases))
		if mean <= prev {
			t.Errorf("level %d: mean compound %.3f, not above level %d's %.3f", level, mean, level-1, prev)
		}
		prev = mean
		if level == 0 && mean > -0.7 || level == len(phraseBank)-1 && mean < 0.7 {
			t.Errorf("level %d: mean compound %.3f, want the ends of the bank beyond ±0.7", level, mean)
		}
	}
}

// TestBRSAnswersAroundResilience: the engine's BRS score of the answers is
// the resilience with noise (no bias beyond the clipping at the ends).
func TestBRSAnswersAroundResilience(t *testing.T) {
	r := rng(3)
	for _, resilience := range []float64{0.3, 0.5, 0.7} {
		var scores []float64
		for range 400 {
			_, s, err := estimate.ScoreBRS(brsAnswers(r, resilience))
			if err != nil {
				t.Fatal(err)
			}
			scores = append(scores, s)
		}
		mean, sd := stat.MeanStdDev(scores, nil)
		if math.Abs(mean-resilience) > 0.03 || sd < 0.03 || sd > 0.12 {
			t.Errorf("resilience %.2f: BRS %.3f ± %.3f, want the resilience with some noise", resilience, mean, sd)
		}
	}
}

// TestBehaviourEventsFollowAttention: the events are valid telemetry and
// the engine's behaviour score over ten minutes of them rises with
// attention.
func TestBehaviourEventsFollowAttention(t *testing.T) {
	r := rng(4)
	start := time.Now().Add(-11 * time.Minute)
	prev := -1.0
	for _, attention := range []float64{0.2, 0.5, 0.8} {
		var w estimate.BehaviourWindow
		for tick := range 1200 {
			from := start.Add(time.Duration(tick) * 500 * time.Millisecond)
			events := behaviourEvents(r, from, from.Add(500*time.Millisecond), attention)
			s := telemetry.Sample{User: "u", Kind: telemetry.KindBehaviour, At: from.Add(500 * time.Millisecond), Events: events}
			if err := s.Validate(0, time.Now(), nil); err != nil {
				t.Fatal(err)
			}
			var evs []estimate.BehaviourEvent
			for _, e := range events {
				evs = append(evs, estimate.BehaviourEvent{Type: e.Type, At: e.At})
			}
			w.Add(evs)
		}
		score, _, err := w.Score()
		if err != nil {
			t.Fatal(err)
		}
		if score.Attention <= prev {
			t.Errorf("attention %.1f: behaviour score %.3f, not above %.3f", attention, score.Attention, prev)
		}
		prev = score.Attention
	}
}
