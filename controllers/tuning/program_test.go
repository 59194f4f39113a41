package tuning

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)

// generation stands for the engines' hash of the tuned values.
func generation(s float64) string { return fmt.Sprintf("g%.6f", s) }

func autoSpec() Spec {
	return Spec{Mode: ModeAuto, Initial: 0.5, Min: 0.1, Max: 0.9, MaxStep: 0.05, Interval: 10 * time.Second,
		StaleAfter: time.Minute, Generation: generation}
}

// settled is a replica that has run s for a minute.
func settled(name string, s float64) Replica {
	return Replica{Name: name, Strength: s, Generation: generation(s), RunningFor: time.Minute}
}

func valid(at time.Time, replicas ...Replica) Measurement {
	return Measurement{Loss: 0.05, CohortSize: 40, At: at, Replicas: replicas}
}

func ptrTo(v float64) *float64 { return &v }

func TestWithDefaults(t *testing.T) {
	s := Spec{}.WithDefaults()
	if s.Mode != ModeAuto || s.Interval != DefaultInterval || s.StaleAfter != DefaultStaleAfter || s.MaxStep != DefaultMaxStep || s.Settle != DefaultInterval/2 {
		t.Errorf("defaults %+v", s)
	}
	s = Spec{Interval: 40 * time.Second, Settle: 7 * time.Second}.WithDefaults()
	if s.Settle != 7*time.Second {
		t.Errorf("settle %s, want the one given", s.Settle)
	}
	if s = (Spec{Interval: 40 * time.Second}).WithDefaults(); s.Settle != 20*time.Second {
		t.Errorf("settle %s, want half the interval", s.Settle)
	}
}

func TestInForce(t *testing.T) {
	spec := autoSpec()
	cases := []struct {
		name  string
		mode  Mode
		last  *float64
		lo    float64
		hi    float64
		wants float64
	}{
		{"before any decision", ModeAuto, nil, 0.1, 0.9, 0.5},
		{"auto keeps the last", ModeAuto, ptrTo(0.7), 0.1, 0.9, 0.7},
		{"paused keeps the last", ModePaused, ptrTo(0.3), 0.1, 0.9, 0.3},
		{"manual holds initial", ModeManual, ptrTo(0.3), 0.1, 0.9, 0.5},
		{"new bounds clamp at once", ModePaused, ptrTo(0.3), 0.45, 0.9, 0.45},
		{"new upper bound clamps", ModeAuto, ptrTo(0.8), 0.1, 0.6, 0.6},
	}
	for _, c := range cases {
		s := spec
		s.Mode, s.Min, s.Max = c.mode, c.lo, c.hi
		if got := s.InForce(State{Strength: c.last}); got != c.wants {
			t.Errorf("%s: %.3f, want %.3f", c.name, got, c.wants)
		}
	}
}

// TestAdvanceMeasuresOncePerInterval: nothing is measured before the
// interval is up (the requeue says when it is), or ever outside Auto.
func TestAdvanceMeasuresOncePerInterval(t *testing.T) {
	spec := autoSpec()
	calls := 0
	measure := func() Measurement { calls++; return valid(t0, settled("a", 0.5)) }
	out := spec.Advance(State{}, t0, measure)
	if calls != 1 || !out.Measured || out.RequeueAfter != spec.Interval || !out.State.LastTune.Equal(t0) {
		t.Fatalf("first reconcile: calls %d, %+v", calls, out)
	}
	soon := spec.Advance(out.State, t0.Add(4*time.Second), measure)
	if calls != 1 || soon.Measured || soon.RequeueAfter != 6*time.Second || soon.Strength != out.Strength {
		t.Errorf("4s later: calls %d, requeue %s, strength %.3f; want no measurement, back in 6s", calls, soon.RequeueAfter, soon.Strength)
	}
	for _, mode := range []Mode{ModeManual, ModePaused} {
		s := spec
		s.Mode = mode
		if out := s.Advance(State{}, t0, measure); out.Measured || out.RequeueAfter != 0 {
			t.Errorf("%s: %+v, want nothing measured or due", mode, out)
		}
	}
	s := spec
	s.Suspended = true
	if out := s.Advance(State{}, t0, measure); out.Measured || calls != 1 {
		t.Errorf("suspended: measured %v", out.Measured)
	}
}

// TestAdvanceHoldsOnBadMeasurements: a failed, stale or invalid
// measurement moves nothing and leaves the history as it was.
func TestAdvanceHoldsOnBadMeasurements(t *testing.T) {
	spec := autoSpec()
	history := []Record{{Time: t0.Add(-20 * time.Second), Strength: 0.45, Loss: 0.06, CohortSize: 40}, {Time: t0.Add(-10 * time.Second), Strength: 0.5, Loss: 0.055, CohortSize: 40}}
	st := State{Strength: ptrTo(0.5), Since: t0.Add(-10 * time.Second), LastTune: t0.Add(-10 * time.Second), History: history}
	now := t0
	cases := map[string]struct {
		m    Measurement
		hold Hold
	}{
		"failed":   {Measurement{Err: errors.New("no ready engine pods")}, HoldFailed},
		"stale":    {valid(now.Add(-2*time.Minute), settled("a", 0.5)), HoldStale},
		"NaN":      {Measurement{Loss: math.NaN(), At: now, Replicas: []Replica{settled("a", 0.5)}}, HoldInvalid},
		"infinite": {Measurement{Loss: math.Inf(1), At: now, Replicas: []Replica{settled("a", 0.5)}}, HoldInvalid},
		"negative": {Measurement{Loss: -0.1, At: now, Replicas: []Replica{settled("a", 0.5)}}, HoldInvalid},
	}
	for name, c := range cases {
		out := spec.Advance(st, now, func() Measurement { return c.m })
		if out.Hold != c.hold || out.Strength != 0.5 || len(out.State.History) != len(history) || !out.Measured {
			t.Errorf("%s: hold %q strength %.3f history %d; want %q at 0.5 with the history unchanged", name, out.Hold, out.Strength, len(out.State.History), c.hold)
		}
		if out.Why == "" {
			t.Errorf("%s: no reason given", name)
		}
	}
}

// TestAdvanceCreditsOnlyWhatEveryReplicaRanSettled is the attribution
// rule: the loss is credited to the strength in force only when every
// replica the measurement counts runs it, with its generation, for the
// settle time.
func TestAdvanceCreditsOnlyWhatEveryReplicaRanSettled(t *testing.T) {
	spec := autoSpec() // settle: half of 10s
	st := State{Strength: ptrTo(0.5), Since: t0.Add(-15 * time.Second), LastTune: t0.Add(-10 * time.Second)}
	cases := []struct {
		name     string
		replicas []Replica
		pending  bool
		mention  string
	}{
		{"all settled", []Replica{settled("a", 0.5), settled("b", 0.5)}, false, ""},
		{"one on the old strength", []Replica{settled("a", 0.5), settled("b", 0.55)}, true, "1 of 2 engines do not run it yet"},
		{"one on another generation", []Replica{settled("a", 0.5), {Name: "b", Strength: 0.5, Generation: "bounds-before", RunningFor: time.Minute}}, true, "do not run it yet"},
		{"one not settled", []Replica{settled("a", 0.5), {Name: "b", Strength: 0.5, Generation: generation(0.5), RunningFor: 2 * time.Second}}, true, "less than the settle time 5s: b (for 2s)"},
		{"settled exactly", []Replica{{Name: "a", Strength: 0.5, Generation: generation(0.5), RunningFor: 5 * time.Second}}, false, ""},
		{"no generation known", []Replica{{Name: "a", Strength: 0.5, RunningFor: time.Minute}}, false, ""},
		{"no replica", nil, true, "no engine said which strength it runs"},
	}
	for _, c := range cases {
		out := spec.Advance(st, t0, func() Measurement { return valid(t0, c.replicas...) })
		if c.pending {
			if out.Hold != HoldPending || out.Strength != 0.5 || len(out.State.History) != 0 {
				t.Errorf("%s: hold %q strength %.3f history %d; want StrengthPending at 0.5, nothing credited", c.name, out.Hold, out.Strength, len(out.State.History))
			}
			if !strings.Contains(out.Why, c.mention) {
				t.Errorf("%s: %q does not say %q", c.name, out.Why, c.mention)
			}
			if len(out.Lagging) != 0 {
				t.Errorf("%s: named %v after only 15s", c.name, out.Lagging)
			}
			continue
		}
		if out.Hold != Credited || len(out.State.History) != 1 || out.State.History[0].Strength != 0.5 || out.State.History[0].Loss != 0.05 {
			t.Errorf("%s: hold %q (%s), history %+v; want the loss credited to 0.5", c.name, out.Hold, out.Why, out.State.History)
		}
	}
}

// TestAdvanceNamesAReplicaThatLags: a replica still on another
// configuration LagIntervals intervals after the strength was put in
// force is named, and the others are not.
func TestAdvanceNamesAReplicaThatLags(t *testing.T) {
	spec := autoSpec()
	since := t0
	st := State{Strength: ptrTo(0.5), Since: since}
	for i := 1; i <= LagIntervals; i++ {
		now := since.Add(time.Duration(i) * spec.Interval)
		st.LastTune = now.Add(-spec.Interval)
		out := spec.Advance(st, now, func() Measurement {
			return valid(now, settled("engine-0", 0.5), settled("engine-2", 0.55), settled("engine-1", 0.45))
		})
		if out.Hold != HoldPending {
			t.Fatalf("interval %d: hold %q", i, out.Hold)
		}
		if i < LagIntervals && len(out.Lagging) != 0 {
			t.Errorf("interval %d: named %v too early", i, out.Lagging)
		}
		if i == LagIntervals {
			if want := []string{"engine-1", "engine-2"}; fmt.Sprint(out.Lagging) != fmt.Sprint(want) {
				t.Errorf("lagging %v, want %v", out.Lagging, want)
			}
			if !strings.Contains(out.Why, "engine-1 (strength 0.450), engine-2 (strength 0.550)") || strings.Contains(out.Why, "engine-0") {
				t.Errorf("message %q should name engine-1 and engine-2 with their strengths, and not engine-0", out.Why)
			}
		}
		st = out.State
		if !st.Since.Equal(since) {
			t.Fatalf("a hold restarted since: %v", st.Since)
		}
	}
}

// TestAdvanceKeepsTheHistoryAndSince: credited measurements are kept, the
// last HistoryLimit of them; a move restarts since, a hold keeps it; no
// move exceeds maxStep nor leaves the bounds.
func TestAdvanceKeepsTheHistoryAndSince(t *testing.T) {
	spec := autoSpec()
	st := State{}
	now := t0
	for i := range 3 * HistoryLimit {
		prev := spec.InForce(st)
		out := spec.Advance(st, now, func() Measurement {
			s := spec.InForce(st)
			return Measurement{Loss: 0.01 + 0.3*(s-0.3)*(s-0.3), CohortSize: 40, At: now, Replicas: []Replica{settled("a", s)}}
		})
		if out.Hold != Credited {
			t.Fatalf("interval %d: %s %s", i, out.Hold, out.Why)
		}
		if n := len(out.State.History); n != min(i+1, HistoryLimit) {
			t.Fatalf("interval %d: history %d", i, n)
		}
		if last := out.State.History[len(out.State.History)-1]; last.Strength != prev || !last.Time.Equal(now) {
			t.Fatalf("interval %d: last record %+v, want strength %.3f at %v", i, last, prev, now)
		}
		if math.Abs(out.Strength-prev) > spec.MaxStep+1e-12 || out.Strength < spec.Min || out.Strength > spec.Max {
			t.Fatalf("interval %d: %.3f → %.3f", i, prev, out.Strength)
		}
		moved := out.Strength != prev
		if moved != out.State.Since.Equal(now) && i > 0 {
			t.Errorf("interval %d: moved %v but since %v (now %v)", i, moved, out.State.Since, now)
		}
		st = out.State
		now = now.Add(spec.Interval)
	}
	if got := *st.Strength; math.Abs(got-0.3) > 0.08 {
		t.Errorf("after %d intervals at %.3f, want near the optimum 0.3", 3*HistoryLimit, got)
	}
}

// TestStepIsTheSameTuner: Step, for harnesses without a program, holds on
// the same measurements and decides as Advance does.
func TestStepIsTheSameTuner(t *testing.T) {
	spec := autoSpec()
	st := State{}
	var history []Observation
	s := spec.Initial
	now := t0
	for i := range 30 {
		loss := 0.01 + 0.3*(s-0.6)*(s-0.6)
		d, h := Step(history, s, spec.params(), Measurement{Loss: loss, At: now}, now, spec.StaleAfter)
		out := spec.Advance(st, now, func() Measurement {
			return Measurement{Loss: loss, CohortSize: 40, At: now, Replicas: []Replica{settled("a", s)}}
		})
		if d.Strength != out.Strength || len(h) != len(out.State.History) {
			t.Fatalf("interval %d: Step %.4f (%d kept), Advance %.4f (%d kept)", i, d.Strength, len(h), out.Strength, len(out.State.History))
		}
		history, st, s = h, out.State, d.Strength
		now = now.Add(spec.Interval)
	}
	if d, _ := Step(history, s, spec.params(), Measurement{Loss: 0.01, At: now.Add(-time.Hour)}, now, 0); d.Strength != s || !strings.Contains(d.Reason, "staleAfter") {
		t.Errorf("Step with staleAfter 0 took an hour-old measurement: %+v", d)
	}
}
