// Package loss computes the distance of a user's state to the program's
// ideal state and aggregates it over a cohort with k-anonymity.
package loss

import "math"

// Dims is the number of state dimensions (attention, emotion, resilience).
const Dims = 3

// Vector holds one value per dimension.
type Vector [Dims]float64

// User returns L = Σ wᵢ (sᵢ − s*ᵢ)² / Σ wᵢ over the dimensions that are
// known; unknown dimensions drop out with their weight. ok is false when no
// weighted dimension is known.
func User(state Vector, known [Dims]bool, target, weights Vector) (loss float64, ok bool) {
	var num, den float64
	for i := range Dims {
		if !known[i] || weights[i] <= 0 {
			continue
		}
		d := state[i] - target[i]
		num += weights[i] * d * d
		den += weights[i]
	}
	if den == 0 {
		return 0, false
	}
	return num / den, true
}

// Entry is one user's current contribution to the cohort.
type Entry struct {
	Loss  float64
	State Vector
	Known [Dims]bool
}

// Aggregate is a cohort's published summary.
type Aggregate struct {
	Published bool
	Size      int
	Loss      float64
	// Means are per-dimension means over the users who have that dimension.
	Means Vector
}

// Cohort averages the loss over the entries: the cohort loss is the mean
// over users with a current estimate. Below minSize nothing is published:
// an aggregate over very few users would reveal individuals.
func Cohort(entries []Entry, minSize int) Aggregate {
	if len(entries) < minSize || len(entries) == 0 {
		return Aggregate{Size: len(entries)}
	}
	agg := Aggregate{Published: true, Size: len(entries)}
	var sums Vector
	var counts [Dims]int
	for _, e := range entries {
		agg.Loss += e.Loss
		for i := range Dims {
			if e.Known[i] {
				sums[i] += e.State[i]
				counts[i]++
			}
		}
	}
	agg.Loss /= float64(len(entries))
	for i := range Dims {
		if counts[i] > 0 {
			agg.Means[i] = sums[i] / float64(counts[i])
		} else {
			agg.Means[i] = math.NaN()
		}
	}
	return agg
}
