package estimate

import (
	"encoding/binary"
	"math"
	"testing"
	"time"
)

func floats(data []byte) []float64 {
	out := make([]float64, 0, len(data)/8)
	for len(data) >= 8 {
		out = append(out, math.Float64frombits(binary.LittleEndian.Uint64(data)))
		data = data[8:]
	}
	return out
}

// FuzzEstimators drives the estimators with arbitrary series: no panic, and
// every estimate stays in [0,1] with confidence in [0,1].
func FuzzEstimators(f *testing.F) {
	seed := make([]byte, 0, 8*100)
	for i := range 100 {
		seed = binary.LittleEndian.AppendUint64(seed, math.Float64bits(800+float64(i%3)*20))
	}
	f.Add(seed, []byte{3, 5, 5, 3, 1, 2}, uint8(40))
	f.Add([]byte{}, []byte{}, uint8(0))
	f.Fuzz(func(t *testing.T, rrBytes, digits []byte, hr uint8) {
		m := NewModel()
		t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		rr := floats(rrBytes)
		m.AddRR(t0, rr, Timing{})
		m.AddRR(t0.Add(time.Minute), rr, Timing{})
		m.AddHeartRate(t0, float64(hr))
		var trials []SARTTrial
		for i, d := range digits {
			trials = append(trials, SARTTrial{Digit: int(d % 10), Responded: i%2 == 0, RTms: float64(d) * 10})
		}
		m.AddSART(t0, trials)
		if len(digits) > 0 {
			m.AddTextEmotion(t0, float64(digits[0])/255)
		}
		if _, err := ComputeHRV(rr); err == nil {
			h, _ := ComputeHRV(rr)
			if math.IsNaN(h.RMSSD) || h.RMSSD < 0 || math.IsNaN(h.SDNN) || h.PNN50 < 0 || h.PNN50 > 1 {
				t.Fatalf("HRV out of range: %+v", h)
			}
		}
		st := m.Estimate(t0.Add(time.Hour), true, Timing{})
		for name, d := range map[string]Dimension{"attention": st.Attention, "emotion": st.Emotion, "resilience": st.Resilience} {
			if math.IsNaN(d.Value) || d.Value < 0 || d.Value > 1 || math.IsNaN(d.Confidence) || d.Confidence < 0 || d.Confidence > 1 {
				t.Fatalf("%s out of range: %+v", name, d)
			}
		}
	})
}
