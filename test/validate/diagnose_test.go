package validate

import (
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attune-io/attune/controllers/tuning"
	"github.com/attune-io/attune/engine/client"
	"github.com/attune-io/attune/internal/simulator"
)

// TestDiagnoseLossThroughEngines (ATTUNE_DIAGNOSE=1) prints the engine's
// cohort loss per 10 s interval at fixed strengths, one population seed
// (common random numbers), from noon, as the closed-loop test runs it
// (docs/tuning.md, "Through real engines"), and checks the shape the
// tuner relies on: over the waking day the loss at 0.9 is above that at
// 0.7, and that above the one at 0.5.
func TestDiagnoseLossThroughEngines(t *testing.T) {
	if os.Getenv("ATTUNE_DIAGNOSE") == "" {
		t.Skip("diagnostic")
	}
	scale := simulator.TimeScale{Speedup: simulator.DefaultSpeedup}
	grid := []float64{0.3, 0.5, 0.7, 0.9}
	intervals := envInt("DIAG_INTERVALS", 22)
	start := float64(envInt("DIAG_START_HOUR", 12))
	eng := make([][]float64, len(grid))
	tru := make([][]float64, len(grid))
	var wg sync.WaitGroup
	for gi, s := range grid {
		wg.Go(func() {
			e := startEngine(t, scale, s, 7)
			cfg := simulator.DefaultConfig()
			cfg.Users, cfg.Seed, cfg.StartHour = 120, 7, start
			d := &simulator.Driver{Population: simulator.New(cfg), Engines: []string{e.url}, Token: token, Scale: scale}
			c, _ := client.New(e.url, client.WithToken(token))
			ctx, cancel := context.WithCancel(context.Background())
			var mu sync.Mutex
			var trues []float64
			done := make(chan struct{})
			go func() {
				defer close(done)
				d.Run(ctx, 500*time.Millisecond, func(r simulator.TickReport, _ error) {
					mu.Lock()
					if !math.IsNaN(r.TrueLoss) {
						trues = append(trues, r.TrueLoss)
					}
					mu.Unlock()
				})
			}()
			for range intervals {
				time.Sleep(10 * time.Second)
				l := math.NaN()
				if cohort, err := c.Cohort(context.Background()); err == nil && cohort.Published && cohort.Loss != nil {
					l = *cohort.Loss
				}
				mu.Lock()
				eng[gi] = append(eng[gi], l)
				tru[gi] = append(tru[gi], mean(trues))
				trues = nil
				mu.Unlock()
			}
			cancel()
			<-done
		})
	}
	wg.Wait()
	day := make([]float64, len(grid)) // the first nine intervals: 13:20 to midnight
	for gi, s := range grid {
		fmt.Printf("S=%.1f engine %s\n", s, fmtSeries(eng[gi]))
		fmt.Printf("S=%.1f true   %s\n", s, fmtSeries(tru[gi]))
		day[gi] = mean(eng[gi][:min(9, len(eng[gi]))])
	}
	if !(day[3] > day[2] && day[2] > day[1]) {
		t.Errorf("waking-day engine loss at %.1f: %.4f, want rising from 0.5 to 0.9", grid, day)
	}
}

func fmtSeries(xs []float64) string {
	var b strings.Builder
	for _, x := range xs {
		fmt.Fprintf(&b, " %.4f", x)
	}
	return b.String()
}

// TestDiagnoseTunerThroughEngine (ATTUNE_DIAGNOSE=1): the tuner from 0.9
// through one engine from 15:50 (the level of the loss rising with the
// time of day), each decision's reason printed; each run must have left
// the bound (the last strength below 0.8).
func TestDiagnoseTunerThroughEngine(t *testing.T) {
	if os.Getenv("ATTUNE_DIAGNOSE") == "" {
		t.Skip("diagnostic")
	}
	scale := simulator.TimeScale{Speedup: simulator.DefaultSpeedup}
	runs := envInt("DIAG_TUNER_RUNS", 2)
	start := float64(envInt("DIAG_START_HOUR", 12))
	var wg sync.WaitGroup
	out := make([]string, runs)
	for run := range runs {
		wg.Go(func() {
			var b strings.Builder
			e := startEngine(t, scale, 0.9, int64(300+run))
			cfg := simulator.DefaultConfig()
			cfg.Users, cfg.Seed, cfg.StartHour = 120, uint64(7+run), start
			d := &simulator.Driver{Population: simulator.New(cfg), Engines: []string{e.url}, Token: token, Scale: scale}
			c, _ := client.New(e.url, client.WithToken(token))
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); d.Run(ctx, 500*time.Millisecond, nil) }()
			time.Sleep(20 * time.Second)
			strength := 0.9
			var history []tuning.Observation
			p := tuning.Params{Min: 0.1, Max: 0.9, MaxStep: 0.05}
			for i := range envInt("DIAG_INTERVALS", 20) {
				time.Sleep(10 * time.Second)
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
				var dec tuning.Decision
				dec, history = tuning.Step(history, strength, p, m, time.Now(), 20*time.Second)
				fmt.Fprintf(&b, "run %d #%d h=%.1f S=%.3f loss=%.4f n=%d → %.3f target %.3f: %s\n", run, i, d.Latest().Hour, strength, m.Loss, m.CohortSize, dec.Strength, dec.Target, dec.Reason)
				strength = dec.Strength
				e.setStrength(t, strength)
			}
			if strength >= 0.8 {
				t.Errorf("run %d: the tuner ended at %.3f, want it to have left the upper bound 0.9", run, strength)
			}
			cancel()
			<-done
			out[run] = b.String()
		})
	}
	wg.Wait()
	for _, s := range out {
		fmt.Print(s)
	}
}
