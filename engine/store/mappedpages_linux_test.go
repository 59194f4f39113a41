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
