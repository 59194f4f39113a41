package engineruntime

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestPropagationDelaysArePerPodAndBounded(t *testing.T) {
	p := KubeletPropagation
	seen := map[time.Duration]bool{}
	for _, pod := range []string{"w/a-engine-0", "w/a-engine-1", "w/a-engine-2", "w/b-engine-0"} {
		d := p.DelayFor(pod)
		if d < p.Min || d > p.Max {
			t.Errorf("%s: delay %s outside [%s, %s]", pod, d, p.Min, p.Max)
		}
		if d != p.DelayFor(pod) {
			t.Errorf("%s: the delay changed between two calls", pod)
		}
		seen[d] = true
	}
	if len(seen) < 3 {
		t.Errorf("four pods share %d delays: replicas must lag differently", len(seen))
	}
	if d := (Propagation{}).DelayFor("w/a"); d != 0 {
		t.Errorf("zero propagation delays by %s", d)
	}
	if d := (Propagation{Min: 5 * time.Second, Max: 5 * time.Second}).DelayFor("w/a"); d != 5*time.Second {
		t.Errorf("fixed propagation delays by %s, want 5s", d)
	}
}

// TestSyncFilesLandsChangesLate: a change reaches the file no sooner than
// the delay after it was made, and does land soon after it.
func TestSyncFilesLandsChangesLate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	v1 := map[string][]byte{path: []byte("v1")}
	if err := writeFiles(v1); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	current := v1
	read := func() (map[string][]byte, error) { mu.Lock(); defer mu.Unlock(); return current, nil }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const delay = 2 * time.Second
	go syncFiles(ctx, delay, v1, read)

	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	current = map[string][]byte{path: []byte("v2")}
	changed := time.Now()
	mu.Unlock()
	for {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		waited := time.Since(changed)
		if string(b) == "v2" {
			if waited < delay {
				t.Fatalf("the change landed after %s, before the delay %s", waited, delay)
			}
			t.Logf("landed after %s (delay %s, checked every second)", waited.Round(10*time.Millisecond), delay)
			return
		}
		if waited > delay+3*time.Second {
			t.Fatalf("the change has not landed after %s", waited)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
