package store

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// TestReleaseMappedPages: after a pass over every user, releasing the
// mapped pages takes the file's pages out of the process's RSS, and the
// data reads back whole afterwards, also while a writer grows the file
// (and so remaps it) at the same time.
func TestReleaseMappedPages(t *testing.T) {
	ctx := context.Background()
	db, err := OpenBolt(t.TempDir(), WithoutSync())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	value := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 4000) }
	write := func(from, to int) error {
		change := Change{Users: map[string]Write{}}
		for i := from; i < to; i++ {
			change.Users[fmt.Sprintf("user-%06d", i)] = Write{Value: value(i)}
		}
		return db.Commit(ctx, change)
	}
	const users = 8000 // about 32 MiB
	for from := 0; from < users; from += 1000 {
		if err := write(from, from+1000); err != nil {
			t.Fatal(err)
		}
	}
	scan := func() (int, error) {
		n := 0
		err := db.EachUser(ctx, func(key string, item Item) error {
			var i int
			if _, err := fmt.Sscanf(key, "user-%06d", &i); err != nil {
				return err
			}
			if !bytes.Equal(item.Value, value(i)) {
				return fmt.Errorf("%s reads back wrong after a release", key)
			}
			n++
			return nil
		})
		return n, err
	}
	if _, err := scan(); err != nil {
		t.Fatal(err)
	}
	mapped := rssFile(t)
	if err := db.ReleaseMappedPages(); err != nil {
		t.Fatal(err)
	}
	released := rssFile(t)
	if mapped-released < 16<<20 {
		t.Fatalf("RssFile %d MiB after the pass, %d MiB after the release: want at least 16 MiB of the 32 MiB file released", mapped>>20, released>>20)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for from := users; from < 2*users; from += 500 {
			if err := write(from, from+500); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for range 20 {
		if _, err := scan(); err != nil {
			t.Fatal(err)
		}
		if err := db.ReleaseMappedPages(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if n, err := scan(); err != nil || n != 2*users {
		t.Fatalf("%d users read back (%v), want %d", n, err, 2*users)
	}
}

// rssFile is this process's file-backed resident memory in bytes.
func rssFile(t *testing.T) int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "RssFile:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// TestMappedPagesStayWithinTheBudget: random reads of single users over a
// store file much larger than the budget keep the pages mapped into the
// process under the budget (plus what two check intervals can map: a
// release started at one check may only be done by the next), while the
// same reads of a store without a budget map most of the file. Every
// value still reads back whole.
func TestMappedPagesStayWithinTheBudget(t *testing.T) {
	const (
		users  = 32_000 // 4,000 bytes each: a file of about 128 MiB
		budget = 16 << 20
		reads  = 40_000
		// checkEvery is a quarter of mappedCheckEvery, so that the slack
		// the bound allows stays small against the file and the
		// unbounded run's figure tells the two apart.
		checkEvery = mappedCheckEvery / 4
	)
	value := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 4000) }
	grown := func(opts ...Option) int64 {
		ctx := context.Background()
		db, err := OpenBolt(t.TempDir(), append(opts, WithoutSync())...)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = db.Close() }()
		for from := 0; from < users; from += 1000 {
			change := Change{Users: map[string]Write{}}
			for i := from; i < from+1000; i++ {
				change.Users[fmt.Sprintf("user-%06d", i)] = Write{Value: value(i)}
			}
			if err := db.Commit(ctx, change); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.ReleaseMappedPages(); err != nil {
			t.Fatal(err)
		}
		before, peak := rssFile(t), int64(0)
		for n := range reads {
			i := (n * 7919) % users
			key := fmt.Sprintf("user-%06d", i)
			got, err := db.Users(ctx, []string{key})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[key].Value, value(i)) {
				t.Fatalf("%s reads back wrong", key)
			}
			if n%1000 == 999 {
				peak = max(peak, rssFile(t)-before)
			}
		}
		return peak
	}
	bounded := grown(WithMappedPagesBudget(budget), withMappedCheckEvery(checkEvery))
	// What two check intervals can map on top of the budget: up to two
	// faults per read (a user's 4,000-byte value and its key do not fit
	// one page, so its leaf spans two, not always within one fault-around
	// window), each mapping up to 16 pages (the kernel's fault-around).
	slack := int64(2 * checkEvery * 2 * 16 * os.Getpagesize())
	if bounded > budget+slack {
		t.Errorf("with a %d MiB budget the store's mapped pages grew to %d MiB (want at most %d MiB)", budget>>20, bounded>>20, (budget+slack)>>20)
	}
	unbounded := grown(WithMappedPagesBudget(0))
	if unbounded < 3*(budget+slack)/2 {
		t.Errorf("without a budget the mapped pages grew only %d MiB: the reads do not show what the budget bounds", unbounded>>20)
	}
	t.Logf("mapped pages after %d random reads of a 128 MiB store: %d MiB with a %d MiB budget, %d MiB without", reads, bounded>>20, budget>>20, unbounded>>20)
}
