package estimate

import (
	"fmt"
)

// ScoreBRS scores the Brief Resilience Scale (Smith et al. 2008): six items
// answered 1–5; items 2, 4 and 6 are reverse-scored (6 − x); the BRS score is
// the mean, and resilience r = (BRS − 1)/4 maps it to [0,1].
func ScoreBRS(items []int) (brs, resilience float64, err error) {
	if len(items) != 6 {
		return 0, 0, fmt.Errorf("brs needs 6 items, got %d", len(items))
	}
	var sum float64
	for i, v := range items {
		if v < 1 || v > 5 {
			return 0, 0, fmt.Errorf("brs item %d must be 1–5, got %d", i+1, v)
		}
		if (i+1)%2 == 0 {
			v = 6 - v
		}
		sum += float64(v)
	}
	brs = sum / 6
	return brs, (brs - 1) / 4, nil
}
