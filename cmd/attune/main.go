// Command attune is the developer CLI:
//
//	attune simulate --engines http://127.0.0.1:8080 --token-file token [flags]
//	attune demo --k8s-bin DIR [--duration 80s] [--users 120] [--keep]
//
// simulate drives a synthetic population against running engines (see
// test/simulator); demo runs the whole system on a local cluster (make demo).
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
	p := simulator.DefaultParams()
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	engines := fs.String("engines", "", "Comma-separated engine base URLs (required).")
	token := fs.String("token", "", "Engine read-write token.")
	tokenFile := fs.String("token-file", "", "File holding the engine read-write token.")
	every := fs.Duration("every", 2*time.Second, "Time between ticks (one model interval each).")
	ticks := fs.Int("ticks", 0, "Stop after this many ticks (0: until interrupted).")
	oracle := fs.Bool("oracle", false, "Print the best fixed strength for these parameters and exit.")
	intervention := fs.String("intervention", "ResonanceBreathing", "Intervention reported as completed.")
	fs.IntVar(&p.Users, "users", p.Users, "Cohort size.")
	fs.Float64Var(&p.OptimumMean, "optimum-mean", p.OptimumMean, "Mean of the users' optimal strengths.")
	fs.Float64Var(&p.OptimumSD, "optimum-sd", p.OptimumSD, "Spread of the users' optimal strengths.")
	fs.Float64Var(&p.Noise, "noise", p.Noise, "Per-step state noise.")
	fs.Float64Var(&p.Churn, "churn", p.Churn, "Fraction of users replaced per tick.")
	fs.Uint64Var(&p.Seed, "seed", p.Seed, "Random seed.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *oracle {
		s, l := simulator.Oracle(p, 0.1, 0.9)
		fmt.Printf("oracle strength %.3f, loss %.5f\n", s, l)
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
	d := &simulator.Driver{Model: simulator.New(p), Engines: strings.Split(*engines, ","), Token: *token, Intervention: *intervention}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("%-8s %-9s %-10s %-6s %s\n", "tick", "strength", "true loss", "users", "samples")
	for i := 1; *ticks == 0 || i <= *ticks; i++ {
		r, err := d.Tick(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tick:", err)
		} else {
			fmt.Printf("%-8d %-9.3f %-10.5f %-6d %d\n", i, r.Strength, r.TrueLoss, r.Users, r.Samples)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*every):
		}
	}
	return nil
}
