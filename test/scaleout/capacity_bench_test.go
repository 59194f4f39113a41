package scaleout

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/telemetry"
	"github.com/attune-io/attune/test/postgres"
	"github.com/attune-io/attune/test/scaleout/queueing"
)

// serviceTimes are one request's costs at each resource, in seconds:
// the engine's CPU, the database server's CPU, and how long the request
// holds a pooled connection (its latency less the engine's CPU: the
// round trips, the database's work and its commit's WAL flush).
type serviceTimes struct {
	engineCPU, dbCPU, hold float64
	cv                     float64   // of the latencies: the services' shape
	latencies              []float64 // the sample (none for the doc's)
}

// docServiceTimes are the service times docs/scale-out.md ("Capacity")
// states and sizes with; keep them in step with the doc.
var docServiceTimes = struct{ ingest, read serviceTimes }{
	ingest: serviceTimes{engineCPU: 7.0e-3, dbCPU: 4.1e-3, hold: 25e-3, cv: 1.1},
	read:   serviceTimes{engineCPU: 0.60e-3, dbCPU: 0.27e-3, hold: 1.1e-3, cv: 1.8},
}

// capacityPlan is one row of the doc's sizing table: a program's load
// and the resources the doc gives it, with the utilisation and waits it
// predicts (Erlang C with the doc's service times).
type capacityPlan struct {
	name string
	// load: R samples/s in batches of batchSize, and state reads/s.
	samplesPerSec, batchSize, readsPerSec float64
	// resources: engines × cores each, connections per engine, database cores.
	engines, coresPerEngine, connsPerEngine, dbCores int
	// the doc's predicted utilisation of engine cores, connections and
	// database cores, and the mean wait for each (ms).
	docRho, docWait [3]float64
}

// docPlans are the rows of the doc's sizing table; keep them in step.
var docPlans = []capacityPlan{
	{name: "10k users, 1 sample/s each", samplesPerSec: 10_000, batchSize: 100, readsPerSec: 100,
		engines: 2, coresPerEngine: 1, connsPerEngine: 16, dbCores: 2,
		docRho: [3]float64{0.38, 0.08, 0.22}, docWait: [3]float64{4.43, 0, 0.22}},
	{name: "100k users, 1 sample/s each", samplesPerSec: 100_000, batchSize: 100, readsPerSec: 1_000,
		engines: 6, coresPerEngine: 2, connsPerEngine: 16, dbCores: 8,
		docRho: [3]float64{0.63, 0.27, 0.55}, docWait: [3]float64{4.84, 0, 0.11}},
	{name: "1M users, 1 sample/s each", samplesPerSec: 1_000_000, batchSize: 100, readsPerSec: 10_000,
		engines: 28, coresPerEngine: 4, connsPerEngine: 16, dbCores: 64,
		docRho: [3]float64{0.68, 0.58, 0.68}, docWait: [3]float64{2.23, 0.13, 0.00}},
}

// BenchmarkCapacity measures, on one engine on PostgreSQL with one client
// (no queueing), what an ingest request (100 samples, 20 users) and a
// state read cost the engine's CPU, the database's CPU and a pooled
// connection; then, for each row of the capacity table of
// docs/scale-out.md, it prints the doc's predicted utilisation next to
// Erlang C with this run's service times and a discrete-event simulation
// of the same queues fed by them. Run with `make bench-capacity`.
func BenchmarkCapacity(b *testing.B) {
	const users, ingests, reads = 400, 600, 2000
	server := postgres.Start(b)
	secretDir := b.TempDir()
	if err := os.WriteFile(filepath.Join(secretDir, "connectionString"), []byte(postgres.Database(b, server, "capacity")), 0o600); err != nil {
		b.Fatal(err)
	}
	r, err := Start(engineBinary, b.TempDir(), 1, Config(secretDir, 11))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Stop()
	for u := range users {
		if err := r.Consent(0, fmt.Sprintf("bench-%05d", u)); err != nil {
			b.Fatal(err)
		}
	}
	enginePID, err := pidWhoseCmdlineHas(r.Engines[0].Dir)
	if err != nil {
		b.Fatal(err)
	}
	postmaster, err := pidWhoseCmdlineHas(filepath.Join(server.Dir, "data"))
	if err != nil {
		b.Fatal(err)
	}
	bodies := make([][]telemetry.Sample, ingests)
	for i := range bodies {
		bodies[i] = batchFor(i, users)
	}
	for i := range 50 { // warm up: connections, plans, users' rows
		if status, msg, err := r.Ingest(0, bodies[i]); err != nil || status != http.StatusOK {
			b.Fatalf("warm-up batch: %d %s %v", status, msg, err)
		}
	}
	ingest := measureService(b, enginePID, postmaster, ingests, func(i int) error {
		status, msg, err := r.Ingest(0, bodies[i])
		if err == nil && status != http.StatusOK {
			err = fmt.Errorf("status %d: %s", status, msg)
		}
		return err
	})
	read := measureService(b, enginePID, postmaster, reads, func(i int) error {
		_, status, err := r.UserState(0, fmt.Sprintf("bench-%05d", (i*7919)%users))
		if err == nil && status != http.StatusOK {
			err = fmt.Errorf("status %d", status)
		}
		return err
	})
	r.Stop()
	ms := func(s float64) string { return strconv.FormatFloat(s*1000, 'f', 3, 64) }
	// Printed, not logged: a benchmark's log keeps only its first lines.
	fmt.Printf("service times (ms)      engine CPU  db CPU  connection hold  latency CV   (the doc's: engine, db, hold, CV)\n")
	for _, row := range []struct {
		name      string
		got, docs serviceTimes
	}{{"ingest of 100 samples", ingest, docServiceTimes.ingest}, {"state read", read, docServiceTimes.read}} {
		fmt.Printf("  %-21s %10s %7s %16s %11.2f   (%s, %s, %s, %.1f)\n", row.name, ms(row.got.engineCPU), ms(row.got.dbCPU), ms(row.got.hold),
			row.got.cv, ms(row.docs.engineCPU), ms(row.docs.dbCPU), ms(row.docs.hold), row.docs.cv)
	}
	b.ReportMetric(ingest.engineCPU*1e6/100, "engine-cpu-µs/sample")
	b.ReportMetric(ingest.dbCPU*1e6/100, "db-cpu-µs/sample")
	b.ReportMetric(read.engineCPU*1e6, "engine-cpu-µs/read")

	for _, plan := range docPlans {
		fmt.Printf("\n%s: %.0f samples/s in batches of %.0f, %.0f reads/s; %d engines × %d cores, %d connections each, %d database cores\n",
			plan.name, plan.samplesPerSec, plan.batchSize, plan.readsPerSec, plan.engines, plan.coresPerEngine, plan.connsPerEngine, plan.dbCores)
		fmt.Printf("  %-15s %6s %7s %6s   %9s %10s %9s %12s\n", "(per engine for", "ρ doc", "ρ run", "ρ sim", "wait doc", "wait run", "wait sim", "p99 in sim")
		fmt.Printf("  %-15s %6s %7s %6s   %9s %10s %9s %12s\n", " the first two)", "", "", "", "(ms)", "(ms)", "(ms)", "(ms)")
		lambdaIngest := plan.samplesPerSec / plan.batchSize
		lambda := lambdaIngest + plan.readsPerSec
		share := lambdaIngest / lambda
		// The Service spreads requests over the engines at random, which
		// splits a Poisson stream into Poisson streams: each engine is a
		// queue of its own (its cores, its connection pool) at λ/engines;
		// the database's cores serve them all.
		perEngine := lambda / float64(plan.engines)
		stations := []struct {
			name    string
			servers int
			lambda  float64
			pick    func(serviceTimes) float64
		}{
			{"engine cores", plan.coresPerEngine, perEngine, func(s serviceTimes) float64 { return s.engineCPU }},
			{"connections", plan.connsPerEngine, perEngine, func(s serviceTimes) float64 { return s.hold }},
			{"database cores", plan.dbCores, lambda, func(s serviceTimes) float64 { return s.dbCPU }},
		}
		for k, st := range stations {
			service, mean, cv := mixture(share, ingest, read, st.pick)
			run := queueing.Predict(st.servers, st.lambda, mean, cv)
			got := queueing.Simulate(st.lambda, []queueing.Station{{Name: st.name, Servers: st.servers, Service: service}}, 300_000, uint64(k+1))[0]
			fmt.Printf("  %-15s %6.2f %7.2f %6.2f   %9.2f %10s %9s %12s\n", st.name, plan.docRho[k], run.Utilisation, got.Utilisation,
				plan.docWait[k], ms(run.MeanWait), ms(got.MeanWait), ms(got.P99Time))
		}
	}
}

// mixture is the service at one station of a stream of ingests (a share
// of the requests) and reads: a draw of either class's measured sample,
// scaled to that class's mean there, with the mixture's mean and
// coefficient of variation for the closed form.
func mixture(share float64, ingest, read serviceTimes, pick func(serviceTimes) float64) (func(*rand.Rand) float64, float64, float64) {
	si, sr := queueing.Empirical(ingest.latencies, pick(ingest)), queueing.Empirical(read.latencies, pick(read))
	service := func(r *rand.Rand) float64 {
		if r.Float64() < share {
			return si(r)
		}
		return sr(r)
	}
	// Moments of the mixture from each class's mean and CV (the sample's).
	mi, mr := pick(ingest), pick(read)
	ci, cr := ingest.cv, read.cv
	m1 := share*mi + (1-share)*mr
	m2 := share*mi*mi*(1+ci*ci) + (1-share)*mr*mr*(1+cr*cr)
	cv2 := m2/(m1*m1) - 1
	return service, m1, math.Sqrt(max(cv2, 0))
}

// measureService runs op n times in a row and divides what they cost:
// the engine process's CPU and the database server's (the postmaster and
// its backends) from /proc, and each call's latency.
func measureService(b *testing.B, enginePID, postmaster, n int, op func(i int) error) serviceTimes {
	engine0, db0 := cpuOf(enginePID), cpuOfTree(postmaster)
	latencies := make([]float64, n)
	for i := range n {
		t0 := time.Now()
		if err := op(i); err != nil {
			b.Fatalf("request %d: %v", i, err)
		}
		latencies[i] = time.Since(t0).Seconds()
	}
	engine1, db1 := cpuOf(enginePID), cpuOfTree(postmaster)
	st := serviceTimes{latencies: latencies, cv: queueing.CV(latencies)}
	st.engineCPU = (engine1 - engine0) / float64(n)
	var dbCPU float64
	for pid, t := range db1 {
		dbCPU += t - db0[pid] // a backend started meanwhile counts whole
	}
	st.dbCPU = dbCPU / float64(n)
	st.hold = max(queueing.Mean(latencies)-st.engineCPU, 0)
	return st
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// cpuOf is a process's user + system CPU seconds so far (0 once gone).
func cpuOf(pid int) float64 {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces), in parentheses.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / clockTicks
}

// cpuOfTree is the CPU seconds of pid and of each of its children, by pid.
func cpuOfTree(pid int) map[int]float64 {
	out := map[int]float64{pid: cpuOf(pid)}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if ppid, _ := strconv.Atoi(fields[1]); ppid == pid {
			out[child] = cpuOf(child)
		}
	}
	return out
}

// pidWhoseCmdlineHas finds the one process of this user whose command
// line contains s (a directory only it was started with).
func pidWhoseCmdlineHas(s string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("list processes: %w", err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(s)) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no process started with %s", s)
}
