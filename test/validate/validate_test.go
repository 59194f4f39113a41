// Package validate runs the simulated population (internal/simulator)
// through real engines — engine/service and engine/api on loopback HTTP,
// each on its own bbolt store — in accelerated time, and reports how well
// they do against the population's hidden truth (make validate): the
// state estimates' correlation with the hidden state, the published
// effects against the true mean effects, and the tuner's convergence
// through the engines.
package validate

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"gonum.org/v1/gonum/mat"

	"github.com/attune-io/attune/controllers/tuning"
	"github.com/attune-io/attune/engine/api"
	"github.com/attune-io/attune/engine/client"
	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/metrics"
	"github.com/attune-io/attune/engine/service"
	"github.com/attune-io/attune/engine/store"
	"github.com/attune-io/attune/internal/simulator"
)

const token = "validate-read-write-token"

// interventions are the program's: one for attention, one for emotion,
// and one that does almost nothing.
var interventions = []string{"FocusedAttention", "ResonanceBreathing", "MicroBreak"}

// engine is one in-process engine on loopback.
type engine struct {
	url string
	svc *service.Service
	cfg *config.Config
}

func startEngine(t *testing.T, scale simulator.TimeScale, strength float64, seed int64) *engine {
	t.Helper()
	db, err := store.OpenBolt(t.TempDir(), store.WithoutSync())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	pop := simulator.DefaultConfig()
	cfg := &config.Config{
		Program:       "validate/evening-calm",
		Target:        config.Vector{Attention: pop.Target[0], Emotion: pop.Target[1], Resilience: pop.Target[2]},
		Weights:       config.Vector{Attention: pop.Weights[0], Emotion: pop.Weights[1], Resilience: pop.Weights[2]},
		Interventions: interventions,
		Strength:      config.Strength{Value: strength, Min: 0.1, Max: 0.9},
		Context:       "Social",
		Privacy:       config.Privacy{Retention: config.Duration{Duration: 24 * time.Hour}, MinCohortSize: 11},
		// File paths the in-process engine never opens; Parse requires them.
		TokenFile: "-", ReadOnlyTokenFile: "-", PseudonymizationKeyFile: "-", DataDir: "-", ListenAddress: "-",
		Seed: seed,
	}
	scale.EngineTiming().ApplyTo(cfg)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := metrics.New(cfg.Program)
	svc, err := service.New(cfg, service.Options{Store: db, Key: []byte("0123456789abcdef0123456789abcdef"), Metrics: m, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.New(svc, m, api.Tokens{ReadWrite: token}, logger))
	t.Cleanup(srv.Close)
	return &engine{url: srv.URL, svc: svc, cfg: cfg}
}

// setStrength renders the strength into the engine's configuration file
// format and loads it back, as an engine reloads its ConfigMap.
func (e *engine) setStrength(t *testing.T, s float64) {
	next := *e.cfg
	next.Strength.Value = s
	data, err := next.Render()
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := config.Parse(data)
	if err != nil {
		t.Fatalf("rendered configuration does not parse: %v", err)
	}
	e.cfg = parsed
	e.svc.SetConfig(parsed)
}

// knobs are the run's sizes, each overridable from the environment.
type knobs struct {
	users               int
	speedup             float64
	tick, fixedRun      time.Duration
	warmUp              time.Duration
	grid                []float64
	replicates          int
	tunerUsers          int
	tunerWarmUp         time.Duration
	tunerInterval       time.Duration
	tunerIntervals      int
	tunerStart          []float64
	estimateSampleEvery time.Duration
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func defaultKnobs() knobs {
	return knobs{
		users: envInt("VALIDATE_USERS", 80), speedup: simulator.DefaultSpeedup,
		tick: 500 * time.Millisecond, fixedRun: time.Duration(envInt("VALIDATE_FIXED_SECONDS", 90)) * time.Second,
		warmUp: 30 * time.Second, grid: []float64{0.1, 0.3, 0.5, 0.7, 0.9}, replicates: envInt("VALIDATE_REPLICATES", 3),
		tunerUsers: envInt("VALIDATE_TUNER_USERS", 120), tunerWarmUp: 20 * time.Second, tunerInterval: 10 * time.Second,
		tunerIntervals: envInt("VALIDATE_TUNER_INTERVALS", 10), tunerStart: []float64{0.85, 0.7, 0.15},
		estimateSampleEvery: 5 * time.Second,
	}
}

// fixedResult is one run at a fixed strength.
type fixedResult struct {
	strength  float64
	replicate int
	meanLoss  float64 // true cohort loss after the warm-up
	engLoss   float64 // the engine's published cohort loss over the same ticks
	reference float64 // the population's per-session dose optimum
	summary   simulator.Summary
	pairs     []simulator.EstimatePair
	err       error
}

// runFixed lets a population live through one engine at a fixed strength.
func runFixed(t *testing.T, k knobs, strength float64, replicate int) fixedResult {
	scale := simulator.TimeScale{Speedup: k.speedup}
	e := startEngine(t, scale, strength, int64(100+replicate))
	cfg := simulator.DefaultConfig()
	cfg.Users, cfg.Seed = k.users, uint64(1000+replicate) // common random numbers across the grid
	d := &simulator.Driver{Population: simulator.New(cfg), Engines: []string{e.url}, Token: token, Scale: scale}
	ctx, cancel := context.WithTimeout(context.Background(), k.fixedRun)
	defer cancel()
	start := time.Now()
	var losses, engineLosses []float64
	lastSample := start
	res := fixedResult{strength: strength, replicate: replicate}
	d.Run(ctx, k.tick, func(r simulator.TickReport, err error) {
		if err != nil {
			t.Logf("strength %.1f, replicate %d: %v", strength, replicate, err)
		}
		since := time.Since(start)
		if since < k.warmUp {
			return
		}
		if !math.IsNaN(r.TrueLoss) {
			losses = append(losses, r.TrueLoss)
		}
		if !math.IsNaN(r.EngineLoss) {
			engineLosses = append(engineLosses, r.EngineLoss)
		}
		if time.Since(lastSample) >= k.estimateSampleEvery {
			lastSample = time.Now()
			if err := d.SampleEstimates(ctx); err != nil && ctx.Err() == nil {
				t.Logf("estimates: %v", err)
			}
		}
	})
	res.meanLoss, res.engLoss = mean(losses), mean(engineLosses)
	res.reference = d.Population.ReferenceStrength(interventions, 0.1, 0.9)
	res.summary, res.err = d.Summary(context.Background(), interventions)
	for i := range res.summary.Effects {
		res.summary.Effects[i].Run = fmt.Sprintf("S=%.1f #%d", strength, replicate+1)
	}
	res.pairs = d.EstimatePairs()
	return res
}

func mean(xs []float64) float64 {
	var sum float64
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

// tunerResult is one tuning run through an engine.
type tunerResult struct {
	strengths, trueLosses, measured []float64
}

// runTuner lets a population live through one engine whose strength the
// tuner sets each interval from the engine's own cohort loss.
func runTuner(t *testing.T, k knobs, start float64, run int) tunerResult {
	scale := simulator.TimeScale{Speedup: k.speedup}
	e := startEngine(t, scale, start, int64(200+run))
	cfg := simulator.DefaultConfig()
	cfg.Users, cfg.Seed = k.tunerUsers, uint64(2000+run)
	// A waking day: the warm-up ends at 10:10, the last interval at 23:30.
	cfg.StartHour = 7.5
	d := &simulator.Driver{Population: simulator.New(cfg), Engines: []string{e.url}, Token: token, Scale: scale}
	c, err := client.New(e.url, client.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var intervalLosses []float64
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Run(ctx, k.tick, func(r simulator.TickReport, err error) {
			mu.Lock()
			defer mu.Unlock()
			if !math.IsNaN(r.TrueLoss) {
				intervalLosses = append(intervalLosses, r.TrueLoss)
			}
		})
	}()
	defer func() { cancel(); <-done }()
	meanOf := func() float64 {
		mu.Lock()
		defer mu.Unlock()
		out := mean(intervalLosses)
		intervalLosses = nil
		return out
	}
	// The cohort lives at the initial strength first, so that the tuner
	// starts from a cohort that has felt it, as a program does whose
	// tuning is switched on after a while in Manual.
	time.Sleep(k.tunerWarmUp)
	meanOf()
	res := tunerResult{strengths: []float64{start}}
	strength := start
	var history []tuning.Observation
	p := tuning.Params{Min: 0.1, Max: 0.9, MaxStep: 0.05}
	for range k.tunerIntervals {
		time.Sleep(k.tunerInterval)
		res.trueLosses = append(res.trueLosses, meanOf())
		m := tuning.Measurement{At: time.Now()}
		cohort, err := c.Cohort(context.Background())
		switch {
		case err != nil:
			m.Err = err
		case !cohort.Published || cohort.Loss == nil:
			m.Err = fmt.Errorf("cohort not published")
		default:
			m.Loss, m.CohortSize, m.At = *cohort.Loss, *cohort.Size, cohort.ObservedAt
		}
		res.measured = append(res.measured, m.Loss)
		var dec tuning.Decision
		dec, history = tuning.Step(history, strength, p, m, time.Now(), 2*k.tunerInterval)
		strength = dec.Strength
		e.setStrength(t, strength)
		res.strengths = append(res.strengths, strength)
	}
	return res
}

// lossMinimum fits a parabola to the grid's mean true losses and returns
// the strength of its minimum in [lo, hi] (the grid's best point when the
// fit opens downward).
func lossMinimum(strengths, losses []float64, lo, hi float64) float64 {
	a := mat.NewDense(len(strengths), 3, nil)
	for i, s := range strengths {
		a.SetRow(i, []float64{1, s, s * s})
	}
	var coef mat.VecDense
	if err := coef.SolveVec(a, mat.NewVecDense(len(losses), slices.Clone(losses))); err == nil && coef.AtVec(2) > 0 {
		return math.Min(hi, math.Max(lo, -coef.AtVec(1)/(2*coef.AtVec(2))))
	}
	return strengths[slices.Index(losses, slices.Min(losses))]
}

// TestValidate is make validate. It runs for several minutes, so plain
// go test skips it.
func TestValidate(t *testing.T) {
	if os.Getenv("ATTUNE_VALIDATE") == "" {
		t.Skip("make validate runs this (ATTUNE_VALIDATE=1): several minutes of simulated cohorts")
	}
	k := defaultKnobs()
	t.Logf("%d people a run, %.0f× accelerated time (engine: %+v)", k.users, k.speedup, simulator.TimeScale{Speedup: k.speedup}.EngineTiming())

	// Fixed strengths on a grid, each replicate its own population seed
	// (the same across the grid: common random numbers), all at once.
	var fixed []fixedResult
	var mu sync.Mutex
	var wg sync.WaitGroup
	for rep := range k.replicates {
		for _, s := range k.grid {
			wg.Go(func() {
				r := runFixed(t, k, s, rep)
				mu.Lock()
				fixed = append(fixed, r)
				mu.Unlock()
			})
		}
	}
	// The tuner's runs go on beside them.
	tuned := make([]tunerResult, len(k.tunerStart))
	for i, start := range k.tunerStart {
		wg.Go(func() { tuned[i] = runTuner(t, k, start, i) })
	}
	wg.Wait()

	var all simulator.Summary
	var pairs []simulator.EstimatePair
	lossAt, engineAt := map[float64][]float64{}, map[float64][]float64{}
	var references []float64
	for _, r := range fixed {
		if r.err != nil {
			t.Errorf("strength %.1f replicate %d: summary: %v", r.strength, r.replicate, r.err)
		}
		pairs = append(pairs, r.pairs...)
		all.Effects = append(all.Effects, r.summary.Effects...)
		lossAt[r.strength] = append(lossAt[r.strength], r.meanLoss)
		engineAt[r.strength] = append(engineAt[r.strength], r.engLoss)
		references = append(references, r.reference)
	}
	all.Estimates = simulator.Agreements(pairs)
	var gridLoss []float64
	fmt.Println("\nCohort loss at fixed strengths, mean over the run after the warm-up: true (per replicate) and as the engine measures it")
	for _, s := range k.grid {
		gridLoss = append(gridLoss, mean(lossAt[s]))
		fmt.Printf("  strength %.1f: true %.5f %.5f, engine %.5f\n", s, gridLoss[len(gridLoss)-1], lossAt[s], mean(engineAt[s]))
	}
	oracle := lossMinimum(k.grid, gridLoss, 0.1, 0.9)
	fmt.Printf("best fixed strength (parabola through the grid): %.3f; the population's per-session dose optimum: %.3f\n", oracle, mean(references))
	all.Reference = fmt.Sprintf("best fixed strength %.3f, measured on the grid", oracle)
	for i, r := range tuned {
		all.Tuning = append(all.Tuning, simulator.ConvergenceOf(fmt.Sprintf("tuner from %.2f", k.tunerStart[i]), r.strengths, r.trueLosses, oracle))
		fmt.Printf("tuner run %d: strengths %.3f\n  engine loss %.4f\n  true loss   %.4f\n", i, r.strengths, r.measured, r.trueLosses)
	}
	fmt.Println()
	if err := all.Write(os.Stdout); err != nil {
		t.Fatal(err)
	}
	for _, a := range all.Estimates {
		if !(a.Correlation >= simulator.GoalCorrelation) {
			t.Logf("goal missed: %s correlation %.3f < %.2f", a.Dimension, a.Correlation, simulator.GoalCorrelation)
		}
	}
}
