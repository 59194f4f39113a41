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
