package client_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/attune-io/attune/engine/api"
	"github.com/attune-io/attune/engine/client"
)

// writeRenamed replaces path's content atomically (a new file renamed
// over it), as engineruntime and most secret writers do.
func writeRenamed(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// kubeletSecret lays out a Secret volume as the kubelet does: the key is a
// symlink through ..data to a timestamped directory, and an update swaps
// ..data.
type kubeletSecret struct {
	t   *testing.T
	dir string
	gen int
}

func (k *kubeletSecret) write(key, content string) {
	k.t.Helper()
	k.gen++
	data := filepath.Join(k.dir, "..2026_12_01_09_00_0"+string(rune('0'+k.gen)))
	if err := os.MkdirAll(data, 0o700); err != nil {
		k.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, key), []byte(content+"\n"), 0o400); err != nil {
		k.t.Fatal(err)
	}
	link := filepath.Join(k.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(data), link); err != nil {
		k.t.Fatal(err)
	}
	if err := os.Rename(link, filepath.Join(k.dir, "..data")); err != nil {
		k.t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(k.dir, key)); os.IsNotExist(err) {
		if err := os.Symlink(filepath.Join("..data", key), filepath.Join(k.dir, key)); err != nil {
			k.t.Fatal(err)
		}
	}
}

// TestFileTokenFollowsRotation: the engine swaps its tokens (as after the
// Secret rotated); the client fails until the file changes, then uses the
// new token without being rebuilt: renamed over, rewritten in place, or a
// kubelet Secret volume's ..data swap.
func TestFileTokenFollowsRotation(t *testing.T) {
	e := startEngine(t, engineConfig("Social", 1))
	ctx := ctxFor(t)
	path := filepath.Join(t.TempDir(), "token")
	writeRenamed(t, path, rwToken+"\n")
	c := newClient(t, e.url, client.WithTokenSource(client.FileToken(path)), client.WithRetry(client.NoRetry))
	if _, err := c.Cohort(ctx); err != nil {
		t.Fatal(err)
	}

	rotate := func(token string, write func()) {
		t.Helper()
		e.api.SetTokens(api.Tokens{ReadWrite: token, ReadOnly: roToken})
		if _, err := c.Cohort(ctx); !errors.Is(err, client.ErrUnauthenticated) {
			t.Fatalf("before the file changed: %v, want 401", err)
		}
		write()
		if _, err := c.Cohort(ctx); err != nil {
			t.Fatalf("after the file changed to %s: %v", token, err)
		}
	}
	rotate("rotated-once-0123456789", func() { writeRenamed(t, path, "rotated-once-0123456789") })
	rotate("rotated-in-place-0123456789", func() {
		if err := os.WriteFile(path, []byte("rotated-in-place-0123456789\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	})

	secret := &kubeletSecret{t: t, dir: t.TempDir()}
	secret.write("token", "kubelet-1-0123456789")
	e.api.SetTokens(api.Tokens{ReadWrite: "kubelet-1-0123456789", ReadOnly: roToken})
	kc := newClient(t, e.url, client.WithTokenSource(client.FileToken(filepath.Join(secret.dir, "token"))), client.WithRetry(client.NoRetry))
	if _, err := kc.Cohort(ctx); err != nil {
		t.Fatal(err)
	}
	c = kc
	rotate("kubelet-2-9876543210", func() { secret.write("token", "kubelet-2-9876543210") })
}

func TestFileTokenErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(dir, "missing"), empty} {
		if _, err := client.FileToken(path).Token(context.Background()); err == nil {
			t.Errorf("%s: no error", path)
		}
	}
	// A request whose token cannot be read is not sent.
	transport := &countingTransport{next: nil}
	c := newClient(t, "http://127.0.0.1:1", client.WithTokenSource(client.FileToken(empty)), client.WithTransport(transport))
	if _, err := c.Cohort(context.Background()); err == nil || transport.n.Load() != 0 {
		t.Errorf("%v after %d requests, want the token error and none sent", err, transport.n.Load())
	}
}
