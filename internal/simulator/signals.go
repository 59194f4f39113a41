package simulator

import (
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/attune-io/attune/engine/telemetry"
)

// sartTrials is a block of n trials of the Sustained Attention to Response
// Task (Robertson et al. 1997): digits 1–9 at random, respond to all but
// 3. Mind-wandering shows as commission errors (responding to the 3),
// occasional omissions and variable go reaction times, all growing as
// attention falls. Hidden attention is on the scale of the engine's
// documented SART score (docs/engine-model.md): the rates are chosen so
// that 1 − (0.4·commission + 0.3·omission + 0.3·CV/0.5) equals it, which
// gives commissions on 23% of no-go trials at attention 0.8 and 68% at
// 0.55 (all of them below about 0.4), omissions of 2–4%, and a
// reaction-time CV from 0.17 to 0.28 around a mean of 350–400 ms.
func sartTrials(r *rand.Rand, n int, attention float64) []telemetry.Trial {
	lapse := 1 - clamp(attention, 0, 1)
	commission := clamp(1.79*lapse-0.128, 0.02, 0.97)
	omission := 0.01 + 0.05*lapse
	meanRT := 330 + 120*lapse
	cv := 0.08 + 0.45*lapse
	sigma := math.Sqrt(math.Log(1 + cv*cv)) // lognormal with that CV
	rt := func(mean float64) float64 {
		v := mean * math.Exp(sigma*r.NormFloat64()-sigma*sigma/2)
		return math.Round(clamp(v, 100, 4000))
	}
	trials := make([]telemetry.Trial, n)
	for i := range trials {
		digit := 1 + r.IntN(9)
		t := telemetry.Trial{Digit: digit}
		if digit == 3 {
			t.Responded = r.Float64() < commission
			if t.Responded {
				t.RTms = rt(0.85 * meanRT) // impulsive responses are fast
			}
		} else if t.Responded = r.Float64() >= omission; t.Responded {
			t.RTms = rt(meanRT)
		}
		trials[i] = t
	}
	return trials
}

// chatLine is a chat message whose valence follows emotional calm: the
// phrase bank's level is the calm plus noise, scaled to the bank.
func chatLine(r *rand.Rand, emotion float64) string {
	level := int(math.Round(clamp(emotion+0.08*r.NormFloat64(), 0, 1) * float64(len(phraseBank)-1)))
	phrases := phraseBank[level]
	return phrases[r.IntN(len(phrases))]
}

// brsAnswers are answers to the six items of the Brief Resilience Scale
// (Smith et al. 2008), each the person's resilience on the 1–5 scale plus
// response noise (SD 0.6 of a point); items 2, 4 and 6 are worded
// negatively, so they are answered from the other end.
func brsAnswers(r *rand.Rand, resilience float64) []int {
	items := make([]int, 6)
	for i := range items {
		v := 1 + 4*resilience + 0.6*r.NormFloat64()
		if i%2 == 1 {
			v = 6 - v
		}
		items[i] = int(math.Round(clamp(v, 1, 5)))
	}
	return items
}

// moodAnswer is a 1–5 self-report of mood: emotional calm with noise.
func moodAnswer(r *rand.Rand, emotion float64) int {
	return int(math.Round(clamp(1+4*(emotion+0.1*r.NormFloat64()), 1, 5)))
}

// behaviourEvents are the client's focus events over the wall-clock
// interval [from, to): on task for a share f of it, then away, with task
// switches at r a minute, so that the engine's behaviour score
// f/(1 + r/2) is the attention: r = 1.2·(1 − attention) and f =
// attention·(1 + r/2). They are on the wall clock because the engine
// scores them over a wall-clock window of minutes (docs/engine-model.md),
// which accelerated time does not shorten.
func behaviourEvents(r *rand.Rand, from, to time.Time, attention float64) []telemetry.Event {
	span := to.Sub(from)
	if span <= 2*time.Millisecond {
		return nil
	}
	attention = clamp(attention, 0, 1)
	switchRate := 1.2 * (1 - attention)
	onTask := attention * (1 + switchRate/2)
	blurAt := from.Add(time.Duration(onTask * float64(span)))
	var events []telemetry.Event
	events = append(events, telemetry.Event{Type: "focus", At: from.Add(time.Millisecond)})
	switches := poisson(r, switchRate*span.Minutes())
	for range switches {
		at := from.Add(time.Millisecond + time.Duration(r.Float64()*float64(blurAt.Sub(from)-time.Millisecond)))
		events = append(events, telemetry.Event{Type: "task_switch", At: at})
	}
	events = append(events, telemetry.Event{Type: "click", At: from.Add(time.Duration(r.Float64() * float64(blurAt.Sub(from))))})
	if onTask < 0.999 {
		events = append(events, telemetry.Event{Type: "blur", At: blurAt})
	}
	slices.SortStableFunc(events, func(x, y telemetry.Event) int { return x.At.Compare(y.At) })
	return events
}

// poisson draws a Poisson count of mean lambda (Knuth; lambda is small).
func poisson(r *rand.Rand, lambda float64) int {
	if lambda <= 0 {
		return 0
	}
	limit, k, prod := math.Exp(-lambda), 0, r.Float64()
	for prod > limit {
		k++
		prod *= r.Float64()
	}
	return k
}
