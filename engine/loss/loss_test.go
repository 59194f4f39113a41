package loss

import (
	"math"
	"testing"
)

func TestUserLossHandComputed(t *testing.T) {
	// s = (0.5, 0.9, 0.2), s* = (0.8, 0.7, 0.6), w = (1, 2, 1):
	// (1·0.09 + 2·0.04 + 1·0.16) / 4 = 0.0825
	l, ok := User(Vector{0.5, 0.9, 0.2}, [Dims]bool{true, true, true}, Vector{0.8, 0.7, 0.6}, Vector{1, 2, 1})
	if !ok || math.Abs(l-0.0825) > 1e-12 {
		t.Fatalf("loss = %v, %v; want 0.0825", l, ok)
	}
	// Unknown emotion drops out with its weight: (0.09 + 0.16)/2.
	l, ok = User(Vector{0.5, 0.9, 0.2}, [Dims]bool{true, false, true}, Vector{0.8, 0.7, 0.6}, Vector{1, 2, 1})
	if !ok || math.Abs(l-0.125) > 1e-12 {
		t.Fatalf("loss = %v, %v; want 0.125", l, ok)
	}
	if _, ok := User(Vector{}, [Dims]bool{}, Vector{}, Vector{1, 1, 1}); ok {
		t.Error("a user with no known dimension has a loss")
	}
}

func TestCohortPublishesOnlyAtMinimumSize(t *testing.T) {
	entries := make([]Entry, 10)
	for i := range entries {
		entries[i] = Entry{Loss: float64(i) / 100, State: Vector{0.5, 0.5, float64(i) / 10}, Known: [Dims]bool{true, true, true}}
	}
	if agg := Cohort(entries, 11); agg.Published || agg.Loss != 0 {
		t.Fatalf("10 users, k=11: published %+v", agg)
	}
	agg := Cohort(entries, 10)
	if !agg.Published || agg.Size != 10 || math.Abs(agg.Loss-0.045) > 1e-12 || math.Abs(agg.Means[2]-0.45) > 1e-12 {
		t.Fatalf("10 users, k=10: %+v; want loss 0.045, resilience mean 0.45", agg)
	}
}
