// Package textemotion scores the emotional valence of a text in [-1, 1]:
// VADER on the CPU by default, or a GPU model server speaking the Open
// Inference Protocol (KServe v2), falling back to VADER when it fails.
package textemotion

import (
	"context"
	"fmt"
	"sync"

	"github.com/jonreiter/govader"
)

// Scorer returns the valence of a text in [-1, 1] (−1 most negative).
type Scorer interface {
	Score(ctx context.Context, text string) (float64, error)
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

// Fallback tries Primary and, on any error, uses Secondary, reporting why.
type Fallback struct {
	Primary, Secondary Scorer
	// OnFallback is told the reason ("timeout", "unavailable", "bad_response").
	OnFallback func(reason string)
}

// Score implements Scorer.
func (f *Fallback) Score(ctx context.Context, text string) (float64, error) {
	v, err := f.Primary.Score(ctx, text)
	if err == nil {
		return v, nil
	}
	if f.OnFallback != nil {
		f.OnFallback(Reason(err))
	}
	v, err2 := f.Secondary.Score(ctx, text)
	if err2 != nil {
		return 0, fmt.Errorf("primary: %w; fallback: %w", err, err2)
	}
	return v, nil
}
