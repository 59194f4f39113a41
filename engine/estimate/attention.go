package estimate

import (
	"math"
	"time"

	"gonum.org/v1/gonum/stat"
)

// SARTNoGoDigit is the digit on which a SART participant must withhold the
// response (the classic Robertson et al. 1997 design).
const SARTNoGoDigit = 3

// SARTTrial is one trial of the Sustained Attention to Response Task.
type SARTTrial struct {
	Digit     int     `json:"d"`
	Responded bool    `json:"r"`
	RTms      float64 `json:"t,omitempty"`
}

// SARTScore summarises a window of trials.
type SARTScore struct {
	CommissionRate float64 // responses to the no-go digit / no-go trials
	OmissionRate   float64 // missed go trials / go trials
	RTCV           float64 // coefficient of variation of go reaction times
	Trials         int
	Attention      float64 // in [0,1]
}

// MinSARTTrials is the fewest trials, including at least one no-go, that
// yield a score.
const MinSARTTrials = 10

// ScoreSART computes attention from SART trials:
//
//	a = 1 − (0.4·commission + 0.3·omission + 0.3·min(1, CV/0.5))
//
// Commission errors (responding to the no-go digit) are the task's primary
// index of mind-wandering; omissions and reaction-time variability add to it.
func ScoreSART(trials []SARTTrial) (SARTScore, error) {
	var nogo, commissions, gos, omissions int
	rts := make([]float64, 0, len(trials))
	for _, t := range trials {
		if t.Digit == SARTNoGoDigit {
			nogo++
			if t.Responded {
				commissions++
			}
			continue
		}
		gos++
		if !t.Responded {
			omissions++
		} else if t.RTms > 0 {
			rts = append(rts, t.RTms)
		}
	}
	s := SARTScore{Trials: len(trials)}
	if len(trials) < MinSARTTrials || nogo == 0 || gos == 0 {
		return s, ErrInsufficientData
	}
	s.CommissionRate = float64(commissions) / float64(nogo)
	s.OmissionRate = float64(omissions) / float64(gos)
	if len(rts) >= 2 {
		mean, sd := stat.MeanStdDev(rts, nil)
		if mean > 0 {
			s.RTCV = sd / mean
		}
	}
	s.Attention = clamp01(1 - (0.4*s.CommissionRate + 0.3*s.OmissionRate + 0.3*math.Min(1, s.RTCV/0.5)))
	return s, nil
}

// BehaviourEvent is one interaction event.
type BehaviourEvent struct {
	Type string    `json:"y"`
	At   time.Time `json:"a"`
}

// BehaviourScore summarises a window of behaviour events.
type BehaviourScore struct {
	FocusFraction  float64 // time between focus and blur / window
	SwitchesPerMin float64 // task_switch events per minute
	WindowMinutes  float64
	Attention      float64
}

// MinBehaviourWindow is the shortest span of events that yields a score.
const MinBehaviourWindow = time.Minute

// ScoreBehaviour computes attention from interaction events in time order:
//
//	a = f / (1 + r/2)
//
// where f is the fraction of the window spent on task (focus → blur) and r
// the task-switch rate per minute: frequent switching halves attention at
// two switches a minute.
func ScoreBehaviour(events []BehaviourEvent) (BehaviourScore, error) {
	var s BehaviourScore
	if len(events) < 2 {
		return s, ErrInsufficientData
	}
	start, end := events[0].At, events[len(events)-1].At
	window := end.Sub(start)
	if window < MinBehaviourWindow {
		return s, ErrInsufficientData
	}
	var focused time.Duration
	var focusSince time.Time
	inFocus := false
	switches := 0
	for _, e := range events {
		switch e.Type {
		case "focus":
			if !inFocus {
				inFocus, focusSince = true, e.At
			}
		case "blur":
			if inFocus {
				focused += e.At.Sub(focusSince)
				inFocus = false
			}
		case "task_switch":
			switches++
		}
	}
	if inFocus {
		focused += end.Sub(focusSince)
	}
	s.WindowMinutes = window.Minutes()
	s.FocusFraction = clamp01(focused.Seconds() / window.Seconds())
	s.SwitchesPerMin = float64(switches) / s.WindowMinutes
	s.Attention = clamp01(s.FocusFraction / (1 + s.SwitchesPerMin/2))
	return s, nil
}

func clamp01(v float64) float64 { return math.Min(1, math.Max(0, v)) }

// BehaviourWindow keeps what ScoreBehaviour needs about the last ten minutes
// of events as per-minute aggregates (time on task, task switches), plus
// whether the user is in focus now: a stored user costs a few hundred bytes
// instead of every event, and a focus that began before the window is not
// forgotten.
type BehaviourWindow struct {
	Buckets    []BehaviourBucket `json:"b,omitempty"` // ascending by minute
	InFocus    bool              `json:"f,omitempty"`
	FocusSince int64             `json:"s,omitempty"` // unix ms
	First      int64             `json:"a,omitempty"` // unix ms, start of the window
	Last       int64             `json:"z,omitempty"` // unix ms, newest event
}

// BehaviourBucket aggregates one minute.
type BehaviourBucket struct {
	Minute   int64 `json:"m"` // unix minute
	FocusMS  int64 `json:"f,omitempty"`
	Switches int   `json:"s,omitempty"`
	Events   int   `json:"n,omitempty"`
}

func (w *BehaviourWindow) bucket(ms int64) *BehaviourBucket {
	minute := ms / 60_000
	for i := len(w.Buckets) - 1; i >= 0; i-- {
		if w.Buckets[i].Minute == minute {
			return &w.Buckets[i]
		}
		if w.Buckets[i].Minute < minute {
			break
		}
	}
	w.Buckets = append(w.Buckets, BehaviourBucket{Minute: minute})
	// Events arrive in time order, so appending keeps the order; an older
	// minute (out-of-order batch) is sorted in.
	for i := len(w.Buckets) - 1; i > 0 && w.Buckets[i].Minute < w.Buckets[i-1].Minute; i-- {
		w.Buckets[i], w.Buckets[i-1] = w.Buckets[i-1], w.Buckets[i]
	}
	for i := range w.Buckets {
		if w.Buckets[i].Minute == minute {
			return &w.Buckets[i]
		}
	}
	return nil // unreachable
}

// addFocus spreads a focused interval over the minutes it covers.
func (w *BehaviourWindow) addFocus(from, to int64) {
	for cur := from; cur < to; {
		end := min(to, (cur/60_000+1)*60_000)
		w.bucket(cur).FocusMS += end - cur
		cur = end
	}
}

// Add folds events (in time order) in and drops minutes older than the
// window.
func (w *BehaviourWindow) Add(events []BehaviourEvent) {
	for _, e := range events {
		t := e.At.UnixMilli()
		if w.First == 0 {
			w.First = t
		}
		w.Last = max(w.Last, t)
		w.bucket(t).Events++
		switch e.Type {
		case "focus":
			if !w.InFocus {
				w.InFocus, w.FocusSince = true, t
			}
		case "blur":
			if w.InFocus {
				w.addFocus(w.FocusSince, t)
				w.InFocus = false
			}
		case "task_switch":
			w.bucket(t).Switches++
		}
	}
	start := w.Last - behaviourWindow.Milliseconds()
	w.First = max(w.First, start)
	keep := 0
	for keep < len(w.Buckets) && (w.Buckets[keep].Minute+1)*60_000 <= start {
		keep++
	}
	w.Buckets = w.Buckets[keep:]
}

// Score applies ScoreBehaviour's formula to the window.
func (w *BehaviourWindow) Score() (BehaviourScore, int, error) {
	var s BehaviourScore
	window := time.Duration(w.Last-w.First) * time.Millisecond
	events := 0
	var focusMS int64
	switches := 0
	for _, b := range w.Buckets {
		events += b.Events
		focusMS += b.FocusMS
		switches += b.Switches
	}
	if events == 0 || window < MinBehaviourWindow {
		return s, events, ErrInsufficientData
	}
	if w.InFocus {
		focusMS += w.Last - max(w.FocusSince, w.First)
	}
	s.WindowMinutes = window.Minutes()
	s.FocusFraction = clamp01(float64(focusMS) / float64(window.Milliseconds()))
	s.SwitchesPerMin = float64(switches) / s.WindowMinutes
	s.Attention = clamp01(s.FocusFraction / (1 + s.SwitchesPerMin/2))
	return s, events, nil
}
