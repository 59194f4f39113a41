// Command attune is the developer CLI:
//
//	attune simulate --engines https://127.0.0.1:8080 --token-file token --ca-file ca.crt --server-name NAME [flags]
//	attune simulate --timing [--speedup 480]
//	attune demo --k8s-bin DIR [--duration 80s] [--users 120] [--keep]
//
// simulate lets a simulated population live through running engines in
// accelerated time and prints how well they estimated its hidden truth
// (internal/simulator; the engines' program needs the time constants that
// simulate --timing prints); demo runs the whole system on a local
// cluster (make demo).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	engineclient "github.com/attune-io/attune/engine/client"
	"github.com/attune-io/attune/internal/simulator"
)

func main() {
	commands := map[string]func([]string) error{"simulate": simulate, "demo": demo}
	if len(os.Args) < 2 || commands[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: attune simulate|demo [flags]   (attune <command> -h for flags)")
		os.Exit(2)
	}
	if err := commands[os.Args[1]](os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "attune %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func simulate(args []string) error {
	cfg := simulator.DefaultConfig()
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	engines := fs.String("engines", "", "Comma-separated engine base URLs (required).")
	token := fs.String("token", "", "Engine read-write token.")
	tokenFile := fs.String("token-file", "", "File holding the engine read-write token.")
	every := fs.Duration("every", 500*time.Millisecond, "Wall-clock time between ticks.")
	ticks := fs.Int("ticks", 0, "Stop after this many ticks (0: until interrupted); the summary follows.")
	speedup := fs.Float64("speedup", simulator.DefaultSpeedup, "Simulated seconds per wall-clock second.")
	timing := fs.Bool("timing", false, "Print the spec.dose and spec.estimation the engines' program needs at this speedup, and exit.")
	interventions := fs.String("interventions", "FocusedAttention,ResonanceBreathing,MicroBreak", "The program's interventions (for the summary's effects).")
	noPhysiology := fs.Bool("no-physiology", false, "Send no RR intervals (Workplace and Education worlds refuse them).")
	caFile := fs.String("ca-file", "", "PEM CA bundle that verifies HTTPS engines (the world's attune-ca-bundle ConfigMap, key ca.crt).")
	serverName := fs.String("server-name", "", "Name to verify the engines' certificate for when --engines are addresses it does not carry (e.g. <program>-engine.<namespace>.svc through a port-forward).")
	fs.IntVar(&cfg.Users, "users", cfg.Users, "Cohort size.")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "Random seed.")
	fs.Float64Var(&cfg.StartHour, "start-hour", cfg.StartHour, "Hour of the simulated day at the start.")
	fs.Float64Var(&cfg.ChurnPerHour, "churn", cfg.ChurnPerHour, "Share of people replaced per simulated hour.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	scale := simulator.TimeScale{Speedup: *speedup}
	if *timing {
		t := scale.EngineTiming()
		fmt.Printf("spec:\n  dose: {maxPerDay: %d, cooldown: %s, outcomeWindow: %s}\n  estimation: {stateDecay: %s, traitDecay: %s, stressRecovery: %s}\n",
			t.MaxPerDay, t.Cooldown, t.OutcomeWindow, t.StateDecay, t.TraitDecay, t.StressRecovery)
		return nil
	}
	if *engines == "" {
		return fmt.Errorf("--engines is required")
	}
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		*token = strings.TrimSpace(string(b))
	}
	d := &simulator.Driver{Population: simulator.New(cfg), Engines: strings.Split(*engines, ","), Token: *token, Scale: scale, NoPhysiology: *noPhysiology}
	if *caFile != "" {
		d.ClientOptions = append(d.ClientOptions, engineclient.WithCAFile(*caFile))
	}
	if *serverName != "" {
		d.ClientOptions = append(d.ClientOptions, engineclient.WithServerName(*serverName))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("%-6s %-6s %-9s %-10s %-11s %-6s %-8s %-9s %s\n", "tick", "hour", "strength", "true loss", "engine loss", "awake", "samples", "decisions", "interventions")
	for i := 1; *ticks == 0 || i <= *ticks; i++ {
		r, err := d.Tick(ctx)
		if err != nil && ctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "tick:", err)
		}
		fmt.Printf("%-6d %-6.1f %-9.3f %-10.5f %-11.5f %-6d %-8d %-9d %d\n", i, r.Hour, r.Strength, r.TrueLoss, r.EngineLoss, r.Awake, r.Samples, r.Decisions, r.Interventions)
		if i%20 == 0 {
			if err := d.SampleEstimates(ctx); err != nil && ctx.Err() == nil {
				fmt.Fprintln(os.Stderr, "estimates:", err)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(*every):
		}
		if ctx.Err() != nil {
			break
		}
	}
	summary, err := d.Summary(context.Background(), strings.Split(*interventions, ","))
	if err != nil {
		fmt.Fprintln(os.Stderr, "summary:", err)
	}
	fmt.Println()
	return summary.Write(os.Stdout)
}
