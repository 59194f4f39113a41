// Package bench measures the operator on a real API server (envtest).
//
//	make bench-operator            # 500 programs
//	make bench-operator SIZE=5000  # 5,000
//
// It creates SIZE MeditationPrograms across 5 worlds and measures the time
// until all are Reconciled (children applied, status written for the current
// generation). As the limit it measures, in the same run and on the same API
// server, a plain client creating the same child objects with the same
// parallelism, and the floor: the operator's own writes, recorded in a run
// of their own, replayed byte for byte by a plain HTTP client
// (replay_test.go). Then it counts the operator's writes during 30 s of idle,
// and measures the heap and RSS of this process, which runs the operator's
// manager in-process. Each run writes its figures to
// ATTUNE_BENCH_OUT/operator-SIZE.json; when a run of another size is there,
// it prints the cost per program of the two against each other.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	goruntime "runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
)

const (
	worlds      = 5
	parallelism = 8
	idleWindow  = 30 * time.Second
	engineImage = "example.test/engine:v1"
)

// writeCounter counts mutating HTTP requests that pass through it.
type writeCounter struct {
	next   http.RoundTripper
	writes atomic.Int64
	// byKind counts writes by method and the resource in the path
	// ("PATCH deployments", "PUT meditationprograms/status").
	byKind sync.Map
	// readsByKind counts the other requests the same way ("GET secrets",
	// "LIST deployments", "WATCH configmaps"): what the API server serves
	// beyond the writes.
	readsByKind sync.Map
}

func (c *writeCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	switch req.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		c.writes.Add(1)
		n, _ := c.byKind.LoadOrStore(req.Method+" "+resourceOf(req.URL.Path), new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
	case http.MethodGet:
		verb := "GET"
		if q := req.URL.Query(); q.Get("watch") == "true" || q.Get("watch") == "1" {
			verb = "WATCH"
		} else if isCollection(req.URL.Path) {
			verb = "LIST"
		}
		n, _ := c.readsByKind.LoadOrStore(verb+" "+resourceOf(req.URL.Path), new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
	}
	return c.next.RoundTrip(req)
}

// resourceOf is the resource (and subresource) of an API path:
// /apis/g/v/namespaces/ns/deployments/name/status -> deployments/status.
func resourceOf(path string) string {
	parts := resourcePath(path)
	if len(parts) == 0 {
		return path
	}
	if len(parts) == 3 {
		return parts[0] + "/" + parts[2]
	}
	return parts[0]
}

// isCollection reports whether an API path names a collection
// (/api/v1/namespaces/ns/secrets, /apis/g/v/deployments) rather than one
// object or a subresource.
func isCollection(path string) bool { return len(resourcePath(path)) == 1 }

// resourcePath is an API path from its resource on: resource[/name[/sub]].
func resourcePath(path string) []string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	// /api/v1/... or /apis/group/version/...
	skip := 2
	if len(parts) > 0 && parts[0] == "apis" {
		skip = 3
	}
	parts = parts[min(skip, len(parts)):]
	if len(parts) > 2 && parts[0] == "namespaces" {
		parts = parts[2:]
	}
	return parts
}

// snapshot is the writes counted so far by kind.
func (c *writeCounter) snapshot() map[string]int64 { return counts(&c.byKind) }

// readSnapshot is the reads counted so far by kind.
func (c *writeCounter) readSnapshot() map[string]int64 { return counts(&c.readsByKind) }

func counts(m *sync.Map) map[string]int64 {
	out := map[string]int64{}
	m.Range(func(k, v any) bool { out[k.(string)] = v.(*atomic.Int64).Load(); return true })
	return out
}

// formatWrites lists the requests counted between two snapshots, most
// first.
func formatWrites(before, after map[string]int64) string {
	type kind struct {
		name string
		n    int64
	}
	var kinds []kind
	for k, n := range after {
		if d := n - before[k]; d > 0 {
			kinds = append(kinds, kind{k, d})
		}
	}
	slices.SortFunc(kinds, func(a, b kind) int { return int(b.n - a.n) })
	var parts []string
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s %d", k.name, k.n))
	}
	return strings.Join(parts, ", ")
}

func BenchmarkOperatorReconcile(b *testing.B) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		b.Skip("KUBEBUILDER_ASSETS not set: run `make bench-operator`")
	}
	// The operator's logs would only slow the measurement down.
	ctrl.SetLogger(logr.Discard())
	setSizeFromEnv(b)
	for range b.N {
		runOperatorBenchmark(b)
	}
}

// setSizeFromEnv sets programsPerWorld from ATTUNE_BENCH_PROGRAMS (SIZE).
func setSizeFromEnv(b *testing.B) {
	if size := os.Getenv("ATTUNE_BENCH_PROGRAMS"); size != "" {
		n, err := strconv.Atoi(size)
		if err != nil || n <= 0 || n%worlds != 0 {
			b.Fatalf("ATTUNE_BENCH_PROGRAMS=%q: want a positive multiple of %d", size, worlds)
		}
		programsPerWorld = n / worlds
	}
}

// programsPerWorld is SIZE/worlds (ATTUNE_BENCH_PROGRAMS), 100 by default.
var programsPerWorld = 100

// controlPlane is one envtest API server with etcd and a client for it.
type controlPlane struct {
	env    *envtest.Environment
	cfg    *rest.Config
	client client.WithWatch
	scheme *runtime.Scheme
}

// startControlPlane starts a fresh API server. Each contender gets its own:
// objects left by an earlier one would make a later one pay for them (the
// Service IP allocator, for one, scans every allocated address per Service,
// and a bigger watch cache means more garbage collection).
func startControlPlane(b testing.TB) *controlPlane {
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = wellbeingv1alpha1.AddToScheme(scheme)
	env := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd", "bases")}, ErrorIfCRDPathMissing: true}
	// 500 Services and more need more cluster IPs than envtest's default /24.
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.96.0.0/16")
	cfg, err := env.Start()
	if err != nil {
		b.Fatal(err)
	}
	// The same client-side limits for every contender: none to speak of.
	cfg.QPS, cfg.Burst = 5000, 10000
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		_ = env.Stop()
		b.Fatal(err)
	}
	return &controlPlane{env: env, cfg: cfg, client: c, scheme: scheme}
}

func (cp *controlPlane) stop(b testing.TB) {
	if err := cp.env.Stop(); err != nil {
		b.Error(err)
	}
}

// measurement is one contender's wall time and the CPU it made the API
// server, etcd and its own process spend.
type measurement struct {
	elapsed time.Duration
	cpu     cpuUse
}

func measure(op func()) measurement {
	before, start := readCPU(), time.Now()
	op()
	return measurement{elapsed: time.Since(start), cpu: readCPU().sub(before)}
}

func (m measurement) String() string {
	return fmt.Sprintf("%6.2fs  (CPU s: API server %5.2f, etcd %4.2f, client %4.2f; total %5.2f)",
		m.elapsed.Seconds(), m.cpu.apiServer, m.cpu.etcd, m.cpu.client, m.cpu.total())
}

// childrenOf renders the children of every benchmark program in the
// namespaces created for them.
func childrenOf(b *testing.B, cp *controlPlane, prefix string) []client.Object {
	var objects []client.Object
	for w := range worlds {
		ns := fmt.Sprintf("%s-%d", prefix, w)
		mustCreate(b, cp.client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		world := world(ns, ns)
		for i := range programsPerWorld {
			children, err := controllers.EngineChildren(program(ns, i, world.Name), world, engineImage)
			if err != nil {
				b.Fatal(err)
			}
			objects = append(objects, children...)
		}
	}
	return objects
}

func runOperatorBenchmark(b *testing.B) {
	ctx := context.Background()

	// The limit: a plain client creates the children of 500 programs.
	cp := startControlPlane(b)
	plainChildren := childrenOf(b, cp, "baseline")
	plain := measure(func() {
		parallel(len(plainChildren), func(i int) error { return cp.client.Create(ctx, plainChildren[i]) })
	})
	cp.stop(b)

	// A second reference: the same objects written with server-side apply,
	// which the operator must use.
	cp = startControlPlane(b)
	applyChildren := childrenOf(b, cp, "baseline-apply")
	apply := measure(func() {
		parallel(len(applyChildren), func(i int) error { return applyTyped(ctx, cp.client, cp.scheme, applyChildren[i]) })
	})
	cp.stop(b)

	// The operator's writes, recorded on an API server of their own: the
	// floor replays them.
	cp = startControlPlane(b)
	recordedPrograms := len(createPrograms(b, cp))
	recorder := &writeRecorder{}
	startRecorded, stopRecorded := newOperator(b, cp, func(rt http.RoundTripper) http.RoundTripper { recorder.next = rt; return recorder })
	recordedWatch := watchReconciled(b, cp.client)
	startRecorded()
	recordedWatch.wait(b, recordedPrograms)
	recorded := recorder.recording()
	recordedUIDs, _, err := replayTargets(ctx, cp)
	if err != nil {
		b.Fatal(err)
	}
	stopRecorded()
	cp.stop(b)

	// Rounds of floor and operator before the measured pair below: the
	// API server's cost of the same writes moves by a third between runs
	// minutes apart on a shared machine, so the ratio is also given as
	// the median of adjacent pairs (ROUNDS, 1 by default).
	var floors, operators []measurement
	for range rounds() - 1 {
		f, _ := replayFloor(b, recorded, recordedUIDs, "")
		floors = append(floors, f.measurement)
		operators = append(operators, operatorRound(b))
	}

	// The floor: the operator's own writes until all were Reconciled, byte
	// for byte, replayed by a plain HTTP client with nothing else: no read,
	// no watch, nothing computed (newWriteReplay). No operator making these
	// writes can need less of the machine; whether the writes themselves
	// are all needed is the writes-by-kind line's to show. It is timed as
	// the operator is:
	// until a watch of the programs has seen every one Reconciled (the
	// watch's own cost included on both sides).
	floorRun, floorWatch := replayFloor(b, recorded, recordedUIDs, fmt.Sprintf("floor-%d", recordedPrograms))
	floor, floorCounter, floorRefused := floorRun.measurement, floorRun.counter, floorRun.refused

	cp = startControlPlane(b)
	defer cp.stop(b)
	programs := len(createPrograms(b, cp))
	counter := &writeCounter{}
	startMeasured, stopMeasured := newOperator(b, cp, func(rt http.RoundTripper) http.RoundTripper { counter.next = rt; return counter })
	reconciled := watchReconciled(b, cp.client)
	reconcilesBefore := reconcilesByController(b)
	heapBefore := liveHeap()
	stopProfile := startCPUProfile(b, fmt.Sprintf("operator-%d", programs))
	stopAPIServerProfile := profileAPIServer(b, cp.cfg, fmt.Sprintf("operator-%d", programs))
	b.ResetTimer()
	operator := measure(func() {
		startMeasured()
		reconciled.wait(b, programs)
	})
	b.StopTimer()
	stopProfile()
	stopAPIServerProfile()
	defer stopMeasured()
	reconcileWrites := counter.writes.Load()
	reads := counter.readSnapshot()
	reconciles := reconcilesByController(b)

	// Let late events drain, then count writes over the idle window.
	time.Sleep(5 * time.Second)
	before := counter.writes.Load()
	time.Sleep(idleWindow)
	idleWrites := counter.writes.Load() - before
	heapAfter, rss := liveHeap(), residentBytes()
	writeHeapProfile(b, fmt.Sprintf("operator-%d", programs))
	operatorHeap := float64(heapAfter) - float64(heapBefore)

	ratio := operator.elapsed.Seconds() / plain.elapsed.Seconds()
	b.ReportMetric(operator.elapsed.Seconds(), "operator-s")
	b.ReportMetric(plain.elapsed.Seconds(), "plain-client-s")
	b.ReportMetric(ratio, "ratio")
	b.ReportMetric(float64(idleWrites), "idle-writes")
	b.ReportMetric(float64(reconcileWrites), "operator-writes")
	b.ReportMetric(float64(len(plainChildren)), "plain-client-writes")
	b.ReportMetric(apply.elapsed.Seconds(), "plain-apply-s")
	b.ReportMetric(floor.elapsed.Seconds(), "floor-s")
	b.ReportMetric(operatorHeap/1e6, "operator-heap-MB")
	b.ReportMetric(float64(rss)/1e6, "process-RSS-MB")
	fmt.Printf("programs=%d worlds=%d parallelism=%d, each contender on a fresh API server\n", programs, worlds, parallelism)
	fmt.Printf("plain client creating %d children: %s\n", len(plainChildren), plain)
	fmt.Printf("plain client, server-side apply:   %s\n", apply)
	fmt.Printf("the floor, the operator's writes replayed: %s, %d writes (%s), %d refused as the operator's were\n", floor, floorCounter.writes.Load(), formatWrites(nil, floorCounter.snapshot()), floorRefused)
	fmt.Printf("operator until all Reconciled:     %s, %d writes (%s)\n", operator, reconcileWrites, formatWrites(nil, counter.snapshot()))
	fmt.Printf("operator reads until then:         %s\n", formatWrites(nil, reads))
	fmt.Printf("reconciles until then:             %s (per program: %.2f)\n", formatWrites(reconcilesBefore, reconciles),
		float64(reconciles["meditationprogram"]-reconcilesBefore["meditationprogram"])/float64(programs))
	fmt.Printf("program states before Reconciled:  %s (operator; by Ready reason, none: no status yet); floor: %s\n", reconciled.statesBefore(), floorWatch.statesBefore())
	fmt.Printf("ratio operator/plain client:       %.2f (goal <= 1.5); CPU %.2f\n", ratio, operator.cpu.total()/plain.cpu.total())
	fmt.Printf("ratio plain apply/plain client:    %.2f; CPU %.2f\n", apply.elapsed.Seconds()/plain.elapsed.Seconds(), apply.cpu.total()/plain.cpu.total())
	fmt.Printf("ratio floor/plain client:          %.2f; CPU %.2f (the operator's writes alone)\n", floor.elapsed.Seconds()/plain.elapsed.Seconds(), floor.cpu.total()/plain.cpu.total())
	fmt.Printf("ratio operator/floor:              %.2f; CPU %.2f (the operator's own overhead)\n", operator.elapsed.Seconds()/floor.elapsed.Seconds(), operator.cpu.total()/floor.cpu.total())
	floors, operators = append(floors, floor), append(operators, operator)
	if len(floors) > 1 {
		wall, cpu := make([]float64, len(floors)), make([]float64, len(floors))
		var each []string
		for i := range floors {
			wall[i] = operators[i].elapsed.Seconds() / floors[i].elapsed.Seconds()
			cpu[i] = operators[i].cpu.total() / floors[i].cpu.total()
			each = append(each, fmt.Sprintf("%.1f/%.1f s x%.2f", operators[i].elapsed.Seconds(), floors[i].elapsed.Seconds(), wall[i]))
		}
		fmt.Printf("ratio operator/floor, %d adjacent pairs: median x%.2f wall, x%.2f CPU (%s)\n", len(floors), median(wall), median(cpu), strings.Join(each, ", "))
	}
	fmt.Printf("operator writes in %s idle:       %d (goal 0)\n", idleWindow, idleWrites)
	perThousand := 1000 / float64(programs)
	fmt.Printf("operator live heap after the run:  %.1f MB (%.1f MB per 1,000 programs; the process's live heap %.1f MB, of which %.1f MB before the manager started)\n",
		operatorHeap/1e6, operatorHeap/1e6*perThousand, float64(heapAfter)/1e6, float64(heapBefore)/1e6)
	fmt.Printf("process RSS after the run:         %.1f MB (%.1f MB per 1,000 programs; this test process, which runs the manager in-process, the benchmark's own clients included)\n",
		float64(rss)/1e6, float64(rss)/1e6*perThousand)

	run := operatorRun{Programs: programs, OperatorSeconds: operator.elapsed.Seconds(), OperatorCPUSeconds: operator.cpu.total(),
		FloorSeconds: floor.elapsed.Seconds(), FloorCPUSeconds: floor.cpu.total(), PlainSeconds: plain.elapsed.Seconds(),
		OperatorWrites: reconcileWrites, IdleWrites: idleWrites, OperatorHeapBytes: operatorHeap, ProcessRSSBytes: rss,
		LoadAverage: loadAverage()}
	fmt.Printf("machine load average (1, 5, 15 min) at the end: %s\n", run.LoadAverage)
	recordAndCompare(b, run)
}

// floorRun is one replay of the operator's writes.
type floorRun struct {
	measurement
	counter *writeCounter
	refused int64
}

// replayFloor replays recorded on a fresh API server holding the same
// worlds and programs, until a watch has seen every program Reconciled;
// profile names the API server's CPU profile ("": none).
func replayFloor(b *testing.B, recorded []*recordedWrite, recordedUIDs map[string]string, profile string) (floorRun, *reconciledWatch) {
	ctx := context.Background()
	cp := startControlPlane(b)
	defer cp.stop(b)
	created := createPrograms(b, cp)
	var run floorRun
	replay, counter, _ := replayOn(b, cp, recorded, recordedUIDs)
	run.counter = counter
	watch := watchReconciled(b, cp.client)
	var watchErr, replayErr error
	stopProfile := func() {}
	if profile != "" {
		stopProfile = profileAPIServer(b, cp.cfg, profile)
	}
	run.measurement = measure(func() {
		// Followed while the writes go on, as the operator's run is: a
		// watch not read falls behind and the API server closes it.
		watched := make(chan struct{})
		go func() { defer close(watched); watchErr = watch.until(len(created)) }()
		replayErr = replay.run(ctx)
		if replayErr != nil {
			watch.stop()
		}
		<-watched
	})
	stopProfile()
	if replayErr != nil {
		b.Fatal(replayErr)
	}
	if watchErr != nil {
		b.Fatal(watchErr)
	}
	run.refused = replay.refused.Load()
	return run, watch
}

// operatorRound times the operator on a fresh API server until every
// program is Reconciled, and nothing else.
func operatorRound(b *testing.B) measurement {
	cp := startControlPlane(b)
	defer cp.stop(b)
	programs := len(createPrograms(b, cp))
	start, stop := newOperator(b, cp, func(rt http.RoundTripper) http.RoundTripper { return rt })
	defer stop()
	reconciled := watchReconciled(b, cp.client)
	return measure(func() {
		start()
		reconciled.wait(b, programs)
	})
}

// rounds is ATTUNE_BENCH_ROUNDS (ROUNDS), 1 by default.
func rounds() int {
	n, err := strconv.Atoi(os.Getenv("ATTUNE_BENCH_ROUNDS"))
	if err != nil || n < 1 {
		return 1
	}
	return n
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// reconcilesByController is controller-runtime's count of reconciles so
// far (controller_runtime_reconcile_total), by controller.
func reconcilesByController(b *testing.B) map[string]int64 {
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]int64{}
	for _, f := range families {
		if f.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" {
					out[l.GetValue()] += int64(m.GetCounter().GetValue())
				}
			}
		}
	}
	return out
}

// newOperator sets up the operator's manager on cp, every request it makes
// passing through wrap: start runs it, stop ends it and fails b on an
// error of the manager's.
func newOperator(b *testing.B, cp *controlPlane, wrap func(http.RoundTripper) http.RoundTripper) (start, stop func()) {
	cfg := controllers.RESTConfig(cp.cfg)
	cfg.Wrap(wrap)
	// The same controllers run several times in this process (the
	// recording, the rounds, the measured run), each on its own manager.
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: cp.scheme, Cache: controllers.CacheOptions(), Metrics: metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)}})
	if err != nil {
		b.Fatal(err)
	}
	if err := controllers.SetupWithManager(mgr, controllers.Options{EngineImage: engineImage, MaxConcurrentReconciles: parallelism, OperatorNamespace: "attune-system"}); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start = func() { go func() { done <- mgr.Start(ctx) }() }
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}
	return start, stop
}

// operatorRun is one run's figures, kept in ATTUNE_BENCH_OUT so that runs of
// different sizes can be set against each other.
type operatorRun struct {
	Programs           int     `json:"programs"`
	OperatorSeconds    float64 `json:"operatorSeconds"`
	OperatorCPUSeconds float64 `json:"operatorCPUSeconds"`
	FloorSeconds       float64 `json:"floorSeconds"`
	FloorCPUSeconds    float64 `json:"floorCPUSeconds"`
	PlainSeconds       float64 `json:"plainSeconds"`
	OperatorWrites     int64   `json:"operatorWrites"`
	IdleWrites         int64   `json:"idleWrites"`
	OperatorHeapBytes  float64 `json:"operatorHeapBytes"`
	ProcessRSSBytes    uint64  `json:"processRSSBytes"`
	LoadAverage        string  `json:"loadAverage"`
}

// recordAndCompare writes this run's figures and prints the cost per program
// against every other size recorded: the operator's, and the floor's, whose
// growth is the API server's own.
func recordAndCompare(b *testing.B, run operatorRun) {
	dir := os.Getenv("ATTUNE_BENCH_OUT")
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	data, err := json.MarshalIndent(run, "", "  ")
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("operator-%d.json", run.Programs)), data, 0o644); err != nil {
		b.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "operator-*.json"))
	for _, f := range files {
		var other operatorRun
		data, err := os.ReadFile(f)
		if err != nil || json.Unmarshal(data, &other) != nil || other.Programs == run.Programs || other.Programs == 0 {
			continue
		}
		small, large := other, run
		if small.Programs > large.Programs {
			small, large = large, small
		}
		perProgram := func(seconds float64, r operatorRun) float64 { return seconds / float64(r.Programs) }
		growth := func(pick func(operatorRun) float64) (float64, float64, float64) {
			l, s := perProgram(pick(large), large), perProgram(pick(small), small)
			return 1e3 * l, 1e3 * s, l / s
		}
		fmt.Printf("cost per program, %d vs %d programs (goal growth <= 1.2):\n", large.Programs, small.Programs)
		l, s, g := growth(func(r operatorRun) float64 { return r.OperatorSeconds })
		fmt.Printf("  operator wall %.2f ms vs %.2f ms: x%.2f\n", l, s, g)
		l, s, g = growth(func(r operatorRun) float64 { return r.OperatorCPUSeconds })
		fmt.Printf("  operator CPU  %.2f ms vs %.2f ms: x%.2f (API server, etcd and operator together)\n", l, s, g)
		l, s, g = growth(func(r operatorRun) float64 { return r.FloorSeconds })
		fmt.Printf("  floor wall    %.2f ms vs %.2f ms: x%.2f (the API server's own growth)\n", l, s, g)
		fmt.Printf("  operator/floor x%.2f vs x%.2f (load averages %s vs %s)\n", large.OperatorSeconds/large.FloorSeconds,
			small.OperatorSeconds/small.FloorSeconds, large.LoadAverage, small.LoadAverage)
		fmt.Printf("  operator heap per 1,000 programs %.1f MB vs %.1f MB\n", large.OperatorHeapBytes/1e3/float64(large.Programs),
			small.OperatorHeapBytes/1e3/float64(small.Programs))
	}
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	goruntime.GC()
	var m goruntime.MemStats
	goruntime.ReadMemStats(&m)
	return m.HeapAlloc
}

// residentBytes is this process's VmRSS; 0 without /proc.
func residentBytes() uint64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kB, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kB * 1024
		}
	}
	return 0
}

func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	fields := strings.Fields(string(data))
	if len(fields) < 3 {
		return "unknown"
	}
	return strings.Join(fields[:3], " ")
}

// startCPUProfile profiles this process (the operator) into
// name.cpu.pprof until stop, when ATTUNE_BENCH_PROFILE names a folder.
func startCPUProfile(b *testing.B, name string) (stop func()) {
	dir := os.Getenv("ATTUNE_BENCH_PROFILE")
	if dir == "" {
		return func() {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, name+".cpu.pprof"))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }
}

// writeHeapProfile writes the live heap into name.heap.pprof, next to the
// CPU profile.
func writeHeapProfile(b *testing.B, name string) {
	dir := os.Getenv("ATTUNE_BENCH_PROFILE")
	if dir == "" {
		return
	}
	f, err := os.Create(filepath.Join(dir, name+".heap.pprof"))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}

// createPrograms creates the worlds, their namespaces and the programs
// before the operator starts, each changed by the options given.
func createPrograms(b *testing.B, cp *controlPlane, options ...func(*wellbeingv1alpha1.MeditationProgram)) []*wellbeingv1alpha1.MeditationProgram {
	ctx := context.Background()
	var programs []*wellbeingv1alpha1.MeditationProgram
	for w := range worlds {
		name := fmt.Sprintf("world-%d", w)
		world := world(name, name)
		mustCreate(b, cp.client, world)
		// The namespace is created here so that programs can exist before
		// the operator runs; it is handed to the world as the operator
		// would have made it.
		mustCreate(b, cp.client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name:            name,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(world, wellbeingv1alpha1.GroupVersion.WithKind("VirtualWorld"))},
			Labels:          map[string]string{controllers.LabelManagedBy: controllers.ManagedByValue, controllers.LabelWorld: name},
		}})
		for i := range programsPerWorld {
			p := program(name, i, name)
			for _, option := range options {
				option(p)
			}
			programs = append(programs, p)
		}
	}
	parallel(len(programs), func(i int) error { return cp.client.Create(ctx, programs[i]) })
	return programs
}

// applyTyped server-side-applies a typed object as the operator does.
func applyTyped(ctx context.Context, c client.Client, scheme *runtime.Scheme, obj client.Object) error {
	gvk, err := apiutil.GVKForObject(obj, scheme)
	if err != nil {
		return err
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(gvk)
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "status")
	return c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("bench"), client.ForceOwnership)
}

// reconciledWatch follows every program through one watch, as kubectl
// wait does: polling 500 programs with status every few milliseconds
// would load the API server the operator is being measured on.
type reconciledWatch struct {
	events <-chan watch.Event
	stop   func()
	done   map[string]bool
	// reconciled counts the true entries of done.
	reconciled int
	// before counts the statuses seen of programs not yet Reconciled, by
	// their Ready reason ("none" for no status): each beyond the first,
	// the created program, is a status write the floor does not make.
	before map[string]int
}

// watchReconciled opens the watch at the current state of the programs.
func watchReconciled(b testing.TB, c client.WithWatch) *reconciledWatch {
	list := &wellbeingv1alpha1.MeditationProgramList{}
	if err := c.List(context.Background(), list); err != nil {
		b.Fatal(err)
	}
	w, err := c.Watch(context.Background(), &wellbeingv1alpha1.MeditationProgramList{}, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}})
	if err != nil {
		b.Fatal(err)
	}
	r := &reconciledWatch{events: w.ResultChan(), stop: w.Stop, done: map[string]bool{}, before: map[string]int{}}
	for i := range list.Items {
		r.observe(&list.Items[i])
	}
	return r
}

func (r *reconciledWatch) observe(p *wellbeingv1alpha1.MeditationProgram) {
	key := p.Namespace + "/" + p.Name
	now := p.Status.ObservedGeneration == p.Generation && meta.IsStatusConditionTrue(p.Status.Conditions, wellbeingv1alpha1.ConditionReconciled)
	switch was := r.done[key]; {
	case now && !was:
		r.reconciled++
	case was && !now:
		r.reconciled--
	}
	r.done[key] = now
	if !now {
		reason := "none"
		if ready := meta.FindStatusCondition(p.Status.Conditions, wellbeingv1alpha1.ConditionReady); ready != nil {
			reason = ready.Reason
		}
		r.before[reason]++
	}
}

// statesBefore is before, largest first.
func (r *reconciledWatch) statesBefore() string {
	reasons := slices.Collect(maps.Keys(r.before))
	slices.SortFunc(reasons, func(a, b string) int { return r.before[b] - r.before[a] })
	parts := make([]string, 0, len(reasons))
	for _, reason := range reasons {
		parts = append(parts, fmt.Sprintf("%s %d", reason, r.before[reason]))
	}
	return strings.Join(parts, ", ")
}

// wait returns once want programs are Reconciled at their generation.
func (r *reconciledWatch) wait(b *testing.B, want int) {
	if err := r.until(want); err != nil {
		b.Fatal(err)
	}
}

// until is wait for any goroutine: an error instead of b.Fatal.
func (r *reconciledWatch) until(want int) error {
	defer r.stop()
	limit := 10 * time.Minute * time.Duration(max(1, want/500))
	timeout := time.After(limit)
	for {
		if r.reconciled == want {
			return nil
		}
		select {
		case ev, open := <-r.events:
			if !open {
				return errors.New("the program watch closed")
			}
			if p, ok := ev.Object.(*wellbeingv1alpha1.MeditationProgram); ok {
				r.observe(p)
			}
		case <-timeout:
			return fmt.Errorf("%d of %d programs reconciled after %s", r.reconciled, want, limit)
		}
	}
}

// parallel runs op for 0..n-1, parallelism at a time; an error panics.
func parallel(n int, op func(i int) error) {
	if err := parallelUntilError(n, op); err != nil {
		panic(err)
	}
}

// parallelUntilError runs op for 0..n-1, parallelism at a time, and
// starts no more after the first error, which it returns.
func parallelUntilError(n int, op func(i int) error) error {
	var (
		wg     sync.WaitGroup
		next   atomic.Int64
		failed atomic.Pointer[error]
	)
	for range parallelism {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n && failed.Load() == nil; i = int(next.Add(1) - 1) {
				if err := op(i); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		return *err
	}
	return nil
}

func mustCreate(b testing.TB, c client.Client, obj client.Object) {
	if err := c.Create(context.Background(), obj); err != nil {
		b.Fatal(err)
	}
}

func world(name, namespace string) *wellbeingv1alpha1.VirtualWorld {
	return &wellbeingv1alpha1.VirtualWorld{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       wellbeingv1alpha1.VirtualWorldSpec{Namespace: namespace, Context: wellbeingv1alpha1.ContextSocial},
	}
}

func program(namespace string, i int, worldName string) *wellbeingv1alpha1.MeditationProgram {
	return &wellbeingv1alpha1.MeditationProgram{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("program-%04d", i), Namespace: namespace},
		Spec: wellbeingv1alpha1.MeditationProgramSpec{
			WorldRef:      wellbeingv1alpha1.WorldReference{Name: worldName},
			Target:        wellbeingv1alpha1.StateVector{Attention: 0.8, Emotion: 0.7, Resilience: 0.7},
			Weights:       wellbeingv1alpha1.Weights{Attention: 1, Emotion: 1, Resilience: 1},
			Interventions: []wellbeingv1alpha1.Intervention{wellbeingv1alpha1.FocusedAttention, wellbeingv1alpha1.BodyScan},
			Strength:      wellbeingv1alpha1.StrengthBounds{Initial: 0.5, Min: 0.1, Max: 0.9},
			Tuning:        wellbeingv1alpha1.Tuning{Mode: wellbeingv1alpha1.TuningManual},
			Engine:        wellbeingv1alpha1.EngineSpec{Replicas: ptr.To[int32](1)},
		},
	}
}
