package estimate

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// Compact JSON for the largest parts of a stored model: the engine rewrites
// a user's record on every batch, and float and timestamp formatting
// dominated that cost.

// RRBuffer is a series of RR intervals in ms, stored as integer tenths of a
// millisecond (the precision of any RR sensor).
type RRBuffer []float64

// MarshalJSON writes integers (tenths of ms).
func (b RRBuffer) MarshalJSON() ([]byte, error) {
	out := make([]byte, 0, 6*len(b)+2)
	out = append(out, '[')
	for i, v := range b {
		if i > 0 {
			out = append(out, ',')
		}
		out = strconv.AppendInt(out, int64(math.Round(v*10)), 10)
	}
	return append(out, ']'), nil
}

// UnmarshalJSON reads integer tenths of ms.
func (b *RRBuffer) UnmarshalJSON(data []byte) error {
	var tenths []int64
	if err := json.Unmarshal(data, &tenths); err != nil {
		return fmt.Errorf("rr buffer: %w", err)
	}
	out := make(RRBuffer, len(tenths))
	for i, t := range tenths {
		out[i] = float64(t) / 10
	}
	*b = out
	return nil
}
