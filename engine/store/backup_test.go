package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// openSealedBolt opens an encrypted embedded store in dir.
func openSealedBolt(t *testing.T, dir string, keys *Keyring, opts ...Option) (*Sealed, *Bolt) {
	t.Helper()
	b, err := OpenBolt(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSealed(context.Background(), b, keys, testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s, b
}

func putUser(t *testing.T, s *Sealed, user string, ifVersion int64) {
	t.Helper()
	if err := s.Commit(context.Background(), Change{Users: map[string]Write{user: {Value: userRecord(user), IfVersion: ifVersion}}}); err != nil {
		t.Fatal(err)
	}
}

func eraseUser(t *testing.T, s *Sealed, user string, ifVersion int64) {
	t.Helper()
	if err := s.Commit(context.Background(), Change{Users: map[string]Write{user: {IfVersion: ifVersion}}, EraseDecisions: []string{user}}); err != nil {
		t.Fatal(err)
	}
}

func dataKeyValues(t *testing.T, b Backend) [][]byte {
	t.Helper()
	var out [][]byte
	if err := b.EachDataKey(context.Background(), func(_ string, item Item) error {
		out = append(out, bytes.Clone(item.Value))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBackupLeavesOutErasedKeys: a backup taken right after an erasure,
// before its compaction was due, holds neither the erased user's wrapped
// data key nor their ciphertext's key in a freed page (Tx.WriteTo copies
// freed pages too), and the other user's data is in it, sealed.
func TestBackupLeavesOutErasedKeys(t *testing.T) {
	s, b := openSealedBolt(t, t.TempDir(), testKeyring(t, "k1"), WithCompactDelay(-1))
	defer func() { _ = s.Close() }()
	putUser(t, s, "kept", 0)
	putUser(t, s, "erased", 0)
	keys := dataKeyValues(t, b)
	eraseUser(t, s, "erased", 1)
	left := dataKeyValues(t, b)
	if len(keys) != 2 || len(left) != 1 {
		t.Fatalf("data keys: %d before the erasure, %d after", len(keys), len(left))
	}
	erasedKey := keys[0]
	if bytes.Equal(erasedKey, left[0]) {
		erasedKey = keys[1]
	}
	file, _ := os.ReadFile(filepath.Join(filepath.Dir(b.path), FileName))
	if !bytes.Contains(file, erasedKey) {
		t.Fatal("the erased data key is not in the uncompacted file: this test checks nothing")
	}
	snap, err := b.Backup(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	copied, err := io.ReadAll(snap)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Close(); err != nil {
		t.Fatal(err)
	}
	if int64(len(copied)) != snap.Size {
		t.Errorf("read %d bytes of a %d-byte snapshot", len(copied), snap.Size)
	}
	if bytes.Contains(copied, erasedKey) {
		t.Error("the backup holds the erased user's wrapped data key")
	}
	if !bytes.Contains(copied, left[0]) {
		t.Error("the backup lacks the kept user's data key")
	}
	if bytes.Contains(copied, []byte("kept")) || bytes.Contains(copied, []byte(`"scopes"`)) {
		t.Error("the backup holds a user's data in the clear")
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(b.path), backupPattern)); len(left) != 0 {
		t.Errorf("the snapshot's file stayed: %v", left)
	}
}

// TestErasureJournalReappliesOnlyTheErasedKey: a user erased and then
// enrolled again (a new data key at the same row key) is not erased by
// the journal at the next open, while an older file holding the erased
// key (a restored backup, from before a KEK rotation re-wrapped the key)
// has that user erased again at open.
func TestErasureJournalReappliesOnlyTheErasedKey(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	rotated := testKeyring(t, "k2", "k1")
	s, b := openSealedBolt(t, dir, testKeyring(t, "k1"))
	putUser(t, s, "u1", 0)
	putUser(t, s, "u2", 0)
	snap, err := b.Backup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := io.ReadAll(snap)
	_ = snap.Close()
	s.SetKeys(rotated)
	if n, left, err := s.Rewrap(ctx); n != 2 || left != 0 || err != nil {
		t.Fatalf("rewrap: %d, %d left, %v", n, left, err)
	}
	eraseUser(t, s, "u1", 1)
	eraseUser(t, s, "u2", 1)
	putUser(t, s, "u2", 0) // enrolled again: a new data key
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, b = openSealedBolt(t, dir, rotated)
	if b.Reapplied != 0 {
		t.Errorf("reopened: %d erasures re-applied, want 0", b.Reapplied)
	}
	if got, err := s.Users(ctx, []string{"u1", "u2"}); err != nil || len(got) != 1 || got["u2"].Value == nil {
		t.Errorf("reopened: users %v (%v), want u2 alone", got, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// The backup from before both erasures, restored into the directory.
	if err := os.WriteFile(filepath.Join(dir, FileName), old, 0o600); err != nil {
		t.Fatal(err)
	}
	s, b = openSealedBolt(t, dir, rotated)
	defer func() { _ = s.Close() }()
	if b.Reapplied != 2 {
		t.Errorf("restored: %d erasures re-applied, want 2", b.Reapplied)
	}
	if got, err := s.Users(ctx, []string{"u1", "u2"}); err != nil || len(got) != 0 {
		t.Errorf("restored: users %v (%v), want none (both were erased after the backup)", got, err)
	}
	if n := len(dataKeyValues(t, b)); n != 0 {
		t.Errorf("restored: %d data keys left", n)
	}
}

// TestErasureJournalCutsATornTail: a journal whose last line was torn
// (a kill mid-append: no newline) is cut back to its last newline at
// open, so the next erasure's tombstone starts a line of its own and is
// re-applied when a backup from before it is restored; empty lines are
// skipped.
func TestErasureJournalCutsATornTail(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	keys := testKeyring(t, "k1")
	s, b := openSealedBolt(t, dir, keys)
	putUser(t, s, "u1", 0)
	putUser(t, s, "u2", 0)
	snap, err := b.Backup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := io.ReadAll(snap)
	_ = snap.Close()
	eraseUser(t, s, "u1", 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	journal := filepath.Join(dir, TombstonesFileName)
	whole, err := os.ReadFile(journal)
	if err != nil || !bytes.HasSuffix(whole, []byte("\n")) {
		t.Fatalf("journal after one erasure: %q %v", whole, err)
	}
	// An empty line, then half of a tombstone, as a kill mid-append leaves.
	if err := os.WriteFile(journal, append(append(bytes.Clone(whole), '\n'), whole[:40]...), 0o600); err != nil {
		t.Fatal(err)
	}

	s, _ = openSealedBolt(t, dir, keys)
	if got, _ := os.ReadFile(journal); !bytes.Equal(got, append(bytes.Clone(whole), '\n')) {
		t.Errorf("journal after open: %q, want the torn tail cut", got)
	}
	eraseUser(t, s, "u2", 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, FileName), old, 0o600); err != nil {
		t.Fatal(err)
	}
	s, b = openSealedBolt(t, dir, keys)
	defer func() { _ = s.Close() }()
	if b.Reapplied != 2 {
		t.Errorf("restored: %d erasures re-applied, want 2 (u2's tombstone after the torn tail too)", b.Reapplied)
	}
	if got, err := s.Users(ctx, []string{"u1", "u2"}); err != nil || len(got) != 0 {
		t.Errorf("restored: users %v (%v), want none", got, err)
	}
}

// TestBackupOfAnUnencryptedStoreIsRefused: an embedded store without a
// Sealed layer (no keyEncryptionKeyDir) is not backed up: the copy would
// hold every user's data in the clear.
func TestBackupOfAnUnencryptedStoreIsRefused(t *testing.T) {
	b, err := OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Close() }()
	src := BackupOf(b)
	if src == nil {
		t.Fatal("no backup source for an embedded store")
	}
	if snap, err := src(context.Background()); !errors.Is(err, ErrBackupUnencrypted) {
		if snap != nil {
			_ = snap.Close()
		}
		t.Fatalf("backup of an unencrypted store: %v, want ErrBackupUnencrypted", err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(b.path), backupPattern)); len(left) != 0 {
		t.Errorf("a snapshot file was written: %v", left)
	}
}
