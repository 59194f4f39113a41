package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"k8s.io/client-go/rest"
)

// apiServerProfileSlice is the length of each CPU profile taken from the
// API server's /debug/pprof/profile, which profiles for a fixed number of
// seconds; the slices of one contender are merged into one profile.
const apiServerProfileSlice = 5

// profileAPIServer records the API server's CPU profile into
// name.apiserver.cpu.pprof until stop, when ATTUNE_BENCH_PROFILE names a
// folder. The operator's own profile shows only what it spends; most of
// the cost it adds over the floor is the API server's, so the two
// contenders' API server profiles are what tells where it goes
// (`go tool pprof -top -diff_base floor.apiserver.cpu.pprof operator…`).
// The last slice, begun before stop, is kept whole: a contender's profile
// can cover up to apiServerProfileSlice seconds after its end.
func profileAPIServer(b *testing.B, cfg *rest.Config, name string) (stop func()) {
	dir := os.Getenv("ATTUNE_BENCH_PROFILE")
	if dir == "" {
		return func() {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		b.Fatal(err)
	}
	// A stalled API server fails the slice rather than hanging stop.
	httpClient.Timeout = (apiServerProfileSlice + 30) * time.Second
	url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", strings.TrimSuffix(cfg.Host, "/"), apiServerProfileSlice)
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg    sync.WaitGroup
		parts []*profile.Profile
		errs  []error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			// Not tied to ctx: a slice cut short would be lost.
			p, err := fetchProfile(httpClient, url)
			if err != nil {
				errs = append(errs, err)
				return
			}
			parts = append(parts, p)
		}
	}()
	return func() {
		cancel()
		wg.Wait()
		if len(errs) > 0 {
			b.Errorf("API server profile %s: %v", name, errs[0])
			return
		}
		if len(parts) == 0 { // stopped before a slice began
			return
		}
		merged, err := profile.Merge(parts)
		if err != nil {
			b.Errorf("API server profile %s: merge %d slices: %v", name, len(parts), err)
			return
		}
		f, err := os.Create(filepath.Join(dir, name+".apiserver.cpu.pprof"))
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = f.Close() }()
		if err := merged.Write(f); err != nil {
			b.Errorf("API server profile %s: %v", name, err)
		}
	}
}

func fetchProfile(httpClient *http.Client, url string) (*profile.Profile, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	p, err := profile.Parse(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse the profile from %s: %w", url, err)
	}
	return p, nil
}
