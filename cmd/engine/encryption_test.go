package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attune-io/attune/engine/config"
	"github.com/attune-io/attune/internal/testutil"
)

// TestEngineRotatesItsKeyEncryptionKey runs the engine on a keyring as
// the operator mounts it and rotates the KEK the documented way while it
// serves: add kek-2, make it primary (the engine re-wraps its data keys),
// retire kek-1. The user stays readable throughout, and after a restart
// with kek-2 alone; without any keyring the engine refuses the encrypted
// store rather than serve it as plaintext.
func TestEngineRotatesItsKeyEncryptionKey(t *testing.T) {
	dir, path, addr := writeFiles(t, 0.5, 2)
	keyring := filepath.Join(dir, "kek")
	if err := os.MkdirAll(keyring, 0o700); err != nil {
		t.Fatal(err)
	}
	writeKey := func(name, content string) {
		t.Helper()
		tmp := filepath.Join(dir, name+".tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(keyring, name)); err != nil {
			t.Fatal(err)
		}
	}
	writeKey("kek-1", strings.Repeat("1", 32))
	writeKey("primary", "kek-1")
	setKeyring := func(kekDir string) {
		t.Helper()
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var cfg config.Config
		if err := json.Unmarshal(raw, &cfg); err != nil {
			t.Fatal(err)
		}
		cfg.KeyEncryptionKeyDir = kekDir
		raw, _ = json.Marshal(cfg)
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	setKeyring(keyring)
	base := "http://" + addr
	start := func(logs io.Writer) (stop func() error) {
		stop = startEngine(t, path, 50*time.Millisecond, logs)
		waitFor(t, func() bool { code, _ := get(t, base+"/v1/cohort", "ro-secret"); return code == 200 })
		return stop
	}

	logs := &testutil.LockedBuffer{}
	stop := start(logs)
	if code, body := post(t, base+"/v1/users/u1/consent", "rw-secret", `{"scopes":["questionnaire"]}`); code != 200 {
		t.Fatalf("consent: %d %s", code, body)
	}
	at := time.Now().UTC().Format(time.RFC3339)
	if code, body := post(t, base+"/v1/telemetry", "rw-secret", `[{"user":"u1","kind":"questionnaire","at":"`+at+`","mood":4}]`); code != 200 {
		t.Fatalf("telemetry: %d %s", code, body)
	}
	stateOK := func() bool { code, _ := get(t, base+"/v1/users/u1/state", "rw-secret"); return code == 200 }

	writeKey("kek-2", strings.Repeat("2", 32))
	waitFor(t, func() bool { return strings.Contains(logs.String(), "keyring reloaded") && stateOK() })
	writeKey("primary", "kek-2")
	waitFor(t, func() bool { return strings.Contains(logs.String(), "rewrapped=1") })
	if !stateOK() {
		t.Fatal("the user is unreadable after the re-wrap")
	}
	if err := os.Remove(filepath.Join(keyring, "kek-1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Count(logs.String(), "keyring reloaded") >= 3 })
	if !stateOK() {
		t.Fatal("the user is unreadable once kek-1 is retired")
	}
	if err := stop(); err != nil {
		t.Fatalf("engine stopped with %v", err)
	}

	// A restart with kek-2 alone reads the user.
	stop = start(io.Discard)
	if !stateOK() {
		t.Error("after a restart with the new KEK alone the user is unreadable")
	}
	if err := stop(); err != nil {
		t.Fatalf("engine stopped with %v", err)
	}

	// Without a keyring the encrypted store is refused.
	setKeyring("")
	err := run(context.Background(), path, "", time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "holds encrypted users") {
		t.Errorf("start without a keyring on an encrypted store: %v", err)
	}
}
