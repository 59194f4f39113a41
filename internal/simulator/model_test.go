package simulator

import "testing"

// TestSteadyStateLossIsUShaped: the best fixed strength lies strictly inside
// the bounds and both bounds are clearly worse — the property the tuner's
// benchmark relies on.
func TestSteadyStateLossIsUShaped(t *testing.T) {
	for _, optimum := range []float64{0.3, 0.6} {
		p := DefaultParams()
		p.OptimumMean = optimum
		best, bestLoss := Oracle(p, 0.1, 0.9)
		if best <= 0.15 || best >= 0.85 {
			t.Errorf("optimum mean %.2f: oracle strength %.3f is not inside the bounds", optimum, best)
		}
		for _, bound := range []float64{0.1, 0.9} {
			m := New(p)
			for range 60 {
				m.Interval(bound)
			}
			if l := m.CohortLoss(); l < 1.3*bestLoss {
				t.Errorf("optimum mean %.2f: loss %.5f at bound %.1f is not clearly above the oracle's %.5f", optimum, l, bound, bestLoss)
			}
		}
	}
}

func TestChurnReplacesUsers(t *testing.T) {
	p := DefaultParams()
	p.Churn = 0.5
	m := New(p)
	first := m.Users[0].ID
	replaced := false
	for range 10 {
		m.Interval(0.5)
		if m.Users[0].ID != first {
			replaced = true
		}
	}
	if !replaced || len(m.Users) != p.Users {
		t.Errorf("churn: replaced=%v users=%d", replaced, len(m.Users))
	}
}
