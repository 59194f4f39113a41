package estimate

import (
	"encoding/json"
	"errors"
	"math"
	"slices"
	"testing"
	"time"
)

func near(t *testing.T, name string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol {
		t.Errorf("%s = %.6f, want %.6f (±%g)", name, got, want, tol)
	}
}

// alternating returns n beats alternating a, b.
func alternating(n int, a, b float64) []float64 {
	rr := make([]float64, n)
	for i := range rr {
		rr[i] = a
		if i%2 == 1 {
			rr[i] = b
		}
	}
	return rr
}

func TestHRVHandComputed(t *testing.T) {
	// 80 beats alternating 800/820 ms: every successive difference is 20 ms,
	// so RMSSD = 20; deviations from the mean 810 are ±10, so
	// SDNN = sqrt(80·100/79) = 10.0631; no difference exceeds 50 ms.
	h, err := ComputeHRV(alternating(80, 800, 820))
	if err != nil {
		t.Fatal(err)
	}
	near(t, "RMSSD", h.RMSSD, 20, 1e-9)
	near(t, "SDNN", h.SDNN, math.Sqrt(8000.0/79), 1e-9)
	near(t, "pNN50", h.PNN50, 0, 0)
	near(t, "window", h.WindowMS, 64800, 0)

	// 800/860: differences 60 ms (> 50, < 20% of 800): RMSSD 60, pNN50 1,
	// SDNN = sqrt(80·900/79).
	h, err = ComputeHRV(alternating(80, 800, 860))
	if err != nil {
		t.Fatal(err)
	}
	near(t, "RMSSD", h.RMSSD, 60, 1e-9)
	near(t, "SDNN", h.SDNN, math.Sqrt(72000.0/79), 1e-9)
	near(t, "pNN50", h.PNN50, 1, 0)
}

func TestHRVArtifactsAreRemoved(t *testing.T) {
	clean := alternating(80, 800, 820)
	// Insert a too-short beat (250 < 300), a long pause (2100 > 2000) and a
	// beat 22% longer than its predecessor (Malik rule).
	withArtifacts := append([]float64{}, clean[:10]...)
	withArtifacts = append(withArtifacts, 250, 2100)
	withArtifacts = append(withArtifacts, clean[10:40]...)
	withArtifacts = append(withArtifacts, 1000) // previous accepted is 820: +22%
	withArtifacts = append(withArtifacts, clean[40:]...)

	accepted, dropped := CleanRR(withArtifacts)
	if dropped != 3 || len(accepted) != 80 {
		t.Fatalf("dropped %d, kept %d; want 3 dropped and 80 kept", dropped, len(accepted))
	}
	h, err := ComputeHRV(withArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "RMSSD after correction", h.RMSSD, 20, 1e-9)
	if h.Dropped != 3 {
		t.Errorf("Dropped = %d, want 3", h.Dropped)
	}
}

// TestHRVSurvivesAnEctopicFirstBeat: a recording that opens with a
// premature beat and its compensatory pause loses those two beats only,
// not every normal beat after them.
func TestHRVSurvivesAnEctopicFirstBeat(t *testing.T) {
	clean := alternating(90, 800, 820)
	withEctopic := append([]float64{0.6 * 800, 1.4 * 800}, clean...)
	accepted, dropped := CleanRR(withEctopic)
	if dropped != 2 || len(accepted) != len(clean) {
		t.Fatalf("dropped %d, kept %d of %d; want the ectopic pair dropped and the rest kept", dropped, len(accepted), len(withEctopic))
	}
}

func TestHRVNeedsSixtySeconds(t *testing.T) {
	_, err := ComputeHRV(alternating(70, 800, 820)) // 56.7 s
	if !errors.Is(err, ErrInsufficientData) {
		t.Fatalf("err = %v, want ErrInsufficientData under 60 s", err)
	}
}

func TestBRS(t *testing.T) {
	// Items 2, 4, 6 reversed: [5,1,5,1,5,1] → all 5 → BRS 5 → r = 1.
	brs, r, err := ScoreBRS([]int{5, 1, 5, 1, 5, 1})
	if err != nil || brs != 5 || r != 1 {
		t.Fatalf("got %v, %v, %v; want 5, 1", brs, r, err)
	}
	// [3,4,2,5,1,3] → [3,2,2,1,1,3] → mean 2 → r = 0.25.
	brs, r, err = ScoreBRS([]int{3, 4, 2, 5, 1, 3})
	if err != nil || brs != 2 || r != 0.25 {
		t.Fatalf("got %v, %v, %v; want 2, 0.25", brs, r, err)
	}
	if _, _, err := ScoreBRS([]int{1, 2, 3}); err == nil {
		t.Error("accepted 3 items")
	}
	if _, _, err := ScoreBRS([]int{1, 2, 3, 4, 5, 6}); err == nil {
		t.Error("accepted an answer of 6")
	}
}

func TestSART(t *testing.T) {
	// 20 trials: 2 no-go (digit 3), one answered (commission 0.5); 18 go,
	// 3 missed (omission 1/6); go RTs 300/500 alternating.
	var trials []SARTTrial
	trials = append(trials, SARTTrial{Digit: 3, Responded: true, RTms: 350}, SARTTrial{Digit: 3})
	var rts []float64
	for i := range 18 {
		switch {
		case i < 3:
			trials = append(trials, SARTTrial{Digit: 5})
		case i%2 == 0:
			trials = append(trials, SARTTrial{Digit: 5, Responded: true, RTms: 300})
			rts = append(rts, 300)
		default:
			trials = append(trials, SARTTrial{Digit: 5, Responded: true, RTms: 500})
			rts = append(rts, 500)
		}
	}
	s, err := ScoreSART(trials)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "commission", s.CommissionRate, 0.5, 1e-12)
	near(t, "omission", s.OmissionRate, 3.0/18, 1e-12)
	// 15 go responses: 7×300 and 8×500 → mean 406.667.
	var mean float64
	for _, v := range rts {
		mean += v
	}
	mean /= float64(len(rts))
	var ss float64
	for _, v := range rts {
		ss += (v - mean) * (v - mean)
	}
	cv := math.Sqrt(ss/float64(len(rts)-1)) / mean
	near(t, "CV", s.RTCV, cv, 1e-12)
	near(t, "attention", s.Attention, 1-(0.4*0.5+0.3*3.0/18+0.3*math.Min(1, cv/0.5)), 1e-12)

	if _, err := ScoreSART(trials[:5]); !errors.Is(err, ErrInsufficientData) {
		t.Errorf("5 trials: err = %v, want insufficient", err)
	}
}

func TestBehaviour(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	at := func(min float64) time.Time { return t0.Add(time.Duration(min * float64(time.Minute))) }
	// 10-minute window, focused 0–6 and 8–10 (8 of 10 minutes), 2 task
	// switches: f = 0.8, r = 0.2/min, a = 0.8/1.1.
	events := []BehaviourEvent{
		{"focus", at(0)}, {"task_switch", at(3)}, {"blur", at(6)}, {"focus", at(8)}, {"task_switch", at(9)}, {"click", at(10)},
	}
	s, err := ScoreBehaviour(events)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "focus fraction", s.FocusFraction, 0.8, 1e-9)
	near(t, "switches/min", s.SwitchesPerMin, 0.2, 1e-9)
	near(t, "attention", s.Attention, 0.8/1.1, 1e-9)
}

func TestConfidenceDecaysButValueStays(t *testing.T) {
	m := NewModel()
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	m.AddTextEmotion(t0, 0.9)
	m.AddTextEmotion(t0, 0.9)
	fresh := m.Estimate(t0, true, Timing{}).Emotion
	later := m.Estimate(t0.Add(3*time.Hour), true, Timing{}).Emotion
	if !fresh.Known || !later.Known {
		t.Fatal("emotion should be known")
	}
	near(t, "value after 3h", later.Value, fresh.Value, 1e-12)
	if later.Confidence >= fresh.Confidence/100 {
		t.Errorf("confidence %.4f → %.6f: want it to decay by e^-6", fresh.Confidence, later.Confidence)
	}
}

// TestTimingSetsTheDecay: a configured τ replaces the default for state
// and trait evidence alike, and a zero Timing is the defaults.
func TestTimingSetsTheDecay(t *testing.T) {
	m := NewModel()
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	m.EmotionText = Evidence{Value: 0.6, Confidence: 0.8, At: t0, Samples: 1}
	m.ResilienceBRS = Evidence{Value: 0.4, Confidence: 0.8, At: t0, Samples: 1}
	fast := Timing{StateDecay: 6 * time.Second, TraitDecay: time.Hour}
	st := m.Estimate(t0.Add(6*time.Second), true, fast)
	near(t, "emotion confidence after one τ of 6s", st.Emotion.Confidence, 0.8*math.Exp(-1), 1e-12)
	st = m.Estimate(t0.Add(time.Hour), true, fast)
	near(t, "resilience confidence after one τ of 1h", st.Resilience.Confidence, 0.8*math.Exp(-1), 1e-12)
	st = m.Estimate(t0.Add(30*time.Minute), true, Timing{})
	near(t, "emotion confidence after the default τ", st.Emotion.Confidence, 0.8*math.Exp(-1), 1e-12)
}

// TestStressRecoveryUsesItsTimeConstant: an episode that lasts one τ of
// the configured StressRecovery scores e^-1.
func TestStressRecoveryUsesItsTimeConstant(t *testing.T) {
	m := NewModel()
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	timing := Timing{StressRecovery: 20 * time.Second}
	m.StressSince = &t0
	m.trackStress(t0.Add(20*time.Second), 0, timing.stressRecovery())
	near(t, "recovery score", m.Recovery.Value, math.Exp(-1), 1e-12)
	if m.StressSince != nil {
		t.Error("the episode did not end")
	}
}

func TestFusionWeighsByConfidence(t *testing.T) {
	m := NewModel()
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	m.EmotionText = Evidence{Value: 0.2, Confidence: 0.2, At: t0, Samples: 1}
	m.EmotionSelf = Evidence{Value: 0.8, Confidence: 0.6, At: t0, Samples: 1}
	e := m.Estimate(t0, true, Timing{}).Emotion
	near(t, "fused value", e.Value, (0.2*0.2+0.6*0.8)/0.8, 1e-12)
	near(t, "fused confidence", e.Confidence, 1-0.8*0.4, 1e-12)
}

func TestPhysiologyExcludedWhenProhibited(t *testing.T) {
	m := NewModel()
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	m.AddRR(t0, alternating(100, 800, 840), Timing{})
	if e := m.Estimate(t0, true, Timing{}).Emotion; !e.Known {
		t.Fatal("physiology should give an emotion estimate where allowed")
	}
	if e := m.Estimate(t0, false, Timing{}).Emotion; e.Known {
		t.Fatalf("emotion rests on physiology although prohibited: %+v", e)
	}
}

func TestPhysiologyAgainstPersonalBaseline(t *testing.T) {
	m := NewModel()
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	// A long calm baseline (RMSSD 40), then a stressed window (RMSSD 10).
	for i := range 30 {
		m.AddRR(t0.Add(time.Duration(i)*10*time.Minute), alternating(80, 800, 840), Timing{})
	}
	calm := m.EmotionPhysio.Value
	m.AddRR(t0.Add(301*time.Minute), alternating(80, 800, 810), Timing{})
	if stressed := m.EmotionPhysio.Value; stressed >= calm-0.2 {
		t.Errorf("emotion %.3f after a drop of RMSSD from 40 to 10 ms, %.3f before: want a clear fall", stressed, calm)
	}
	if m.StressSince == nil {
		t.Error("no stress episode recorded")
	}
}

func TestModelRoundTripsThroughJSON(t *testing.T) {
	m := NewModel()
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	m.AddRR(t0, alternating(90, 800.04, 830.06), Timing{})
	m.AddBehaviour([]BehaviourEvent{{"focus", t0}, {"blur", t0.Add(90 * time.Second)}})
	m.AddTextEmotion(t0, 0.7)
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var back Model
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.RR) != len(m.RR) || back.RR[1] != 8301 {
		t.Errorf("RR after a round trip: %v… (stored as tenths of ms)", back.RR[:2])
	}
	if len(back.Behaviour.Buckets) != len(m.Behaviour.Buckets) || back.Behaviour.Last != m.Behaviour.Last {
		t.Errorf("behaviour after a round trip: %+v", back.Behaviour)
	}
	before, after := m.Estimate(t0, true, Timing{}), back.Estimate(t0, true, Timing{})
	if math.Abs(before.Emotion.Value-after.Emotion.Value) > 1e-9 || math.Abs(before.Attention.Value-after.Attention.Value) > 1e-9 {
		t.Errorf("estimates differ after a round trip: %+v vs %+v", before, after)
	}
}

// TestBehaviourWindowMatchesTheFormula: the per-minute aggregate gives the
// same score as ScoreBehaviour over the same events, and keeps an ongoing
// focus that began before the ten-minute window.
func TestBehaviourWindowMatchesTheFormula(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	at := func(min float64) time.Time { return t0.Add(time.Duration(min * float64(time.Minute))) }
	events := []BehaviourEvent{
		{"focus", at(0.5)}, {"task_switch", at(2.2)}, {"click", at(3)}, {"blur", at(4.75)}, {"swipe", at(5)},
		{"focus", at(6.1)}, {"task_switch", at(8.9)}, {"message", at(9.5)},
	}
	want, err := ScoreBehaviour(events)
	if err != nil {
		t.Fatal(err)
	}
	var w BehaviourWindow
	w.Add(events[:3])
	w.Add(events[3:]) // in two batches
	got, n, err := w.Score()
	if err != nil || n != len(events) {
		t.Fatalf("score: %v, %d events", err, n)
	}
	near(t, "focus fraction", got.FocusFraction, want.FocusFraction, 1e-9)
	near(t, "switches/min", got.SwitchesPerMin, want.SwitchesPerMin, 1e-9)
	near(t, "attention", got.Attention, want.Attention, 1e-9)

	// Thirty minutes later, still focused since 6.1: the whole window is on task.
	w.Add([]BehaviourEvent{{"click", at(40)}})
	got, _, err = w.Score()
	if err != nil {
		t.Fatal(err)
	}
	near(t, "focus fraction of a long focus", got.FocusFraction, 1, 1e-9)
	if len(w.Buckets) > 11 {
		t.Errorf("%d buckets kept, want at most the window's", len(w.Buckets))
	}
}

// TestRRBufferJSON: the buffer round-trips through its base64 form, and
// records written with the older array form still read.
func TestRRBufferJSON(t *testing.T) {
	in := RRBuffer{8000, 8120, 50000, 1, 0}
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if data[0] != '"' {
		t.Fatalf("encoded as %s, want a base64 string", data)
	}
	var out RRBuffer
	if err := json.Unmarshal(data, &out); err != nil || !slices.Equal(in, out) {
		t.Fatalf("round trip: %v, %v", out, err)
	}
	var legacy RRBuffer
	if err := json.Unmarshal([]byte(`[7800,8170,7940]`), &legacy); err != nil || !slices.Equal(legacy, RRBuffer{7800, 8170, 7940}) {
		t.Fatalf("array form: %v, %v", legacy, err)
	}
	for _, bad := range []string{`[70000]`, `[-1]`, `"AAE"`, `"not base64!"`, `{}`} {
		if err := json.Unmarshal([]byte(bad), &out); err == nil {
			t.Errorf("%s decoded without error", bad)
		}
	}
}

// TestSARTTrialsJSON: the trial window round-trips through its packed
// form, older records with trial objects still read, and malformed data
// is refused.
func TestSARTTrialsJSON(t *testing.T) {
	in := SARTTrials{{Digit: 3, Responded: false}, {Digit: 7, Responded: true, RTms: 412.3}, {Digit: 9, Responded: true, RTms: 5000}}
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if data[0] != '"' {
		t.Fatalf("encoded as %s, want a base64 string", data)
	}
	var out SARTTrials
	if err := json.Unmarshal(data, &out); err != nil || !slices.Equal(in, out) {
		t.Fatalf("round trip: %+v, %v", out, err)
	}
	var legacy SARTTrials
	if err := json.Unmarshal([]byte(`[{"d":5,"r":true,"t":380},{"d":3,"r":false}]`), &legacy); err != nil ||
		!slices.Equal(legacy, SARTTrials{{Digit: 5, Responded: true, RTms: 380}, {Digit: 3}}) {
		t.Fatalf("array form: %+v, %v", legacy, err)
	}
	for _, bad := range []string{`"AAAAAA=="`, `"CgAA"`, `"IAAA"`, `"not base64!"`, `{}`} {
		if err := json.Unmarshal([]byte(bad), &out); err == nil {
			t.Errorf("%s decoded without error", bad)
		}
	}
	if _, err := json.Marshal(SARTTrials{{Digit: 12}}); err == nil {
		t.Error("a digit above 9 encoded")
	}
	// Reaction times are kept at 0.1 ms from the start, so what is stored
	// is what the model holds.
	m := NewModel()
	m.AddSART(time.Now(), []SARTTrial{{Digit: 1, Responded: true, RTms: 377.777}})
	if got := m.SART[len(m.SART)-1].RTms; got != 377.8 {
		t.Errorf("kept RT %v, want 377.8", got)
	}
}
