// Package queueing is the queueing arithmetic behind the capacity section
// of docs/scale-out.md: the closed forms the doc sizes with (Erlang C, and
// the Allen–Cunneen correction for service times that are not
// exponential) and a discrete-event simulation of the same queues, so
// that `make bench-capacity` can check one against the other with the
// service times measured in the same run.
package queueing

import (
	"container/heap"
	"math"
	"math/rand/v2"
	"slices"
)

// ErlangC is the probability that a request waits in an M/M/c queue with
// c servers and offered load a = λ/μ (in Erlangs), computed through the
// Erlang B recurrence B(k) = a·B(k−1) / (k + a·B(k−1)), which stays
// finite where a^c/c! would overflow. It is 1 when a ≥ c (no steady
// state: the queue grows without bound).
func ErlangC(c int, a float64) float64 {
	if a >= float64(c) {
		return 1
	}
	b := 1.0
	for k := 1; k <= c; k++ {
		b = a * b / (float64(k) + a*b)
	}
	rho := a / float64(c)
	return b / (1 - rho*(1-b))
}

// Predicted is what the closed forms say of one station.
type Predicted struct {
	Utilisation float64 // ρ = λ·E[S] / c
	PWait       float64 // Erlang C
	MeanWait    float64 // seconds in the queue, before service
	MeanTime    float64 // seconds in the station: wait + E[S]
}

// Predict is the M/G/c estimate of a station with c servers, arrivals at
// rate lambda (per second) and service times of mean meanService
// (seconds) and coefficient of variation cv: Erlang C's mean wait scaled
// by (1 + cv²)/2 (Allen–Cunneen; exact for M/M/c, where cv = 1, and for
// M/G/1, where it is the Pollaczek–Khinchine formula). Infinite waits
// mean the station is overloaded.
func Predict(c int, lambda, meanService, cv float64) Predicted {
	a := lambda * meanService
	p := Predicted{Utilisation: a / float64(c), PWait: ErlangC(c, a)}
	if a >= float64(c) {
		p.MeanWait, p.MeanTime = math.Inf(1), math.Inf(1)
		return p
	}
	mmc := p.PWait * meanService / (float64(c) - a) // C / (cμ − λ)
	p.MeanWait = mmc * (1 + cv*cv) / 2
	p.MeanTime = p.MeanWait + meanService
	return p
}

// Station is one resource of the request path: Servers identical servers
// (engine cores, pooled database connections, database cores) taken
// first come, first served, and the service time each request needs
// there.
type Station struct {
	Name    string
	Servers int
	Service func(*rand.Rand) float64
}

// Simulated is what the simulation measured of one station, or (Name
// "end to end") of the whole path.
type Simulated struct {
	Name        string
	Utilisation float64
	PWait       float64
	MeanWait    float64
	MeanTime    float64
	P99Time     float64
}

// Simulate runs n requests arriving as a Poisson process of rate lambda
// through the stations in turn (a tandem of FCFS multi-server queues).
// Each station hands a request to the server that frees first; a request
// reaches the next station when it leaves this one, so the stations see
// the departures of the one before, not the original arrivals. The first
// tenth of the requests warms the queues up and is not counted. The
// result has one entry per station, then the end-to-end one.
func Simulate(lambda float64, stations []Station, n int, seed uint64) []Simulated {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	arrive := make([]float64, n)
	t := 0.0
	for i := range arrive {
		t += rng.ExpFloat64() / lambda
		arrive[i] = t
	}
	first := slices.Clone(arrive)
	warm := n / 10
	out := make([]Simulated, 0, len(stations)+1)
	order := make([]int, n) // requests in the order they reach the station
	for i := range order {
		order[i] = i
	}
	for _, st := range stations {
		free := make(serverHeap, st.Servers) // when each server is next free
		heap.Init(&free)
		done := make([]float64, n)
		var busy, waitSum, timeSum float64
		waited := 0
		times := make([]float64, 0, n-warm)
		for _, i := range order {
			start := max(arrive[i], free[0])
			s := st.Service(rng)
			done[i] = start + s
			free[0] = done[i]
			heap.Fix(&free, 0)
			if i < warm {
				continue
			}
			busy += s
			waitSum += start - arrive[i]
			timeSum += done[i] - arrive[i]
			times = append(times, done[i]-arrive[i])
			if start > arrive[i] {
				waited++
			}
		}
		counted := float64(n - warm)
		span := first[n-1] - first[warm] // every station serves λ in the long run
		slices.Sort(times)
		out = append(out, Simulated{Name: st.Name, Utilisation: busy / (span * float64(st.Servers)),
			PWait: float64(waited) / counted, MeanWait: waitSum / counted, MeanTime: timeSum / counted,
			P99Time: times[len(times)*99/100]})
		arrive = done
		slices.SortStableFunc(order, func(a, b int) int { return cmpFloat(done[a], done[b]) })
	}
	var sum float64
	total := make([]float64, 0, n-warm)
	for i := warm; i < n; i++ {
		sum += arrive[i] - first[i]
		total = append(total, arrive[i]-first[i])
	}
	slices.Sort(total)
	out = append(out, Simulated{Name: "end to end", MeanTime: sum / float64(n-warm), P99Time: total[len(total)*99/100]})
	return out
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// serverHeap is a min-heap of the times the servers of a station free.
type serverHeap []float64

func (h serverHeap) Len() int           { return len(h) }
func (h serverHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h serverHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *serverHeap) Push(x any)        { *h = append(*h, x.(float64)) }
func (h *serverHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Exponential service of the given mean (M/M/c).
func Exponential(mean float64) func(*rand.Rand) float64 {
	return func(r *rand.Rand) float64 { return r.ExpFloat64() * mean }
}

// Constant service (M/D/c).
func Constant(s float64) func(*rand.Rand) float64 {
	return func(*rand.Rand) float64 { return s }
}

// Empirical service: a measured sample, drawn with replacement and
// scaled to mean; it keeps the measured shape (its coefficient of
// variation), which is what a station's waits depend on beyond the mean.
func Empirical(sample []float64, mean float64) func(*rand.Rand) float64 {
	m := Mean(sample)
	return func(r *rand.Rand) float64 { return sample[r.IntN(len(sample))] * mean / m }
}

// Mean is the mean of xs.
func Mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// CV is the coefficient of variation (standard deviation / mean) of xs.
func CV(xs []float64) float64 {
	m := Mean(xs)
	var v float64
	for _, x := range xs {
		v += (x - m) * (x - m)
	}
	return math.Sqrt(v/float64(len(xs))) / m
}
