package effects

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchObservations is 1M decisions spread over 10,000 users, built once
// so that neither benchmark times the generation.
func benchObservations() []Observation {
	const decisions, users = 1_000_000, 10_000
	rng := rand.New(rand.NewPCG(7, 7))
	names := make([]string, users)
	for i := range names {
		names[i] = fmt.Sprintf("user-%05d", i)
	}
	obs := make([]Observation, decisions)
	for i := range obs {
		p := 0.1 + 0.7*rng.Float64()
		treated := rng.Float64() < p
		y := rng.NormFloat64()
		if treated {
			y -= 0.2
		}
		obs[i] = Observation{User: names[rng.IntN(users)], Available: rng.Float64() < 0.8, Treated: treated, P: p, Outcome: y}
	}
	return obs
}

// BenchmarkEstimate1M streams 1M observations into a fresh estimator and
// estimates; compare its ns/op with BenchmarkSum1M's.
func BenchmarkEstimate1M(b *testing.B) {
	obs := benchObservations()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		est := NewEstimator("x", DefaultRefP)
		for _, o := range obs {
			est.Add(o)
		}
		if _, ok := est.Estimate(); !ok {
			b.Fatal("no estimate")
		}
	}
}

// BenchmarkSum1M is the floor: one pass summing the same outcomes.
func BenchmarkSum1M(b *testing.B) {
	obs := benchObservations()
	b.ReportAllocs()
	b.ResetTimer()
	var sink float64
	for b.Loop() {
		var s float64
		for _, o := range obs {
			s += o.Outcome
		}
		sink += s
	}
	_ = sink
}
