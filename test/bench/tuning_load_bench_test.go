package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	wellbeingv1alpha1 "github.com/attune-io/attune/api/v1alpha1"
	"github.com/attune-io/attune/controllers"
	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/engine/contract"
)

const (
	// tuningInterval is the programs' spec.tuning.interval.
	tuningInterval = 60 * time.Second
	// steadyWindow is how long the steady state is measured: two intervals.
	steadyWindow = 2 * tuningInterval
	// fakeEngineEnv names the folder of serving certificates a re-executed
	// test binary serves /v1/cohort with (TestFakeEngineServer).
	fakeEngineEnv = "ATTUNE_BENCH_FAKE_ENGINE_CERTS"
)

// BenchmarkOperatorTuningLoad runs SIZE programs tuning every 60 s against
// fake engines and measures, over two intervals of steady state, the
// operator's CPU (this process's CPU time: the manager runs in-process, the
// benchmark's own client is idle meanwhile) and its reads of engines per
// second. The fake engine is one HTTPS server in a child process (so that
// its CPU is not counted as the operator's), answering GET /v1/cohort for
// every program's pod on 127.0.0.1 with the serving certificate the
// operator issued for that program from the world's CA, chosen by SNI: the
// operator verifies it for the engines' server name as it would in a
// cluster. Its answer is contract.CohortSummary, the engine's wire format.
func BenchmarkOperatorTuningLoad(b *testing.B) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		b.Skip("KUBEBUILDER_ASSETS not set: run `make bench-operator-tuning`")
	}
	ctrl.SetLogger(logr.Discard())
	setSizeFromEnv(b)
	for range b.N {
		runTuningLoad(b)
	}
}

func runTuningLoad(b *testing.B) {
	ctx := context.Background()
	cp := startControlPlane(b)
	defer cp.stop(b)
	created := createPrograms(b, cp, func(p *wellbeingv1alpha1.MeditationProgram) {
		p.Spec.Tuning = wellbeingv1alpha1.Tuning{Mode: wellbeingv1alpha1.TuningAuto, Interval: &metav1.Duration{Duration: tuningInterval}}
	})
	programs := len(created)

	counter := &writeCounter{}
	managerCfg := controllers.RESTConfig(cp.cfg)
	managerCfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { counter.next = rt; return counter })
	mgr, err := ctrl.NewManager(managerCfg, ctrl.Options{Scheme: cp.scheme, Cache: controllers.CacheOptions(), Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		b.Fatal(err)
	}
	workers := tuningWorkers(b)
	if err := controllers.SetupWithManager(mgr, controllers.Options{EngineImage: engineImage, MaxConcurrentReconciles: workers, OperatorNamespace: "attune-system"}); err != nil {
		b.Fatal(err)
	}
	reconciled := watchReconciled(b, cp.client)
	mgrCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mgrCtx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	reconciled.wait(b, programs)

	engine := startFakeEngine(b, cp, created)
	defer engine.stop()
	// The pods a kubelet would report, each leading to the fake engine.
	parallel(len(created), func(i int) error { return announceEnginePod(ctx, cp, created[i], engine.port) })

	// The pods' events make every program read at once; then each reads
	// once an interval. One interval to settle, then the window.
	time.Sleep(tuningInterval + 10*time.Second)
	readsBefore, writesBefore, cpuBefore, kindsBefore := engine.reads(b), counter.writes.Load(), readCPU(), counter.snapshot()
	childBefore := processCPU(engine.cmd.Process.Pid)
	start := time.Now()
	stopProfile := startCPUProfile(b, fmt.Sprintf("tuning-%d", programs))
	time.Sleep(steadyWindow)
	stopProfile()
	elapsed := time.Since(start).Seconds()
	reads, writes, cpu := engine.reads(b)-readsBefore, counter.writes.Load()-writesBefore, readCPU().sub(cpuBefore)
	engineCPU := processCPU(engine.cmd.Process.Pid) - childBefore
	heap, rss := liveHeap(), residentBytes()
	writeHeapProfile(b, fmt.Sprintf("tuning-%d", programs))

	wantRate := float64(programs) / tuningInterval.Seconds()
	b.ReportMetric(cpu.client/elapsed, "operator-cores")
	b.ReportMetric(float64(reads)/elapsed, "engine-reads/s")
	b.ReportMetric(float64(writes)/elapsed, "writes/s")
	fmt.Printf("programs=%d tuning every %s, steady window %s, %d workers (load average %s)\n", programs, tuningInterval, steadyWindow, workers, loadAverage())
	fmt.Printf("operator CPU:          %.2f s in %.0f s = %.3f cores (%.1f ms per program per minute); API server %.3f cores, etcd %.3f, fake engine %.3f\n",
		cpu.client, elapsed, cpu.client/elapsed, 1e3*cpu.client/float64(programs)/(elapsed/60), cpu.apiServer/elapsed, cpu.etcd/elapsed, engineCPU/elapsed)
	fmt.Printf("engine reads:          %.1f /s (one per program per interval: %.1f /s)\n", float64(reads)/elapsed, wantRate)
	fmt.Printf("operator writes:       %.1f /s (%s)\n", float64(writes)/elapsed, formatWrites(kindsBefore, counter.snapshot()))
	fmt.Printf("process heap / RSS:    %.1f MB / %.1f MB, %d goroutines (this process, the manager in-process)\n", float64(heap)/1e6, float64(rss)/1e6, goruntime.NumGoroutine())
}

// tuningWorkers is the program reconciler's MaxConcurrentReconciles:
// ATTUNE_BENCH_WORKERS, else the manager's default (--max-concurrent-reconciles).
func tuningWorkers(b *testing.B) int {
	v := os.Getenv("ATTUNE_BENCH_WORKERS")
	if v == "" {
		return controllers.DefaultMaxConcurrentReconciles
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("ATTUNE_BENCH_WORKERS=%q: want a positive number", v)
	}
	return n
}

// announceEnginePod creates the Ready pod of a program's Deployment that
// a kubelet would report, with the fake engine's port (envtest has no
// kubelet).
func announceEnginePod(ctx context.Context, cp *controlPlane, p *wellbeingv1alpha1.MeditationProgram, port int) error {
	children, err := controllers.EngineChildren(p, world(p.Spec.WorldRef.Name, p.Namespace), engineImage)
	if err != nil {
		return err
	}
	var template *corev1.PodTemplateSpec
	for _, c := range children {
		if d, ok := c.(*appsv1.Deployment); ok {
			template = d.Spec.Template.DeepCopy()
		}
	}
	if template == nil {
		return fmt.Errorf("program %s has no Deployment", p.Name)
	}
	template.Spec.Containers[0].Ports[0].ContainerPort = int32(port)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.Name + "-engine-0", Namespace: p.Namespace, Labels: template.Labels}, Spec: template.Spec}
	if err := cp.client.Create(ctx, pod); err != nil {
		return err
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1",
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	return cp.client.Status().Update(ctx, pod)
}

// fakeEngine is TestFakeEngineServer running in a child process.
type fakeEngine struct {
	cmd   *exec.Cmd
	port  int
	stats string
	http  *http.Client
}

// startFakeEngine writes every program's serving certificate (the Secret
// the operator issued) where the child finds it by server name, and starts
// the child.
func startFakeEngine(b *testing.B, cp *controlPlane, programs []*wellbeingv1alpha1.MeditationProgram) *fakeEngine {
	dir := b.TempDir()
	parallel(len(programs), func(i int) error {
		p := programs[i]
		secret := &corev1.Secret{}
		key := client.ObjectKey{Namespace: p.Namespace, Name: p.Name + "-engine-tls"}
		deadline := time.Now().Add(time.Minute)
		for {
			err := cp.client.Get(context.Background(), key, secret)
			if err == nil && len(secret.Data[corev1.TLSCertKey]) > 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("serving certificate %s: %v", key, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		name := controllers.EngineServerName(p)
		if err := os.WriteFile(filepath.Join(dir, name+".crt"), secret.Data[corev1.TLSCertKey], 0o600); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, name+".key"), secret.Data[corev1.TLSPrivateKeyKey], 0o600)
	})
	cmd := exec.Command(os.Args[0], "-test.run=^TestFakeEngineServer$", "-test.count=1")
	cmd.Env = append(os.Environ(), fakeEngineEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	// The child prints "listening <port> <stats port>" once it serves.
	scanner := bufio.NewScanner(stdout)
	for scanner.Scan() {
		var port, stats int
		if _, err := fmt.Sscanf(scanner.Text(), "listening %d %d", &port, &stats); err == nil {
			go func() {
				for scanner.Scan() {
				}
			}()
			return &fakeEngine{cmd: cmd, port: port, stats: fmt.Sprintf("http://127.0.0.1:%d/reads", stats), http: &http.Client{Timeout: 5 * time.Second}}
		}
	}
	_ = cmd.Process.Kill()
	b.Fatal("the fake engine did not start")
	return nil
}

// reads is how many GET /v1/cohort the fake engine has answered.
func (e *fakeEngine) reads(b *testing.B) int64 {
	resp, err := e.http.Get(e.stats)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var n int64
	if err := json.NewDecoder(resp.Body).Decode(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

func (e *fakeEngine) stop() {
	_ = e.cmd.Process.Kill()
	_ = e.cmd.Wait()
}

// processCPU is a process's user+system CPU seconds from /proc.
func processCPU(pid int) float64 {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	end := strings.LastIndexByte(string(stat), ')')
	fields := strings.Fields(string(stat[end+1:]))
	if len(fields) < 13 {
		return 0
	}
	user, _ := strconv.ParseFloat(fields[11], 64)
	system, _ := strconv.ParseFloat(fields[12], 64)
	return (user + system) / clockTicks
}

// TestFakeEngineServer is the fake engine when the benchmark re-executes
// the test binary; skipped otherwise. It serves GET /v1/cohort over HTTPS on
// 127.0.0.1 with the certificate for the server name the client asks for
// (SNI), and the count of reads over plain HTTP on a second port.
func TestFakeEngineServer(t *testing.T) {
	dir := os.Getenv(fakeEngineEnv)
	if dir == "" {
		t.Skip("run by BenchmarkOperatorTuningLoad in a child process")
	}
	certificates := map[string]*tls.Certificate{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".crt")
		if !ok {
			continue
		}
		cert, err := tls.LoadX509KeyPair(filepath.Join(dir, e.Name()), filepath.Join(dir, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		certificates[name] = &cert
	}
	var reads atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/cohort", func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		reads.Add(1)
		size, loss, now := 100, 0.3, time.Now()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(contract.CohortSummary{Published: true, MinCohortSize: 10, Size: &size, Loss: &loss,
			Strength: 0.5, Scope: config.ScopeReplica, ObservedAt: now, RunningSince: now.Add(-time.Hour)})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	statsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, TLSConfig: &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := certificates[hello.ServerName]; c != nil {
				return c, nil
			}
			return nil, fmt.Errorf("no certificate for %q", hello.ServerName)
		},
	}}
	stats := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(reads.Load())
	})}
	go func() { _ = stats.Serve(statsLn) }()
	fmt.Printf("listening %d %d\n", ln.Addr().(*net.TCPAddr).Port, statsLn.Addr().(*net.TCPAddr).Port)
	_ = server.ServeTLS(ln, "", "")
}
