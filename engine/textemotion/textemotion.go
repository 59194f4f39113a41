// Package textemotion scores the emotion of texts: VADER on the CPU by
// default, or a GPU model server speaking the Open Inference Protocol
// (KServe v2; KServe huggingfaceserver, Triton, MLServer or a custom
// valence server), falling back to VADER when it fails.
package textemotion

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jonreiter/govader"
)

// Scorer returns the valence of a text in [-1, 1] (−1 most negative).
type Scorer interface {
	Score(ctx context.Context, text string) (float64, error)
}

// BatchScorer scores many texts at once, with arousal and confidence where
// the scorer knows them. Every scorer of this package is one.
type BatchScorer interface {
	Scorer
	// ScoreBatch returns one Emotion per text, in order.
	ScoreBatch(ctx context.Context, texts []string) ([]Emotion, error)
}

// ScoreAll scores texts with s: in one ScoreBatch call when s is a
// BatchScorer, else one Score call per text.
func ScoreAll(ctx context.Context, s Scorer, texts []string) ([]Emotion, error) {
	if b, ok := s.(BatchScorer); ok {
		out, err := b.ScoreBatch(ctx, texts)
		if err == nil && len(out) != len(texts) {
			return nil, fmt.Errorf("%w: %d scores for %d texts", ErrBadResponse, len(out), len(texts))
		}
		return out, err
	}
	out := make([]Emotion, len(texts))
	for i, t := range texts {
		v, err := s.Score(ctx, t)
		if err != nil {
			return nil, err
		}
		out[i] = Emotion{Valence: v, Confidence: 1}
	}
	return out, nil
}

// Vader scores with the VADER lexicon and rules (Hutto & Gilbert 2014): the
// compound score.
type Vader struct {
	analyzer *govader.SentimentIntensityAnalyzer
}

var (
	vaderOnce     sync.Once
	vaderAnalyzer *govader.SentimentIntensityAnalyzer
)

// NewVader returns a VADER scorer. The lexicon is loaded once per process.
func NewVader() *Vader {
	vaderOnce.Do(func() { vaderAnalyzer = govader.NewSentimentIntensityAnalyzer() })
	return &Vader{analyzer: vaderAnalyzer}
}

// Score returns VADER's compound score.
func (v *Vader) Score(_ context.Context, text string) (float64, error) {
	return v.analyzer.PolarityScores(text).Compound, nil
}

// ScoreBatch returns VADER's compound score as valence; VADER knows no
// arousal, and its confidence is the share of the text it rated
// non-neutral (1 − neu).
func (v *Vader) ScoreBatch(_ context.Context, texts []string) ([]Emotion, error) {
	out := make([]Emotion, len(texts))
	for i, t := range texts {
		p := v.analyzer.PolarityScores(t)
		out[i] = Emotion{Valence: p.Compound, Confidence: clamp(1-p.Neutral, 0, 1)}
	}
	return out, nil
}

// Fallback tries Primary and, on any error, uses Secondary, reporting why.
// With a Breaker, Primary is not called while the breaker is open.
type Fallback struct {
	Primary, Secondary Scorer
	// OnFallback is told the reason ("timeout", "unavailable",
	// "bad_response", "circuit_open", "error"), once per call.
	OnFallback func(reason string)
	// Breaker, when set, stops calls to Primary after repeated failures.
	Breaker *Breaker
	// Observe, when set, is told of every call that reached Primary: the
	// number of texts, how long it took and its error.
	Observe func(texts int, elapsed time.Duration, err error)
}

// Score implements Scorer.
func (f *Fallback) Score(ctx context.Context, text string) (float64, error) {
	out, err := f.ScoreBatch(ctx, []string{text})
	if err != nil {
		return 0, err
	}
	return out[0].Valence, nil
}

// ScoreBatch implements BatchScorer: one call to Primary for all texts.
func (f *Fallback) ScoreBatch(ctx context.Context, texts []string) ([]Emotion, error) {
	if len(texts) == 0 {
		return nil, nil
	}
	var err error
	if f.Breaker != nil && !f.Breaker.Allow() {
		err = ErrCircuitOpen
	} else {
		start := time.Now()
		var out []Emotion
		out, err = ScoreAll(ctx, f.Primary, texts)
		if f.Observe != nil {
			f.Observe(len(texts), time.Since(start), err)
		}
		if f.Breaker != nil {
			if err == nil {
				f.Breaker.Success()
			} else {
				f.Breaker.Failure()
			}
		}
		if err == nil {
			return out, nil
		}
	}
	if f.OnFallback != nil {
		f.OnFallback(Reason(err))
	}
	out, err2 := ScoreAll(ctx, f.Secondary, texts)
	if err2 != nil {
		return nil, fmt.Errorf("primary: %w; fallback: %w", err, err2)
	}
	return out, nil
}

// Text-model states for readiness.
const (
	// TextModelReady: the model server answers; texts are scored by it.
	TextModelReady = "ready"
	// TextModelFallback: the model server is down, unready or its breaker
	// is open; texts are scored by VADER.
	TextModelFallback = "fallback"
)

// Status is the text model's state for /readyz.
type Status struct {
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
}

// StatusReporter is a scorer that can say whether its model server serves.
type StatusReporter interface {
	TextModelStatus(ctx context.Context) Status
}

type readier interface {
	Ready(ctx context.Context) error
}

// TextModelStatus asks the primary's ready endpoint (unless its breaker is
// open, which says enough already).
func (f *Fallback) TextModelStatus(ctx context.Context) Status {
	if f.Breaker != nil && f.Breaker.State() == BreakerOpen {
		return Status{State: TextModelFallback, Reason: "circuit_open"}
	}
	if r, ok := f.Primary.(readier); ok {
		if err := r.Ready(ctx); err != nil {
			return Status{State: TextModelFallback, Reason: Reason(err)}
		}
	}
	return Status{State: TextModelReady}
}
